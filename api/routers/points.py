"""BACnet points as REST resources."""

from __future__ import annotations

from fastapi import APIRouter, Response

from api.deps import ContextDep
from api.schemas import PointOut, StatusFlags
from core.records import FileRecord

router = APIRouter(prefix="/api/v1", tags=["points"])


@router.get("/points", response_model=list[PointOut])
async def list_points(context: ContextDep) -> list[PointOut]:
    """Every BACnet point with the value, reliability and flags a BACnet read returns now."""
    snapshot = context.core.snapshot
    return [
        PointOut(
            name=point.name,
            object_type=point.object_type,
            instance=point.instance,
            object_identifier=point.object_identifier,
            present_value=point.present_value,
            units=point.units,
            reliability=point.reliability,
            status_flags=StatusFlags(
                in_alarm=False, fault=point.fault, overridden=False, out_of_service=False
            ),
            description=point.description,
            writable=point.writable,
            cov_increment=point.cov_increment,
            updated_at=snapshot.input_observed_at if point.writable else snapshot.computed_at,
        )
        for point in context.points.records(snapshot)
    ]


def _download(file: FileRecord, media_type: str) -> Response:
    return Response(
        file.content,
        media_type=media_type,
        headers={"Content-Disposition": f'attachment; filename="{file.name}"'},
    )


@router.get(
    "/points.ede.csv",
    response_class=Response,
    responses={200: {"content": {"text/csv": {}}}},
)
async def points_ede(context: ContextDep) -> Response:
    """The point list in EDE 2.3 format (the main file BAS engineering tools import)."""
    file = context.points.ede_points_csv(context.core.snapshot)
    return _download(file, "text/csv; charset=utf-8")


@router.get(
    "/points.ede.zip",
    response_class=Response,
    responses={200: {"content": {"application/zip": {}}}},
)
async def points_ede_zip(context: ContextDep) -> Response:
    """The EDE main file with its state-text and unit companion files, zipped."""
    return _download(context.points.ede_zip(context.core.snapshot), "application/zip")
