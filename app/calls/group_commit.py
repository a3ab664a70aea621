"""Group commit for the calls table: writes run on one database thread, those queued meanwhile in one transaction.

A caller awaits its write's result, which is only set once the transaction holding it has committed: an
acknowledged /run is on disk (SQLite WAL survives a killed process) or in PostgreSQL before its answer leaves.
The event loop never waits on a commit, and under load one commit carries many calls.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from sqlalchemy import Table, insert
from sqlalchemy.engine import Connection, Engine

log = logging.getLogger("lorapod.runpod")

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Insert:
    """One new row; neighbouring inserts into one table go to the database as one executemany."""

    table: Table
    row: dict[str, Any]

    def __call__(self, connection: Connection) -> None:
        connection.execute(insert(self.table), [self.row])


Write = Callable[[Connection], Any]
# A write's result, or the exception it raised.
Outcome = tuple[Any, BaseException | None]


def run_write(engine: Engine, write: Callable[[Connection], T]) -> T:
    """Run one write in its own transaction, here and now (for callers off the loop or outside the hot path)."""
    with engine.begin() as connection:
        return write(connection)


class GroupCommit:
    """Runs writes on one thread; what queues while a transaction commits goes into the next one."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lorapod-calls-writer")
        self._queue: list[tuple[Write, asyncio.Future[Any]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def write(self, write: Callable[[Connection], T]) -> T:
        """Run write (given a connection inside the batch's transaction); its result once that has committed."""
        result: T = await self.submit(write)
        return result

    def submit(self, write: Write) -> asyncio.Future[Any]:
        """Queue write without waiting; the future holds its result once committed (call on the loop)."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append((write, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="lorapod-calls-group-commit")
        return future

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        while self._queue:
            batch, self._queue = self._queue, []
            outcomes = await loop.run_in_executor(self._executor, self._commit, [write for write, _ in batch])
            for (_, future), (result, error) in zip(batch, outcomes, strict=True):
                if future.done():  # its waiter was cancelled; the write stands
                    continue
                if error is None:
                    future.set_result(result)
                else:
                    future.set_exception(error)

    def _commit(self, writes: list[Write]) -> list[Outcome]:
        try:
            with self.engine.begin() as connection:
                return [outcome for run in _runs(writes) for outcome in _execute(connection, run)]
        except Exception as exc:
            if len(writes) == 1:
                return [(None, exc)]
        # The batch rolled back whole: each write again in its own transaction, so one bad write fails alone.
        return [self._alone(write) for write in writes]

    def _alone(self, write: Write) -> Outcome:
        try:
            return run_write(self.engine, write), None
        except Exception as exc:
            return None, exc


def _runs(writes: list[Write]) -> list[list[Write]]:
    """writes in order, neighbouring inserts into one table together (any other write alone)."""
    return [list(run) for _, run in itertools.groupby(writes, key=_batch_key)]


def _batch_key(write: Write) -> object:
    return write.table if isinstance(write, Insert) else object()


def _execute(connection: Connection, run: list[Write]) -> list[Outcome]:
    first = run[0]
    if isinstance(first, Insert) and len(run) > 1:
        connection.execute(insert(first.table), [cast(Insert, write).row for write in run])
        return [(None, None)] * len(run)
    return [(first(connection), None)]


def log_failure(future: asyncio.Future[Any]) -> None:
    """Done-callback for a write nobody awaits: log its failure instead of leaving it unseen."""
    if not future.cancelled() and future.exception() is not None:
        log.error("a RunPod-style call's write failed", exc_info=future.exception())
