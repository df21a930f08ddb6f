"""Training of the neural forecaster (the only package that imports TensorFlow).

Model: a direct multi-output MLP. Inputs are the last minutes (1-minute, then block means),
(optionally) level offsets of the last 15..360 minutes against the seasonal mean,
smoothed same-wall-clock windows 1 day and 1..3 weeks earlier (context before the origin plus
the 60 target minutes), the seasonal-mean baseline and the local calendar. It predicts the 60
minutes as a residual over the smoothed seasonal mean, with P10/P90 heads (pinball loss) that are
constructed to bracket the point forecast. All scaling, window lengths and the number of epochs
are chosen on the site's own history (training statistics and an inner validation split).

Splits, oldest to newest: fit part | inner validation (V) | holdout (H). Candidates are trained on
the fit part and compared on V (with and without outdoor air where the site has it); the chosen
candidate is scored on H (never used for a choice) beside persistence and mean-2-weeks, and that
very model is exported as TFLite (a refit on everything would leave the exported weights, their
band and their figures unchecked; the features carry the newest days' level). The P10/P90 band
is calibrated by split conformal shifts per step (on V for the holdout figures, on V and H for
the served band). A second, day-ahead model (96 clock-aligned 15-minute steps,
residual over the mean-2-weeks day-ahead) is trained, chosen and calibrated the same way.

Cost does not grow with history: training reads a bounded window (the trainer loads at most
``TRAINING_HISTORY_WEEKS``) and fits on every ``TRAIN_STRIDE``-th origin (thinner where needed to
stay under ``MAX_FIT_SAMPLES``) of at most ``MAX_TRAIN_WEEKS`` weeks.

TensorFlow is imported inside functions so that importing this package stays cheap (it runs in
the trainer's child process; the serving process reads the exported TFLite with core.forecast.lite).

Rooms, in the order a training run visits them: ``samples`` (history check, split, scaled design
matrices), ``model`` (candidates and the network), ``fitting`` (steps both models share),
``search`` (the 60-minute model), ``day_ahead_training`` (the day-ahead model), ``export`` (what
serving receives), ``process`` (memory and progress housekeeping); ``training.train`` runs them.
"""

from __future__ import annotations

from core.forecast.neural.export import MODEL_NAME, TrainResult, export_tflite
from core.forecast.neural.fitting import choose_step_shrink, conformal_band
from core.forecast.neural.model import (
    LEVEL_MINUTES,
    QUANTILES,
    Candidate,
    apply_shrink,
    default_candidates,
    make_model,
    with_features,
)
from core.forecast.neural.process import ProgressFn
from core.forecast.neural.samples import (
    MAX_TRAIN_WEEKS,
    MIN_HISTORY_DAYS,
    MIN_VALID_FRACTION,
    InsufficientHistoryError,
    SampleSet,
)
from core.forecast.neural.training import train

__all__ = [
    "LEVEL_MINUTES",
    "MAX_TRAIN_WEEKS",
    "MIN_HISTORY_DAYS",
    "MIN_VALID_FRACTION",
    "MODEL_NAME",
    "QUANTILES",
    "Candidate",
    "InsufficientHistoryError",
    "ProgressFn",
    "SampleSet",
    "TrainResult",
    "apply_shrink",
    "choose_step_shrink",
    "conformal_band",
    "default_candidates",
    "export_tflite",
    "make_model",
    "train",
    "with_features",
]
