"""Bearer-token auth: required on every route but /health and its probes when LORAPOD_API_KEY is set."""

from __future__ import annotations

import hmac

from fastapi import HTTPException
from starlette.requests import HTTPConnection

from core.settings import Settings


def check_bearer(request: HTTPConnection, settings: Settings) -> None:
    """Raise 401 unless the request carries the configured key (compared in constant time)."""
    if settings.api_key is None:
        return
    expected = settings.api_key.get_secret_value().encode()
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    # The RunPod docs show both "Bearer <key>" and a bare key; accept both, compare in constant time.
    supplied = token.strip() if scheme.lower() == "bearer" else header.strip()
    if not supplied or not hmac.compare_digest(supplied.encode(), expected):
        raise HTTPException(
            status_code=401, detail="missing or invalid bearer token", headers={"WWW-Authenticate": "Bearer"}
        )
