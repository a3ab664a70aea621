"""Turning pydantic validation errors into one clear sentence that names the field."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from core.errors import InvalidInput

M = TypeVar("M", bound=BaseModel)


def field_path(loc: tuple[Any, ...] | list[Any], prefix: str = "") -> str:
    """A pydantic error location as a dotted path with [i] indexes, e.g. files[2].content."""
    out = prefix
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "input"


def invalid_from(exc: ValidationError, prefix: str = "") -> InvalidInput:
    """The first validation error as InvalidInput(field, reason)."""
    first = exc.errors(include_url=False)[0]
    loc = [p for p in first.get("loc", ()) if not (isinstance(p, str) and p.startswith("function-"))]
    reason = first.get("msg", "is invalid")
    if first.get("type") == "missing":
        reason = "is required"
    elif first.get("type") == "extra_forbidden":
        reason = "is not a known field"
    reason = reason.removeprefix("Value error, ")
    return InvalidInput(field_path(loc, prefix), reason[:1].lower() + reason[1:] if reason else "is invalid")


def parse(model: type[M], data: Any, *, prefix: str = "") -> M:
    """Validate data against model, raising InvalidInput naming the first bad field."""
    if not isinstance(data, dict):
        raise InvalidInput(prefix or "input", "must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise invalid_from(exc, prefix) from exc


# No contract input is more than a few levels deep; far deeper JSON only exists to exhaust recursion.
MAX_JSON_DEPTH = 64
_CONTAINERS = (dict, list)


def check_depth(value: Any, field: str, limit: int = MAX_JSON_DEPTH) -> None:
    """InvalidInput when lists and objects nest deeper than limit (checked without recursion)."""
    # Every /runsync body passes here twice: only containers are stacked, so a flat input costs one loop.
    stack: list[tuple[dict[Any, Any] | list[Any], int]] = [(value, 1)] if isinstance(value, _CONTAINERS) else []
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            raise InvalidInput(field, f"is nested deeper than {limit} levels")
        for child in node.values() if isinstance(node, dict) else node:
            if isinstance(child, _CONTAINERS):
                stack.append((child, depth + 1))
