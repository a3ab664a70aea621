"""Alembic environment: runs against lorapod's configured database or a passed-in connection."""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

# Migrations are written by hand; the metadata is only a guide for `alembic revision --autogenerate`,
# which would also need the adapter's calls table (app.calls.store), left out so core never imports app.
import core.jobs.rows  # noqa: F401  (registers the jobs table on SQLModel.metadata)
from core.db import make_engine
from core.settings import Settings

config = context.config
target_metadata = SQLModel.metadata


def run_migrations() -> None:
    """Apply migrations on the given connection, or on one opened from the settings."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    settings = Settings()
    settings.workspace.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.effective_database_url)
    with engine.begin() as conn:
        _run(conn)


def _run(connection) -> None:  # type: ignore[no-untyped-def]
    # render_as_batch lets later migrations alter SQLite tables (which have no ALTER COLUMN).
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported; run against a database")
run_migrations()
