"""BACnet points as REST resources."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import CoreDep
from api.schemas import PointOut, StatusFlags
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
                units=point.units,
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
