"""Acknowledged writes the database could not take before a stop: kept in a file, imported next.

A stop while the database is faulted would otherwise drop readings already acknowledged. The
writer hands back the ``keep`` document of each queued reading job; they are written to a JSON
file in the data directory, and the next start imports it (then renames it ``.imported``).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.readings import CompletedMinute
from core.storage.repository import Storage

log = logging.getLogger(__name__)

PREFIX = "recovery-"
SUFFIX = ".json"


def minutes_keep(
    minutes: Sequence[CompletedMinute],
    source: str,
    outdoor_air: dict[int, float] | None,
    dispatched: dict[int, float] | None,
) -> dict[str, Any]:
    """The keep document of an ``upsert_minutes`` job."""
    return {
        "kind": "minutes",
        "source": source,
        "minutes": [[m.minute, m.kw, m.sample_count] for m in minutes],
        "outdoor_air": None if outdoor_air is None else [[k, v] for k, v in outdoor_air.items()],
        "dispatched": None if dispatched is None else [[k, v] for k, v in dispatched.items()],
    }


def history_keep(sums: dict[int, tuple[float, int]], source: str) -> dict[str, Any]:
    """The keep document of a ``merge_history`` job."""
    return {
        "kind": "history",
        "source": source,
        "sums": [[m, total, count] for m, (total, count) in sums.items()],
    }


def write(data_dir: Path, documents: Sequence[dict[str, Any]]) -> Path | None:
    """Write the documents to a new recovery file (fsynced); its path, None when nothing."""
    if not documents:
        return None
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    path = data_dir / f"{PREFIX}{stamp}{SUFFIX}"
    temporary = path.with_suffix(".tmp")
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump({"version": 1, "writes": list(documents)}, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    return path


def pending_files(data_dir: Path) -> list[Path]:
    """Recovery files not imported yet, oldest first."""
    return sorted(data_dir.glob(f"{PREFIX}*{SUFFIX}"))


def import_all(storage: Storage, data_dir: Path) -> int:
    """Import every pending recovery file (blocking); return how many writes were applied."""
    applied = 0
    for path in pending_files(data_dir):
        try:
            documents = json.loads(path.read_text(encoding="utf-8"))["writes"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.error("recovery file %s is unreadable (%s); left in place", path, exc)
            continue
        for doc in documents:
            _apply(storage, doc)
            applied += 1
        path.rename(path.with_name(path.name + ".imported"))
        log.warning("imported %d acknowledged writes from %s", len(documents), path)
    return applied


def _apply(storage: Storage, doc: dict[str, Any]) -> None:
    if doc["kind"] == "minutes":
        minutes = [CompletedMinute(int(m), float(kw), int(n)) for m, kw, n in doc["minutes"]]
        outdoor = doc.get("outdoor_air")
        dispatched = doc.get("dispatched")
        storage.upsert_minutes(
            minutes,
            str(doc["source"]),
            outdoor_air=None if outdoor is None else {int(k): float(v) for k, v in outdoor},
            dispatched=None if dispatched is None else {int(k): float(v) for k, v in dispatched},
        )
    elif doc["kind"] == "history":
        sums = {int(m): (float(total), int(n)) for m, total, n in doc["sums"]}
        storage.merge_history(sums, str(doc["source"]))
    else:
        raise ValueError(f"unknown recovery write {doc['kind']!r}")
