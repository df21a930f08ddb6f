"""``open-dsm demo``: bundled meter data, the service and a simulated BAS, all on loopback.

The demo imports a slice of a real building's minute data (``open_dsm/data/demo_minutes.csv``),
optionally trains a model, starts ``open-dsm serve`` as a child process, and plays a BAS: a
separate bacpypes3 application that writes the next minutes of the file to ``input-power-meter``
with WriteProperty and reads the decisions back, one line per file minute.

Two clocks: at ``--speed 1`` without ``--start`` the file is shifted by whole weeks to end now
and everything runs on the wall clock. With ``--start`` (a time of day, or ``busiest``) or a
``--speed`` above 1, the file keeps its own dates and the service, the BAS and the page all run
on a simulated clock that starts at the chosen file minute and runs ``--speed`` times faster.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from core.config import Settings
from core.timegrid import minute_of, minute_start

DEMO_CSV = Path(__file__).resolve().parent / "data" / "demo_minutes.csv"
DEMO_TIMEZONE = "America/Chicago"  # the zone of the bundled file's local timestamps
DEMO_TARGET_KW = 21.5  # about the 95th percentile of the building's 15-minute demand
LOOPBACK = "127.0.0.1"
MINUTES_PER_WEEK = 7 * 24 * 60
MIN_HISTORY_MINUTES = 28 * 24 * 60  # what a training run needs
_PR_SET_PDEATHSIG = 1

# What the simulated BAS reads back each minute: (label, object identifier).
READ_BACK = (
    ("forecast+60", "analog-value,2"),
    ("avg", "analog-value,11"),
    ("proj", "analog-value,12"),
    ("eff.target", "analog-value,15"),
    ("shed", "analog-value,16"),
    ("high", "binary-value,1"),
    ("low", "binary-value,2"),
)


@dataclass(frozen=True)
class DemoData:
    """The bundled slice shifted to end now: history to import and minutes for the BAS."""

    history_start_minute: int
    history_kw: npt.NDArray[np.float64]
    future_kw: npt.NDArray[np.float64]
    shift_minutes: int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The demo's own flags; anything after ``--`` goes to ``open-dsm serve``."""
    parser.add_argument("--train", action="store_true", help="train a model before serving")
    parser.add_argument(
        "--speed",
        type=float,
        default=1.0,
        help="file minutes per minute of wall time (1 = real time; above 1 the service, the BAS "
        "and the page run on a simulated clock on the file's own time)",
    )
    parser.add_argument(
        "--start",
        default=None,
        metavar="HH:MM|busiest",
        help="play from this time of day (the first weekday at or after it, with 28 days of "
        "history before), or 'busiest': the 90 minutes before the highest interval after those "
        "28 days; runs on the simulated clock",
    )
    parser.add_argument(
        "--minutes",
        type=int,
        default=0,
        help="stop after this many file minutes have been played (0 = until Ctrl-C)",
    )
    parser.add_argument("--http-port", type=int, default=8000, help="REST/dashboard port")
    parser.add_argument("--bacnet-port", type=int, default=47808, help="the device's UDP port")
    parser.add_argument(
        "--bas-port", type=int, default=None, help="the simulated BAS's UDP port (device + 1)"
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="keep the demo's database here (default: a temporary directory, removed at exit)",
    )
    parser.add_argument(
        "serve_args",
        nargs=argparse.REMAINDER,
        help="after --: extra `open-dsm serve` flags, e.g. -- --has-battery true "
        "--battery-capacity-kwh 20 --battery-charge-kw 10 (the dispatch plan needs the capacity)",
    )


