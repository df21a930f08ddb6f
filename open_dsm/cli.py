"""The ``open-dsm`` command line. Heavy modules are imported inside the commands that need them."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO
from zoneinfo import ZoneInfo

from pydantic import ValidationError

from core.config import Settings

log = logging.getLogger("open_dsm")

# Flags that take a list are given comma-separated.
_LIST_FIELDS = {"bbmd_bdt"}

# The settings each command uses (``serve`` uses them all): --help lists only these.
_STORE = ("data_dir", "db")
COMMAND_SETTINGS: dict[str, tuple[str, ...]] = {
    "migrate": (*_STORE, "log_level"),
    "train": (*_STORE, "timezone", "training_time_budget_s", "log_level"),
    "import": (*_STORE, "timezone", "outdoor_air_units", "log_level"),
    "points": (
        "device_instance",
        "device_name",
        "device_description",
        "outdoor_air_units",
        "min_kw",
        "max_kw",
        "high_percentile",
        "low_percentile",
        "percentile_window_days",
    ),
}


def _flag(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


def add_settings_arguments(
    parser: argparse.ArgumentParser, names: Sequence[str] | None = None
) -> None:
    """One flag per Settings field (or per field in ``names``); env variable and default shown."""
    group = parser.add_argument_group(
        "settings", "each flag also reads OPEN_DSM_<NAME>; a flag given wins over the variable"
    )
    for name, field in Settings.model_fields.items():
        if names is not None and name not in names:
            continue
        env = f"OPEN_DSM_{name.upper()}"
        if name in _LIST_FIELDS:
            default = "empty"
        elif field.default_factory is not None:
            default = "computed"
        elif field.default is None:
            default = "unset"
        else:
            default = str(field.default)
        if name == "data_dir":
            default = "$XDG_DATA_HOME/open-dsm or ~/.local/share/open-dsm"
        elif name == "timezone":
            default = "the host's zone"
        help_text = f"{field.description} [{env}; default: {default}]"
        help_text = help_text.replace("%", "%%")
        group.add_argument(
            _flag(name), dest=f"setting_{name}", default=None, help=help_text, metavar=name.upper()
        )


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Settings from flags over environment; exits with one clear line when something is wrong."""
    overrides: dict[str, Any] = {}
    for name in Settings.model_fields:
        value = getattr(args, f"setting_{name}", None)
        if value is not None:
            overrides[name] = value
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            loc = [str(part) for part in error.get("loc", ()) if isinstance(part, str)]
            name = loc[0] if loc else ""
            message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
            if name:
                lines.append(
                    f"open-dsm: invalid {_flag(name)} (OPEN_DSM_{name.upper()}): {message}"
                )
            else:
                lines.append(f"open-dsm: invalid settings: {message}")
        sys.stderr.write("\n".join(lines) + "\n")
        raise SystemExit(2) from None


def _cmd_serve(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    from open_dsm.bootstrap import StartupError, configure_logging, serve

    configure_logging(settings.log_level)
    try:
        asyncio.run(serve(settings))
    except StartupError as exc:
        sys.stderr.write(f"open-dsm: {exc}\n")
        return 1
    return 0


def _quiet_logging(level: str) -> None:
    """A command's terminal view: its own lines, not the migrations' or the libraries' chatter."""
    from open_dsm.bootstrap import configure_logging

    configure_logging(level)
    for noisy in ("alembic", "alembic.runtime.migration", "core.storage.migrate"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))


