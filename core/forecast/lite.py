"""Serving of an exported forecaster with the LiteRT interpreter (never imports TensorFlow)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from core.forecast.base import Forecast, MinuteHistory
from core.forecast.features import (
    FeatureConfig,
    FloatArray,
    Scaling,
    design_matrix,
    feature_blocks,
)

logger = logging.getLogger(__name__)

MODEL_FILE = "model.tflite"
META_FILE = "meta.json"
ARTIFACT_FORMAT = "open-dsm-forecaster"
SUPPORTED_VERSIONS = (1,)


class ArtifactError(ValueError):
    """An artifact directory is missing, incomplete or of an unknown version."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_artifact(directory: str | Path, tflite_model: bytes, meta: dict[str, Any]) -> Path:
    """Write model.tflite + meta.json atomically: a temp sibling dir, fsync, then rename.

    An existing artifact at ``directory`` is replaced; readers see the old or the new one whole.
    """
    target = Path(directory)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        for name, data in (
            (MODEL_FILE, tflite_model),
            (META_FILE, json.dumps(meta, indent=2, sort_keys=True).encode()),
        ):
            with open(tmp / name, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        _fsync_dir(tmp)
        if target.exists():
            # Directories cannot be renamed over a non-empty one: move the old aside first.
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
            os.rmdir(old)
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
        _fsync_dir(target.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def read_artifact(directory: str | Path) -> tuple[bytes, dict[str, Any]]:
    """Read and validate an artifact directory: (TFLite bytes, metadata)."""
    path = Path(directory)
    try:
        model = (path / MODEL_FILE).read_bytes()
        meta = json.loads((path / META_FILE).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"cannot read forecaster artifact at {path}: {exc}") from exc
    if meta.get("format") != ARTIFACT_FORMAT or meta.get("version") not in SUPPORTED_VERSIONS:
        raise ArtifactError(
            f"unsupported artifact at {path}: format {meta.get('format')!r}, "
            f"version {meta.get('version')!r}"
        )
    return model, meta


class LiteForecaster:
    """The trained MLP served by the LiteRT interpreter (one origin per call)."""

    def __init__(self, tflite_model: bytes, meta: dict[str, Any], *, num_threads: int = 1) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self._meta = meta
        self._config = FeatureConfig.from_dict(meta["features"])
        self._scaling = Scaling(
            center_kw=float(meta["scaling"]["center_kw"]),
            scale_kw=float(meta["scaling"]["scale_kw"]),
        )
        self._horizon = int(meta["horizon_minutes"])
        self._interpreter = Interpreter(model_content=tflite_model, num_threads=num_threads)
        inp = self._interpreter.get_input_details()[0]
        self._input_index = int(inp["index"])
        self._output_index = int(self._interpreter.get_output_details()[0]["index"])
        self._batch = 1
        self._interpreter.resize_tensor_input(self._input_index, [1, int(meta["input_dim"])])
        self._interpreter.allocate_tensors()

    @classmethod
    def load(cls, directory: str | Path, *, num_threads: int = 1) -> LiteForecaster:
        """Load from an artifact directory written by ``write_artifact``."""
        model, meta = read_artifact(directory)
        return cls(model, meta, num_threads=num_threads)

    @property
    def name(self) -> str:
        """Stable name: model kind and format version."""
        return f"{self._meta.get('model', 'mlp')}-v{self._meta.get('version', 1)}"

    @property
    def meta(self) -> dict[str, Any]:
        """The artifact metadata (scaling, features, validation figures)."""
        return self._meta

    @property
    def history_minutes(self) -> int:
        """Minutes of history the features reach back (3 weeks + context + a DST hour)."""
        return int(self._meta.get("history_minutes", self._config.history_minutes))

    def predict_raw(self, x: npt.NDArray[np.floating[Any]]) -> FloatArray:
        """Model outputs (scaled residuals: mean, p10, p90) for a batch of design rows."""
        x32 = np.ascontiguousarray(x, dtype=np.float32)
        if x32.shape[0] != self._batch:
            self._interpreter.resize_tensor_input(self._input_index, list(x32.shape))
            self._interpreter.allocate_tensors()
            self._batch = int(x32.shape[0])
        self._interpreter.set_tensor(self._input_index, x32)
        self._interpreter.invoke()
        return np.array(self._interpreter.get_tensor(self._output_index), dtype=np.float64)

    def predict_origins(
        self, start_minute: int, values_kw: FloatArray, origins: Any, tz: ZoneInfo
    ) -> tuple[FloatArray, FloatArray, FloatArray]:
        """(kw, p10, p90) arrays (origins x horizon) for many origins of one series."""
        blocks = feature_blocks(
            start_minute, values_kw, np.asarray(origins, dtype=np.int64), tz, self._config
        )
        out = self.predict_raw(design_matrix(blocks, self._scaling))
        h, s = self._horizon, self._scaling.scale_kw
        base = blocks.baseline_kw
        kw = base + s * out[:, :h]
        p10 = base + s * out[:, h : 2 * h]
        p90 = base + s * out[:, 2 * h :]
        # Never below the lowest kW the site's meter showed in training (0 for a consumer meter,
        # negative where PV exports); clipped after the band is built.
        floor = float(self._meta.get("floor_kw", 0.0))
        return np.maximum(kw, floor), np.maximum(p10, floor), np.maximum(p90, floor)

    def forecast(self, history: MinuteHistory, tz: ZoneInfo, made_at: datetime) -> Forecast | None:
        """Forecast the 60 minutes after ``history.end_minute``; None without recent data."""
        recent = history.values_kw[-self._config.recent_minutes :]
        if len(recent) == 0 or np.isnan(recent).all():
            return None
        origin = history.end_minute
        kw, p10, p90 = self.predict_origins(
            history.start_minute, history.values_kw, np.array([origin]), tz
        )
        if not np.isfinite(kw).all():
            return None
        peak_step = int(np.argmax(kw[0])) + 1
        note = f"peak {kw[0].max():.1f} kW at +{peak_step} min, P90 peak {p90[0].max():.1f} kW"
        return Forecast(
            forecaster=self.name,
            made_at=made_at,
            origin_minute=origin,
            kw=tuple(float(v) for v in kw[0]),
            p10_kw=tuple(float(v) for v in p10[0]),
            p90_kw=tuple(float(v) for v in p90[0]),
            note=note,
        )
