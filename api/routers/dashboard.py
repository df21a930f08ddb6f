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


# Swagger UI and ReDoc style their own elements inline and ReDoc searches in a blob: worker;
# still nothing from another host.
_DOCS_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


def _docs_page(name: str) -> Response:
    return FileResponse(
        STATIC_DIR / name,
        media_type="text/html; charset=utf-8",
        headers={"Content-Security-Policy": _DOCS_CSP, "Cache-Control": "no-cache"},
    )


@router.get("/docs", response_class=FileResponse, include_in_schema=False)
def swagger_ui() -> Response:
    """Swagger UI (vendored, served by this service) for /openapi.json."""
    return _docs_page("swagger.html")


@router.get("/redoc", response_class=FileResponse, include_in_schema=False)
def redoc() -> Response:
    """ReDoc (vendored, served by this service) for /openapi.json."""
    return _docs_page("redoc.html")


def static_files() -> StaticFiles:
    """The dashboard's scripts, styles and the vendored uPlot, mounted at /static."""
    return StaticFiles(directory=STATIC_DIR)
