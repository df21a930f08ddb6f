"""Dependencies shared by the routers, as Annotated aliases."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Protocol

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from core.ports import CommandPort, CoreReads
from core.records import FileRecord, PointRecord
from core.snapshot import Snapshot
from core.training import TrainingManager
from core.tuning import TuningManager


class PointTable(Protocol):
    """The BACnet point list as plain records (``bacnet.table.BacnetPointTable``, handed in by
    the composition root: the API does not import the BACnet adapter)."""

    reliability_states: tuple[str, ...]  # every reliability a point can report

    def records(self, snapshot: Snapshot) -> list[PointRecord]:
        """Every point as a BACnet read would return it for ``snapshot``."""
        ...

    def ede_points_csv(self, snapshot: Snapshot) -> FileRecord:
        """The EDE 2.3 main file."""
        ...

    def ede_zip(self, snapshot: Snapshot) -> FileRecord:
        """The EDE files zipped."""
        ...


@dataclass(frozen=True, slots=True)
class AppContext:
    """What the routers need: the core's two ports (``core`` reads, ``commands`` writes), the
    point table, how to ask whether BACnet is bound, the metrics."""

    core: CoreReads
    commands: CommandPort
    points: PointTable
    bacnet_bound: Callable[[], bool]
    registry: CollectorRegistry
    training: TrainingManager | None = None
    tuning: TuningManager | None = None


async def get_context(request: Request) -> AppContext:
    """The context stored on the app by ``create_app``."""
    context: AppContext = request.app.state.context
    return context


async def get_core(context: Annotated[AppContext, Depends(get_context)]) -> CoreReads:
    """The core's read side."""
    return context.core


async def get_commands(context: Annotated[AppContext, Depends(get_context)]) -> CommandPort:
    """The core's command port: every write goes through it."""
    return context.commands


_bearer = HTTPBearer(auto_error=False, description="Required for writes when --api-token is set.")


def token_problem(expected: SecretStr | None, authorization: str | None) -> str | None:
    """Why a write with this Authorization header is refused, or None when it may go on."""
    if expected is None:
        return None
    scheme, _, credentials = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        return "this write needs 'Authorization: Bearer <token>' (the service has --api-token set)"
    if not secrets.compare_digest(
        credentials.strip().encode(), expected.get_secret_value().encode()
    ):
        return "the bearer token is wrong"
    return None


async def require_token(
    request: Request,
    core: Annotated[CoreReads, Depends(get_core)],
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """Reject a write without the configured bearer token (reads stay open).

    ``api.limits.RequestLimits`` checks the same before the body is read; this stays as the
    route's own guard and declares the bearer scheme in the OpenAPI document.
    """
    problem = token_problem(core.settings.api_token, request.headers.get("authorization"))
    if problem is not None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, problem, headers={"WWW-Authenticate": "Bearer"}
        )


ContextDep = Annotated[AppContext, Depends(get_context)]
CoreDep = Annotated[CoreReads, Depends(get_core)]
CommandsDep = Annotated[CommandPort, Depends(get_commands)]
WriteAllowed = Depends(require_token)
