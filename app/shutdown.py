"""Graceful shutdown: on SIGTERM/SIGINT, open event streams end with a final event before uvicorn waits for them.

uvicorn stops accepting connections on a signal, then waits for the open ones to finish before the app's
lifespan (and so the job service) shuts down. A Server-Sent Events stream never finishes by itself, so without
this one `curl -N .../events` client kept the process alive until `docker stop` killed it. Running trainers are
not touched: they run in their own process groups and the next start adopts them.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from types import FrameType

import uvicorn
from fastapi import FastAPI

from app.memory import freeze_start_up_objects

log = logging.getLogger("lorapod.shutdown")


def install_drain(app: FastAPI) -> asyncio.Event:
    """Give the app its `draining` event, set once shutdown begins (call on the serving loop)."""
    event = asyncio.Event()
    app.state.draining = event
    app.state.loop = asyncio.get_running_loop()
    return event


def begin_drain(app: FastAPI) -> None:
    """Tell open streams and the readiness probe that the server is stopping; safe from any thread or handler."""
    event: asyncio.Event | None = getattr(app.state, "draining", None)
    loop: asyncio.AbstractEventLoop | None = getattr(app.state, "loop", None)
    if event is None or loop is None or loop.is_closed():
        return
    loop.call_soon_threadsafe(_drain, event)


def _drain(event: asyncio.Event) -> None:
    # On the loop, not in the signal handler: logging there could interrupt a log call midway.
    if not event.is_set():
        log.info("shutting down: ending open event streams; running trainers keep running")
    event.set()


class GracefulServer(uvicorn.Server):
    """uvicorn's server, draining the app's streams when a signal asks it to stop (and, once started, telling the
    garbage collector to leave start-up's objects alone)."""

    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self.lorapod_app = app

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn's start-up (the app's lifespan included), then the collector told to leave its objects alone."""
        await super().startup(sockets)
        freeze_start_up_objects()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """Begin the drain, then let uvicorn stop as usual (a second SIGINT still forces it)."""
        begin_drain(self.lorapod_app)
        super().handle_exit(sig, frame)
