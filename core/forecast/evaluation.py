"""Forecast scores: CV(RMSE) and the point and band metrics over origins x steps."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


def cvrmse_pct(predicted: FloatArray, actual: FloatArray) -> float:
    """CV(RMSE) in percent over every value pooled.

    Divided by the magnitude of the mean: a site whose net load exports on average (PV) has a
    negative mean, and dividing by it would rank the worse of two forecasts as the better one.
    """
    return float(100.0 * np.sqrt(np.mean((predicted - actual) ** 2)) / abs(np.mean(actual)))


def forecast_metrics(
    predicted_kw: FloatArray,
    actual_kw: FloatArray,
    *,
    p10_kw: FloatArray | None = None,
    p90_kw: FloatArray | None = None,
) -> dict[str, float]:
    """Point and band metrics over origins x steps: the 60-minute step, all steps, the 15-minute
    average ending at the last step (CV(RMSE), percent), and the hour's peak."""
    err = predicted_kw - actual_kw
    last = err[:, -1]
    avg_actual = actual_kw[:, -15:].mean(axis=1)
    avg_pred = predicted_kw[:, -15:].mean(axis=1)
    out = {
        "rmse_60": float(np.sqrt(np.mean(last**2))),
        "mae_60": float(np.mean(np.abs(last))),
        "rmse_1_60": float(np.sqrt(np.mean(err**2))),
        "cvrmse_15min_60": cvrmse_pct(avg_pred, avg_actual),
        "peak_rmse": float(np.sqrt(np.mean((predicted_kw.max(1) - actual_kw.max(1)) ** 2))),
        "origins": float(len(actual_kw)),
    }
    if p10_kw is not None and p90_kw is not None:
        inside = (actual_kw[:, -1] >= p10_kw[:, -1]) & (actual_kw[:, -1] <= p90_kw[:, -1])
        out["coverage_p10_p90_60"] = float(np.mean(inside))
        out["peak_p90_rmse"] = float(np.sqrt(np.mean((p90_kw.max(1) - actual_kw.max(1)) ** 2)))
    return out