def shifted_demo_data(
    start_minute: int, values_kw: npt.NDArray[np.float64], now_minute: int
) -> DemoData:
    """Split the slice at the minute that falls on now when shifted by whole weeks.

    Whole weeks keep each minute's weekday and time of day (UTC), so the building's weekly
    pattern (closed on Sundays) lines up with today; at least 28 days stay history (enough to
    train), the rest is what the BAS plays, starting now.
    """
    if len(values_kw) <= MIN_HISTORY_MINUTES:
        raise ValueError("the demo slice needs more than 28 days of minutes")
    offset = (now_minute - (start_minute + MIN_HISTORY_MINUTES)) % MINUTES_PER_WEEK
    split = MIN_HISTORY_MINUTES + offset
    if split >= len(values_kw):  # a slice shorter than 5 weeks: play from its last week
        split -= MINUTES_PER_WEEK
    shift = now_minute - (start_minute + split)
    return DemoData(
        history_start_minute=start_minute + shift,
        history_kw=values_kw[:split],
        future_kw=np.concatenate([values_kw[split:], values_kw[:split]]),
        shift_minutes=shift,
    )


BUSIEST_LEAD_MINUTES = 90  # --start busiest: play from this long before the highest interval
_TIME_OF_DAY = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")


def choose_start(
    start_minute: int, values_kw: npt.NDArray[np.float64], tz: ZoneInfo, spec: str
) -> int:
    """The index of the file minute ``--start`` names; 28 days of history always stay before it.

    ``HH:MM``: the first weekday (Monday to Friday) minute at that local time of day.
    ``busiest``: BUSIEST_LEAD_MINUTES before the start of the highest 15-minute interval.
    Raises ValueError for anything else or when the file is too short.
    """
    first = MIN_HISTORY_MINUTES
    if len(values_kw) <= first:
        raise ValueError("the demo slice needs more than 28 days of minutes")
    if spec == "busiest":
        lo = first + BUSIEST_LEAD_MINUTES
        usable = len(values_kw) - lo
        blocks = usable // 15
        if blocks < 1:
            raise ValueError("the file has no interval after its 28 days of history")
        means = np.nanmean(values_kw[lo : lo + 15 * blocks].reshape(blocks, 15), axis=1)
        return lo + 15 * int(np.nanargmax(means)) - BUSIEST_LEAD_MINUTES
    match = _TIME_OF_DAY.match(spec.strip())
    if not match:
        raise ValueError(f"--start {spec!r}: give HH:MM (site time) or 'busiest'")
    hour, minute = int(match[1]), int(match[2])
    for index in range(first, len(values_kw)):
        local = minute_start(start_minute + index).astimezone(tz)
        if local.hour == hour and local.minute == minute and local.weekday() < 5:
            return index
    raise ValueError(f"--start {spec}: no weekday {spec} after the file's first 28 days")


def import_file_history(settings: Any, start_minute: int, values: npt.NDArray[np.float64]) -> None:
    """Store minutes as they are (the simulated clock's history: the file's own dates)."""
    from core.storage.migrate import upgrade_to_head
    from core.storage.repository import Storage, create_db_engine
    from open_dsm.bootstrap import prepare_data_dir

    prepare_data_dir(settings)
    engine = create_db_engine(settings.database_url)
    try:
        upgrade_to_head(engine)
        Storage(engine).insert_missing_minutes(start_minute, values, "import")
    finally:
        engine.dispose()


def import_demo_history(settings: Any, now: datetime) -> DemoData:
    """Load the bundled CSV with the `open-dsm import` loader and store it shifted to end now."""
    from core.forecast.meter_csv import load_meter_csv
    from core.storage.migrate import upgrade_to_head
    from core.storage.repository import Storage, create_db_engine
    from open_dsm.bootstrap import prepare_data_dir

    series = load_meter_csv(DEMO_CSV, ZoneInfo(DEMO_TIMEZONE))
    data = shifted_demo_data(series.start_minute, series.values_kw, minute_of(now))
    prepare_data_dir(settings)
    engine = create_db_engine(settings.database_url)
    try:
        upgrade_to_head(engine)
        Storage(engine).insert_missing_minutes(data.history_start_minute, data.history_kw, "import")
    finally:
        engine.dispose()
    return data


