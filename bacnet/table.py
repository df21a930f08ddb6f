"""The point table as plain records: what the REST API and the metrics read of the BACnet face.

The composition root hands a ``BacnetPointTable`` to ``api.app.create_app``, so the API lists points
and serves the EDE files without importing this package.
"""

from __future__ import annotations

from bacnet.ede import ede_file_names, ede_files, ede_zip
from bacnet.points import POINTS, ObjectType, Reliability
from core.config import Settings
from core.records import FileRecord, ObjectTypeName, PointRecord
from core.snapshot import Snapshot

_OBJECT_TYPE_NAMES: dict[ObjectType, ObjectTypeName] = {
    ObjectType.ANALOG_VALUE: "analog-value",
    ObjectType.BINARY_VALUE: "binary-value",
}


class BacnetPointTable:
    """Every BACnet point's value, reliability and metadata for one snapshot, and the EDE files."""

    # Every reliability a point can report (the metrics export each as a state, 0 or 1).
    reliability_states: tuple[str, ...] = tuple(r.value for r in Reliability)

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def records(self, snapshot: Snapshot) -> list[PointRecord]:
        """Every point, in the table's order, as a BACnet read would return it for ``snapshot``."""
        out = []
        for point in POINTS:
            reliability = point.reliability(snapshot)
            out.append(
                PointRecord(
                    name=point.name,
                    object_type=_OBJECT_TYPE_NAMES[point.object_type],
                    instance=point.instance,
                    object_identifier=point.object_identifier,
                    present_value=point.present_value(snapshot),
                    value=point.value_of(snapshot),
                    units=point.units_for(self._settings),
                    reliability=reliability.value,
                    fault=reliability is not Reliability.NO_FAULT_DETECTED,
                    description=point.describe(snapshot, self._settings),
                    writable=point.writable,
                    cov_increment=point.cov_increment,
                )
            )
        return out

    def ede_points_csv(self, snapshot: Snapshot) -> FileRecord:
        """The EDE 2.3 main file (the point list BAS engineering tools import)."""
        name = ede_file_names(self._settings)["points"]
        text = ede_files(self._settings, snapshot=snapshot)["points"]
        return FileRecord(name, text.encode("utf-8"))

    def ede_zip(self, snapshot: Snapshot) -> FileRecord:
        """The EDE main file with its state-text and unit companion files, zipped."""
        stem = ede_file_names(self._settings)["points"].removesuffix(".csv")
        return FileRecord(f"{stem}.zip", ede_zip(self._settings, snapshot=snapshot))
