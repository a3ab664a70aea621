"""The one rule for names callers choose: datasets, trainings (LoRA names) and download bundles."""

from __future__ import annotations

import re

from core.errors import InvalidInput

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
NAME_RULE = "must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"


def is_valid_name(value: object) -> bool:
    """Whether value follows the name rule."""
    return isinstance(value, str) and NAME_RE.fullmatch(value) is not None


def check_name(value: object, field: str) -> str:
    """value when it follows the name rule, else InvalidInput naming field."""
    if not is_valid_name(value):
        raise InvalidInput(field, NAME_RULE)
    assert isinstance(value, str)
    return value
