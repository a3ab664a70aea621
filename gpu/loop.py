"""Calling onto an asyncio event loop from any thread, including the loop's own."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import TypeVarTuple

_Ts = TypeVarTuple("_Ts")


def call_soon(loop: asyncio.AbstractEventLoop | None, callback: Callable[[*_Ts], object], *args: *_Ts) -> None:
    """Run callback(*args) on loop: at once on its own thread, else scheduled; nothing once the loop is closed."""
    if loop is None or loop.is_closed():
        return
    if _running_loop() is loop:
        # Inline rather than scheduled, so the caller sees the effect (a stop begun, a waiter woken) on return.
        callback(*args)
        return
    with contextlib.suppress(RuntimeError):  # the loop closed after the check above: its work is over
        loop.call_soon_threadsafe(callback, *args)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
