"""Prometheus metrics, read from the same snapshot the other faces publish."""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import APIRouter, Response
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from api.deps import ContextDep, PointTable
from core.service import DsmCore

router = APIRouter(tags=["metrics"])
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class SnapshotCollector(Collector):
    """Turns the current snapshot into gauges at scrape time (nothing computed twice)."""

    def __init__(self, core: DsmCore, points: PointTable) -> None:
        self._core = core
        self._points = points

    def collect(self) -> Iterator[Metric]:
        """Yield one family per figure."""
        snapshot = self._core.snapshot
        values = GaugeMetricFamily(
            "open_dsm_point_value", "Present value of each BACnet point", labels=["point"]
        )
        faults = GaugeMetricFamily(
            "open_dsm_point_fault",
            "1 when the point's reliability is not no-fault-detected",
            labels=["point", "reliability"],
        )
        for point in self._points.records(snapshot):
            values.add_metric([point.name], float(point.present_value))
            faults.add_metric([point.name, point.reliability], 1.0 if point.fault else 0.0)
        yield values
        yield faults
        age = self._core.snapshot_age_s()
        yield GaugeMetricFamily(
            "open_dsm_snapshot_age_seconds",
            "Seconds since outputs were recomputed",
            value=age if age is not None else float("nan"),
        )
        accepted = CounterMetricFamily(
            "open_dsm_readings_accepted", "Meter readings accepted", labels=["source"]
        )
        rejected = CounterMetricFamily(
            "open_dsm_readings_rejected", "Meter readings refused", labels=["source"]
        )
        for source, count in sorted(self._core.stats.accepted.items()):
            accepted.add_metric([source], count)
        for source, count in sorted(self._core.stats.rejected.items()):
            rejected.add_metric([source], count)
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


def build_registry(core: DsmCore, points: PointTable) -> CollectorRegistry:
    """A registry for this app only (no process-global state)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(core, points))
    return registry


@router.get("/metrics", response_class=Response)
async def metrics(context: ContextDep) -> Response:
    """Prometheus text exposition of the core's snapshot and counters."""
    return Response(generate_latest(context.registry), media_type=CONTENT_TYPE)
