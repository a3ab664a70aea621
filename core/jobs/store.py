"""Reads and writes of the process table; no business rules here."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, or_, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, SQLModel, col, func, select

from core.db import announce, is_postgres, rows_changed, session_scope
from core.errors import InvalidInput, NotFound
from core.jobs.rows import Job, JobStatus, utcnow


def change_kind(fields: dict[str, Any]) -> str:
    """What a write means to other pods: a job to claim, a cancel to honour, or just news."""
    if fields.get("status") == JobStatus.queued:
        return "queued"
    if fields.get("cancel_requested") and "status" not in fields:
        return "cancel"
    return "changed"


class JobStore:
    """The jobs table behind a few intention-revealing methods."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        table = SQLModel.metadata.tables[Job.__tablename__]
        point_read = table.select().where(table.c.id == bindparam("job_id"))
        self._point_read = str(point_read.compile(dialect=engine.dialect))
        self._columns = list(table.columns)
        self._status_counts = select(table.c.status, func.count()).group_by(table.c.status)
        self._converters: list[Callable[[Any], Any] | None] | None = None
        # SQLite: each thread keeps one connection of its own for point reads (see read_row).
        self._local = threading.local()

    def insert(self, job: Job) -> Job:
        """Insert a new job; with an idempotency key already used, return that job instead."""
        try:
            with session_scope(self.engine) as session:
                session.add(job)
                announce(session, f"{job.id} {change_kind({'status': job.status})}")
            return job
        except IntegrityError:
            if job.idempotency_key:
                existing = self.by_idempotency_key(job.idempotency_key)
                if existing is not None:
                    return existing
            raise

    def by_idempotency_key(self, key: str) -> Job | None:
        """The job created with this idempotency key, if any."""
        with Session(self.engine) as session:
            return session.exec(select(Job).where(Job.idempotency_key == key)).first()

    def get(self, job_id: str) -> Job:
        """One job by id, or NotFound."""
        with Session(self.engine) as session:
            job = session.get(Job, job_id)
        if job is None:
            raise NotFound(f"no job with id '{job_id}'", field="process_id")
        return job

    def find(self, job_id: str) -> Job | None:
        """One job by id, or None."""
        with Session(self.engine) as session:
            return session.get(Job, job_id)

    async def read_row(self, job_id: str) -> tuple[Any, ...] | None:
        """One job's row as the database driver gives it, without an ORM session: a status poll's point read.

        On SQLite it runs on the calling (event-loop) thread: a primary-key read in WAL mode takes microseconds
        and does not wait for writers. A server database is a round trip away, so there it runs in a thread."""
        if self.engine.dialect.name == "sqlite":
            return self._read_row(self._own_connection(), job_id)
        return await asyncio.to_thread(self._read_pooled, job_id)

    def job_from_row(self, row: tuple[Any, ...]) -> Job:
        """The job a read_row row holds, its values converted by the dialect as the ORM converts them.

        A plain, read-only record for views: it belongs to no session."""
        assert self._converters is not None, "job_from_row takes rows read by read_row"
        values = {
            column.key: value if convert is None else convert(value)
            for column, convert, value in zip(self._columns, self._converters, row, strict=True)
        }
        return Job.model_construct(**values)

    def _own_connection(self) -> Any:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            # Detached from the pool: this thread's status reads never wait for (or hold) a pooled connection.
            connection = self.engine.raw_connection()
            connection.detach()
            self._local.connection = connection
        return connection

    def _read_pooled(self, job_id: str) -> tuple[Any, ...] | None:
        connection = self.engine.raw_connection()
        try:
            return self._read_row(connection, job_id)
        finally:
            connection.close()

    def _read_row(self, connection: Any, job_id: str) -> tuple[Any, ...] | None:
        params = (job_id,) if self.engine.dialect.positional else {"job_id": job_id}
        cursor = connection.cursor()
        try:
            cursor.execute(self._point_read, params)
            # fetchall runs the statement to its end, so SQLite ends the read (a pending one would pin the WAL).
            rows = cursor.fetchall()
            if self._converters is None:
                self._converters = self._converters_for(cursor.description)
        finally:
            cursor.close()
        return tuple(rows[0]) if rows else None

    def _converters_for(self, description: Sequence[Sequence[Any]]) -> list[Callable[[Any], Any] | None]:
        # The same result processors the ORM applies (SQLite's datetimes are text, its JSON columns strings).
        dialect = self.engine.dialect
        return [
            column.type.dialect_impl(dialect).result_processor(dialect, entry[1])
            for column, entry in zip(self._columns, description, strict=True)
        ]

    def update(self, job_id: str, **fields: Any) -> None:
        """Set fields on one job (and its updated_at)."""
        fields.setdefault("updated_at", utcnow())
        with session_scope(self.engine) as session:
            session.execute(update(Job).where(col(Job.id) == job_id).values(**fields))
            announce(session, f"{job_id} {change_kind(fields)}")

    def transition(self, job_id: str, *, from_statuses: Sequence[str], **fields: Any) -> bool:
        """Set fields only if the job is in one of from_statuses; True when it was (atomic claim)."""
        fields.setdefault("updated_at", utcnow())
        with session_scope(self.engine) as session:
            result = session.execute(
                update(Job).where(col(Job.id) == job_id, col(Job.status).in_(list(from_statuses))).values(**fields)
            )
            if rows_changed(result):
                announce(session, f"{job_id} {change_kind(fields)}")
            return bool(rows_changed(result))

    def claim(self, *, worker_id: str, limit: int, lease_until: datetime, pick: Callable[[Job], str]) -> list[Job]:
        """Take up to limit queued jobs, oldest first, for this worker; pick(job) names each one's slot.

        On PostgreSQL the rows are locked with FOR UPDATE SKIP LOCKED in one short transaction, so pods
        asking at once take different jobs and none waits on another; on SQLite (one writer at a time) a
        conditional update per job keeps each claim exclusive."""
        if limit <= 0:
            return []
        now = utcnow()
        if is_postgres(self.engine):
            with session_scope(self.engine) as session:
                stmt = (
                    select(Job)
                    .where(Job.status == JobStatus.queued)
                    .order_by(col(Job.created_at), col(Job.id))
                    .limit(limit)
                    .with_for_update(skip_locked=True)
                )
                jobs = list(session.exec(stmt).all())
                for job in jobs:
                    job.gpu = pick(job)
                    job.status = JobStatus.running
                    job.worker_id, job.lease_expires_at = worker_id, lease_until
                    job.started_at = job.updated_at = now
                    announce(session, f"{job.id} changed")
            return jobs
        claimed: list[Job] = []
        for job in self.queued(limit=limit * 4 + 8):
            if len(claimed) == limit:
                break
            fields: dict[str, Any] = {
                "status": JobStatus.running,
                "started_at": now,
                "worker_id": worker_id,
                "lease_expires_at": lease_until,
            }
            if self.transition(job.id, from_statuses=[JobStatus.queued], gpu=pick(job), **fields):
                claimed.append(self.get(job.id))
        return claimed

    def renew_leases(self, worker_id: str, until: datetime) -> list[str]:
        """Extend the lease of every job running on this worker; the ids renewed."""
        with session_scope(self.engine) as session:
            # updated_at stays: a renewal is no news to the job's watchers.
            result = session.execute(
                update(Job)
                .where(col(Job.status) == JobStatus.running, col(Job.worker_id) == worker_id)
                .values(lease_expires_at=until)
                .returning(col(Job.id))
            )
            return [row[0] for row in result.all()]

    def expired_leases(self, now: datetime, *, other_than: str) -> list[Job]:
        """Running jobs of other workers whose lease ran out before now."""
        with Session(self.engine) as session:
            stmt = select(Job).where(
                Job.status == JobStatus.running,
                col(Job.worker_id) != other_than,
                col(Job.lease_expires_at) < now,
            )
            return list(session.exec(stmt).all())

    def lost_on(self, worker_id: str, since: datetime, error_prefix: str) -> list[Job]:
        """This worker's jobs another pod failed with error_prefix after since (their trainers may live on)."""
        with Session(self.engine) as session:
            stmt = select(Job).where(
                col(Job.worker_id) == worker_id,
                col(Job.status).in_([JobStatus.failed, JobStatus.cancelled]),
                col(Job.error).startswith(error_prefix),
                col(Job.pid).is_not(None),
                col(Job.finished_at) > since,
            )
            return list(session.exec(stmt).all())

    def take_over(self, job_id: str, now: datetime, **fields: Any) -> bool:
        """Set fields on a running job only while its lease is still expired; True for the one pod that did."""
        fields.setdefault("updated_at", utcnow())
        with session_scope(self.engine) as session:
            result = session.execute(
                update(Job)
                .where(col(Job.id) == job_id, col(Job.status) == JobStatus.running, col(Job.lease_expires_at) < now)
                .values(**fields)
            )
            if rows_changed(result):
                announce(session, f"{job_id} {change_kind(fields)}")
            return bool(rows_changed(result))

    def queued(self, limit: int = 50) -> list[Job]:
        """Queued jobs, oldest first (the FIFO order)."""
        with Session(self.engine) as session:
            stmt = (
                select(Job)
                .where(Job.status == JobStatus.queued)
                .order_by(col(Job.created_at), col(Job.id))
                .limit(limit)
            )
            return list(session.exec(stmt).all())

    def running_on(self, worker_id: str) -> list[Job]:
        """Jobs this worker left or has in the running state."""
        with Session(self.engine) as session:
            stmt = select(Job).where(Job.status == JobStatus.running, Job.worker_id == worker_id)
            return list(session.exec(stmt).all())

    def cancel_requested_on(self, worker_id: str) -> list[str]:
        """Ids of running jobs on this worker whose cancel was requested (maybe by another worker)."""
        with Session(self.engine) as session:
            stmt = select(Job.id).where(
                Job.status == JobStatus.running, Job.worker_id == worker_id, col(Job.cancel_requested)
            )
            return list(session.exec(stmt).all())

    def page(
        self,
        *,
        status: str | None = None,
        job_type: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[Job], str | None]:
        """Newest-first page of jobs and the cursor of the next page (None at the end)."""
        with Session(self.engine) as session:
            stmt = select(Job)
            if status:
                stmt = stmt.where(Job.status == status)
            if job_type:
                stmt = stmt.where(Job.type == job_type)
            if cursor:
                created, last_id = decode_cursor(cursor)
                # The leading `created_at <=` is one index range that starts at the cursor: without it the OR
                # makes SQLite gather every older job and sort them (200 ms fifty thousand jobs deep).
                stmt = stmt.where(
                    col(Job.created_at) <= created, or_(col(Job.created_at) < created, col(Job.id) < last_id)
                )
            stmt = stmt.order_by(col(Job.created_at).desc(), col(Job.id).desc()).limit(limit + 1)
            rows = list(session.exec(stmt).all())
        more = len(rows) > limit
        rows = rows[:limit]
        next_cursor = encode_cursor(rows[-1]) if more and rows else None
        return rows, next_cursor

    def counts_by_status(self) -> dict[str, int]:
        """How many jobs are in each status."""
        # Core rather than an ORM session: every health call and metrics scrape asks, and the session cost
        # three times the query.
        with self.engine.connect() as connection:
            rows = connection.execute(self._status_counts).all()
        return {status: count for status, count in rows}

    def durations(self, limit: int = 1000) -> list[tuple[str, str, float]]:
        """(type, status, seconds) of recently finished jobs, for metrics."""
        with Session(self.engine) as session:
            stmt = (
                select(Job.type, Job.status, Job.started_at, Job.finished_at)
                .where(col(Job.finished_at).is_not(None), col(Job.started_at).is_not(None))
                .order_by(col(Job.finished_at).desc())
                .limit(limit)
            )
            rows = session.exec(stmt).all()
        return [(t, s, (f - b).total_seconds()) for t, s, b, f in rows if b and f]

    def delete(self, job_id: str, *, purge_on: str | None = None, paths: Sequence[str] = ()) -> None:
        """Remove one job's row; with purge_on, that pod is asked to delete the job's files (paths) too."""
        with session_scope(self.engine) as session:
            job = session.get(Job, job_id)
            if job is not None:
                session.delete(job)
                kind = f"purge {purge_on} {' '.join(paths)}" if purge_on else "deleted"
                announce(session, f"{job_id} {kind}")


def encode_cursor(job: Job) -> str:
    """An opaque cursor after this job in newest-first order."""
    raw = json.dumps([job.created_at.isoformat(), job.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The (created_at, id) a cursor points after; InvalidInput when it is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, job_id = json.loads(raw)
        after = datetime.fromisoformat(created)
        if after.tzinfo is None:  # ours always carry their zone; a naive one cannot be compared with the column
            raise ValueError("a cursor's time has no zone")
        return after, str(job_id)
    except (ValueError, TypeError) as exc:
        raise InvalidInput("cursor", "is not a cursor this server returned") from exc
