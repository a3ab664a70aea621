"""How the REST adapter answers errors: JSON naming the field and the reason, never a 500 for bad input."""

from __future__ import annotations

import errno
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.contract.validation import field_path
from core.errors import LorapodError, is_disk_full

log = logging.getLogger("lorapod.http")

ERROR_SCHEMA = {
    "type": "object",
    "properties": {
        "error": {"type": "string", "description": "One sentence: the field and the reason."},
        "field": {"type": "string", "description": "The field at fault, when there is one."},
    },
    "required": ["error"],
}


def error_responses(*codes: int) -> dict[int | str, dict[str, object]]:
    """OpenAPI documentation of the error answers a route can give."""
    text = {
        400: "Bad request",
        401: "Missing or wrong bearer token",
        404: "Unknown id, dataset or file",
        409: "Conflicts with the job's state",
        413: "Body or file over the configured limits",
        422: "Invalid input: the field and the reason",
        507: "The server's disk is full; nothing was kept",
        503: "ai-toolkit is not configured",
    }
    return {
        code: {
            "description": text.get(code, "Error"),
            "content": {"application/json": {"schema": ERROR_SCHEMA, "example": {"error": "steps: must be > 0"}}},
        }
        for code in codes
    }


def install_error_handlers(app: FastAPI) -> None:
    """Map core errors, validation errors and HTTP errors to lorapod's JSON error shape."""

    @app.exception_handler(LorapodError)
    async def _lorapod_error(_request: Request, exc: LorapodError) -> JSONResponse:
        return JSONResponse(exc.to_dict(), status_code=exc.status_code)

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
