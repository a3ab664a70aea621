"""Contract calls made through the pod's RunPod-compatible routes: a persistent table with the cloud's states.

A call is one `{"input": ...}` sent to /run or /runsync. Its row keeps the input (without base64 file
contents and with secret-looking fields redacted), the RunPod status, the output or error, the lorapod
process it started, and its timestamps. A finished call's result is kept for the retention of its kind
(/run 30 min, /runsync 60 s by default, as on the cloud) and is gone after that.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, cast

from sqlalchemy import JSON, Column, DateTime, Table, case, delete, func, literal, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import configure_mappers
from sqlmodel import Field, Session, SQLModel, col, select

from app.calls.group_commit import GroupCommit, Insert, log_failure, run_write
from app.calls.retained import answered_output, stored_output
from core.db import rows_changed, session_scope
from core.errors import Conflict, LorapodError, NotFound
from core.jobs.requests import job_type_of
from core.jobs.rows import utcnow
from core.redaction import REDACTED, is_secret_value, redact
from core.storage.workspace import Workspace
from core.training.yaml_loader import dump_yaml, load_yaml


class CallStatus(StrEnum):
    """RunPod's request states."""

    IN_QUEUE = "IN_QUEUE"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMED_OUT = "TIMED_OUT"


FINAL_STATUSES = frozenset({CallStatus.COMPLETED, CallStatus.FAILED, CallStatus.CANCELLED, CallStatus.TIMED_OUT})
RETRYABLE_STATUSES = (CallStatus.FAILED, CallStatus.TIMED_OUT)
UNFINISHED_STATUSES = (CallStatus.IN_QUEUE, CallStatus.IN_PROGRESS)
INTERRUPTED = "the server restarted while this call ran"
# How often a new call also drops the calls whose results have expired.
SWEEP_INTERVAL_SECONDS = 1.0


def _utc(value: datetime | None) -> datetime | None:
    # SQLite hands datetimes back without a zone; lorapod writes UTC only.
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


class Call(SQLModel, table=True):
    """One call of the RunPod-compatible API."""

    __tablename__ = "calls"

    id: str = Field(primary_key=True, max_length=64)
    type: str | None = Field(default=None, max_length=64)
    status: str = Field(index=True, max_length=16)
    input: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    output: Any = Field(default=None, sa_column=Column(JSON, nullable=True))
    error: str | None = None
    process_id: str | None = Field(default=None, max_length=64, index=True)
    sync: bool = False
    execution_timeout_ms: int | None = None
    worker_id: str | None = Field(default=None, max_length=128)
    retries: int = 0
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False))
    started_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True), nullable=True))
    completed_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True), nullable=True))
    expires_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True, index=True)
    )
    # RunPod's top-level `webhook`: {"url", "attempts": [...]}, delivered when the call ends
    webhook: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))

    @property
    def final(self) -> bool:
        """True once the call can no longer change."""
        return self.status in FINAL_STATUSES


CALLS: Table = Call.metadata.tables["calls"]


def stored_input(payload: dict[str, Any]) -> dict[str, Any]:
    """The input as stored: base64 file contents left out (their size kept) and secret-looking fields redacted."""
    cleaned = redact(payload)
    if isinstance(cleaned, dict):
        for key in ("yaml_config", "config"):
            if isinstance(cleaned.get(key), str):
                cleaned[key] = redact_yaml_text(cleaned[key])
    files = cleaned.get("files") if isinstance(cleaned, dict) else None
    if isinstance(files, list):
        for item in files:
            if isinstance(item, dict) and "content" in item:
                content = item.pop("content")
                item["content_omitted"] = True
                item["content_chars"] = len(content) if isinstance(content, str) else None
    return cast(dict[str, Any], cleaned)


def redact_yaml_text(text: str) -> str:
    """A YAML config with its secrets redacted by the one rule; text that is not a config is not kept at all."""
    try:
        data = load_yaml(text, field="yaml_config")
    except LorapodError:
        return REDACTED
    if not isinstance(data, dict | list):
        return REDACTED if is_secret_value(text) else text
    return dump_yaml(redact(data))


def outcome(result: dict[str, Any]) -> tuple[CallStatus, Any, str | None]:
    """Status, output and error of a dispatcher result, read as RunPod's worker reads a handler's dict."""
    output = dict(result)
    error = output.pop("error", None)
    if error:
        return CallStatus.FAILED, output or None, str(error)
    return CallStatus.COMPLETED, output or None, None


