"""Whether generation can run: the generation environment (AI_TOOLKIT_PYTHON) imports what the worker needs.

Checked once per interpreter and process, in a background thread, because importing torch takes seconds and
start-up must not wait for it. Until the answer is in, generation requests are let through (and the REST and
contract adapters wait a little for it first); once it says no, they are refused with a 503 naming the cause.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import Unavailable

# What gpu/generate_worker.py imports from the environment it runs in.
GENERATION_MODULES = ("torch", "diffusers", "transformers", "peft", "safetensors", "PIL")
# Importing torch and diffusers from a cold network volume can take minutes.
PROBE_TIMEOUT_SECONDS = 300.0
# How long a generation request waits for a check still running before it is let through.
SETTLE_SECONDS = 60.0
_PROBE = """
import importlib, sys
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except BaseException as exc:
        print(f"cannot import {name}: {type(exc).__name__}: {exc}"[:500])
        raise SystemExit(3)
"""


@dataclass
class _Check:
    """One interpreter's answer, shared by every service in the process that uses it."""

    done: threading.Event = field(default_factory=threading.Event)
    ready: bool | None = None
    reason: str | None = None
    seconds: float | None = None


_checks: dict[str, _Check] = {}
_checks_lock = threading.Lock()


class GenerationProbe:
    """The cached answer to "can AI_TOOLKIT_PYTHON import the generation worker's modules?"."""

    def __init__(self, python: str, *, env: Mapping[str, str] | None = None, cwd: Path | None = None) -> None:
        self.python = python
        self._env = dict(env or {})
        self._cwd = cwd
        self._check: _Check | None = None

    def start(self) -> None:
        """Start the check in the background, unless this interpreter was already checked in this process."""
        with _checks_lock:
            check = _checks.get(self.python)
            if check is None:
                check = _checks[self.python] = _Check()
                threading.Thread(target=self._run, args=(check,), name="lorapod-generation-probe", daemon=True).start()
        self._check = check

    def _run(self, check: _Check) -> None:
        began = time.monotonic()
        try:
            done = subprocess.run(
                [self.python, "-c", _PROBE, *GENERATION_MODULES],
                env={**os.environ, **self._env},
                cwd=self._cwd,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=PROBE_TIMEOUT_SECONDS,
            )
            check.ready = done.returncode == 0
            if not check.ready:
                said = done.stdout.strip().splitlines()
                check.reason = said[-1] if said else f"the check exited with status {done.returncode}"
        except (OSError, subprocess.SubprocessError) as exc:
            check.ready = False
            check.reason = f"could not run it: {type(exc).__name__}: {exc}"[:500]
        check.seconds = round(time.monotonic() - began, 2)
        check.done.set()

    @property
    def ready(self) -> bool | None:
        """True or False once checked; None while the check runs (or before start)."""
        return self._check.ready if self._check and self._check.done.is_set() else None

    def report(self) -> dict[str, Any]:
        """The answer for /health: status checking, ready or unavailable, with the reason and the interpreter."""
        ready = self.ready
        status = "checking" if ready is None else ("ready" if ready else "unavailable")
        check = self._check
        return {
            "status": status,
            "ready": ready,
            "python": self.python,
            "modules": list(GENERATION_MODULES),
            "reason": check.reason if check and ready is False else None,
            "check_seconds": check.seconds if check and ready is not None else None,
        }

    def require(self) -> None:
        """Unavailable (503) when the generation environment does not work; waits for a running check off the loop."""
        if self.ready is None and not _on_event_loop():
            self.wait()
        if self.ready is False:
            reason = self._check.reason if self._check else None
            raise Unavailable(
                f"generation is unavailable: AI_TOOLKIT_PYTHON ({self.python}) {reason}; install torch and diffusers "
                "into that environment (see GET /health)"
            )

    def wait(self, timeout: float = SETTLE_SECONDS) -> bool | None:
        """Block until the check has answered (or timeout); its answer."""
        if self._check is not None:
            self._check.done.wait(timeout)
        return self.ready

    async def settle(self, timeout: float = SETTLE_SECONDS) -> bool | None:
        """Wait, off the event loop, for a check still running; its answer."""
        if self._check is None or self._check.done.is_set():
            return self.ready
        return await asyncio.to_thread(self.wait, timeout)


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
