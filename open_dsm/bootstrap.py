"""Composition root: settings -> logging -> migrate -> one event loop runs core, BACnet and REST."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ipaddress
import logging
import os
import resource
import signal
import socket
import tempfile
import time
from collections.abc import Generator

import uvicorn
from starlette.types import ASGIApp

from api.app import create_app
from bacnet.device import BacnetFace, Writer
from bacnet.table import BacnetPointTable
from core.clock import Clock, ScaledClock, SystemClock
from core.commands import InputKey
from core.config import Settings
from core.dispatch.assets import Tariff
from core.factory import build_core
from core.forecast.baseline import SeasonalMeanForecaster
from core.ports import CommandPort, InputWriter
from core.service import DsmCore
from core.storage import health, recovery
from core.storage.migrate import upgrade_to_head
from core.storage.repository import Storage, create_db_engine
from core.training import TrainingManager
from core.tuning import TuningManager
from core.writer import DatabaseWriter
from open_dsm import package_version
from open_dsm.connections import (
    ConnectionCollector,
    ConnectionLimits,
    connection_cap,
    guarded_protocol,
    install_accept_error_handler,
    raise_fd_limit,
)

log = logging.getLogger("open_dsm")


def service_clock(settings: Settings) -> Clock:
    """The system clock, or the simulated one a demo asks for (--clock-start)."""
    if settings.clock_start is None:
        return SystemClock()
    return ScaledClock(settings.clock_start, settings.clock_speed, settings.clock_anchor_unix)


class StartupError(Exception):
    """A problem that stops start-up; its message is shown as one line."""


def configure_logging(level: str) -> None:
    """stdlib logging for the whole process (uvicorn included)."""
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )
    # bacpypes3 logs every decode problem at WARNING/ERROR through its own loggers; keep ours.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)


def prepare_data_dir(settings: Settings) -> None:
    """Create the data directory and prove it is writable."""
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=settings.data_dir, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise StartupError(
            f"data directory {settings.data_dir} is not writable: {exc.strerror or exc}"
        ) from exc


def check_database_file(settings: Settings) -> None:
    """Refuse to start on a SQLite file that vanished since the last run (unless told to)."""
    path = health.sqlite_path(settings.database_url)
    if path is None:
        return
    problem = health.vanished(path)
    if problem is None:
        return
    if not settings.start_empty:
        raise StartupError(problem)
    log.warning("starting with an empty database (--start-empty): %s", problem.split(";")[0])


def remember_database(settings: Settings, storage: Storage) -> health.FileWatch | None:
    """Give the database an id (once), note it beside the file, and watch the file."""
    path = health.sqlite_path(settings.database_url)
    if path is None:
        return None
    state = storage.get_state(health.STATE_DATABASE_ID) or {}
    database_id = state.get("id")
    if not isinstance(database_id, str):
        database_id = health.new_database_id()
        storage.set_state(health.STATE_DATABASE_ID, {"id": database_id})
    previous = health.remembered_id(path)
    if previous is not None and previous != database_id:
        log.warning(
            "the database file %s is not the one this service last used (%s, now %s)",
            path,
            previous,
            database_id,
        )
    health.remember(path, database_id)
    return health.FileWatch(path)


def is_loopback_host(host: str) -> bool:
    """True when ``host`` is a loopback address (127.0.0.0/8, ::1) or 'localhost'."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve anywhere


def check_exposure(settings: Settings) -> None:
    """Refuse REST writes open to the network unless --allow-open-writes says so (then warn)."""
    if settings.api_token is not None or is_loopback_host(settings.http_host):
        return
    if not settings.allow_open_writes:
        raise StartupError(
            f"REST would accept writes from anyone: --http-host {settings.http_host} is beyond "
            "loopback and no --api-token is set; set --api-token (OPEN_DSM_API_TOKEN), bind "
            "--http-host 127.0.0.1, or run open on purpose with --allow-open-writes true"
        )
    log.warning(
        "REST WRITES ARE OPEN TO THE NETWORK (--allow-open-writes): anyone who reaches %s:%d "
        "can change the demand target, post readings and start training; set --api-token",
        settings.http_host,
        settings.http_port,
    )


