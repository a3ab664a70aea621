"""The nesting limit on contract inputs: the limit itself passes, one level more is refused (lists and objects)."""

from __future__ import annotations

from typing import Any

import pytest

from core.contract.validation import check_depth
from core.errors import InvalidInput


def nested(levels: int, *, container: str) -> Any:
    """levels containers one inside the other (a list of lists, or objects under key "x"), innermost empty."""
    value: Any = [] if container == "list" else {}
    for _ in range(levels - 1):
        value = [1, value, "s"] if container == "list" else {"a": 1, "x": value}
    return value


@pytest.mark.parametrize("container", ["list", "dict"])
def test_the_limit_itself_passes_and_one_level_more_is_refused(container: str) -> None:
    check_depth(nested(5, container=container), "input", limit=5)
    with pytest.raises(InvalidInput) as raised:
        check_depth(nested(6, container=container), "input", limit=5)
    assert raised.value.field == "input" and "deeper than 5 levels" in raised.value.message


def test_a_deep_branch_beside_flat_ones_is_found_and_scalars_pass() -> None:
    mixed = {"flat": [1, 2, {"b": None}], "deep": {"k": [nested(4, container="list")]}}
    check_depth(mixed, "body", limit=7)  # object, object, list, then four lists
    with pytest.raises(InvalidInput):
        check_depth(mixed, "body", limit=6)
    for scalar in (None, 3, "text", 1.5):
        check_depth(scalar, "body", limit=1)
