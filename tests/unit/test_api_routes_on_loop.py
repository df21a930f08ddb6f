"""The routes that read the core run on the event loop, never in FastAPI's worker threads.

FastAPI runs a sync ``def`` route or dependency in a thread pool; one that reads the core there
reads state the loop mutates at the same time (the reading counters, the writer's queue). Every
route that takes the core or the app context, and every dependency it runs, is ``async def``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from typing import Any

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from api.deps import get_context, get_core
from api.routers import demand, dispatch, forecast, health, metrics, model, points, readings

ROUTERS = (points, readings, forecast, dispatch, model, demand, health, metrics)
# The read routes issue #30 moved onto the loop: each must be among those checked.
MOVED = {
    "/api/v1/demand",
    "/api/v1/forecast",
    "/api/v1/points",
    "/api/v1/points.ede.csv",
    "/api/v1/points.ede.zip",
    "/metrics",
}


def _calls(dependant: Dependant) -> Iterator[Callable[..., Any]]:
    for sub in dependant.dependencies:
        if sub.call is not None:
            yield sub.call
        yield from _calls(sub)


def _is_async(call: Callable[..., Any]) -> bool:
    """A coroutine function, or an instance whose class's __call__ is one (HTTPBearer)."""
    method = type(call).__call__ if not inspect.isfunction(call) else call
    return inspect.iscoroutinefunction(call) or inspect.iscoroutinefunction(method)


def test_every_route_that_reads_the_core_is_async_with_async_dependencies() -> None:
    checked: set[str] = set()
    for module in ROUTERS:
        for route in module.router.routes:
            if not isinstance(route, APIRoute):
                continue
            calls = list(_calls(route.dependant))
            if not any(call in (get_core, get_context) for call in calls):
                continue
            checked.add(route.path)
            sync = [c.__name__ for c in (route.endpoint, *calls) if not _is_async(c)]
            assert not sync, f"{route.path} runs {sync} in a worker thread"
    assert checked >= MOVED
