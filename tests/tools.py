"""System tools some tests need (Debian's tmux and chromium): skipped locally when absent, required in CI."""

from __future__ import annotations

import os
import shutil

import pytest


def require_tool(name: str, why: str) -> str:
    """The tool's path; a skip when it is missing here, a failure when it is missing in CI (CI=true)."""
    path = shutil.which(name)
    if path is None:
        message = f"needs {name} ({why}); .ci/run installs it with apt-get"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path