def connection_limits(settings: Settings, fd_limit: int | None = None) -> ConnectionLimits:
    """The REST connection limits: head deadline, and the cap kept below the open-file limit."""
    if fd_limit is None:
        fd_limit = int(resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    return ConnectionLimits(
        head_timeout_s=settings.http_header_timeout_s,
        max_connections=connection_cap(settings.http_max_connections, fd_limit),
    )


def uvicorn_config(
    app: ASGIApp, settings: Settings, limits: ConnectionLimits | None = None
) -> uvicorn.Config:
    """How uvicorn serves the app: idle keep-alive closed, a deadline for each request head, a
    connection cap, bounded headers, no own logging."""
    return uvicorn.Config(
        app,
        http=guarded_protocol(limits or connection_limits(settings)),
        log_config=None,
        access_log=False,
        lifespan="off",
        server_header=False,
        timeout_keep_alive=settings.http_keepalive_s,
        h11_max_incomplete_event_size=16 * 1024,  # request line and headers
        timeout_graceful_shutdown=5,
    )


def bind_http_socket(host: str, port: int) -> socket.socket:
    """Bind the REST port ourselves so a clash is one clear line, not a uvicorn exit."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Accepted connections inherit this: headers and body go out without Nagle's delay.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(address)
    except OSError as exc:
        raise StartupError(f"cannot listen on HTTP {host}:{port}: {exc.strerror or exc}") from exc
    sock.set_inheritable(True)
    return sock


def check_udp_port(host: str, port: int) -> None:
    """Fail clearly if the BACnet UDP port is taken (bacpypes3 would retry forever)."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.bind((host, port))
    except OSError as exc:
        raise StartupError(
            f"cannot bind BACnet/IP UDP {host}:{port}: {exc.strerror or exc} "
            "(is another BACnet application using it?)"
        ) from exc
    finally:
        probe.close()


def bacnet_writers(commands: CommandPort) -> dict[str, Writer]:
    """What each writable BACnet point holds, keyed by its input key: the command port and the
    key, which send a ``WriteInput`` (or ``RelinquishInput``) for every network write."""
    return {key.value: InputWriter(commands, key) for key in InputKey}


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the entry point owns SIGINT/SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def _tuning_manager(
    settings: Settings, storage: Storage, core: DsmCore, training: TrainingManager
) -> TuningManager:
    """The dispatch self-tuning (its nightly replay does nothing without a battery); it also
    replays the served model's day-ahead."""
    controller = core.reads.dispatch_controller
    return TuningManager(
        storage,
        SystemClock(),
        controller,
        settings.database_url,
        settings.tz,
        controller.tariff if controller is not None else Tariff(),
        settings.demand_interval_minutes,
        core.writer.submit,
        training.served_artifact,
    )


async def serve(settings: Settings) -> None:
    """Run the service until SIGINT/SIGTERM, then shut both faces down in order."""
    started = time.monotonic()
    version = package_version()
    prepare_data_dir(settings)
    check_exposure(settings)  # before the database is opened or any port is bound
    check_database_file(settings)
    engine = create_db_engine(settings.database_url)
    try:
        await asyncio.to_thread(upgrade_to_head, engine)
        storage = Storage(engine)
        watch = await asyncio.to_thread(remember_database, settings, storage)
        await asyncio.to_thread(recovery.import_all, storage, settings.data_dir)
    except Exception as exc:
        raise StartupError(f"cannot open or migrate the database: {exc}") from exc
    clock = service_clock(settings)
    writer = DatabaseWriter(clock)
    if watch is not None:
        writer.use_check(watch, health.database_name(settings.database_url))
    else:
        writer.name = health.database_name(settings.database_url)
    # The seasonal baseline serves until the training manager loads an accepted model.
    if settings.clock_start is not None:
        log.warning(
            "simulated clock: %s at %.3g x (now %s)",
            settings.clock_start.isoformat(),
            settings.clock_speed,
            clock.now().isoformat(),
        )
    core = build_core(settings, storage, clock, SeasonalMeanForecaster(weeks=2), writer=writer)
    await core.start()
    watch_task = asyncio.create_task(
        writer.watch(health.WATCH_INTERVAL_S), name="open-dsm-database-watch"
    )

    face = BacnetFace(settings, version)
    ip, port = face.resolve_address()
    check_udp_port(ip, port)
    http_socket = bind_http_socket(settings.http_host, settings.http_port)
    face.start(core.snapshot, bacnet_writers(core), core.reads.calendar, core)
    core.subscribe(face.sync)
    try:
        await face.wait_bound(timeout_s=5.0)
    except TimeoutError as exc:
        raise StartupError(str(exc)) from exc
    log.info("BACnet/IP bound on %s:%d in %.2f s", ip, port, time.monotonic() - started)

    training = TrainingManager(settings, storage, SystemClock(), core, writer)
    # After the device is up: loading a trained model (LiteRT) must not delay the first I-Am;
    # the baseline serves until it is loaded.
    training_start = asyncio.create_task(training.start(), name="open-dsm-model-load")
    tuning = _tuning_manager(settings, storage, core, training)
    tuning_start = asyncio.create_task(tuning.start(), name="open-dsm-tuning-load")
    app = create_app(
        core,
        point_table=BacnetPointTable(settings),
        bacnet_bound=lambda: face.bound,
        training=training,
        version=version,
        tuning=tuning,
    )
    limits = connection_limits(settings, raise_fd_limit())
    server = _Server(uvicorn_config(app, settings, limits))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    install_accept_error_handler(loop, limits)
    app.state.context.registry.register(ConnectionCollector(limits))
    log.info(
        "REST limits: %d connections, %g s for a request head, keep-alive %d s",
        limits.max_connections,
        limits.head_timeout_s,
        settings.http_keepalive_s,
    )
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    # Start-up's objects (modules, the app, bacpypes3's tables) move out of the collector's
    # reach: a full collection otherwise walks them all, 100-270 ms with the loop held, whenever
    # a large request allocates enough to trigger one (measured on a 19,000-reading batch).
    gc.collect()
    gc.freeze()
    core_task = asyncio.create_task(core.run(), name="open-dsm-core")
    schedule_task = asyncio.create_task(training.run_schedule(), name="open-dsm-nightly-training")
    tuning_task = asyncio.create_task(tuning.run_schedule(), name="open-dsm-nightly-tuning")
    http_task = asyncio.create_task(server.serve(sockets=[http_socket]), name="open-dsm-http")
    stop_task = asyncio.create_task(stop.wait(), name="open-dsm-stop")
    log.info(
        "open-dsm %s serving: REST http://%s:%d/docs, BACnet device %d, pid %d",
        version,
        settings.http_host,
        settings.http_port,
        settings.device_instance,
        os.getpid(),
    )
    try:
        done, _ = await asyncio.wait(
            {core_task, http_task, stop_task, schedule_task}, return_when=asyncio.FIRST_COMPLETED
        )
        for task in done:
            if task is not stop_task and task.exception() is not None:
                log.error("%s stopped: %r", task.get_name(), task.exception())
    finally:
        log.info("shutting down")
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(http_task, timeout=10)
        background = (
            core_task,
            schedule_task,
            training_start,
            tuning_task,
            tuning_start,
            watch_task,
        )
        for task in (stop_task, *background):
            task.cancel()
        for task in background:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await training.stop()
        await tuning.stop()
        await core.stop()
        if writer.unkept:
            try:
                kept = recovery.write(settings.data_dir, writer.unkept)
                log.warning(
                    "%d acknowledged writes the database did not take are kept in %s; the next "
                    "start imports them",
                    len(writer.unkept),
                    kept,
                )
            except OSError as exc:
                log.error("%d acknowledged writes lost: %s", len(writer.unkept), exc)
        face.close()
        engine.dispose()
        http_socket.close()
        log.info("stopped")
