"""The calls table's fast paths: group commit, instant /runsync calls stored once, health runs shared."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from sqlalchemy import event, select
from sqlalchemy.engine import Connection, Engine

from app.calls.group_commit import GroupCommit
from app.calls.store import CALLS, Call, CallStatus, CallStore, call_view
from core.contract.dispatcher import SharedRun
from tests.helpers import LiveServer


def store_of(engine: Engine) -> CallStore:
    """A call store with the default retentions."""
    return CallStore(engine, worker_id="w1", run_retention_seconds=1800, runsync_retention_seconds=60)


def stored_ids(engine: Engine) -> set[str]:
    """The ids in the calls table, read on a connection of its own."""
    with engine.connect() as connection:
        return set(connection.execute(select(CALLS.c.id)).scalars())


async def test_each_acknowledged_call_is_committed_and_concurrent_ones_share_commits(engine: Engine) -> None:
    commits: list[int] = []
    event.listen(engine, "commit", lambda _connection: commits.append(1))
    store = store_of(engine)

    async def add_and_check(index: int) -> bool:
        call = store.new({"type": "health", "n": index}, sync=False)
        await store.add(call)
        return call["id"] in stored_ids(engine)  # committed by the time add returns

    assert all(await asyncio.gather(*(add_and_check(i) for i in range(40))))
    assert len(stored_ids(engine)) == 40
    assert len(commits) < 40  # calls that queued while a commit ran went into one transaction


async def test_a_failing_write_fails_alone_in_its_batch(engine: Engine) -> None:
    writes = GroupCommit(engine)
    store = store_of(engine)
    calls = [store.new({"type": "health"}, sync=True) for _ in range(3)]

    def broken(connection: Connection) -> None:
        raise RuntimeError("no")

    results = await asyncio.gather(
        store.add(calls[0]), writes.write(broken), store.add(calls[1]), store.add(calls[2]), return_exceptions=True
    )
    assert isinstance(results[1], RuntimeError)
    assert [r for i, r in enumerate(results) if i != 1] == [None, None, None]
    assert stored_ids(engine) == {call["id"] for call in calls}


async def test_a_call_runs_its_lifecycle_through_group_commit(engine: Engine) -> None:
    ended: list[CallStatus] = []
    store = store_of(engine)
    store.on_end = ended.append
    row = store.new({"type": "lora"}, sync=False)
    await store.add(row)
    call = Call.model_construct(**row)  # as the runner holds a queued call
    started_at = await store.start(call.id)
    assert started_at is not None and await store.start(call.id) is None  # only from IN_QUEUE
    store.report(call.id, {"step": 1}, process_id="train_x")
    ended_call = await store.finish(call, {"loras": []}, started_at=started_at)
    stored = store.get(call.id)
    # The ended call in hand answers as the stored row would, without reading the output back.
    assert ended_call is not None and call_view(ended_call) == call_view(stored)
    assert (stored.status, stored.output, stored.process_id) == ("COMPLETED", {"loras": []}, "train_x")
    assert stored.expires_at is not None and stored.completed_at is not None
    # /run keeps its result 30 minutes, /runsync 60 s: the UPDATE chose the retention by the row's kind.
    kept = stored.expires_at - stored.completed_at
    assert kept.total_seconds() == 1800
    assert not await store.fail(call.id, "late") and ended == ["COMPLETED"]


async def test_shared_run_never_answers_a_call_with_a_run_that_began_before_it() -> None:
    shared: SharedRun[int] = SharedRun()
    runs: list[int] = []
    release = asyncio.Event()

    async def run() -> int:
        runs.append(len(runs) + 1)
        await release.wait()
        return len(runs)

    first = asyncio.ensure_future(shared(run))
    while not runs:  # until the first run has begun
        await asyncio.sleep(0)
    later = [asyncio.ensure_future(shared(run)) for _ in range(5)]
    for _ in range(5):
        await asyncio.sleep(0)
    assert runs == [1]  # the later calls wait for the run after it, all together
    release.set()
    assert await first == 1
    assert await asyncio.gather(*later) == [2] * 5 and runs == [1, 2]


def test_an_instant_runsync_is_stored_once_finished_and_status_answers_the_same(live_server: LiveServer) -> None:
    statements: list[str] = []

    def note(_conn: Connection, _cursor: object, statement: str, *_args: object) -> None:
        if statement.lstrip().upper().startswith(("INSERT INTO CALLS", "UPDATE CALLS")):
            statements.append(statement.split()[0].upper())

    event.listen(live_server.service.engine, "before_cursor_execute", note)
    with httpx.Client(base_url=f"{live_server.url}/v2/pod", timeout=30) as client:
        answer = client.post("/runsync", json={"input": {"type": "health"}})
        assert statements == ["INSERT"]  # stored once, finished: no start or finish updates
        body: dict[str, Any] = answer.json()
        assert answer.status_code == 200 and body["id"].startswith("sync-")
        assert list(body) == ["id", "status", "delayTime", "executionTime", "workerId", "output"]
        assert body["status"] == "COMPLETED" and body["output"]["database"]["ok"] is True
        assert body["workerId"] == "test-worker"
        assert client.get(f"/status/{body['id']}").json() == body
        assert client.get(f"/stream/{body['id']}").json() == {"id": body["id"], "status": "COMPLETED", "stream": []}

        failed = client.post("/runsync", json={"input": {"type": "process_status", "process_id": "train_0"}}).json()
        assert failed["status"] == "FAILED" and "output" not in failed and failed["error"].startswith("process_id")
        assert client.get(f"/status/{failed['id']}").json() == failed