def _die_with_parent() -> None:
    """In the service process: SIGTERM when the demo dies, whatever killed it."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def _check_ports_free(http_port: int, udp_ports: Sequence[int]) -> None:
    """Fail before starting anything when a port is taken (another service would answer)."""
    for kind, port in [
        (socket.SOCK_STREAM, http_port),
        *((socket.SOCK_DGRAM, p) for p in udp_ports),
    ]:
        with socket.socket(socket.AF_INET, kind) as probe:
            try:
                probe.bind((LOOPBACK, port))
            except OSError as exc:
                name = "TCP" if kind == socket.SOCK_STREAM else "UDP"
                raise RuntimeError(
                    f"{name} port {port} on {LOOPBACK} is in use ({exc.strerror})"
                ) from None


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _wait_ready(url: str, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the service exited with {proc.returncode}")
        with (
            contextlib.suppress(urllib.error.URLError, OSError),
            urllib.request.urlopen(f"{url}/readyz", timeout=1) as reply,
        ):
            if reply.status == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"the service did not become ready in {timeout_s:.0f} s")


def _stop(proc: subprocess.Popen[bytes], timeout_s: float = 20.0) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return int(proc.returncode)


async def _read_back(app: Any, address: Any, label: str, oid: str) -> str:
    """One point as the BAS sees it: the value, or why it cannot be trusted."""
    from bacpypes3.primitivedata import ObjectIdentifier

    identifier = ObjectIdentifier(oid)
    reliability = str(await app.read_property(address, identifier, "reliability"))
    if reliability != "no-fault-detected":
        return f"{label} ({reliability})"
    value = await app.read_property(address, identifier, "present-value")
    return f"{label} {value}" if "binary" in oid else f"{label} {float(value):.2f}"


@dataclass(frozen=True)
class SimulatedClock:
    """The clock the service runs on in the simulated mode (the same three numbers)."""

    start: datetime
    speed: float
    anchor_unix: float

    def now(self) -> datetime:
        """Simulated time now."""
        return self.start + timedelta(seconds=(time.time() - self.anchor_unix) * self.speed)


async def run_bas_simulated(
    device_address: str,
    bas_port: int,
    file_start_minute: int,
    values_kw: npt.NDArray[np.float64],
    clock: SimulatedClock,
    tz: ZoneInfo,
    *,
    minutes: int,
    stop: asyncio.Event,
    say: Callable[[str], None],
) -> int:
    """Write, at each minute of the simulated clock, the file's value for that minute."""
    from bacpypes3.apdu import ErrorRejectAbortNack
    from bacpypes3.pdu import Address
    from bacpypes3.primitivedata import ObjectIdentifier, Real

    app = _bas_application(bas_port)
    address = Address(device_address)
    meter = ObjectIdentifier("analog-value,1")
    first_minute: int | None = None  # the first file minute played (after start-up)
    written = 0
    last: int | None = None
    try:
        while not stop.is_set():
            now = clock.now()
            minute = minute_of(now)
            first_minute = minute if first_minute is None else first_minute
            if minutes > 0 and minute - first_minute >= minutes:
                say(f"played {minutes} file minutes")
                break
            index = minute - file_start_minute
            if index >= len(values_kw):
                say("the end of the file: nothing more to play")
                break
            if minute != last:
                last = minute
                kw = float(values_kw[index])
                stamp = f"{now.astimezone(tz):%Y-%m-%d %H:%M:%S%z}"
                if kw != kw:
                    say(f"{stamp} file minute missing, nothing written")
                else:
                    try:
                        await app.write_property(address, meter, "present-value", Real(kw))
                        parts = [f"{stamp} wrote {kw:6.2f} kW"]
                        for label, oid in READ_BACK:
                            parts.append(await _read_back(app, address, label, oid))
                        say(" | ".join(parts))
                        written += 1
                    except (Exception, ErrorRejectAbortNack) as exc:  # a BAS keeps going
                        say(f"{stamp} BACnet error: {exc!r}")
            # Wake just after the next simulated minute starts.
            into = (clock.now() - minute_start(minute)).total_seconds()
            wait_s = max(0.0, (60.0 - into) / clock.speed) + 0.02
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait_s)
    finally:
        app.close()
    return written


