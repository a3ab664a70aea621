"""RunPod's queue API on the pod: `/v2/{endpoint_id}/run`, `/runsync`, `/status`, `/stream`, `/cancel`, ...

The stock client works unchanged: `runpod.Endpoint("any-id")` with `RUNPOD_ENDPOINT_BASE_URL=http://host:port/v2`.
Where the SDK's own `--rp_serve_api` server differs from the cloud, these routes follow the cloud: /run queues
and runs in the background, /status and /stream are GET, results are kept 30 min (/run) or 60 s (/runsync),
and a body over 10 MB (/run) or 20 MB (/runsync) is refused with 413 `{"error": ...}` before it is read whole.

`endpoint_id` is accepted and ignored: one pod serves one endpoint. `policy.executionTimeout` (ms, 5 s to
7 days) is honoured: past it the call ends TIMED_OUT and its process is cancelled; no timeout applies without
it (the cloud's 10-minute endpoint default would cut trainings short). `webhook` is honoured as on the cloud: when
the call ends, its /status body is POSTed there, signed (Standard Webhooks, LORAPOD_WEBHOOK_SECRET) and retried.
`policy.ttl`, `lowPriority` and `s3Config` are accepted and ignored. Each call runs through the core's one
dispatcher, exactly as on serverless; calls persist in the `calls` table, so /status keeps answering across
restarts (a call that was running when the server stopped is FAILED). A call is answered only once its row is
committed (group commit, off the event loop), so an acknowledged /run survives even `kill -9`. An instant
/runsync (health, listings: core.contract.dispatcher.INSTANT_TYPES) runs inline, beside the queue's slots, and
is stored once, finished. This module mirrors the HTTP API only; it does not import the runpod SDK.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response
from starlette.datastructures import State

from app.calls.responses import CallResponse
from app.calls.runner import CallRunner
from app.calls.store import CallStatus, call_view
from app.calls.webhooks import checked_webhook
from app.deps import limit_body
from app.errors import error_responses
from app.schemas.runpod import CallAccepted, CallState, CallStream, EndpointHealth, PurgeResult, run_request_body
from core.contract.validation import MAX_JSON_DEPTH, check_depth
from core.errors import InvalidInput, LorapodError
from core.jobs.service import JobService
from core.settings import Settings

router = APIRouter(prefix="/v2/{endpoint_id}", tags=["runpod"])

EndpointId = Annotated[str, Path(max_length=128, description="Any endpoint id; ignored (one pod, one endpoint).")]
RequestId = Annotated[str, Path(min_length=1, max_length=64, description="The request id /run or /runsync returned.")]
DEFAULT_RUNSYNC_WAIT_MS = 90_000
MIN_RUNSYNC_WAIT_MS, MAX_RUNSYNC_WAIT_MS = 1_000, 300_000
# The cloud's bounds for policy.executionTimeout: 5 seconds to 7 days.
MIN_TIMEOUT_MS, MAX_TIMEOUT_MS = 5_000, 7 * 24 * 3600 * 1000

RUN_EXAMPLE = {"input": {"type": "train", "training_name": "my_dataset", "trigger_word": "sks", "steps": 1000}}


def get_runner(request: Request) -> CallRunner:
    """The app's call runner, made on first use for the app's current job service."""
    return runner_of(request.app.state)


def runner_of(state: State) -> CallRunner:
    """The call runner kept on an app's state, made on first use for the app's current job service."""
    service: JobService = state.service
    runner: CallRunner | None = getattr(state, "runpod_calls", None)
    if runner is None or runner.service is not service:
        runner = CallRunner(service)
        state.runpod_calls = runner
    return runner


async def read_request(request: Request, limit: int) -> tuple[dict[str, Any], int | None, str | None]:
    """The `input`, policy.executionTimeout and webhook of a body capped at limit bytes (413 beyond, 400 if bad)."""
    raw = await limit_body(request, limit, field="input").body()
    return parse_call_body(raw, request.app.state.service.settings)


def parse_call_body(raw: bytes, settings: Settings) -> tuple[dict[str, Any], int | None, str | None]:
    """The `input`, policy.executionTimeout and webhook of a /run or /runsync body (LorapodError when bad)."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise LorapodError("body: is not valid JSON", field="body") from None
    except RecursionError:  # the decoder's own guard: far deeper than any call
        raise LorapodError(f"body: is nested deeper than {MAX_JSON_DEPTH} levels", field="body") from None
    try:
        check_depth(body, "body")
    except InvalidInput as exc:
        raise LorapodError(exc.message, field="body") from None
    if not isinstance(body, dict) or not isinstance(body.get("input"), dict):
        raise LorapodError(
            'input: is required and must be a JSON object, as in {"input": {"type": ...}}', field="input"
        )
    webhook = checked_webhook(settings, body.get("webhook"))
    policy = body.get("policy")
    if policy is None:
        return body["input"], None, webhook
    if not isinstance(policy, dict):
        raise LorapodError("policy: must be a JSON object", field="policy")
    timeout = policy.get("executionTimeout")
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, int) or not MIN_TIMEOUT_MS <= timeout <= MAX_TIMEOUT_MS
    ):
        raise LorapodError(
            f"policy.executionTimeout: must be whole milliseconds from {MIN_TIMEOUT_MS} to {MAX_TIMEOUT_MS}",
            field="policy.executionTimeout",
        )
    return body["input"], timeout, webhook


