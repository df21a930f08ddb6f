"""Prometheus metrics, read from the same snapshot the other faces publish.

Every figure is in a base unit with the unit in its name (W, W/s, ratio, seconds, Celsius); a
point with no value yet has no sample (never a sentinel); reliability is a state set per point
whose label values never change; counters exist at 0 from the first scrape.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from fastapi import APIRouter, Response
from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from api.deps import ContextDep, PointTable
from core.ports import CoreReads
from core.records import PointRecord

router = APIRouter(tags=["metrics"])
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Sources a reading can come from: their counters are exported at 0 before the first reading.
READING_SOURCES = ("bacnet", "rest")


@dataclass(frozen=True, slots=True)
class Quantity:
    """One gauge family: the points of one kind of quantity, converted to its base unit."""

    name: str
    documentation: str
    convert: Callable[[float], float]


POWER = Quantity("open_dsm_power_watts", "Power of each kW point, in watts", lambda v: v * 1e3)
RATE = Quantity(
    "open_dsm_power_change_watts_per_second",
    "Rate of change of the metered power, in watts per second",
    lambda v: v * 1e3 / 60.0,
)
RATIO = Quantity("open_dsm_ratio", "Each percent point as a ratio (0..1)", lambda v: v / 100.0)
DURATION = Quantity(
    "open_dsm_duration_seconds", "Each duration point, in seconds", lambda v: v * 60.0
)
STATE = Quantity("open_dsm_state", "Each binary point: 1 active, 0 inactive", float)
TEMP_C = Quantity(
    "open_dsm_temperature_celsius", "Each temperature point, in degrees Celsius", float
)
_F_TO_C = Quantity(TEMP_C.name, TEMP_C.documentation, lambda v: (v - 32.0) * 5.0 / 9.0)
_BY_UNITS = {"kilowatts": POWER, "percent": RATIO, "minutes": DURATION}
# Points whose BACnet units say kW but whose quantity is kW per minute.
_RATE_POINTS = frozenset({"power-rate-of-change"})


def quantity_of(point: PointRecord) -> Quantity:
    """The gauge family a point belongs to."""
    if point.object_type == "binary-value":
        return STATE
    if point.name in _RATE_POINTS:
        return RATE
    if point.units == "degrees-fahrenheit":
        return _F_TO_C
    if point.units == "degrees-celsius":
        return TEMP_C
    return _BY_UNITS[str(point.units)]


class SnapshotCollector(Collector):
    """Turns the current snapshot into gauges at scrape time (nothing computed twice)."""

    def __init__(self, core: CoreReads, points: PointTable, version: str) -> None:
        self._core = core
        self._points = points
        self._version = version

    def collect(self) -> Iterator[Metric]:
        """Yield one family per quantity kind and the service's own figures."""
        snapshot = self._core.snapshot
        families: dict[str, GaugeMetricFamily] = {}
        reliability = GaugeMetricFamily(
            "open_dsm_point_reliability",
            "BACnet reliability of each point as a state set: 1 on the state in force",
            labels=["point", "reliability"],
        )
        faults = GaugeMetricFamily(
            "open_dsm_point_fault",
            "1 when the point's reliability is not no-fault-detected",
            labels=["point"],
        )
        for point in self._points.records(snapshot):
            quantity = quantity_of(point)
            family = families.get(quantity.name)
            if family is None:
                family = GaugeMetricFamily(quantity.name, quantity.documentation, labels=["point"])
                families[quantity.name] = family
            if point.value is not None:  # no value yet: no sample (a sentinel would be plotted)
                family.add_metric([point.name], quantity.convert(float(point.value)))
            for candidate in self._points.reliability_states:
                reliability.add_metric(
                    [point.name, candidate], 1.0 if candidate == point.reliability else 0.0
                )
            faults.add_metric([point.name], 1.0 if point.fault else 0.0)
        yield from families.values()
        yield reliability
        yield faults
        age = self._core.snapshot_age_s()
        if age is not None:
            yield GaugeMetricFamily(
                "open_dsm_snapshot_age_seconds", "Seconds since outputs were recomputed", value=age
            )
        accepted = CounterMetricFamily(
            "open_dsm_readings_accepted", "Meter readings accepted", labels=["source"]
        )
        rejected = CounterMetricFamily(
            "open_dsm_readings_rejected", "Meter readings refused", labels=["source"]
        )
        stats = self._core.stats
        for source in sorted({*READING_SOURCES, *stats.accepted, *stats.rejected}):
            accepted.add_metric([source], stats.accepted.get(source, 0))
            rejected.add_metric([source], stats.rejected.get(source, 0))
        yield accepted
        yield rejected
        writer = self._core.writer
        yield GaugeMetricFamily(
            "open_dsm_storage_fault",
            "1 while the database is not taking writes (writes are refused)",
            value=0.0 if writer.fault is None else 1.0,
        )
        yield GaugeMetricFamily(
            "open_dsm_db_writes_pending", "Database writes queued or running", value=writer.pending
        )
        yield CounterMetricFamily(
            "open_dsm_db_write_failures",
            "Failed database write attempts",
            value=writer.failures_total,
        )
        yield CounterMetricFamily(
            "open_dsm_db_writes_dropped",
            "Database writes given up after repeated non-transient errors (data lost)",
            value=writer.dropped_total,
        )
        info = GaugeMetricFamily(
            "open_dsm_build_info",
            "Always 1: the running version, its Python and the forecaster served",
            labels=["version", "python_version", "forecaster"],
        )
        info.add_metric([self._version, platform.python_version(), snapshot.model.forecaster], 1.0)
        yield info


def build_registry(core: CoreReads, points: PointTable, version: str = "0") -> CollectorRegistry:
    """A registry for this app only: the snapshot, the process and the Python runtime."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(core, points, version))
    ProcessCollector(registry=registry)  # process_*: CPU, memory, open fds, start time
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


@router.get("/metrics", response_class=Response)
async def metrics(context: ContextDep) -> Response:
    """Prometheus text exposition of the core's snapshot and counters."""
    return Response(generate_latest(context.registry), media_type=CONTENT_TYPE)
