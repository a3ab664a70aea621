"""call_soon: onto an event loop from another thread, from the loop itself, and onto a closed loop."""

from __future__ import annotations

import asyncio
import threading

import pytest

from gpu.loop import call_soon


async def test_from_another_thread_it_runs_on_the_loop_thread() -> None:
    loop = asyncio.get_running_loop()
    ran = asyncio.Event()
    seen: list[tuple[str, int, threading.Thread]] = []

    def callback(name: str, number: int) -> None:
        seen.append((name, number, threading.current_thread()))
        ran.set()

    thread = threading.Thread(target=call_soon, args=(loop, callback, "x", 1))
    thread.start()
    thread.join()
    assert seen == []  # scheduled, not run on the calling thread
    await asyncio.wait_for(ran.wait(), 5)
    assert seen == [("x", 1, threading.current_thread())]


async def test_from_the_loop_itself_it_runs_before_returning() -> None:
    seen: list[int] = []
    call_soon(asyncio.get_running_loop(), seen.append, 7)
    assert seen == [7]


def test_a_loop_that_is_not_running_gets_it_when_it_runs() -> None:
    loop = asyncio.new_event_loop()
    try:
        seen: list[str] = []
        call_soon(loop, seen.append, "later")
        assert seen == []
        loop.run_until_complete(asyncio.sleep(0))
        assert seen == ["later"]
    finally:
        loop.close()


def test_a_closed_loop_drops_the_call() -> None:
    loop = asyncio.new_event_loop()
    loop.close()
    seen: list[int] = []
    call_soon(loop, seen.append, 1)
    assert seen == []


def test_a_loop_closing_after_the_check_drops_the_call(monkeypatch: pytest.MonkeyPatch) -> None:
    loop = asyncio.new_event_loop()
    loop.close()
    # As if the loop closed between call_soon's check and its call_soon_threadsafe.
    monkeypatch.setattr(loop, "is_closed", lambda: False)
    seen: list[int] = []
    call_soon(loop, seen.append, 1)
    assert seen == []


def test_no_loop_drops_the_call() -> None:
    seen: list[int] = []
    call_soon(None, seen.append, 1)
    assert seen == []
