"""The JSON-lines protocol between WarmGenerator and generate_worker: its ops, events, request fields and version."""

# Standard library only, and Python 3.10 syntax: generate_worker.py loads this file in ai-toolkit's environment,
# where lorapod is not installed and the interpreter may be older than lorapod's own.

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any

VERSION = "lorapod-generate/1"

# Requests reach the worker's stdin as one JSON object a line, named by their "op" key.
OP = "op"
OP_GENERATE = "generate"  # the fields of GenerateRequest
OP_CANCEL = "cancel"  # stops the current request at its next denoising step
OP_SHUTDOWN = "shutdown"  # cancels the current request and exits 0; so does the end of stdin

# Events leave on the worker's original stdout, one JSON object a line, named by their "event" key. Fields:
#   ready {pid, device, version}, loading {id, base_model}, progress {id, image, images, step, steps},
#   image {id, index, path, seed, sidecar}, done {id, status, loads, images}, error {id, message, loads, base_model}
EVENT = "event"
EVENT_READY = "ready"
EVENT_LOADING = "loading"
EVENT_PROGRESS = "progress"
EVENT_IMAGE = "image"
EVENT_DONE = "done"
EVENT_ERROR = "error"

# A done event's status; a failed request ends with an error event instead.
STATUS_COMPLETED = "completed"
STATUS_CANCELLED = "cancelled"

PIPELINES = ("auto", "sd15", "sdxl", "flux")
OUTPUT_FORMATS = ("png", "jpg", "webp")


@dataclass(frozen=True)
class GenerateParams:
    """What to generate, declared once: the client's request and the wire request both extend it."""

    base_model: str  # a Hub repo id or an absolute local diffusers folder
    pipeline: str  # one of PIPELINES
    lora_scale: float
    prompts: list[str]
    negative_prompt: str | None
    width: int
    height: int
    steps: int
    guidance_scale: float
    seed: int | None
    num_images: int  # per prompt
    output_format: str  # one of OUTPUT_FORMATS


@dataclass(frozen=True)
class GenerateRequest(GenerateParams):
    """One generate op as it travels: JSON values only, paths as absolute strings."""

    id: str
    lora_path: str | None
    output_dir: str
    log_path: str | None  # when set, the worker sends its stdout and stderr there from this request on

    def to_message(self) -> dict[str, Any]:
        """The request line's JSON object."""
        return {OP: OP_GENERATE, **dataclasses.asdict(self)}

    @classmethod
    def parse(cls, message: dict[str, Any]) -> GenerateRequest:
        """Build a request from a request line; ValueError names the first bad field."""

        def need(name: str, kind: type | tuple[type, ...], optional: bool = False) -> Any:
            value = message.get(name)
            if value is None and optional:
                return None
            # isinstance(True, int) holds, but a boolean is never a valid number here.
            if not isinstance(value, kind) or isinstance(value, bool):
                raise ValueError(f"{name}: missing or of the wrong type")
            return value

        prompts = need("prompts", list)
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise ValueError("prompts: must be a non-empty list of strings")
        scale = need("lora_scale", (int, float), optional=True)
        request = cls(
            id=str(message.get("id")),
            base_model=need("base_model", str),
            pipeline=message.get("pipeline") or "auto",
            lora_path=need("lora_path", str, optional=True),
            lora_scale=1.0 if scale is None else float(scale),
            prompts=prompts,
            negative_prompt=need("negative_prompt", str, optional=True),
            width=need("width", int),
            height=need("height", int),
            steps=need("steps", int),
            guidance_scale=float(need("guidance_scale", (int, float))),
            seed=need("seed", int, optional=True),
            num_images=need("num_images", int),
            output_dir=need("output_dir", str),
            output_format=message.get("output_format") or "png",
            log_path=need("log_path", str, optional=True),
        )
        if request.pipeline not in PIPELINES:
            raise ValueError(f"pipeline: unknown pipeline {request.pipeline!r}")
        if request.output_format not in OUTPUT_FORMATS:
            raise ValueError(f"output_format: unknown format {request.output_format!r}")
        if not os.path.isabs(request.output_dir) or (request.lora_path and not os.path.isabs(request.lora_path)):
            raise ValueError("output_dir and lora_path must be absolute paths")
        if min(request.width, request.height, request.steps, request.num_images) < 1:
            raise ValueError("width, height, steps and num_images must be positive")
        return request
