"""Map core exceptions and request-validation failures to JSON errors, once.

Every error reply has one shape, ``ErrorOut``: ``{"detail": "one line", "errors": [...]}``;
``errors`` lists at most ``MAX_ERRORS`` validation problems and never echoes the input, so a
huge invalid batch gets a small reply.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.schemas import ErrorItem, ErrorOut
from core.errors import (
    Busy,
    CommandConflict,
    CoreError,
    InvalidReading,
    InvalidRequest,
    NotReady,
    StorageUnavailable,
)

MAX_ERRORS = 20
MAX_DETAIL_CHARS = 2000

_STATUS: dict[type[CoreError], int] = {
    InvalidReading: status.HTTP_422_UNPROCESSABLE_CONTENT,
    InvalidRequest: status.HTTP_400_BAD_REQUEST,
    NotReady: status.HTTP_503_SERVICE_UNAVAILABLE,
    Busy: status.HTTP_409_CONFLICT,
    CommandConflict: status.HTTP_409_CONFLICT,
    StorageUnavailable: status.HTTP_503_SERVICE_UNAVAILABLE,
}

_DESCRIPTIONS = {
    400: "The body is not JSON, or the request contradicts itself (e.g. end before start).",
    401: "A write without the right 'Authorization: Bearer <token>'.",
    404: "No such resource.",
    409: "Conflict: a higher BACnet priority commands the point, or a run is in progress.",
    413: "The body is larger than --max-body-bytes; nothing was read or stored.",
    422: "A value is invalid; nothing was stored.",
    503: "Not available now (nothing computed yet, or the database is not taking writes).",
}


def error_responses(*codes: int, **why: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` for these error codes, all with the ``ErrorOut`` body.

    ``why`` overrides a description by code: ``error_responses(409, 503, e409="...")``.
    """
    return {
        code: {"model": ErrorOut, "description": why.get(f"e{code}", _DESCRIPTIONS[code])}
        for code in codes
    }


def error_body(detail: str, errors: Sequence[ErrorItem] = (), omitted: int = 0) -> dict[str, Any]:
    """The JSON of an ``ErrorOut`` with a bounded detail."""
    if len(detail) > MAX_DETAIL_CHARS:
        detail = detail[: MAX_DETAIL_CHARS - 3] + "..."
    body = ErrorOut(
        detail=detail, errors=list(errors) or None, errors_omitted=omitted or None
    ).model_dump(mode="json", exclude_none=True)
    return body


def _items(exc: RequestValidationError) -> tuple[list[ErrorItem], int]:
    """The first ``MAX_ERRORS`` problems as plain items (no input echoed), and how many more."""
    errors = exc.errors()
    items = []
    for error in errors[:MAX_ERRORS]:
        loc = [part if isinstance(part, int) else str(part) for part in error.get("loc", ())]
        items.append(
            ErrorItem(loc=loc, msg=str(error.get("msg", "invalid"))[:300], type=str(error["type"]))
        )
    return items, max(0, len(errors) - MAX_ERRORS)


def _describe(item: ErrorItem) -> str:
    where = ".".join(str(part) for part in item.loc if part != "body")
    message = item.msg.removeprefix("Value error, ")
    if item.type in ("model_attributes_type", "dict_type", "list_type", "model_type"):
        message += " (send JSON with 'Content-Type: application/json')"
    return f"{where or 'body'}: {message}"


def _document_errors(schema: dict[str, Any]) -> dict[str, Any]:
    """Declare ``ErrorOut`` for every error the app can answer, in place of FastAPI's default.

    FastAPI documents 422 as ``HTTPValidationError`` (``detail`` an array); this app answers
    ``ErrorOut`` everywhere, so that model replaces it, and an error a route declares without a
    body gets it too. Every write also gets 400, 401 and 413, which ``api.limits.RequestLimits``
    and the JSON parser answer before any route runs.
    """
    ref = {"$ref": "#/components/schemas/ErrorOut"}
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    components["ErrorOut"] = ErrorOut.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, definition in components["ErrorOut"].pop("$defs", {}).items():
        components[name] = definition
    for path_item in schema.get("paths", {}).values():
        for method, operation in path_item.items():
            responses = operation.setdefault("responses", {})
            codes = {"422"}
            if method.upper() not in ("GET", "HEAD", "OPTIONS"):
                codes |= {"400", "401", "413"}
            elif "422" not in responses:
                codes = set()
            for code in codes:
                responses.setdefault(code, {"description": _DESCRIPTIONS[int(code)]})
            for code, entry in responses.items():
                declared = str(entry.get("content", ""))
                if code[0] in "45" and ("content" not in entry or "HTTPValidation" in declared):
                    entry["content"] = {"application/json": {"schema": ref}}
    return schema


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers on ``app`` and declare their body in its OpenAPI document."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _document_errors(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    @app.exception_handler(CoreError)
    async def core_error(_request: Request, exc: CoreError) -> JSONResponse:
        code = next(
            (code for kind, code in _STATUS.items() if isinstance(exc, kind)),
            status.HTTP_400_BAD_REQUEST,
        )
        return JSONResponse(error_body(str(exc)), status_code=code)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(
            error_body(str(exc.detail)), status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        items, omitted = _items(exc)
        if any(item.type == "json_invalid" for item in items):
            json_problem = next(item for item in items if item.type == "json_invalid")
            return JSONResponse(
                error_body(f"the body is not valid JSON ({json_problem.msg})", items),
                status_code=status.HTTP_400_BAD_REQUEST,
            )
        detail = "; ".join(_describe(item) for item in items)
        if omitted:
            detail += f"; and {omitted} more"
        return JSONResponse(
            error_body(detail, items, omitted),
            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
        )
