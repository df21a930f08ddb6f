"""Meter readings: post live or historical values, page through the minute grid."""

from __future__ import annotations

import csv
import io
from typing import Annotated

from fastapi import APIRouter, Body, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import Field

from api.deps import CommandsDep, CoreDep, WriteAllowed
from api.errors import error_responses
from api.schemas import BatchAccepted, IsoDateTime, MinuteOut, ReadingIn, ReadingsPageOut
from core.ports import MAX_BATCH, SubmitReadings

router = APIRouter(prefix="/api/v1", tags=["readings"])

_BODY_EXAMPLES = {
    "one": {"summary": "One reading now", "value": {"kw": 12.4}},
    "batch": {
        "summary": "A batch with timestamps",
        "value": [
            {"observed_at": "2026-07-01T14:03:00Z", "kw": 12.4},
            {"observed_at": "2026-07-01T14:04:00Z", "kw": 13.1},
        ],
    },
}


@router.post(
    "/readings",
    response_model=BatchAccepted,
    status_code=201,
    dependencies=[WriteAllowed],
    responses=error_responses(
        422,
        503,
        e422="A reading is invalid; nothing was stored.",
        e503="The database is not taking writes; nothing was stored.",
    ),
)
async def post_readings(
    commands: CommandsDep,
    body: Annotated[
        # The core checks the batch's size (one clear message); the schema states the limits.
        ReadingIn
        | Annotated[
            list[ReadingIn], Field(json_schema_extra={"minItems": 1, "maxItems": MAX_BATCH})
        ],
        Body(openapi_examples=_BODY_EXAMPLES),
    ],
) -> BatchAccepted:
    """Post one reading or a batch (same validation as a BACnet write; all or nothing)."""
    items = body if isinstance(body, list) else [body]
    result = await commands.command(SubmitReadings(items, source="rest"))
    return BatchAccepted(
        accepted=result.accepted, live=result.live, historical_minutes=result.historical_minutes
    )


@router.get(
    "/readings",
    response_model=ReadingsPageOut,
    responses={
        200: {"content": {"text/csv": {}}, "description": "JSON, or CSV on Accept"},
        **error_responses(400, e400="end is not after start."),
    },
)
async def get_readings(
    core: CoreDep,
    request: Request,
    start: Annotated[
        IsoDateTime | None, Query(description="Inclusive, ISO 8601 with offset")
    ] = None,
    end: Annotated[
        IsoDateTime | None,
        Query(description="Exclusive, after start; ISO 8601 with offset"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=10000, description="Page size")] = 1000,
) -> Response:
    """Stored minutes, oldest first, paged; send 'Accept: text/csv' for CSV."""
    page = await core.readings(start, end, limit)
    headers = {}
    if page.next_start is not None:
        next_url = request.url.include_query_params(start=page.next_start.isoformat())
        headers["Link"] = f'<{next_url}>; rel="next"'
    if "text/csv" in request.headers.get("accept", ""):
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["observed_at", "kw", "sample_count", "outdoor_air_temp", "dispatched_kw"])
        for row in page.items:
            writer.writerow(
                [
                    row.observed_at.isoformat(),
                    repr(row.kw),
                    row.sample_count,
                    "" if row.outdoor_air_temp is None else repr(row.outdoor_air_temp),
                    "" if row.dispatched_kw is None else repr(row.dispatched_kw),
                ]
            )
        return Response(buffer.getvalue(), media_type="text/csv", headers=headers)
    body = ReadingsPageOut(
        items=[
            MinuteOut(
                observed_at=row.observed_at,
                kw=row.kw,
                sample_count=row.sample_count,
                carried_forward=row.sample_count == 0,
                outdoor_air_temp=row.outdoor_air_temp,
                dispatched_kw=row.dispatched_kw,
            )
            for row in page.items
        ],
        next_start=page.next_start,
    )
    return JSONResponse(body.model_dump(mode="json"), headers=headers)
