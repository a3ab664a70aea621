"""The process table on SQLite and PostgreSQL: FIFO exclusive claims, leases, take-over of lost jobs."""

from __future__ import annotations

import base64
import json
import threading
from collections import Counter
from datetime import timedelta

import pytest
from sqlalchemy.engine import Engine

from core.db import make_engine
from core.errors import InvalidInput
from core.jobs.leases import WORKER_LOST, LeaseKeeper
from core.jobs.rows import Job, JobStatus, JobType, utcnow
from core.jobs.store import JobStore
from tests.helpers import jobs_in_every_state


@pytest.fixture
def store(engine: Engine) -> JobStore:
    return JobStore(engine)


def queue(store: JobStore, count: int) -> list[str]:
    """count queued jobs, created one microsecond-ordered step apart (oldest first)."""
    start = utcnow() - timedelta(hours=1)
    ids = []
    for index in range(count):
        job = Job(
            id=f"train_{index:012x}",
            type=JobType.train,
            status=JobStatus.queued,
            name=f"job{index}",
            created_at=start + timedelta(seconds=index),
        )
        ids.append(store.insert(job).id)
    return ids


def lease(seconds: float = 30) -> object:
    return utcnow() + timedelta(seconds=seconds)


def test_claims_are_fifo_and_mark_the_worker(store: JobStore) -> None:
    ids = queue(store, 5)
    labels = iter(["0", "1"])
    claimed = store.claim(worker_id="pod-a", limit=2, lease_until=lease(), pick=lambda _job: next(labels))
    assert [job.id for job in claimed] == ids[:2]
    for job, gpu in zip(claimed, ["0", "1"], strict=True):
        stored = store.get(job.id)
        assert (stored.status, stored.worker_id, stored.gpu) == (JobStatus.running, "pod-a", gpu)
        assert stored.lease_expires_at is not None and stored.started_at is not None
    # the next claim, by another worker, goes on in order
    again = store.claim(worker_id="pod-b", limit=10, lease_until=lease(), pick=lambda _job: "0")
    assert [job.id for job in again] == ids[2:]
    assert store.claim(worker_id="pod-b", limit=10, lease_until=lease(), pick=lambda _job: "0") == []


def test_concurrent_claims_take_each_job_exactly_once(store: JobStore) -> None:
    ids = queue(store, 60)
    taken: list[tuple[str, str]] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def worker(name: str) -> None:
        try:
            while True:
                jobs = store.claim(worker_id=name, limit=3, lease_until=lease(), pick=lambda _job: "0")
                if not jobs:
                    return
                with lock:
                    taken.extend((job.id, name) for job in jobs)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(f"pod-{n}",)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    counts = Counter(job_id for job_id, _ in taken)
    assert sorted(counts) == sorted(ids) and set(counts.values()) == {1}
    # what the table says agrees with what each claimer was told
    assert {store.get(job_id).worker_id for job_id, _ in taken} == {name for _, name in taken}
    for job_id, name in taken:
        assert store.get(job_id).worker_id == name


def test_renew_extends_only_this_workers_running_leases(store: JobStore) -> None:
    queue(store, 3)
    old = utcnow() - timedelta(seconds=5)
    mine = store.claim(worker_id="pod-a", limit=2, lease_until=old, pick=lambda _job: "0")
    theirs = store.claim(worker_id="pod-b", limit=1, lease_until=old, pick=lambda _job: "0")
    renewed = store.renew_leases("pod-a", lease())
    assert sorted(renewed) == sorted(job.id for job in mine)
    now = utcnow()
    assert [job.id for job in store.expired_leases(now, other_than="pod-a")] == [theirs[0].id]
    assert store.expired_leases(now, other_than="pod-b") == []


def keeper(store: JobStore, worker_id: str, stopped: list[str] | None = None) -> LeaseKeeper:
    sink = stopped if stopped is not None else []
    return LeaseKeeper(
        store=store, worker_id=worker_id, lease_seconds=2, running_here=lambda: [], stop_here=sink.append
    )


