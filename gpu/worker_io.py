"""The stdio plumbing shared by the worker scripts (generate_worker, caption_worker): standard library only.

The workers run in ai-toolkit's Python environment without lorapod installed; run as scripts they load this
module, and their protocol modules, by file path (load_sibling).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import queue
import sys
import tempfile
import threading
import traceback
from collections.abc import Callable
from types import ModuleType
from typing import IO, Any

_HERE = os.path.dirname(os.path.abspath(__file__))
MAX_MESSAGE = 2000


def load_sibling(name: str) -> ModuleType:
    """Load the module beside this file by its path, not through sys.path (a sibling could shadow a library)."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(_HERE, f"{name}.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses looks its module up there
    spec.loader.exec_module(module)
    return module


def make_log(prefix: str) -> Callable[[str], None]:
    """A function writing one line to the worker's log (stderr, which the client points at the job's log)."""

    def log(message: str) -> None:
        print(f"{prefix} {message}", file=sys.stderr, flush=True)

    return log


def take_stdout() -> int:
    """Keep the real stdout for the protocol; from now on fd 1 and sys.stdout write to stderr."""
    sys.stdout.flush()
    protocol_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return protocol_fd


def redirect_output(path: str) -> None:
    """Send fd 1 and fd 2 (library prints, warnings, tracebacks) to the end of the file at path."""
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.dup2(fd, 2)
        os.dup2(fd, 1)
    finally:
        os.close(fd)


def atomic_write(path: str, data: bytes, *, prefix: str = ".") -> None:
    """Write through a hidden temporary sibling renamed into place, so a reader never sees half a file."""
    folder, name = os.path.split(path)
    fd, tmp = tempfile.mkstemp(prefix=f"{prefix}{name}.", suffix=".part", dir=folder)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def error_text(exc: Exception) -> str:
    """An exception as the error event's message, after printing its traceback to the log."""
    traceback.print_exc()
    text = f"{type(exc).__name__}: {exc}"
    if len(text) > MAX_MESSAGE:
        text = text[: MAX_MESSAGE - 1] + "…"
    return text


class Protocol:
    """The event stream: one JSON object per line, safe to write from any thread."""

    def __init__(self, fd: int, *, event_key: str = "event") -> None:
        self._file = os.fdopen(fd, "w", encoding="utf-8", buffering=1)
        self._lock = threading.Lock()
        self._event_key = event_key

    def emit(self, event: str, **fields: Any) -> None:
        """Write one event and flush it."""
        line = json.dumps({self._event_key: event, **fields}, ensure_ascii=False)
        with self._lock:
            self._file.write(line + "\n")
            self._file.flush()


class Inbox:
    """Reads stdin on a thread: requests go to a queue, a cancel sets a flag the running request checks."""

    def __init__(self, protocol: Protocol, wire: ModuleType, request_op: str) -> None:
        self.requests: queue.Queue[dict[str, Any]] = queue.Queue()
        self.cancel = threading.Event()
        self._protocol = protocol
        self._wire = wire
        self._request_op = request_op

    def start(self, stream: IO[str]) -> None:
        """Read stream until its end on a daemon thread."""
        threading.Thread(target=self._read, args=(stream,), name="inbox", daemon=True).start()

    def _read(self, stream: IO[str]) -> None:
        wire = self._wire
        for raw in stream:
            if not raw.strip():
                continue
            try:
                message = json.loads(raw)
            except ValueError:
                self._protocol.emit(wire.EVENT_ERROR, id=None, message="a request line is not JSON")
                continue
            op = message.get(wire.OP) if isinstance(message, dict) else None
            if op == wire.OP_CANCEL:
                self.cancel.set()
            elif op == self._request_op:
                # A cancel that arrived after the previous request ended must not hit this one.
                self.cancel.clear()
                self.requests.put(message)
            elif op == wire.OP_SHUTDOWN:
                self.cancel.set()
                self.requests.put(message)
            else:
                self._protocol.emit(
                    wire.EVENT_ERROR,
                    id=message.get("id") if isinstance(message, dict) else None,
                    message=f"unknown op {op!r}",
                )
        # The client is gone (or closed our stdin): stop what runs and exit.
        self.cancel.set()
        self.requests.put({wire.OP: wire.OP_SHUTDOWN})


def serve(
    wire: ModuleType,
    request_op: str,
    log: Callable[[str], None],
    make_engine: Callable[[Protocol, threading.Event], Any],
    handle: Callable[[Any, Protocol, dict[str, Any]], None],
) -> int:
    """Serve requests until shutdown or the end of stdin; make_engine(protocol, cancel) loads the libraries."""
    protocol = Protocol(take_stdout(), event_key=wire.EVENT)  # first, before any library can print
    inbox = Inbox(protocol, wire, request_op)
    inbox.start(sys.stdin)
    engine = make_engine(protocol, inbox.cancel)
    log(f"worker {os.getpid()} ready on {engine.device}")
    protocol.emit(wire.EVENT_READY, pid=os.getpid(), device=engine.device, version=wire.VERSION)
    while True:
        message = inbox.requests.get()
        if message.get(wire.OP) == wire.OP_SHUTDOWN:
            log("shutting down")
            return 0
        handle(engine, protocol, message)