def _ms(start: datetime | None, end: datetime | None) -> int:
    if start is None or end is None:
        return 0
    return max(0, int((end - start).total_seconds() * 1000))


CallRow = dict[str, Any]  # a call as the calls table's columns, by name


def call_view(call: Call | CallRow, *, now: datetime | None = None) -> dict[str, Any]:
    """The call in the cloud's /status shape: id, status, output?, error?, delayTime, executionTime (ms), workerId."""
    row = call if isinstance(call, dict) else {name: getattr(call, name) for name in _VIEW_COLUMNS}
    now = now or utcnow()
    final = row["status"] in FINAL_STATUSES
    created, started, completed = _utc(row["created_at"]), _utc(row["started_at"]), _utc(row["completed_at"])
    body: dict[str, Any] = {
        "id": row["id"],
        "status": row["status"],
        "delayTime": _ms(created, started or (None if final else now)),
        "executionTime": _ms(started, completed or (None if final else now)),
    }
    if row["worker_id"]:
        body["workerId"] = row["worker_id"]
    if row["output"] is not None:
        body["output"] = row["output"]
    if row["error"]:
        body["error"] = row["error"]
    return body


_VIEW_COLUMNS = ("id", "status", "created_at", "started_at", "completed_at", "worker_id", "output", "error")


