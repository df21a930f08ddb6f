"""The read-only dashboard page at ``/`` and its static files (no request leaves the box)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"

router = APIRouter(tags=["dashboard"])

# The page may load only what this service serves; nothing from another host.
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


@router.get("/", response_class=FileResponse, include_in_schema=False)
def dashboard() -> Response:
    """The dashboard: live figures and charts read from this API's own resources."""
    return FileResponse(
        STATIC_DIR / "index.html",
        media_type="text/html; charset=utf-8",
        headers={"Content-Security-Policy": _CSP, "Cache-Control": "no-cache"},
    )


def static_files() -> StaticFiles:
    """The dashboard's scripts, styles and the vendored uPlot, mounted at /static."""
    return StaticFiles(directory=STATIC_DIR)
