"""Load on a real server from a second process: start a server, drive it with wrk, read its peak memory.

wrk is Debian's package (`apt-get install wrk`); every HTTP figure runs lorapod and its anchor under the same
wrk settings, alternating rounds, and quotes medians, so a busy machine slows both alike.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable

# The settings: 2 threads, 64 connections, 5 s a round, three alternating rounds.
THREADS, CONNECTIONS, SECONDS, ROUNDS = 2, 64, 5, 3


@dataclass(frozen=True)
class Load:
    """What wrk measured in one round."""

    rps: float
    p50_ms: float
    p99_ms: float
    errors: int  # non-2xx answers plus socket errors


def free_port() -> int:
    """A TCP port nobody listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_up(url: str, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    """Poll url until it answers (any status) or the process dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before answering {url}")
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"server did not answer {url} within {timeout:.0f} s")


@contextlib.contextmanager
def server(
    args: Sequence[str], *, port: int, probe: str = "/", env: dict[str, str] | None = None, cwd: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """A server process started with args (listening on port), stopped with SIGTERM (then SIGKILL) afterwards."""
    log = tempfile.TemporaryFile()  # noqa: SIM115 -- closed in the finally below, after the server stops
    proc = subprocess.Popen(
        list(args), env={**os.environ, **(env or {})}, cwd=cwd or ROOT, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        try:
            wait_until_up(f"http://127.0.0.1:{port}{probe}", proc)
        except Exception:
            log.seek(0)
            sys.stderr.write(log.read().decode(errors="replace")[-4000:])
            raise
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def uvicorn_args(app: str, port: int, *extra: str) -> list[str]:
    """`python -m uvicorn app` as the anchors are served: the same uvicorn, loop and HTTP parser as lorapod's."""
    return [PYTHON, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", *extra]


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident memory so far (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for pid {pid}")


def require_wrk() -> str:
    """The wrk binary, or exit with how to install it."""
    found = shutil.which("wrk")
    if found is None:
        raise SystemExit("wrk is not installed: `apt-get install wrk` (Debian/Ubuntu) or `brew install wrk`")
    return found


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip()).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


def parse_wrk(output: str) -> Load:
    """Requests per second, p50 and p99 latency and errors from `wrk --latency` output."""
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", output, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", output, re.M).group(1))  # type: ignore[union-attr]
    errors = 0
    if found := re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output):
        errors += int(found.group(1))
    if found := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output):
        errors += sum(int(x) for x in found.groups())
    return Load(rps, p50, p99, errors)


def _lua(method: str, body: bytes | None, headers: dict[str, str]) -> str:
    lines = [f'wrk.method = "{method}"']
    if body is not None:
        lines.append(f"wrk.body = {_lua_string(body.decode())}")
    for name, value in headers.items():
        lines.append(f'wrk.headers["{name}"] = {_lua_string(value)}')
    return "\n".join(lines) + "\n"


def _lua_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def wrk(
    url: str,
    *,
    method: str = "GET",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    seconds: int = SECONDS,
    threads: int = THREADS,
    connections: int = CONNECTIONS,
) -> Load:
    """One wrk round against url."""
    binary = require_wrk()
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(_lua(method, body, headers or {}))
    try:
        out = subprocess.run(
            [binary, f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", script.name, url],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    finally:
        os.unlink(script.name)
    return parse_wrk(out)


def alternate(rounds: int, **targets: Callable[[], Load]) -> dict[str, Load]:
    """Run each target once per round, alternating, and give each one's median rps, p50 and p99."""
    seen: dict[str, list[Load]] = {name: [] for name in targets}
    for _ in range(rounds):
        for name, measure in targets.items():
            seen[name].append(measure())
    return {
        name: Load(
            statistics.median(x.rps for x in loads),
            statistics.median(x.p50_ms for x in loads),
            statistics.median(x.p99_ms for x in loads),
            sum(x.errors for x in loads),
        )
        for name, loads in seen.items()
    }