def runsync_wait_seconds(wait: int | None) -> float:
    """How long /runsync waits for a call, from its `wait` query parameter."""
    # The cloud accepts 1000..300000 ms; values outside are clamped rather than refused.
    ms = DEFAULT_RUNSYNC_WAIT_MS if wait is None else min(max(wait, MIN_RUNSYNC_WAIT_MS), MAX_RUNSYNC_WAIT_MS)
    return ms / 1000


@router.post(
    "/run",
    summary="Queue a call (RunPod /run)",
    description=(
        'Queue `{"input": {"type": ..., ...}}` and return its id at once; follow it with `/status/{id}` or '
        "`/stream/{id}`. A `train` or `generate` call stays IN_PROGRESS while its process runs (progress in "
        '`output`) and ends COMPLETED with the finished process; `"wait": false` completes at once with the '
        "`process_id`. Body at most `LORAPOD_PAYLOAD_LIMIT_RUN_BYTES` (10 MB); results kept 30 minutes."
    ),
    openapi_extra=run_request_body(RUN_EXAMPLE),
    response_model=CallAccepted,
    responses={
        200: {"description": "Queued."},
        **error_responses(
            400, 401, 413, 422, fields=("input", "body", "policy", "policy.executionTimeout", "endpoint_id")
        ),
    },
)
async def run(request: Request, endpoint_id: EndpointId) -> dict[str, Any]:
    """Queue a call."""
    runner = get_runner(request)
    payload, timeout_ms, webhook = await read_request(request, runner.service.settings.payload_limit_run_bytes)
    call = await runner.submit(payload, sync=False, execution_timeout_ms=timeout_ms, webhook=webhook)
    return {"id": call.id, "status": CallStatus.IN_QUEUE}


@router.post(
    "/runsync",
    summary="Run a call and wait for it (RunPod /runsync)",
    description=(
        "Like `/run`, but waits up to `wait` milliseconds (default 90000, clamped to 1000..300000) and answers "
        "the final state; if the call is still running then, its current state (poll `/status/{id}`). Body at "
        "most `LORAPOD_PAYLOAD_LIMIT_RUNSYNC_BYTES` (20 MB); results kept 60 seconds."
    ),
    openapi_extra=run_request_body({"input": {"type": "health"}}),
    response_model=CallState,
    response_model_exclude_unset=True,
    responses={
        200: {"description": "The final (or current) state."},
        **error_responses(400, 401, 413, 422, fields=("input", "body", "policy", "policy.executionTimeout", "wait")),
    },
)
async def runsync(
    request: Request,
    endpoint_id: EndpointId,
    wait: Annotated[int | None, Query(description="Milliseconds to wait (1000..300000).")] = None,
) -> Response:
    """Run a call and wait for it."""
    runner = get_runner(request)
    payload, timeout_ms, webhook = await read_request(request, runner.service.settings.payload_limit_runsync_bytes)
    view = await runner.run_sync(
        payload, wait_seconds=runsync_wait_seconds(wait), execution_timeout_ms=timeout_ms, webhook=webhook
    )
    return CallResponse(view)


