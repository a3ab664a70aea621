"""A job's live events as the CLI sees them, whichever the target: the SSE feed of a pod, or polled statuses."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Event:
    """One event: status, progress, metrics, artifact, log or end, with its JSON data."""

    name: str
    data: Any
    id: str | None = None


def parse_sse_block(block: str) -> Event | None:
    """One text/event-stream block; None for a comment (keep-alive) or an empty block."""
    name, event_id, data = "message", None, []
    for line in block.split("\n"):
        if not line or line.startswith(":"):
            continue
        key, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if key == "event":
            name = value
        elif key == "id":
            event_id = value
        elif key == "data":
            data.append(value)
    if not data:
        return None
    text = "\n".join(data)
    try:
        payload = json.loads(text)
    except ValueError:
        payload = text
    return Event(name, payload, event_id)
