"""FastAPI dependencies as short Annotated aliases: the service, the settings, auth; and request body limits.

The dependencies are coroutines although they never wait: FastAPI runs a plain function in the threadpool,
and a thread hop for every dependency of every request costs more than all they do."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any, cast

from fastapi import Depends, Request, Response
from fastapi.routing import APIRoute
from fastapi.security import HTTPBearer
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection
from starlette.types import Message

from app.auth import check_bearer
from core.errors import InvalidInput, TooLarge
from core.jobs.service import JobService
from core.settings import Settings
from core.storage.datasets import DatasetStore


async def get_service(request: Request) -> JobService:
    """The app's one job service."""
    return cast(JobService, request.app.state.service)


async def get_settings(request: Request) -> Settings:
    """The app's settings."""
    return cast(Settings, request.app.state.service.settings)


class BearerKey(HTTPBearer):
    """The bearer scheme /docs declares (its "Authorize" button takes the key), checking the key itself with
    check_bearer, which also accepts the bare key RunPod's docs show: one dependency a request, not two."""

    async def __call__(self, request: HTTPConnection) -> None:
        """401 unless the bearer token matches LORAPOD_API_KEY (when set)."""
        check_bearer(request, request.app.state.service.settings)


require_auth = BearerKey(
    scheme_name="bearer",
    description="The server's `LORAPOD_API_KEY`, sent as `Authorization: Bearer <key>` (needed only when it is set).",
    auto_error=False,
)


async def get_datasets(request: Request) -> DatasetStore:
    """The service's one dataset store."""
    return cast(DatasetStore, request.app.state.service.datasets)


ServiceDep = Annotated[JobService, Depends(get_service)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
DatasetsDep = Annotated[DatasetStore, Depends(get_datasets)]
Authorized = Depends(require_auth)


def limit_body(request: Request, limit: int, *, field: str = "body") -> Request:
    """The request with its body capped at limit bytes: Content-Length checked now, streamed bytes counted."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise InvalidInput("Content-Length", "must be a whole number of bytes")
        if int(declared) > limit:
            raise TooLarge(f"{field}: the request body is larger than the limit of {limit} bytes", field=field)
    received = 0
    upstream = request.receive

    async def receive() -> Message:
        nonlocal received
        message = await upstream()
        if message["type"] == "http.request":
            # Chunked bodies carry no Content-Length, so count what actually arrives.
            received += len(message.get("body", b""))
            if received > limit:
                raise TooLarge(f"{field}: the request body is larger than the limit of {limit} bytes", field=field)
        return message

    return Request(request.scope, receive)


def body_limited_route(limit_of: Callable[[Settings], int], *, field: str = "body") -> type[APIRoute]:
    """A route class refusing bodies over limit_of(settings) with 413 before FastAPI reads them whole."""

    class BodyLimitedRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()

            async def limited(request: Request) -> Response:
                limit = limit_of(request.app.state.service.settings)
                try:
                    return await handler(limit_body(request, limit, field=field))
                except HTTPException as exc:
                    # FastAPI reports any failure while reading a body as a 400; ours is the real answer.
                    if isinstance(exc.__cause__, TooLarge):
                        raise exc.__cause__ from None
                    raise

            return limited

    return BodyLimitedRoute