def _bas_application(bas_port: int) -> Any:
    from bacpypes3.app import Application
    from bacpypes3.local.device import DeviceObject
    from bacpypes3.local.networkport import NetworkPortObject

    device = DeviceObject(objectIdentifier=("device", 599001), objectName="demo-bas")
    port = NetworkPortObject(
        f"{LOOPBACK}/8:{bas_port}", objectIdentifier=("network-port", 1), objectName="NetworkPort-1"
    )
    return Application.from_object_list([device, port])


async def run_bas(
    device_address: str,
    bas_port: int,
    future_kw: npt.NDArray[np.float64],
    *,
    period_s: float,
    minutes: int,
    stop: asyncio.Event,
    say: Callable[[str], None],
) -> int:
    """Write the next file minutes to input-power-meter (wall clock) and read decisions back."""
    from bacpypes3.apdu import ErrorRejectAbortNack
    from bacpypes3.pdu import Address
    from bacpypes3.primitivedata import ObjectIdentifier, Real

    app = _bas_application(bas_port)
    address = Address(device_address)
    meter = ObjectIdentifier("analog-value,1")
    written = 0
    try:
        index = 0
        next_at = time.monotonic()
        while not stop.is_set() and (minutes <= 0 or index < minutes):
            kw = float(future_kw[index % len(future_kw)])
            index += 1
            if kw != kw:  # a hole in the file: a BAS would not write either
                say(f"{datetime.now(UTC):%H:%M:%S} file minute missing, nothing written")
            else:
                at = datetime.now(UTC)
                try:
                    await app.write_property(address, meter, "present-value", Real(kw))
                    parts = [f"{at:%H:%M:%S} wrote {kw:6.2f} kW"]
                    for label, oid in READ_BACK:
                        parts.append(await _read_back(app, address, label, oid))
                    say(" | ".join(parts))
                    written += 1
                except (Exception, ErrorRejectAbortNack) as exc:  # a BAS keeps going
                    say(f"{datetime.now(UTC):%H:%M:%S} BACnet error: {exc!r}")
            next_at += period_s
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(0.0, next_at - time.monotonic()))
    finally:
        app.close()
    return written


