"""Dependencies shared by the routers, as Annotated aliases."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CollectorRegistry

from core.service import DsmCore
from core.training import TrainingManager


@dataclass(frozen=True, slots=True)
class AppContext:
    """What the routers need: the core, how to ask whether BACnet is bound, the metrics."""

    core: DsmCore
    bacnet_bound: Callable[[], bool]
    registry: CollectorRegistry
    training: TrainingManager | None = None


def get_context(request: Request) -> AppContext:
    """The context stored on the app by ``create_app``."""
    context: AppContext = request.app.state.context
    return context


def get_core(context: Annotated[AppContext, Depends(get_context)]) -> DsmCore:
    """The core."""
    return context.core


_bearer = HTTPBearer(auto_error=False, description="Required for writes when --api-token is set.")


def require_token(
    core: Annotated[DsmCore, Depends(get_core)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """Reject a write without the configured bearer token (reads stay open)."""
    expected = core.settings.api_token
    if expected is None:
        return
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "this write needs 'Authorization: Bearer <token>' (the service has --api-token set)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not secrets.compare_digest(
        credentials.credentials.encode(), expected.get_secret_value().encode()
    ):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "the bearer token is wrong",
            headers={"WWW-Authenticate": "Bearer"},
        )


ContextDep = Annotated[AppContext, Depends(get_context)]
CoreDep = Annotated[DsmCore, Depends(get_core)]
WriteAllowed = Depends(require_token)
