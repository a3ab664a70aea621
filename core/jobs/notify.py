"""In-process change notifications, so waiters wake the moment a job changes."""

from __future__ import annotations

import asyncio
import threading
from collections import defaultdict
from collections.abc import Callable

from gpu.loop import call_soon


class Notifier:
    """Wakes coroutines waiting on a job id; safe to call from any thread."""

    def __init__(self) -> None:
        self._waiters: dict[str, set[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = defaultdict(set)
        self._lock = threading.Lock()
        # Called with the job id on every change, from the notifying thread (webhooks); must be quick.
        self.listeners: list[Callable[[str], None]] = []

    def notify(self, job_id: str) -> None:
        """Wake every waiter of job_id (and of '*', the all-jobs channel)."""
        with self._lock:
            waiters = list(self._waiters.get(job_id, ())) + list(self._waiters.get("*", ()))
        for loop, event in waiters:
            call_soon(loop, event.set)
        for listener in self.listeners:
            listener(job_id)

    async def wait(self, job_id: str, timeout: float) -> bool:
        """Wait until job_id changes or timeout passes; True when woken by a change."""
        loop = asyncio.get_running_loop()
        entry = (loop, asyncio.Event())
        with self._lock:
            self._waiters[job_id].add(entry)
        try:
            await asyncio.wait_for(entry[1].wait(), timeout)
            return True
        except TimeoutError:
            return False
        finally:
            with self._lock:
                self._waiters[job_id].discard(entry)
                if not self._waiters[job_id]:
                    del self._waiters[job_id]