@router.get(
    "/status/{request_id}",
    summary="A call's state (RunPod /status)",
    description=(
        "`status` is IN_QUEUE, IN_PROGRESS, COMPLETED, FAILED, CANCELLED or TIMED_OUT; `output` holds the latest "
        "progress while a training runs and the result at the end; `error` says why a call failed. `delayTime` "
        "and `executionTime` are milliseconds. 404 for an unknown id or an expired result."
    ),
    response_model=CallState,
    response_model_exclude_unset=True,
    responses={200: {"description": "The call."}, **error_responses(401, 404, 422, fields=("id", "request_id"))},
)
async def status(request: Request, endpoint_id: EndpointId, request_id: RequestId) -> Response:
    """A call's state."""
    return CallResponse(call_view(get_runner(request).store.answer(request_id)))


@router.get(
    "/stream/{request_id}",
    summary="Progress updates since the last read (RunPod /stream)",
    description='`{"status", "stream": [{"output": progress}, ...]}`: each update is returned once.',
    response_model=CallStream,
    responses={200: {"description": "Updates."}, **error_responses(401, 404, 422, fields=("id", "request_id"))},
)
async def stream(request: Request, endpoint_id: EndpointId, request_id: RequestId) -> dict[str, Any]:
    """Progress updates since the last read."""
    runner = get_runner(request)
    call = runner.store.get(request_id)
    return {"id": call.id, "status": call.status, "stream": runner.drain_stream(request_id)}


@router.post(
    "/cancel/{request_id}",
    summary="Cancel a call (RunPod /cancel)",
    description=(
        "A queued call is dropped; a running one is stopped, and the training or generation it waits on is "
        "cancelled too. A finished call is answered with its status unchanged."
    ),
    response_model=CallAccepted,
    responses={
        200: {"description": "The call's status."},
        **error_responses(401, 404, 422, fields=("id", "request_id")),
    },
)
async def cancel(request: Request, endpoint_id: EndpointId, request_id: RequestId) -> dict[str, Any]:
    """Cancel a call."""
    call = get_runner(request).cancel(request_id)
    return {"id": call.id, "status": call.status}


@router.post(
    "/retry/{request_id}",
    summary="Run a failed call again (RunPod /retry)",
    description=(
        "Only FAILED or TIMED_OUT calls whose result has not expired; same id and input, the old output is "
        "dropped. An `upload_training_data` call cannot be retried: its file contents are not kept (409)."
    ),
    response_model=CallAccepted,
    responses={
        200: {"description": "Queued again."},
        **error_responses(401, 404, 409, 422, fields=("id", "request_id")),
    },
)
async def retry(request: Request, endpoint_id: EndpointId, request_id: RequestId) -> dict[str, Any]:
    """Run a failed call again."""
    call = get_runner(request).retry(request_id)
    return {"id": call.id, "status": CallStatus.IN_QUEUE}


@router.post(
    "/purge-queue",
    summary="Drop queued calls (RunPod /purge-queue)",
    description="Calls still waiting for a slot are removed; running ones are not touched.",
    response_model=PurgeResult,
    responses={200: {"description": "Removed."}, **error_responses(401, 422, fields=("endpoint_id",))},
)
async def purge_queue(request: Request, endpoint_id: EndpointId) -> dict[str, Any]:
    """Drop queued calls."""
    return {"removed": get_runner(request).purge_queue(), "status": "completed"}


@router.get(
    "/health",
    summary="Call counts and workers (RunPod /health)",
    description="Counts over the calls whose results are still kept; this pod is the endpoint's one worker.",
    response_model=EndpointHealth,
    responses={200: {"description": "Counts."}, **error_responses(401, 422, fields=("endpoint_id",))},
)
async def health(request: Request, endpoint_id: EndpointId) -> dict[str, Any]:
    """Call counts and workers."""
    jobs = get_runner(request).store.counts()
    busy = 1 if jobs["inProgress"] else 0
    return {"jobs": jobs, "workers": {"idle": 1 - busy, "running": busy}}
