"""Serves the dashboard at /ui; the page itself holds no data, so it is open, and every API call it makes sends the
key the person typed (kept in the browser's sessionStorage, never in a URL)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).resolve().parent / "static"
# Only this server's own files: no CDN can be reached from the page, and nothing inline runs.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' blob: data:; connect-src 'self'; script-src 'self'; style-src 'self'; "
        "object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}

router = APIRouter(include_in_schema=False)


@router.get("/")
def root() -> Response:
    """The dashboard is the server's front page."""
    return RedirectResponse("ui/", status_code=307)


@router.get("/ui")
@router.get("/ui/")
def dashboard() -> Response:
    """The dashboard's page."""
    return FileResponse(STATIC / "index.html", media_type="text/html", headers=SECURITY_HEADERS)


def install_dashboard(app: FastAPI) -> None:
    """Add the page and its static files to the app."""
    app.include_router(router)
    app.mount("/ui/static", StaticFiles(directory=STATIC), name="dashboard-static")
