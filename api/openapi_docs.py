"""What Swagger UI and ReDoc show: stable operation ids, descriptions that explain, examples.

Operation ids are the route functions' names (``list_points``), not FastAPI's generated
``list_points_api_v1_points_get``. Each operation's description says what the summary does not
(when to call it, what the figures mean, what an error means); each success response carries an
example captured from the demo service (``api/openapi_examples.json``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute

EXAMPLES_FILE = Path(__file__).resolve().parent / "openapi_examples.json"

DESCRIPTIONS: dict[str, str] = {
    "list_points": (
        "The same table a BAS reads over BACnet: one entry per object with its present value, "
        "units, reliability and status flags. A value whose reliability is not "
        "`no-fault-detected` must not be trusted (it may be the placeholder -1 of a point with "
        "no data). Poll it (the dashboard does every 15 s) or read `/metrics` for alerting."
    ),
    "points_ede": (
        "Semicolon-separated EDE 2.3 main file for BAS engineering tools (import it to create "
        "the points on the BAS side without typing them). Instances and names never change."
    ),
    "points_ede_zip": (
        "The three EDE files (points, state texts, units) in one archive, named after the "
        "device name."
    ),
    "post_readings": (
        "For a meter that is not on BACnet. A reading in the current or previous minute is a "
        "live write (priority 16, refused with 409 while a BACnet priority above holds the "
        "meter); older readings are merged into history. A batch is checked as a whole first: "
        "one bad reading refuses all of them and nothing is stored."
    ),
    "get_readings": (
        "The minute grid as stored: the mean of the writes in each minute, whether it was "
        "carried forward, and the outdoor air and dispatched kW beside it. Page with `start` "
        "and `limit`; the reply's `next_start` is the next page's start."
    ),
    "get_forecast": (
        "The forecast the `one-hour-future-power` point is taken from (its 60th step), with the "
        "P10-P90 band where the forecaster has one. 503 until a minute of readings has "
        "completed."
    ),
    "get_forecast_history": (
        "For each target minute, what the service forecast 60 minutes before it: compare it "
        "with the measured minutes to see how the forecast did. Entries marked `replayed` were "
        "computed after the fact from imported history by the forecaster in service, as it "
        "would have forecast them."
    ),
    "get_plan": (
        "What the dispatch planner decided: the battery and EV setpoints now and, per step, the "
        "expected load, battery power (+ charging), state of charge and grid draw. "
        "`configured` is false without `--has-battery` and `--battery-capacity-kwh`; "
        "`reliable` false means an input is missing or stale and `fallback` says which."
    ),
    "dispatch_tuning": (
        "What the nightly self-tuning chose: each night a child process replays the site's "
        "last 28 days through the same closed loop for a few candidate controllers and the "
        "one with the lowest bill (never above no battery; a tie keeps the defaults) is "
        "served from the next re-plan. Lists each candidate's replayed bill and the demand "
        "charge the choice saves at `--demand-charge-per-kw`."
    ),
    "get_day_ahead": (
        "The next 24 hours in 15-minute steps with a P10-P90 band: what the dispatch planner "
        "plans against. 503 while there is no fresh meter data to anchor it."
    ),
    "get_model": (
        "Which forecaster serves now (the seasonal baseline until a trained model beats it), "
        "its held-out error from training and its live error over the last 24 h, and a "
        "training run in progress if any."
    ),
    "list_runs": (
        "Every training run with its held-out error beside the baselines it had to beat; a run "
        "that does not beat them is `rejected` and the served model stays."
    ),
    "start_training": (
        "Trains in a child process (about a minute and up to 1 GB of memory); 409 while one "
        "runs. The service keeps serving meanwhile; poll `/api/v1/model/runs`."
    ),
    "get_demand": (
        "The demand-charge view of now: the open interval's average and projection, the "
        "billing period's peak and when it was set, the target in force (ratcheted to the "
        "paid peak), how much to shed, and the permits the BAS acts on, with notes saying why."
    ),
    "list_intervals": (
        "Closed demand intervals with their average kW, oldest first; `counted_for_peak` marks "
        "the complete intervals of the billing period that can set the billed peak."
    ),
    "get_month": (
        "The month view: the demand charge so far (billed peak x `--demand-charge-per-kw`), "
        "the energy cost at the flat or time-of-use prices, the period's highest intervals and "
        "each day's peak, and what the battery took off the peak: the same intervals computed "
        "on the meter less the kW the service dispatched. Imported minutes count like live ones."
    ),
    "put_target": (
        "The demand target the shedding and the dispatch plan hold to; written at priority 16 "
        "like the BACnet `demand-target` point (409 while a higher priority holds it)."
    ),
    "post_inputs": (
        "Optional measurements the demand logic and the planner use when fresh: PV power, "
        "battery SOC and power, EV charging power, outdoor air. Range-checked like the BACnet "
        "writes; a value older than `--stale-after-s` is ignored."
    ),
    "get_calendar": (
        "The site calendar: dates that are closed or run like another weekday (holidays, "
        "schedule exceptions), as the BACnet Calendar objects show it, and what it makes of "
        "today. Forecasts, training and the dispatch plan read a listed day as its day type."
    ),
    "put_calendar": (
        "Replaces the whole calendar (needs the token beyond loopback). Entries are single "
        "dates (BACnet wildcards allowed), ranges or BACnet week-n-day patterns; one bad "
        "entry refuses the whole body with 422 and nothing changes."
    ),
    "healthz": "Liveness: answers while the process serves HTTP, whatever its inputs.",
    "readyz": (
        "Readiness: 503 with the problems listed while the database does not answer, BACnet "
        "is not bound or the snapshot is not being recomputed."
    ),
    "metrics": (
        "Prometheus text format: one gauge per kind of quantity in base units (watts, ratio, "
        "seconds, Celsius, 0/1 states), reliability per point, counters of readings and "
        "database writes, `open_dsm_build_info` and the process metrics."
    ),
}

_TEXT_TYPES = {"points_ede": "text/csv", "metrics": "text/plain"}


def operation_id(route: APIRoute) -> str:
    """The route function's name: stable across path or method changes."""
    return route.name


def _examples() -> dict[str, Any]:
    examples: dict[str, Any] = json.loads(EXAMPLES_FILE.read_text())
    return examples


def install_openapi(app: FastAPI) -> None:
    """Fill the descriptions and examples into the document ``app.openapi`` builds (once).

    Wraps whatever ``app.openapi`` is now (``api.errors`` declares the error bodies there).
    """
    generate = app.openapi
    done = False

    def openapi() -> dict[str, Any]:
        nonlocal done
        schema = generate()
        if not done:
            _describe(schema, _examples())
            done = True
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _describe(schema: dict[str, Any], examples: dict[str, Any]) -> None:
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            name = operation.get("operationId", "")
            if name in DESCRIPTIONS:
                operation["description"] = DESCRIPTIONS[name]
            example = examples.get(name)
            if example is None:
                continue
            ok = next(
                (code for code in operation.get("responses", {}) if code.startswith("2")), None
            )
            if ok is None:
                continue
            content = operation["responses"][ok].setdefault("content", {})
            media = _TEXT_TYPES.get(name, "application/json")
            content.setdefault(media, {})["example"] = example
