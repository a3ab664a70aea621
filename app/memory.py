"""How the server's process asks its C library for memory (no imports beyond the standard library: the worker
calls this before anything else loads)."""

from __future__ import annotations

import ctypes
import os

# glibc's mallopt() parameter for the size from which malloc maps a buffer of its own (freed straight to the OS).
M_MMAP_THRESHOLD = -3
BIG_BUFFER_BYTES = 1024 * 1024


def return_big_buffers_to_os() -> bool:
    """Make glibc give every freed buffer of 1 MiB or more back to the OS; False where the C library is not glibc.

    A download chunk passes through several 10 MB buffers (base64, JSON, the database row, the response). glibc
    raises its mmap threshold after the first such buffer is freed and from then on keeps freed ones in each
    thread's heap, which held the server 60-120 MB above its working set. A fixed threshold stops that; each
    big buffer then costs fresh pages instead.
    """
    try:
        if not (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc"):
            return False
        return bool(ctypes.CDLL(None).mallopt(M_MMAP_THRESHOLD, BIG_BUFFER_BYTES))
    except (ValueError, OSError, AttributeError):  # no such confstr name, no C library to load, no mallopt
        return False
