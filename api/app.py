"""The FastAPI application factory."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute

from api.deps import AppContext, PointTable
from api.errors import install_error_handlers
from api.limits import RequestLimits
from api.openapi_docs import install_openapi, operation_id
from api.routers import (
    calendar,
    dashboard,
    demand,
    dispatch,
    forecast,
    health,
    metrics,
    model,
    month,
    points,
    readings,
)
from core.ports import CorePorts
from core.training import TrainingManager
from core.tuning import TuningManager

DESCRIPTION = """
Edge demand side management for one building. The same core feeds the BACnet/IP device and this
API: `GET /api/v1/points` returns exactly what a BACnet read returns.

A method a path does not serve is answered 405 with the path's `Allow`, before anything else.
Writes need `Authorization: Bearer <token>` when the service runs with `--api-token`
(checked before the body is read: 401); reads are open. A body over `--max-body-bytes`
gets 413 before it is parsed.
Every error is JSON `{"detail": "what was wrong"}`; 422 and 400 add `errors`, at most 20
`{loc, msg, type}` items (the input is never echoed back).
"""


def create_app(
    core: CorePorts,
    *,
    point_table: PointTable,
    bacnet_bound: Callable[[], bool],
    training: TrainingManager | None = None,
    version: str = "0",
    tuning: TuningManager | None = None,
) -> FastAPI:
    """Build the app around a started core's two ports; ``point_table`` is the BACnet point list as
    records (handed in by the composition root: the API does not import the BACnet adapter)."""
    app = FastAPI(
        title="open-dsm",
        version=version,
        description=DESCRIPTION,
        # Swagger UI and ReDoc are served from this package (api/static/vendor), not a CDN.
        docs_url=None,
        redoc_url=None,
        generate_unique_id_function=operation_id,
        openapi_tags=[
            {"name": "points", "description": "The BACnet point list with live values"},
            {"name": "readings", "description": "Meter readings in, minute grid out"},
            {"name": "forecast", "description": "The next 60 minutes, the next day, the log"},
            {"name": "model", "description": "The forecasting model and its training runs"},
            {"name": "demand", "description": "Demand-charge management"},
            {"name": "dispatch", "description": "Battery and EV dispatch plan"},
            {"name": "health", "description": "Probes for orchestrators"},
            {"name": "metrics", "description": "Prometheus"},
        ],
    )
    reads = core.reads
    app.state.context = AppContext(
        core=reads,
        commands=core,
        points=point_table,
        bacnet_bound=bacnet_bound,
        registry=metrics.build_registry(reads, point_table, version),
        training=training,
        tuning=tuning,
    )
    install_error_handlers(app)
    # Outermost guard: the token, then the body size, before any route parses a byte.
    app.add_middleware(
        RequestLimits,
        token=reads.settings.api_token,
        max_body_bytes=reads.settings.max_body_bytes,
        routes=lambda: app.router.routes,
    )
    for module in (
        points,
        readings,
        forecast,
        dispatch,
        model,
        demand,
        month,
        calendar,
        health,
        metrics,
    ):
        _summaries_from_docstrings(module.router)
        app.include_router(module.router)
    app.include_router(dashboard.router)
    app.mount("/static", dashboard.static_files(), name="static")
    install_openapi(app)
    return app


def _summaries_from_docstrings(router: APIRouter) -> None:
    """Each route's one-line docstring becomes its OpenAPI summary (what Swagger lists)."""
    for route in router.routes:
        if isinstance(route, APIRoute) and route.summary is None and route.endpoint.__doc__:
            route.summary = route.endpoint.__doc__.strip().splitlines()[0].rstrip(".")
