"""How the REST adapter answers errors: JSON naming the field and the reason, never a 500 for bad input."""

from __future__ import annotations

import errno
import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.schemas.errors import ErrorBody
from core.contract.validation import field_path
from core.errors import LorapodError, is_disk_full

log = logging.getLogger("lorapod.http")

ERROR_NAME = "ErrorBody"
ERROR_REF = f"#/components/schemas/{ERROR_NAME}"
_DESCRIPTIONS = {
    400: "Bad request: the body cannot be read",
    401: "Missing or wrong bearer token",
    404: "Unknown id, dataset or file",
    409: "Conflicts with the current state",
    413: "Body or file over the configured limits",
    422: "Invalid input: the field and the reason",
    507: "The server's disk is full; nothing was kept",
    503: "ai-toolkit or the generation environment is not available",
}


def _example(code: int, field: str | None) -> dict[str, str]:
    """A plausible error body for the code, naming the route's own field."""
    if code == 401:
        return {"error": "missing or invalid bearer token"}
    if code == 503:
        return {"error": "AI_TOOLKIT_DIR is not set: trainings need an ai-toolkit checkout"}
    reason = {
        400: "is not valid JSON",
        404: "not found",
        409: "the job has already finished",
        413: "the request body is larger than the limit",
        507: "the server's disk is full; nothing was kept",
        422: "is invalid",
    }.get(code, "is invalid")
    return {"error": f"{field}: {reason}", "field": field} if field else {"error": reason}


def error_responses(*codes: int, fields: Sequence[str] = ()) -> dict[int | str, dict[str, Any]]:
    """OpenAPI documentation of the error answers a route can give, with the field names that route uses."""
    named = f" `field` is one of: {', '.join(f'`{f}`' for f in fields)}." if fields else ""
    return {
        code: {
            "description": _DESCRIPTIONS.get(code, "Error") + "." + (named if code not in (401, 503) else ""),
            # A $ref rather than `model`: FastAPI would also list the error under a text or file route's own
            # media type, a body those routes never send. The schema is added by install_error_schema.
            "content": {
                "application/json": {
                    "schema": {"$ref": ERROR_REF},
                    "example": _example(code, fields[0] if fields else None),
                }
            },
        }
        for code in codes
    }


def install_error_schema(app: FastAPI) -> None:
    """Add ErrorBody to the app's OpenAPI components, where every documented error response points."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            schema.setdefault("components", {}).setdefault("schemas", {})[ERROR_NAME] = ErrorBody.model_json_schema()
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


# The contract's field names and the REST path parameters that carry the same value: a core error about
# `process_id` on /jobs/{job_id} names `job_id`, one about `training_name` on /datasets/{name} names `name`.
# One table rather than a per-router dependency, which every request of those routers would pay for.
PATH_PARAMETER_OF = {"process_id": "job_id", "training_name": "name"}


def _rest_error(request: Request, exc: LorapodError) -> dict[str, str]:
    """The error's body, with contract field names mapped to the route's parameter names."""
    body = exc.to_dict()
    renamed = PATH_PARAMETER_OF.get(exc.field or "")
    # Only path parameters are renamed: a body field of the same name is the caller's own word.
    if exc.field and renamed and renamed in request.path_params:
        body["field"] = renamed
        if exc.message.startswith(f"{exc.field}:"):
            body["error"] = renamed + exc.message[len(exc.field) :]
    return body


def install_error_handlers(app: FastAPI) -> None:
    """Map core errors, validation errors and HTTP errors to lorapod's JSON error shape, and document it."""
    install_error_schema(app)

    @app.exception_handler(LorapodError)
    async def _lorapod_error(request: Request, exc: LorapodError) -> JSONResponse:
        return JSONResponse(_rest_error(request, exc), status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        field, reason = _first_validation_error(exc)
        return JSONResponse({"error": f"{field}: {reason}", "field": field}, status_code=422)

    @app.exception_handler(OSError)
    async def _os_error(_request: Request, exc: OSError) -> JSONResponse:
        # A caller path the filesystem itself refuses (a name over 255 bytes) is bad input, not a fault.
        if exc.errno in (errno.ENAMETOOLONG, errno.EILSEQ):
            return JSONResponse(
                {"error": "path: is too long or not a valid file name", "field": "path"}, status_code=422
            )
        if is_disk_full(exc):
            log.error("the disk is full: %s", exc.strerror)
            return JSONResponse({"error": "the server's disk is full; nothing was kept"}, status_code=507)
        log.exception("unexpected error", exc_info=exc)
        return JSONResponse({"error": "internal server error"}, status_code=500)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        if is_disk_full(exc):  # the database on a full disk
            log.error("the disk is full: %s", type(exc).__name__)
            return JSONResponse({"error": "the server's disk is full; nothing was kept"}, status_code=507)
        log.exception("unexpected error", exc_info=exc)
        return JSONResponse({"error": "internal server error"}, status_code=500)


def _first_validation_error(exc: RequestValidationError) -> tuple[str, str]:
    """The first validation error as (field, reason), with a tagged union's tag left out of the field."""
    first = exc.errors()[0] if exc.errors() else {}
    loc = [p for p in first.get("loc", ()) if p not in ("body", "query", "path", "header")]
    body = exc.body
    # pydantic puts the tag of a tagged union (the job's `type`) in the location; callers never wrote it.
    if loc and isinstance(body, dict) and loc[0] == body.get("type"):
        loc = loc[1:]
    kind = first.get("type")
    ctx = first.get("ctx") or {}
    field = field_path(loc) if loc else "body"
    if kind == "missing":
        return field, "is required"
    if kind == "extra_forbidden":
        return field, "is not a known field"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        tag = str(ctx.get("discriminator", "type")).strip("'\"")
        field = field_path([*loc, tag]) if loc else tag
        expected = ctx.get("expected_tags")
        return field, f"must be one of {expected}" if expected else "is required"
    if kind == "json_invalid":
        return "body", f"is not valid JSON ({ctx.get('error', 'decode error')})"
    if kind == "model_attributes_type" and not loc:
        return "body", "must be a JSON object"
    reason = str(first.get("msg", "is invalid")).removeprefix("Value error, ")
    return field, reason[:1].lower() + reason[1:]
