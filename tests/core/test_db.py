"""The database layer: PostgreSQL URLs, migrations from several pods at once, and the jobs channel."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import time
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, select, text
from sqlalchemy.engine import Engine

from core.db import MIGRATIONS_DIR, database_url, make_engine, migrate, safe_url
from core.db_listen import JobChannelListener
from core.errors import InvalidInput
from core.jobs.rows import Job, JobStatus, JobType, utcnow
from core.jobs.store import JobStore
from tests.helpers import REPO_ROOT, fresh_postgres


def test_postgres_urls_go_through_psycopg_3() -> None:
    assert database_url("postgresql://u:p@db:5432/lorapod").drivername == "postgresql+psycopg"
    assert database_url("postgres://u:p@db/lorapod").drivername == "postgresql+psycopg"
    assert database_url("postgresql+psycopg://u:p@db/lorapod").drivername == "postgresql+psycopg"
    with pytest.raises(InvalidInput) as caught:
        database_url("postgresql+psycopg2://u:p@db/lorapod")
    assert caught.value.field == "LORAPOD_DATABASE_URL" and "psycopg 3" in caught.value.message
    with pytest.raises(InvalidInput) as caught:
        database_url("not a url")
    assert caught.value.field == "LORAPOD_DATABASE_URL"


def test_a_missing_driver_names_the_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # what an install without the extra sees
    with pytest.raises(InvalidInput) as caught:
        make_engine("postgresql+psycopg://u:s3cret@db/lorapod")
    assert "lorapod[postgres]" in caught.value.message and "s3cret" not in caught.value.message


def test_the_loggable_url_hides_the_password() -> None:
    engine = make_engine("postgresql://lorapod:s3cret-pw@db.internal:5432/jobs")
    try:
        shown = safe_url(engine)
        assert "s3cret-pw" not in shown and "db.internal" in shown and "***" in shown
    finally:
        engine.dispose()


def test_concurrent_start_ups_migrate_once(tmp_path: Path) -> None:
    with fresh_postgres() as url:
        env = {**os.environ, "LORAPOD_DATABASE_URL": url, "LORAPOD_WORKSPACE": str(tmp_path / "ws")}
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "app", "migrate"],
                cwd=REPO_ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for _ in range(4)
        ]
        outputs = [proc.communicate(timeout=120)[0] for proc in procs]
        assert [proc.returncode for proc in procs] == [0, 0, 0, 0], outputs
        assert all("s3cret" not in out for out in outputs)
        engine = make_engine(url)
        try:
            with engine.connect() as connection:
                versions = connection.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
            assert versions == [ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()]
            tables = set(inspect(engine).get_table_names())
            assert {"jobs", "calls", "alembic_version"} <= tables
            assert "lease_expires_at" in {c["name"] for c in inspect(engine).get_columns("jobs")}
            migrate(engine)  # and once more is a no-op
        finally:
            engine.dispose()


def test_job_changes_are_announced_to_listeners() -> None:
    with fresh_postgres() as url:
        engine = make_engine(url)
        migrate(engine)
        store = JobStore(engine)
        heard: queue.Queue[str] = queue.Queue()
        listener = JobChannelListener(engine, heard.put)
        listener.start()
        try:
            store.insert(Job(id="train_00000000000a", type=JobType.train, status=JobStatus.queued, name="a"))
            store.update("train_00000000000a", cancel_requested=True)
            store.update("train_00000000000a", step=3)
            store.delete("train_00000000000a")
            got = [heard.get(timeout=10) for _ in range(4)]
        finally:
            listener.stop()
            engine.dispose()
        assert got == [
            "train_00000000000a queued",
            "train_00000000000a cancel",
            "train_00000000000a changed",
            "train_00000000000a deleted",
        ]


def test_the_listener_outlives_a_dropped_connection() -> None:
    with fresh_postgres() as url:
        engine = make_engine(url)
        migrate(engine)
        heard: queue.Queue[str] = queue.Queue()
        reconnected: queue.Queue[bool] = queue.Queue()
        listener = JobChannelListener(engine, heard.put, on_reconnect=lambda: reconnected.put(True))
        listener.start()
        try:
            with engine.connect() as connection:
                connection.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE query LIKE 'LISTEN %' AND pid <> pg_backend_pid()"
                    )
                )
                connection.commit()
            assert reconnected.get(timeout=20) is True
            deadline = time.monotonic() + 20
            while heard.empty() and time.monotonic() < deadline:
                JobStore(engine).insert(
                    Job(id=f"train_{time.monotonic_ns() % 10**12:012d}", type=JobType.train, status="queued", name="b")
                )
                time.sleep(0.2)
            assert heard.get(timeout=1).endswith(" queued")
        finally:
            listener.stop()
            engine.dispose()


def test_an_older_database_migrates_to_head_and_an_engine_is_migrated_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from alembic import command
    from alembic.config import Config

    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0003_leases")  # a database an older lorapod left behind
    assert "request_hash" not in {c["name"] for c in inspect(engine).get_columns("jobs")}

    upgrades: list[str] = []
    real_upgrade = command.upgrade
    monkeypatch.setattr(command, "upgrade", lambda cfg, rev: (upgrades.append(rev), real_upgrade(cfg, rev)))
    migrate(engine)
    migrate(engine)  # the same engine again: already at head, Alembic is not asked
    other = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    migrate(other)  # another engine checks for itself
    try:
        assert upgrades == ["head", "head"]
        with engine.connect() as connection:
            version = connection.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
        assert version == ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()
        assert "request_hash" in {c["name"] for c in inspect(engine).get_columns("jobs")}
    finally:
        engine.dispose()
        other.dispose()


def test_json_columns_store_what_they_are_given(engine: Engine) -> None:
    from app.calls.store import CALLS

    output = {"name": "zdjęcie 猫.png", "nested": [1, 2.5, None, {"deep": [True]}], "ratio": float("nan")}
    with engine.begin() as connection:
        connection.execute(
            CALLS.insert().values(
                id="c1",
                status="COMPLETED",
                input={"type": "health"},
                output=output,
                sync=True,
                retries=0,
                created_at=utcnow(),
            )
        )
    with engine.connect() as connection:
        stored = connection.execute(select(CALLS.c.input, CALLS.c.output).where(CALLS.c.id == "c1")).one()
        raw = connection.execute(text("SELECT CAST(output AS TEXT) FROM calls WHERE id = 'c1'")).scalar_one()
    assert stored.input == {"type": "health"}
    assert stored.output == {**output, "ratio": None}  # NaN is not JSON: PostgreSQL would refuse the row
    assert "zdjęcie 猫.png" in raw  # UTF-8 as it is, not \\u escapes
