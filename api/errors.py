"""Map core exceptions and request-validation failures to JSON errors, once."""

from __future__ import annotations

from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from core.errors import (
    Busy,
    CommandConflict,
    CoreError,
    InvalidReading,
    InvalidRequest,
    NotReady,
    StorageUnavailable,
)

_STATUS: dict[type[CoreError], int] = {
    InvalidReading: status.HTTP_422_UNPROCESSABLE_CONTENT,
    InvalidRequest: status.HTTP_400_BAD_REQUEST,
    NotReady: status.HTTP_503_SERVICE_UNAVAILABLE,
    Busy: status.HTTP_409_CONFLICT,
    CommandConflict: status.HTTP_409_CONFLICT,
    StorageUnavailable: status.HTTP_503_SERVICE_UNAVAILABLE,
}


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers on ``app``."""

    @app.exception_handler(CoreError)
    async def core_error(_request: Request, exc: CoreError) -> JSONResponse:
        code = next(
            (code for kind, code in _STATUS.items() if isinstance(exc, kind)),
            status.HTTP_400_BAD_REQUEST,
        )
        return JSONResponse({"detail": str(exc)}, status_code=code)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for error in exc.errors():
            where = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
            problems.append(f"{where or 'body'}: {error.get('msg', 'invalid')}")
        return JSONResponse(
            {"detail": "; ".join(problems), "errors": exc.errors()},
            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
        )
