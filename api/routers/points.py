"""BACnet points as REST resources."""

from __future__ import annotations

from fastapi import APIRouter, Response

from api.deps import CoreDep
from api.schemas import PointOut, StatusFlags
from bacnet.ede import ede_file_names, ede_files, ede_zip
from bacnet.points import POINTS, Reliability

router = APIRouter(prefix="/api/v1", tags=["points"])


@router.get("/points", response_model=list[PointOut])
def list_points(core: CoreDep) -> list[PointOut]:
    """Every BACnet point with the value, reliability and flags a BACnet read returns now."""
    snapshot = core.snapshot
    out = []
    for point in POINTS:
        reliability = point.reliability(snapshot)
        updated = snapshot.input_observed_at if point.writable else snapshot.computed_at
        out.append(
            PointOut(
                name=point.name,
                object_type=point.object_type.value,
                instance=point.instance,
                object_identifier=point.object_identifier,
                present_value=point.present_value(snapshot),
                units=point.units_for(core.settings),
                reliability=reliability.value,
                status_flags=StatusFlags(
                    in_alarm=False,
                    fault=reliability is not Reliability.NO_FAULT_DETECTED,
                    overridden=False,
                    out_of_service=False,
                ),
                description=point.describe(snapshot, core.settings),
                writable=point.writable,
                cov_increment=point.cov_increment,
                updated_at=updated,
            )
        )
    return out


@router.get(
    "/points.ede.csv",
    response_class=Response,
    responses={200: {"content": {"text/csv": {}}}},
)
def points_ede(core: CoreDep) -> Response:
    """The point list in EDE 2.3 format (the main file BAS engineering tools import)."""
    names = ede_file_names(core.settings)
    text = ede_files(core.settings, snapshot=core.snapshot)["points"]
    return Response(
        text,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{names["points"]}"'},
    )


@router.get(
    "/points.ede.zip",
    response_class=Response,
    responses={200: {"content": {"application/zip": {}}}},
)
def points_ede_zip(core: CoreDep) -> Response:
    """The EDE main file with its state-text and unit companion files, zipped."""
    stem = ede_file_names(core.settings)["points"].removesuffix(".csv")
    return Response(
        ede_zip(core.settings, snapshot=core.snapshot),
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{stem}.zip"'},
    )
