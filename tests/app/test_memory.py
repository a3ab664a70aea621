"""The server's malloc setting: freed big buffers go back to the OS instead of staying in the heap."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.helpers import REPO_ROOT

# A child process frees a 20 MB block that glibc's adaptive threshold put in the heap under a live small block,
# and prints how much of it its RSS still holds.
RETAINED = """
import ctypes, sys
from pathlib import Path
from app.memory import return_big_buffers_to_os
if sys.argv[1] == "set":
    assert return_big_buffers_to_os()
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
size = 20 * 1024 * 1024
def rss():
    return next(int(l.split()[1]) for l in Path("/proc/self/status").read_text().splitlines() if l.startswith("VmRSS:"))
first = libc.malloc(size); ctypes.memset(first, 1, size); libc.free(first)  # glibc raises its threshold here
block = libc.malloc(size); ctypes.memset(block, 1, size)
pin = libc.malloc(64 * 1024); ctypes.memset(pin, 1, 64 * 1024)  # above the block: the heap cannot shrink past it
before = rss() - size // 1024
libc.free(block)
print((rss() - before) // 1024)
"""


def retained_mb(mode: str) -> int:
    """MB of a freed 20 MB block the child's RSS still holds, with the setting made ("set") or not."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    env.pop("MALLOC_MMAP_THRESHOLD_", None)
    out = subprocess.run([sys.executable, "-c", RETAINED, mode], env=env, capture_output=True, text=True, check=True)
    return int(out.stdout)


@pytest.mark.skipif(not (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc"), reason="glibc only")
def test_a_freed_big_buffer_leaves_the_process_once_the_threshold_is_fixed() -> None:
    assert retained_mb("unset") >= 15  # glibc's default keeps it: what held the server over 150 MB
    assert retained_mb("set") <= 2


# A child serves the app with lorapod's server class and reports the collector's state once it has started.
SERVED = """
import asyncio, gc, tempfile
from pathlib import Path
import uvicorn
from app.main import create_app
from app.shutdown import GracefulServer
from tests.helpers import make_settings
app = create_app(make_settings(Path(tempfile.mkdtemp())))
server = GracefulServer(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"), app)
async def main():
    serving = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    print(gc.get_freeze_count(), len(gc.get_objects(generation=2)), gc.get_threshold()[0])
    server.should_exit = True
    await serving
asyncio.run(main())
"""


def test_the_server_freezes_what_start_up_built_once_it_has_started() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    out = subprocess.run([sys.executable, "-c", SERVED], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    frozen, oldest_generation, young_threshold = map(int, out.stdout.split())
    assert frozen > 100_000  # modules, the app, the ORM's mappers, pydantic's schemas
    assert oldest_generation < frozen // 20  # what full collections still walk
    assert young_threshold == 7000
