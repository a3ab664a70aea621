"""The JSON-lines protocol between WarmCaptioner and caption_worker: ops, events, request fields, caption text."""

# Standard library only, and Python 3.10 syntax: caption_worker.py loads this file in ai-toolkit's environment,
# where lorapod is not installed and the interpreter may be older than lorapod's own.

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass
from typing import Any

VERSION = "lorapod-caption/1"

# Requests reach the worker's stdin as one JSON object a line, named by their "op" key.
OP = "op"
OP_CAPTION = "caption"  # the fields of CaptionRequest
OP_CANCEL = "cancel"  # stops the current request before its next image
OP_SHUTDOWN = "shutdown"  # cancels the current request and exits 0; so does the end of stdin

# Events leave on the worker's original stdout, one JSON object a line, named by their "event" key. Fields:
#   ready {pid, device, version}, loading {id, model}, progress {id, index, total, image},
#   caption {id, index, image, path, caption}, done {id, status, loads, model, written, skipped, unreadable},
#   error {id, message, loads, model}
EVENT = "event"
EVENT_READY = "ready"
EVENT_LOADING = "loading"
EVENT_PROGRESS = "progress"
EVENT_CAPTION = "caption"
EVENT_DONE = "done"
EVENT_ERROR = "error"

STATUS_COMPLETED = "completed"
STATUS_CANCELLED = "cancelled"

# Captions are written through hidden temporary siblings with this prefix and renamed into place; a worker
# killed mid-write leaves at most such a hidden file, which the next caption job of the dataset removes.
TEMP_PREFIX = ".lorapod-caption-"
CAPTION_SUFFIX = ".txt"
TRIGGER = "[trigger]"
MAX_CAPTION_CHARS = 4000
MAX_LENGTH_LIMIT = 512
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True)
class CaptionParams:
    """How to caption, declared once: the client's request and the wire request both extend it."""

    model: str  # a Hub repo id or an absolute local folder
    prefix: str
    suffix: str
    trigger_word: str | None
    max_length: int  # new tokens the model may generate per caption
    overwrite: bool  # False: an image that has a caption by the time it is reached keeps it


@dataclass(frozen=True)
class CaptionRequest(CaptionParams):
    """One caption op as it travels: JSON values only, paths as absolute strings."""

    id: str
    images: list[str]
    log_path: str | None  # when set, the worker sends its stdout and stderr there from this request on

    def to_message(self) -> dict[str, Any]:
        """The request line's JSON object."""
        return {OP: OP_CAPTION, **dataclasses.asdict(self)}

    @classmethod
    def parse(cls, message: dict[str, Any]) -> CaptionRequest:
        """Build a request from a request line; ValueError names the first bad field."""

        def need(name: str, kind: type | tuple[type, ...], optional: bool = False) -> Any:
            value = message.get(name)
            if value is None and optional:
                return None
            if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
                raise ValueError(f"{name}: missing or of the wrong type")
            return value

        images = need("images", list)
        if not all(isinstance(p, str) and os.path.isabs(p) for p in images):
            raise ValueError("images: must be a list of absolute paths")
        request = cls(
            id=str(message.get("id")),
            model=need("model", str),
            prefix=need("prefix", str, optional=True) or "",
            suffix=need("suffix", str, optional=True) or "",
            trigger_word=need("trigger_word", str, optional=True),
            max_length=need("max_length", int),
            overwrite=bool(need("overwrite", bool)),
            images=images,
            log_path=need("log_path", str, optional=True),
        )
        if not 1 <= request.max_length <= MAX_LENGTH_LIMIT:
            raise ValueError(f"max_length: must be between 1 and {MAX_LENGTH_LIMIT}")
        return request


def caption_path(image: str) -> str:
    """The caption file of an image: same folder, same stem, .txt (what ai-toolkit reads)."""
    return os.path.splitext(image)[0] + CAPTION_SUFFIX


def compose_caption(text: str, params: CaptionParams) -> str:
    """The caption written: prefix, the model's text and suffix on one line, the trigger word put in.

    The trigger word replaces every [trigger] (a prefix such as "a photo of [trigger]," places it), or is
    prepended when there is none. Without a trigger word, [trigger] stays for ai-toolkit to fill at training.
    """
    parts = (params.prefix.strip(), _SPACES.sub(" ", text).strip(), params.suffix.strip())
    caption = _SPACES.sub(" ", " ".join(part for part in parts if part)).strip()
    trigger = (params.trigger_word or "").strip()
    if trigger:
        if TRIGGER in caption:
            caption = caption.replace(TRIGGER, trigger)
        else:
            caption = f"{trigger}, {caption}" if caption else trigger
    return caption[:MAX_CAPTION_CHARS]