class CallStore:
    """The calls table behind the operations the RunPod-compatible routes need.

    The runner's writes (a new call, start, progress, end) go through group commit, off the event loop; the
    routes' rarer ones (cancel, retry, purge) and reads run where they are called.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        worker_id: str,
        run_retention_seconds: float,
        runsync_retention_seconds: float,
        on_end: Callable[[CallStatus], None] | None = None,
        workspace: Workspace | None = None,
    ) -> None:
        # Calls built with Call.model_construct are read through the mapped attributes, which exist once the
        # mappers are configured.
        configure_mappers()
        self.engine = engine
        self.writes = GroupCommit(engine)
        self.on_end = on_end  # told each final status as it is reached (the calls counter in /metrics)
        self.worker_id = worker_id
        self.run_retention = timedelta(seconds=run_retention_seconds)
        self.runsync_retention = timedelta(seconds=runsync_retention_seconds)
        self._next_sweep = 0.0
        # Download chunks are kept by reference only where every reader of the table sees this disk: SQLite's.
        # Pods sharing PostgreSQL need not share a workspace, so there the row carries the bytes.
        self.chunk_files = workspace if engine.dialect.name == "sqlite" else None

    def new(
        self,
        payload: dict[str, Any],
        *,
        sync: bool,
        execution_timeout_ms: int | None = None,
        webhook: str | None = None,
        created_at: datetime | None = None,
        ended: tuple[CallStatus, Any, str | None] | None = None,
    ) -> CallRow:
        """A new call as its row, not stored yet: IN_QUEUE, or already ended (status, output, error) when it ran inline.

        Ids look like the cloud's (`sync-` for /runsync). A row, not a Call: add() and call_view() take it as it is,
        and building a Call (Call.model_construct(**row), where one is needed) costs more than storing it.
        """
        now = utcnow()
        created_at = created_at or now
        kind = job_type_of(payload) if isinstance(payload, dict) else None
        status, output, error = ended or (CallStatus.IN_QUEUE, None, None)
        retention = self.runsync_retention if sync else self.run_retention
        return {
            "id": f"sync-{uuid.uuid4()}" if sync else f"{uuid.uuid4()}-u1",
            "type": kind[:64] if kind else None,
            "status": status,
            "input": stored_input(payload),
            "output": output,
            "error": error,
            "process_id": None,
            "sync": sync,
            "execution_timeout_ms": execution_timeout_ms,
            "worker_id": self.worker_id,
            "retries": 0,
            "created_at": created_at,
            "started_at": created_at if ended else None,
            "completed_at": now if ended else None,
            "expires_at": now + retention if ended else None,
            "webhook": {"url": webhook, "attempts": []} if webhook else None,
        }

    async def add(self, call: CallRow) -> None:
        """Store a new call's row; returns once committed. A final call counts as ended (the metrics counter)."""
        if time.monotonic() >= self._next_sweep:
            # Expired rows are invisible to get() already; dropping them now and then keeps the table small.
            self._next_sweep = time.monotonic() + SWEEP_INTERVAL_SECONDS
            self.writes.submit(self._delete_expired).add_done_callback(log_failure)
        row = {**call, "output": stored_output(self.chunk_files, call["output"])}
        await self.writes.write(Insert(CALLS, row))
        if row["status"] in FINAL_STATUSES:
            self._ended(CallStatus(row["status"]))

    def get(self, call_id: str) -> Call:
        """One call; NotFound when it never existed or its result has expired."""
        with Session(self.engine) as session:
            call = session.get(Call, call_id)
        expires = _utc(call.expires_at) if call is not None else None
        if call is None or (expires is not None and expires <= utcnow()):
            raise NotFound(f"no request with id '{call_id}' (unknown, or its result has expired)", field="id")
        return call

    def answer(self, call_id: str) -> Call:
        """A call as /status shows it: a download chunk kept by reference is read again (see app.calls.retained)."""
        call = self.get(call_id)
        call.output = answered_output(self.chunk_files, call_id, call.output)
        return call

    async def start(self, call_id: str) -> datetime | None:
        """IN_QUEUE -> IN_PROGRESS; when it started, or None when the call was cancelled or purged meanwhile."""
        now = utcnow()
        started = self._transition(call_id, UNFINISHED_STATUSES[:1], status=CallStatus.IN_PROGRESS, started_at=now)
        return now if await self.writes.write(started) else None

    def report(self, call_id: str, output: Any, *, process_id: str | None = None) -> None:
        """Progress while IN_PROGRESS: the latest becomes the output /status shows, as on the cloud (not awaited)."""
        values: dict[str, Any] = {"output": output}
        if process_id:
            values["process_id"] = process_id
        self.writes.submit(self._transition(call_id, (CallStatus.IN_PROGRESS,), **values)).add_done_callback(
            log_failure
        )

    async def finish(self, call: Call, result: dict[str, Any], *, started_at: datetime) -> Call | None:
        """Record the dispatcher's result (COMPLETED or FAILED) of a call started at started_at.

        Returns the call as /status will show it, built from what is in hand rather than read back (an output
        may be a 10 MB download chunk; process_id, set by progress, is not in hand), or None when the call was
        cancelled meanwhile.
        """
        status, output, error = outcome(result)
        now = utcnow()
        kept = stored_output(self.chunk_files, output)
        ending = self._end(call.id, (CallStatus.IN_PROGRESS,), status, now=now, output=kept, error=error)
        if not await self.writes.write(ending):
            return None
        self._ended(status)
        retention = self.runsync_retention if call.sync else self.run_retention
        values = {column.name: getattr(call, column.name) for column in CALLS.columns}
        values.update(status=status, output=output, error=error, started_at=started_at, completed_at=now)
        values["expires_at"] = now + retention
        return Call.model_construct(**values)

    async def fail(self, call_id: str, error: str) -> bool:
        """End an unfinished call as FAILED."""
        return await self._end_async(call_id, UNFINISHED_STATUSES, CallStatus.FAILED, output=None, error=error)

    async def time_out(self, call_id: str, execution_timeout_ms: int) -> bool:
        """IN_PROGRESS -> TIMED_OUT: the call ran past its execution timeout."""
        error = timed_out_error(execution_timeout_ms)
        return await self._end_async(call_id, (CallStatus.IN_PROGRESS,), CallStatus.TIMED_OUT, error=error)

    def cancel(self, call_id: str) -> Call:
        """Cancel a queued or running call; a finished one is returned unchanged."""
        self.get(call_id)
        if run_write(self.engine, self._end(call_id, UNFINISHED_STATUSES, CallStatus.CANCELLED)):
            self._ended(CallStatus.CANCELLED)
        return self.get(call_id)

    def retry(self, call_id: str) -> Call:
        """FAILED or TIMED_OUT -> IN_QUEUE with the same id and input; the old output and error are dropped."""
        call = self.get(call_id)
        if call.status not in RETRYABLE_STATUSES:
            raise Conflict(
                f"request '{call_id}' is {call.status}; only FAILED or TIMED_OUT requests can be retried", field="id"
            )
        if call.type == "upload_training_data":
            raise Conflict(
                f"request '{call_id}' uploaded files whose contents are not kept; send the upload again", field="id"
            )
        retried = self._transition(
            call_id,
            RETRYABLE_STATUSES,
            status=CallStatus.IN_QUEUE,
            output=None,
            error=None,
            process_id=None,
            started_at=None,
            completed_at=None,
            expires_at=None,
            worker_id=self.worker_id,
            retries=CALLS.c.retries + 1,
        )
        if not run_write(self.engine, retried):
            raise Conflict(f"request '{call_id}' changed while being retried; try again", field="id")
        return self.get(call_id)

    def purge_queue(self) -> list[str]:
        """Remove this worker's calls still IN_QUEUE; their ids."""
        with session_scope(self.engine) as session:
            ids = list(
                session.exec(
                    select(Call.id).where(Call.status == CallStatus.IN_QUEUE, Call.worker_id == self.worker_id)
                ).all()
            )
            if ids:
                session.execute(delete(Call).where(col(Call.id).in_(ids), col(Call.status) == CallStatus.IN_QUEUE))
        return ids

    def counts(self) -> dict[str, int]:
        """The cloud's /health job counts over the calls still kept."""
        self.delete_expired()
        with Session(self.engine) as session:
            rows = session.exec(select(Call.status, func.count()).group_by(Call.status)).all()
            retried = session.exec(select(func.count()).where(col(Call.retries) > 0)).one()
        by_status = {status: count for status, count in rows}
        return {
            "completed": by_status.get(CallStatus.COMPLETED, 0),
            "failed": by_status.get(CallStatus.FAILED, 0) + by_status.get(CallStatus.TIMED_OUT, 0),
            "inProgress": by_status.get(CallStatus.IN_PROGRESS, 0),
            "inQueue": by_status.get(CallStatus.IN_QUEUE, 0),
            "retried": int(retried),
        }

    def fail_interrupted(self) -> list[str]:
        """Fail this worker's calls a previous run of the server left unfinished; their ids."""
        with Session(self.engine) as session:
            ids = list(
                session.exec(
                    select(Call.id).where(
                        col(Call.status).in_(list(UNFINISHED_STATUSES)), Call.worker_id == self.worker_id
                    )
                ).all()
            )
        for call_id in ids:
            if run_write(self.engine, self._end(call_id, UNFINISHED_STATUSES, CallStatus.FAILED, error=INTERRUPTED)):
                self._ended(CallStatus.FAILED)
        return ids

    def delete_expired(self) -> int:
        """Drop calls whose result retention has passed; how many."""
        return run_write(self.engine, self._delete_expired)

    @staticmethod
    def _delete_expired(connection: Connection) -> int:
        result = connection.execute(
            delete(CALLS).where(CALLS.c.expires_at.is_not(None), CALLS.c.expires_at <= utcnow())
        )
        return int(rows_changed(result) or 0)

    async def _end_async(
        self, call_id: str, from_statuses: tuple[CallStatus, ...], status: CallStatus, **values: Any
    ) -> bool:
        ended = bool(await self.writes.write(self._end(call_id, from_statuses, status, **values)))
        if ended:
            self._ended(status)
        return ended

    def _ended(self, status: CallStatus) -> None:
        if self.on_end is not None:
            self.on_end(status)

    def _end(
        self,
        call_id: str,
        from_statuses: tuple[CallStatus, ...],
        status: CallStatus,
        now: datetime | None = None,
        **values: Any,
    ) -> Callable[[Connection], int]:
        now = now or utcnow()
        # The retention depends on the call's kind: chosen in the UPDATE itself, with no read before it.
        expires = case(
            (CALLS.c.sync, literal(now + self.runsync_retention, DateTime(timezone=True))),
            else_=literal(now + self.run_retention, DateTime(timezone=True)),
        )
        return self._transition(call_id, from_statuses, status=status, completed_at=now, expires_at=expires, **values)

    @staticmethod
    def _transition(call_id: str, from_statuses: tuple[CallStatus, ...], **values: Any) -> Callable[[Connection], int]:
        statement = update(CALLS).where(CALLS.c.id == call_id, CALLS.c.status.in_(list(from_statuses))).values(**values)
        return lambda connection: int(rows_changed(connection.execute(statement)))


def timed_out_error(execution_timeout_ms: int | None) -> str:
    """The error of a call that ran past its policy.executionTimeout."""
    return f"the request ran longer than its executionTimeout of {execution_timeout_ms} ms"