def _cmd_migrate(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    from open_dsm.bootstrap import StartupError, configure_logging, prepare_data_dir

    configure_logging(settings.log_level)
    from core.storage.migrate import upgrade_to_head
    from core.storage.repository import create_db_engine

    try:
        if settings.db is None:
            prepare_data_dir(settings)
        revision = upgrade_to_head(create_db_engine(settings.database_url))
    except StartupError as exc:
        sys.stderr.write(f"open-dsm: {exc}\n")
        return 1
    log.info("database at revision %s", revision)
    return 0


def _open_storage(settings: Settings) -> Any:
    """Migrate and open the database named by the settings (CLI commands)."""
    from core.storage.migrate import upgrade_to_head
    from core.storage.repository import Storage, create_db_engine
    from open_dsm.bootstrap import prepare_data_dir

    prepare_data_dir(settings)
    engine = create_db_engine(settings.database_url)
    upgrade_to_head(engine)
    return Storage(engine)


class _ProgressBar:
    """A one-line progress bar on stderr (the CLI's view of long work)."""

    def __init__(self, label: str, stream: TextIO | None = None) -> None:
        self._label = label
        self._last = -1
        self._stream = stream or sys.stderr
        self._tty = self._stream.isatty()

    def __call__(self, fraction: float, message: str = "") -> None:
        percent = int(100 * max(0.0, min(1.0, fraction)))
        if percent == self._last and not message:
            return
        self._last = percent
        filled = percent // 4
        line = f"{self._label} [{'#' * filled}{'.' * (25 - filled)}] {percent:3d}% {message}"
        if self._tty:
            self._stream.write("\r" + line[:120].ljust(120))
            if percent >= 100:
                self._stream.write("\n")
        else:
            self._stream.write(line + "\n")
        self._stream.flush()


@contextlib.contextmanager
def _stderr_to(path: Path) -> Iterator[TextIO]:
    """Send fd 2 (TensorFlow's C++ warnings, library logs) to ``path``; yield the terminal."""
    sys.stderr.flush()
    saved = os.dup(2)
    terminal = os.fdopen(os.dup(saved), "w", buffering=1)
    try:
        with path.open("ab") as log_file:
            os.dup2(log_file.fileno(), 2)
        yield terminal
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        terminal.close()


def _cmd_train(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    from open_dsm.bootstrap import StartupError

    _quiet_logging(settings.log_level)
    try:
        _open_storage(settings)
    except StartupError as exc:
        sys.stderr.write(f"open-dsm: {exc}\n")
        return 1
    # TensorFlow writes to fd 2 from C++ and Python alike: its lines (and the trainer's own log)
    # go to a file beside the database; the terminal shows the progress bar and the outcome.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    log_path = settings.data_dir / "train.log"
    sys.stderr.write(f"open-dsm: training; details in {log_path}\n")
    from core.trainer import run_training

    with _stderr_to(log_path) as terminal:
        outcome = run_training(
            settings.database_url,
            str(settings.models_dir),
            settings.timezone,
            "cli",
            time_budget_s=settings.training_time_budget_s,
            progress=_ProgressBar("training", terminal),
        )
    sys.stderr.write(f"open-dsm: training run {outcome.run_id} {outcome.message}\n")
    return 0 if outcome.status in ("accepted", "rejected") else 1


def _cmd_import_weather(args: argparse.Namespace, settings: Settings) -> int:
    from core.forecast.weather import WeatherImportError, load_weather_csv
    from open_dsm.bootstrap import StartupError

    tz = args.tz or settings.timezone
    stored_f = settings.outdoor_air_units == "degrees-fahrenheit"
    convert: Any = ""
    if args.weather_unit == "C" and stored_f:
        convert = "c_to_f"
    elif args.weather_unit == "F" and not stored_f:
        convert = "f_to_c"
    try:
        storage = _open_storage(settings)
        series = load_weather_csv(
            args.file,
            ZoneInfo(tz),
            time_column=args.time_column,
            temp_column=args.temp_column,
            clock=args.weather_clock,
            convert=convert,
        )
    except (StartupError, WeatherImportError, OSError) as exc:
        sys.stderr.write(f"open-dsm: cannot import {args.file}: {exc}\n")
        return 1
    log.info("%s", series.report.summary())
    temps = series.as_dict()
    updated = storage.upsert_weather(temps)
    log.info(
        "outdoor air stored for %d minutes; %d minutes have no stored kW yet and were skipped "
        "(import the meter history first)",
        updated,
        len(temps) - updated,
    )
    return 0


def _cmd_import_calendar(args: argparse.Namespace, settings: Settings) -> int:
    from datetime import date

    from core.calendar import CalendarError
    from core.calendar_ics import default_window, load_calendar_file
    from open_dsm.bootstrap import StartupError

    first, last = default_window(date.today())
    try:
        if args.calendar_from:
            first = date.fromisoformat(args.calendar_from)
        if args.calendar_to:
            last = date.fromisoformat(args.calendar_to)
    except ValueError as exc:
        sys.stderr.write(f"open-dsm: --calendar-from/--calendar-to: {exc}\n")
        return 2
    try:
        imported = load_calendar_file(args.file, first, last)  # errors name the file
        storage = _open_storage(settings)
        stored = storage.load_calendar()
    except CalendarError as exc:
        sys.stderr.write(f"open-dsm: cannot import the calendar {exc}\n")
        return 1
    except (StartupError, OSError) as exc:
        sys.stderr.write(f"open-dsm: cannot import {args.file}: {exc}\n")
        return 1
    if args.replace:
        merged = stored.with_entries(imported.entries)
    else:
        known = {(e.dates, e.day_type) for e in stored.entries}
        new = [e for e in imported.entries if (e.dates, e.day_type) not in known]
        merged = stored.with_entries([*stored.entries, *new])
    try:
        merged = type(merged)(merged.entries, merged.closed_like)  # checks the entry limit
    except CalendarError as exc:
        sys.stderr.write(f"open-dsm: cannot import {args.file}: {exc}\n")
        return 1
    storage.save_calendar(merged)
    log.info(
        "calendar: %d entries read from %s (%s to %s); %d entries stored (a running service "
        "picks them up within a minute)",
        len(imported.entries),
        args.file,
        first,
        last,
        len(merged.entries),
    )
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    _quiet_logging(settings.log_level)
    if args.calendar:
        return _cmd_import_calendar(args, settings)
    if args.weather:
        return _cmd_import_weather(args, settings)
    from core.forecast.meter_csv import MeterImportError, load_meter_csv
    from open_dsm.bootstrap import StartupError

    tz = args.tz or settings.timezone
    try:
        storage = _open_storage(settings)
        series = load_meter_csv(
            args.file, ZoneInfo(tz), time_column=args.time_column, kw_column=args.kw_column
        )
    except (StartupError, MeterImportError, OSError) as exc:
        sys.stderr.write(f"open-dsm: cannot import {args.file}: {exc}\n")
        return 1
    # load_meter_csv logged the file's summary (once).
    bar = _ProgressBar("importing")
    inserted = storage.insert_missing_minutes(
        series.start_minute, series.values_kw, "import", lambda done, total: bar(done / total)
    )
    valid = int((series.values_kw == series.values_kw).sum())
    log.info(
        "imported %d new minutes (%d already stored were kept) into %s",
        inserted,
        valid - inserted,
        settings.database_url.split("@")[-1],
    )
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from open_dsm import demo
    from open_dsm.bootstrap import configure_logging

    configure_logging("WARNING")
    return demo.run(args)


def _cmd_points(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    from bacnet.ede import ede_file_names, ede_files
    from bacnet.points import POINTS

    if args.format == "ede":
        files = ede_files(settings)
        if args.out is None:
            sys.stdout.write(files["points"])
            return 0
        args.out.mkdir(parents=True, exist_ok=True)
        for kind, name in ede_file_names(settings).items():
            (args.out / name).write_text(files[kind], newline="")
            log.info("wrote %s", args.out / name)
        return 0
    rows = [
        {
            "name": p.name,
            "object_identifier": p.object_identifier,
            "units": p.units,
            "writable": p.writable,
            "cov_increment": p.cov_increment,
            "description": p.description,
        }
        for p in POINTS
    ]
    import json

    sys.stdout.write(json.dumps(rows, indent=2) + "\n")
    return 0


BENCHMARKS = {
    "service": "BACnet RP/RPM and REST latency/throughput vs a bare bacpypes3 device",
    "forecast": "train on all but the last N days; model vs baselines on the rest",
    "demand": "replay a meter file through the demand logic; peaks, alarms, shed",
    "dispatch": "closed-loop battery replay vs fixed thresholds and the perfect-foresight optimum",
}


def _cmd_bench(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    module = importlib.import_module(f"bench.{args.bench}")
    result: int = module.run(args)
    return result


def build_parser(bench_arguments: bool = True) -> argparse.ArgumentParser:
    """The argument parser with every sub-command.

    ``bench_arguments=False`` leaves the benchmarks' own arguments out, so ``serve`` does not
    import the benchmark modules (about half a second of start-up on a small box).
    """
    parser = argparse.ArgumentParser(
        prog="open-dsm", description="Edge demand side management: BACnet/IP device + REST API"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the service (BACnet/IP device and REST API)")
    add_settings_arguments(serve)
    serve.set_defaults(func=_cmd_serve)

    migrate = sub.add_parser("migrate", help="apply database migrations and exit")
    add_settings_arguments(migrate, COMMAND_SETTINGS["migrate"])
    migrate.set_defaults(func=_cmd_migrate)

    train = sub.add_parser(
        "train", help="train, evaluate and (if it beats the baselines) publish a forecast model"
    )
    add_settings_arguments(train, COMMAND_SETTINGS["train"])
    train.set_defaults(func=_cmd_train)

    imp = sub.add_parser(
        "import", help="load meter history (or weather, or the site calendar) into the database"
    )
    imp.add_argument(
        "file",
        type=Path,
        help="CSV with a timestamp column and a kW column (or see --weather, --calendar)",
    )
    imp.add_argument("--time-column", default=None, help="timestamp column (auto-detected)")
    imp.add_argument("--kw-column", default=None, help="kW column (auto-detected)")
    imp.add_argument("--tz", default=None, help="zone of naive timestamps (default --timezone)")
    imp.add_argument(
        "--weather",
        action="store_true",
        help="the file is outdoor-air history (timestamp + temperature), stored beside the kW",
    )
    imp.add_argument("--temp-column", default=None, help="temperature column (auto-detected)")
    imp.add_argument(
        "--weather-clock",
        choices=("auto", "local", "standard"),
        default="auto",
        help="weather stamps: site local time, local standard time (NOAA), or detect",
    )
    imp.add_argument(
        "--weather-unit",
        choices=("F", "C"),
        default=None,
        help="unit of the file's temperatures (default: the outdoor-air point's unit)",
    )
    imp.add_argument(
        "--calendar",
        action="store_true",
        help=(
            "the file is the site calendar: an iCalendar (.ics) of holidays (closed unless an "
            "event says 'like <weekday>') or the JSON body of PUT /api/v1/calendar; added to "
            "the stored calendar (see --replace)"
        ),
    )
    imp.add_argument(
        "--replace", action="store_true", help="with --calendar: replace the stored entries"
    )
    imp.add_argument(
        "--calendar-from",
        default=None,
        help="with --calendar: first date recurring .ics events are expanded from (default: "
        "1 January of last year)",
    )
    imp.add_argument(
        "--calendar-to",
        default=None,
        help="with --calendar: last date (default: 31 December two years ahead)",
    )
    add_settings_arguments(imp, COMMAND_SETTINGS["import"])
    imp.set_defaults(func=_cmd_import)

    points = sub.add_parser("points", help="export the BACnet point list (EDE 2.3 or JSON)")
    points.add_argument("--format", choices=("ede", "json"), default="ede")
    points.add_argument(
        "--out",
        type=Path,
        default=None,
        help="directory for the three EDE files (default: print the main file)",
    )
    add_settings_arguments(points, COMMAND_SETTINGS["points"])
    points.set_defaults(func=_cmd_points)

    demo = sub.add_parser(
        "demo",
        help="loopback demo: bundled meter data, the service, a simulated BAS, the dashboard",
    )
    from open_dsm.demo import add_arguments as add_demo_arguments

    add_demo_arguments(demo)
    demo.set_defaults(func=_cmd_demo)

    bench = sub.add_parser("bench", help="benchmarks that print a table")
    bench_sub = bench.add_subparsers(dest="bench", required=True)
    for name, help_text in BENCHMARKS.items():
        bench_parser = bench_sub.add_parser(name, help=help_text)
        if bench_arguments:
            importlib.import_module(f"bench.{name}").add_arguments(bench_parser)
        bench_parser.set_defaults(func=_cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``open-dsm`` console script."""
    words = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(bench_arguments="bench" in words)
    args = parser.parse_args(words)
    result: int = args.func(args)
    return result