def run(args: argparse.Namespace) -> int:
    """Run the demo until Ctrl-C (or --minutes writes); 0 when everything stopped cleanly."""
    if args.speed <= 0:
        sys.stderr.write("open-dsm: --speed must be above 0\n")
        return 2
    temporary = args.data_dir is None
    data_dir = Path(tempfile.mkdtemp(prefix="open-dsm-demo-")) if temporary else args.data_dir
    bas_port = args.bas_port or args.bacnet_port + 1
    http = f"http://{LOOPBACK}:{args.http_port}"
    settings = Settings(
        data_dir=data_dir, db=f"sqlite:///{data_dir}/open-dsm.sqlite3", timezone=DEMO_TIMEZONE
    )
    store = ["--data-dir", str(data_dir), "--db", str(settings.db)]  # never an OPEN_DSM_DB
    serve_flags = [
        *store,
        "--http-host",
        LOOPBACK,
        "--http-port",
        str(args.http_port),
        "--bacnet-address",
        f"{LOOPBACK}/8:{args.bacnet_port}",
        "--timezone",
        DEMO_TIMEZONE,
        "--demand-target-kw",
        str(DEMO_TARGET_KW),
    ]
    extra = [a for a in args.serve_args if a != "--"]
    proc: subprocess.Popen[bytes] | None = None
    signal.signal(signal.SIGTERM, _interrupt)  # SIGTERM cleans up like Ctrl-C
    try:
        _check_ports_free(args.http_port, [args.bacnet_port, bas_port])
        _say(f"open-dsm demo: data in {data_dir}")
        simulated: tuple[SimulatedClock, int, npt.NDArray[np.float64]] | None = None
        data: DemoData | None = None
        if args.start is not None or args.speed > 1:
            from core.forecast.meter_csv import load_meter_csv

            tz = ZoneInfo(DEMO_TIMEZONE)
            series = load_meter_csv(DEMO_CSV, tz)
            index = choose_start(series.start_minute, series.values_kw, tz, args.start or "busiest")
            import_file_history(settings, series.start_minute, series.values_kw[:index])
            start = minute_start(series.start_minute + index)
            clock = SimulatedClock(start, args.speed, time.time())
            simulated = (clock, series.start_minute, series.values_kw)
            serve_flags += [
                "--clock-start",
                start.isoformat(),
                "--clock-speed",
                repr(args.speed),
                "--clock-anchor-unix",
                repr(clock.anchor_unix),
            ]
            _say(
                f"imported {index / 1440:.1f} days of a real building's minutes (its own dates); "
                f"the clock starts at {start.astimezone(tz):%a %Y-%m-%d %H:%M %Z} and runs "
                f"{args.speed:g}x"
            )
        else:
            data = import_demo_history(settings, datetime.now(UTC))
            days = len(data.history_kw) / 1440
            _say(f"imported {days:.1f} days of a real building's minutes, shifted to end now")
        python = [sys.executable, "-m", "open_dsm"]
        if args.train:
            _say("training a model (about a minute)...")
            subprocess.run(
                [*python, "train", *store, "--timezone", DEMO_TIMEZONE, "--log-level", "WARNING"],
                check=False,
            )
        log_path = data_dir / "service.log"
        with log_path.open("ab") as log:
            proc = subprocess.Popen(
                [*python, "serve", *serve_flags, *extra],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches the demo, which stops the service
                preexec_fn=_die_with_parent,
            )
        try:
            _wait_ready(http, proc, 60.0)
        except RuntimeError as exc:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
            raise RuntimeError("; ".join([str(exc), *tail])) from None
        _say(f"service up (log: {log_path}); BACnet device at {LOOPBACK}:{args.bacnet_port}")
        _say(f"dashboard: {http}/   (Ctrl-C stops the demo)")
        _say(
            f"simulated BAS at {LOOPBACK}:{bas_port} writes input-power-meter every "
            f"{60.0 / args.speed:g} s (one file minute) and reads the decisions back:"
        )
        written = asyncio.run(_bas_main(args, data, simulated, bas_port, proc))
        _say(f"simulated BAS stopped after {written} writes")
        return 0 if proc.poll() is None else 1
    except KeyboardInterrupt:
        return 0
    except (RuntimeError, ValueError, OSError) as exc:
        sys.stderr.write(f"open-dsm demo: {exc}\n")
        return 1
    finally:
        if proc is not None:
            code = _stop(proc)
            _say(f"service stopped (exit code {code})")
        if temporary:
            shutil.rmtree(data_dir, ignore_errors=True)


async def _bas_main(
    args: argparse.Namespace,
    data: DemoData | None,
    simulated: tuple[SimulatedClock, int, npt.NDArray[np.float64]] | None,
    bas_port: int,
    proc: subprocess.Popen[bytes],
) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    async def watch_service() -> None:
        while not stop.is_set():
            if proc.poll() is not None:
                _say(f"the service exited with {proc.returncode}")
                stop.set()
            await asyncio.sleep(0.5)

    watcher = asyncio.create_task(watch_service())
    try:
        if simulated is not None:
            clock, file_start, values = simulated
            return await run_bas_simulated(
                f"{LOOPBACK}:{args.bacnet_port}",
                bas_port,
                file_start,
                values,
                clock,
                ZoneInfo(DEMO_TIMEZONE),
                minutes=args.minutes,
                stop=stop,
                say=_say,
            )
        assert data is not None
        return await run_bas(
            f"{LOOPBACK}:{args.bacnet_port}",
            bas_port,
            data.future_kw,
            period_s=60.0 / args.speed,
            minutes=args.minutes,
            stop=stop,
            say=_say,
        )
    finally:
        stop.set()
        await watcher
