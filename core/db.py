"""Database engine, sessions and schema migrations (Alembic owns the schema)."""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

from pydantic_core import to_json
from sqlalchemy import event, text
from sqlalchemy.engine import URL, Connection, CursorResult, Engine, Result, make_url
from sqlalchemy.exc import ArgumentError
from sqlmodel import Session, create_engine

from core.errors import InvalidInput

# The migrations ship inside the package, so a non-editable install migrates from any folder.
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# Any constant shared by every lorapod: concurrent start-ups queue on it and migrate one after another.
MIGRATION_LOCK_ID = 0x6C6F7261706F64  # "lorapod"
# The channel pods announce job changes on (PostgreSQL LISTEN/NOTIFY).
JOBS_CHANNEL = "lorapod_jobs"

# Engines this process has brought to head. Migrating one again (the job service's start after the
# serverless start-up checks) has nothing to do, and loading Alembic's scripts to find that out costs a
# cold start's first job tens of milliseconds.
_at_head: weakref.WeakSet[Engine] = weakref.WeakSet()


def database_url(raw: str) -> URL:
    """The SQLAlchemy URL for raw; PostgreSQL always through psycopg 3 (the `postgres` extra)."""
    try:
        url = make_url(raw)
    except ArgumentError as exc:
        raise InvalidInput("LORAPOD_DATABASE_URL", "is not a database URL (e.g. postgresql+psycopg://...)") from exc
    if url.drivername in ("postgresql", "postgres"):
        # Plain postgresql:// would mean psycopg2, which lorapod does not ship.
        url = url.set(drivername="postgresql+psycopg")
    if url.drivername.startswith("postgresql") and url.drivername != "postgresql+psycopg":
        raise InvalidInput("LORAPOD_DATABASE_URL", "PostgreSQL is supported through psycopg 3: postgresql+psycopg://")
    if url.drivername == "postgresql+psycopg":
        try:
            import psycopg  # noqa: F401
        except ImportError as exc:
            raise InvalidInput(
                "LORAPOD_DATABASE_URL", "PostgreSQL needs its driver: pip install 'lorapod[postgres]'"
            ) from exc
    return url


def is_postgres(engine: Engine | Connection) -> bool:
    """True when engine talks to PostgreSQL (several pods may share it)."""
    return engine.dialect.name == "postgresql"


def safe_url(engine: Engine) -> str:
    """The engine's URL with its password masked, the only form that may be logged."""
    return engine.url.render_as_string(hide_password=True)


def make_engine(url: str) -> Engine:
    """An engine for url; SQLite gets WAL, a busy timeout and cross-thread use."""
    if url.startswith("sqlite"):
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, json_serializer=json_column_text
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    # Progress writers, SSE readers and the lease keeper share the pool; the default 5+10 is tight.
    return create_engine(
        database_url(url), pool_pre_ping=True, pool_size=10, max_overflow=20, json_serializer=json_column_text
    )


def json_column_text(value: Any) -> str:
    """The text a JSON column stores: compact UTF-8 JSON; NaN and infinities become null (PostgreSQL refuses them).

    Every RunPod-style call writes its input and output; pydantic-core writes a health report three times as fast
    as json.dumps, which was a twelfth of such a call's CPU.
    """
    return to_json(value, inf_nan_mode="null").decode()


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    # WAL lets readers (status polls, SSE) run while a job writes progress; the busy timeout
    # makes concurrent writers wait instead of failing with "database is locked".
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest Alembic revision (once per engine: later calls return at once)."""
    if engine in _at_head:
        return
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as connection:
        if is_postgres(connection):
            # Held to the end of this transaction: a second pod starting now waits here, then finds
            # the schema at head and has nothing to do (PostgreSQL's DDL is transactional).
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_ID})
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
    _at_head.add(engine)


def rows_changed(result: Result[Any]) -> int:
    """How many rows an UPDATE or DELETE touched (SQLModel types every result as a plain Result)."""
    return cast(CursorResult[Any], result).rowcount


def announce(connection: Connection | Session, payload: str) -> None:
    """Tell every pod listening on the jobs channel, when this transaction commits (PostgreSQL only)."""
    bind = connection.get_bind() if isinstance(connection, Session) else connection
    if is_postgres(bind):
        connection.execute(text("SELECT pg_notify(:channel, :payload)"), {"channel": JOBS_CHANNEL, "payload": payload})


def ping(engine: Engine) -> bool:
    """True when the database answers a trivial query."""
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        return True
    except Exception:
        return False
