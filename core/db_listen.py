"""PostgreSQL LISTEN on the jobs channel: other pods' job changes reach this pod the moment they commit."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from sqlalchemy.engine import Engine

from core.db import JOBS_CHANNEL, is_postgres

log = logging.getLogger("lorapod.listen")

# How often the listening thread looks up from its socket to see whether it should stop.
_WAKE_SECONDS = 0.5
_RETRY_SECONDS = 1.0


class JobChannelListener:
    """A thread on its own connection that hands each notification's payload to on_payload."""

    def __init__(
        self, engine: Engine, on_payload: Callable[[str], None], on_reconnect: Callable[[], None] | None = None
    ) -> None:
        if not is_postgres(engine):
            raise ValueError("LISTEN/NOTIFY needs PostgreSQL")
        # psycopg takes the libpq form of the URL; it is only handed to the driver, never logged.
        self._conninfo = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._on_payload = on_payload
        self._on_reconnect = on_reconnect
        self._stop = threading.Event()
        self._listening = threading.Event()
        self._thread = threading.Thread(target=self._main, name="lorapod-listen", daemon=True)

    def start(self, timeout: float = 10.0) -> None:
        """Start listening and wait until the LISTEN is in place (changes after this are not missed)."""
        self._thread.start()
        self._listening.wait(timeout)

    def stop(self) -> None:
        """Stop the thread (within about half a second)."""
        self._stop.set()
        self._thread.join(timeout=5)

    def _main(self) -> None:
        import psycopg

        first = True
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True, connect_timeout=10) as conn:
                    conn.execute(f"LISTEN {JOBS_CHANNEL}")
                    self._listening.set()
                    if not first and self._on_reconnect is not None:
                        # Notifications sent while the connection was down are lost: look again.
                        self._on_reconnect()
                    first = False
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=_WAKE_SECONDS):
                            self._deliver(note.payload)
            except Exception as exc:
                # The message never holds the password (psycopg reports host and port only).
                log.warning("job channel listener lost its connection (%s); reconnecting", type(exc).__name__)
                self._stop.wait(_RETRY_SECONDS)

    def _deliver(self, payload: str) -> None:
        try:
            self._on_payload(payload)
        except Exception:
            log.exception("handling a job notification failed")
