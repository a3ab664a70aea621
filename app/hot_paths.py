"""The two requests clients repeat most, answered ahead of FastAPI's routing: `GET /jobs/{job_id}` (the status
poll) and `POST /v2/{endpoint_id}/runsync` of an instant call (health, listings).

Either is a few dozen microseconds of work, while FastAPI's middleware, routing and dependency solving cost
several times that. This lane answers them with the code their declared routes run: the same auth check, the
same body bytes, the same metrics label. What it does not answer itself (an unknown job, a missing or wrong key,
a body that is not a well-formed instant call, a mount prefix) goes on to the app untouched, the consumed body
replayed, so errors and the OpenAPI document stay the declared routes' own.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.auth import check_bearer
from app.calls.responses import call_json
from app.routes import jobs, runpod
from app.routes.job_views import stored_job_body
from app.routes.runpod import parse_call_body, runner_of, runsync_wait_seconds
from core.contract.dispatcher import is_instant
from core.errors import LorapodError

MAX_JOB_ID, MAX_ENDPOINT_ID = 64, 128  # the declared routes' path-parameter limits
# An instant call's body is tens of bytes; anything bigger takes the declared route, with its own limits.
MAX_BODY = 64 * 1024
JSON_HEADERS = (b"content-type", b"application/json")


def declared(router: APIRouter, method: str, path: str) -> APIRoute:
    """The route a router declares for method and path."""
    for route in router.routes:
        if isinstance(route, APIRoute) and route.path == path and method in (route.methods or ()):
            return route
    raise LookupError(f"no {method} {path} route")


JOB_ROUTE = declared(jobs.router, "GET", "/jobs/{job_id}")
RUNSYNC_ROUTE = declared(runpod.router, "POST", "/v2/{endpoint_id}/runsync")


class HotPaths:
    """ASGI middleware answering the status poll and instant /runsync calls, passing every other request on."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer a hot request, or hand it to the app (with whatever body was read put back)."""
        # Behind a mount prefix the router strips root_path first; that rare case takes the declared routes.
        if scope["type"] == "http" and not scope.get("root_path"):
            method, path = scope["method"], scope["path"]
            if method == "GET" and path.startswith("/jobs/"):
                if await self._job(scope, send, path[len("/jobs/") :]):
                    return
            elif method == "POST" and path.startswith("/v2/") and path.endswith("/runsync"):
                endpoint_id = path[len("/v2/") : -len("/runsync")]
                passed_on = await self._runsync(scope, receive, send, endpoint_id)
                if passed_on is None:
                    return
                receive = passed_on
        await self.app(scope, receive, send)

    async def _job(self, scope: Scope, send: Send, job_id: str) -> bool:
        if not 0 < len(job_id) <= MAX_JOB_ID or "/" in job_id or not _authorized(scope):
            return False
        body = await stored_job_body(scope["app"].state, job_id, "")
        if body is None:
            return False  # the route answers: another worker's record in the bucket, or 404
        await self._answer(scope, send, JOB_ROUTE, body)
        return True

    async def _runsync(self, scope: Scope, receive: Receive, send: Send, endpoint_id: str) -> Receive | None:
        """None once answered; else the receive channel to pass on (replaying what was read)."""
        if (
            not 0 < len(endpoint_id) <= MAX_ENDPOINT_ID
            or "/" in endpoint_id
            or scope["query_string"]  # `wait` and friends: the route parses and checks them
            or not _small_body(scope, min(MAX_BODY, scope["app"].state.service.settings.payload_limit_runsync_bytes))
            or not _authorized(scope)
        ):
            return receive
        messages, raw = await _read_body(receive)
        state = scope["app"].state
        try:
            payload, timeout_ms, webhook = parse_call_body(raw, state.service.settings)
        except LorapodError:
            payload = None
        if payload is None or not is_instant(payload) or messages[-1]["type"] != "http.request":
            return _replay(messages, receive)
        view = await runner_of(state).run_sync(
            payload, wait_seconds=runsync_wait_seconds(None), execution_timeout_ms=timeout_ms, webhook=webhook
        )
        await self._answer(scope, send, RUNSYNC_ROUTE, call_json(view))
        return None

    async def _answer(self, scope: Scope, send: Send, route: APIRoute, body: bytes) -> None:
        # The declared route goes into the scope, as the router would put it, for the metrics' route label.
        scope["route"] = route
        headers = [(b"content-length", str(len(body)).encode()), JSON_HEADERS]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _authorized(scope: Scope) -> bool:
    try:
        check_bearer(HTTPConnection(scope), scope["app"].state.service.settings)
    except HTTPException:
        return False  # the declared route answers the 401
    return True


def _small_body(scope: Scope, limit: int) -> bool:
    for name, value in scope["headers"]:
        if name == b"content-length":
            return value.isdigit() and int(value) <= limit
    return False  # chunked: the route counts what arrives against its limit


async def _read_body(receive: Receive) -> tuple[list[Message], bytes]:
    """Every message up to the body's end (or a disconnect), and the body."""
    messages: list[Message] = []
    chunks: list[bytes] = []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return messages, b"".join(chunks)


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def replayed() -> Any:
        return pending.pop(0) if pending else await receive()

    return replayed
