"""The RunPod-compatible routes' shapes, as the cloud's queue API answers them."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from app.calls.store import CallStatus
from app.schemas import Schema, examples

STATE_EXAMPLE: dict[str, Any] = {
    "id": "0b3f5f6e-8a8c-4c1e-9d53-1c2d3e4f5a6b-u1",
    "status": "IN_PROGRESS",
    "delayTime": 12,
    "executionTime": 5230,
    "workerId": "pod-1",
    "output": {
        "process_id": "train_ab12cd34ef56",
        "status": "running",
        "step": 250,
        "total_steps": 1000,
        "percent": 25.0,
        "eta_seconds": 394.7,
        "loss": 0.21,
    },
}


class CallAccepted(Schema):
    """A call's id and status: queued, cancelled, or queued again."""

    model_config = examples({"id": "0b3f5f6e-8a8c-4c1e-9d53-1c2d3e4f5a6b-u1", "status": "IN_QUEUE"})

    id: str = Field(description="The request id to pass to `/status`, `/stream`, `/cancel`.")
    status: CallStatus


class CallState(Schema):
    """A call in the cloud's /status shape; `output`, `error` and `workerId` appear only when there are some."""

    model_config = examples(STATE_EXAMPLE)

    id: str
    status: CallStatus
    delayTime: int | None = Field(default=None, description="Milliseconds queued.")
    executionTime: int | None = Field(default=None, description="Milliseconds running.")
    workerId: str | None = None
    output: Any = Field(default=None, description="The latest progress while it runs; the result at the end.")
    error: str | None = Field(default=None, description="Why the call failed.")


class StreamItem(Schema):
    """One progress update."""

    output: Any = None


class CallStream(Schema):
    """Progress updates since the last read; each is returned once."""

    model_config = examples(
        {"id": "0b3f...-u1", "status": "IN_PROGRESS", "stream": [{"output": {"status": "running", "step": 3}}]}
    )

    id: str
    status: CallStatus
    stream: list[StreamItem]


class PurgeResult(Schema):
    """How many queued calls were dropped."""

    model_config = examples({"removed": 2, "status": "completed"})

    removed: int
    status: str


class CallCounts(Schema):
    """Calls by state, over the calls whose results are still kept."""

    completed: int
    failed: int
    inProgress: int
    inQueue: int
    retried: int


class Workers(Schema):
    """This pod is the endpoint's one worker: idle or running."""

    idle: int
    running: int


class EndpointHealth(Schema):
    """Call counts and workers (RunPod /health)."""

    model_config = examples(
        {
            "jobs": {"completed": 1, "failed": 0, "inProgress": 1, "inQueue": 0, "retried": 0},
            "workers": {"idle": 0, "running": 1},
        }
    )

    jobs: CallCounts
    workers: Workers


class RunRequest(Schema):
    """A call: the contract's `{"input": {"type": ..., ...}}`, with RunPod's optional `policy`."""

    model_config = examples(
        {"input": {"type": "train", "training_name": "my_dataset", "trigger_word": "sks", "steps": 1000}}
    )

    input: dict[str, Any] = Field(description="The contract payload: `type` and its fields (see the README).")
    policy: dict[str, Any] | None = Field(
        default=None,
        description="`executionTimeout` (ms, 5000 to 7 days) is honoured; `ttl` and `lowPriority` are accepted.",
    )


def run_request_body(example: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI requestBody of /run and /runsync (read by hand, to enforce RunPod's payload limits first)."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": RunRequest.model_json_schema(), "example": example}},
        }
    }