def test_lost_worker_fails_started_jobs_and_requeues_unstarted_ones(store: JobStore) -> None:
    queue(store, 3)
    expired = utcnow() - timedelta(seconds=1)
    started, unstarted, cancelling = store.claim(worker_id="dead", limit=3, lease_until=expired, pick=lambda _j: "0")
    store.update(started.id, pid=4242, step=3)
    store.update(cancelling.id, pid=4343, step=1, cancel_requested=True)

    taken = keeper(store, "pod-a").tick()
    assert sorted(taken) == sorted([started.id, unstarted.id, cancelling.id])

    failed = store.get(started.id)
    assert failed.status == JobStatus.failed and failed.finished_at is not None
    assert failed.error is not None and failed.error.startswith(WORKER_LOST) and "'dead'" in failed.error
    requeued = store.get(unstarted.id)
    assert (requeued.status, requeued.worker_id, requeued.gpu, requeued.started_at) == (
        JobStatus.queued,
        None,
        None,
        None,
    )
    assert store.get(cancelling.id).status == JobStatus.cancelled
    # a second pod noticing the same thing finds nothing left to do, and the requeued job runs again
    assert keeper(store, "pod-b").tick() == []
    again = store.claim(worker_id="pod-b", limit=5, lease_until=lease(), pick=lambda _j: "1")
    assert [job.id for job in again] == [unstarted.id]


def test_a_renewing_worker_keeps_its_jobs(store: JobStore) -> None:
    queue(store, 1)
    (job,) = store.claim(worker_id="pod-a", limit=1, lease_until=utcnow() - timedelta(seconds=1), pick=lambda _j: "0")
    store.update(job.id, pid=99, step=1)
    keeper(store, "pod-a").tick()  # renews before anyone looks
    assert keeper(store, "pod-b").tick() == []
    assert store.get(job.id).status == JobStatus.running


def test_a_worker_stops_a_job_another_pod_took_over(store: JobStore) -> None:
    queue(store, 1)
    (job,) = store.claim(worker_id="pod-a", limit=1, lease_until=utcnow() - timedelta(seconds=1), pick=lambda _j: "0")
    store.update(job.id, pid=99, step=1)
    assert keeper(store, "pod-b").tick() == [job.id]  # pod-a was stalled past its lease
    stopped: list[str] = []
    stalled = LeaseKeeper(
        store=store, worker_id="pod-a", lease_seconds=2, running_here=lambda: [job.id], stop_here=stopped.append
    )
    stalled.tick()
    assert stopped == [job.id]


def test_pages_follow_cursors_and_refuse_a_cursor_without_a_time_zone(store: JobStore) -> None:
    ids = queue(store, 5)
    first, cursor = store.page(limit=2)
    assert [job.id for job in first] == ids[:-3:-1] and cursor is not None
    rest, end = store.page(limit=5, cursor=cursor)
    assert [job.id for job in rest] == ids[-3::-1] and end is None
    naive = base64.urlsafe_b64encode(
        json.dumps([first[-1].created_at.replace(tzinfo=None).isoformat(), ids[0]]).encode()
    )
    with pytest.raises(InvalidInput, match="is not a cursor this server returned"):
        store.page(limit=2, cursor=naive.decode())


# ----- the status poll's point read


async def test_read_row_gives_the_job_the_orm_gives(store: JobStore) -> None:
    for job in jobs_in_every_state():
        store.insert(job)
    for job in jobs_in_every_state():
        row = await store.read_row(job.id)
        assert row is not None
        assert store.job_from_row(row).model_dump() == store.get(job.id).model_dump()
    assert await store.read_row("train_000000000999") is None


async def test_read_row_sees_another_pods_write_at_once(engine: Engine, store: JobStore) -> None:
    job = store.insert(jobs_in_every_state()[1])
    before = await store.read_row(job.id)
    other_pod = JobStore(make_engine(engine.url.render_as_string(hide_password=False)))
    try:
        other_pod.update(job.id, step=41, loss=0.1)
        after = await store.read_row(job.id)
        assert after is not None and after != before
        assert (store.job_from_row(after).step, store.job_from_row(after).loss) == (41, 0.1)
        other_pod.delete(job.id)
        assert await store.read_row(job.id) is None
    finally:
        other_pod.engine.dispose()
