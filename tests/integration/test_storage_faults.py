"""One storage fault model on a real SQLite file: corrupt, not-a-database, deleted, replaced.

Every database error is a fault until a write commits again; a file deleted, replaced or
overwritten under the service is a sticky fault; new writes are refused while faulted; a start
that finds the previous file gone refuses; writes stranded by a stop are kept and imported.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event

from core.clock import FakeClock
from core.errors import StorageUnavailable
from core.factory import build_core
from core.forecast.baseline import SeasonalMeanForecaster
from core.ports import SubmitReadings, WriteInputs
from core.service import DsmCore
from core.storage import health, recovery
from core.storage.migrate import upgrade_to_head
from core.storage.repository import Storage, create_db_engine
from core.timegrid import minute_of
from core.writer import DatabaseWriter, looks_corrupt
from open_dsm.bootstrap import StartupError, check_database_file, remember_database
from tests.helpers import submit_reading

pytestmark = pytest.mark.anyio


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """A migrated SQLite file."""
    path = tmp_path / "data" / "open-dsm.sqlite3"
    path.parent.mkdir(parents=True)
    engine = create_db_engine(f"sqlite:///{path}")
    upgrade_to_head(engine)
    engine.dispose()
    return path


@pytest.fixture
def file_storage(db_path: Path) -> Iterator[Storage]:
    """The repository over ``db_path``."""
    engine = create_db_engine(f"sqlite:///{db_path}")
    yield Storage(engine)
    engine.dispose()


class _Injector:
    """Makes every statement fail with a given sqlite3 error while set (SQLite's own codes)."""

    def __init__(self, engine: Engine) -> None:
        self.error: sqlite3.Error | None = None
        event.listen(engine, "before_cursor_execute", self._before)

    def _before(self, *_args: Any) -> None:
        if self.error is not None:
            raise self.error


def _sqlite_error(message: str, code: int) -> sqlite3.DatabaseError:
    error = sqlite3.DatabaseError(message)
    error.sqlite_errorcode = code  # type: ignore[attr-defined]
    return error


async def _core(settings: Any, storage: Storage, clock: FakeClock, db_path: Path) -> DsmCore:
    writer = DatabaseWriter(clock, retry_initial_s=0.01, retry_max_s=0.02, confirm_timeout_s=2.0)
    writer.use_check(health.FileWatch(db_path), health.database_name(f"sqlite:///{db_path}"))
    core = build_core(settings, storage, clock, SeasonalMeanForecaster(), writer=writer)
    await core.start()
    await writer.drain()
    return core


async def _wait_for(condition: Any, timeout_s: float = 5.0) -> None:
    for _ in range(int(timeout_s / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")


@pytest.mark.parametrize(
    ("message", "code"),
    [("database disk image is malformed", 11), ("file is not a database", 26)],
)
async def test_corrupt_errors_stay_a_fault_until_a_write_commits(  # type: ignore[no-untyped-def]
    settings, clock: FakeClock, db_path: Path, file_storage: Storage, caplog, message, code
):
    core = await _core(settings, file_storage, clock, db_path)
    writer = core.writer
    injector = _Injector(file_storage.engine)
    await submit_reading(core, 20.0)
    injector.error = _sqlite_error(message, code)
    clock.advance(60)
    await core.tick()  # closes the minute: its row is queued and fails
    await _wait_for(lambda: writer.failures_total >= 8)
    # Far past the old five tries: nothing dropped, the fault never cleared, nothing claimed.
    assert writer.dropped_total == 0
    assert writer.fault is not None and "corrupt" in writer.fault.error
    assert core.snapshot.storage_fault is not None
    assert not await core.reads.ready()
    with pytest.raises(StorageUnavailable, match="database"):
        await submit_reading(core, 21.0)
    assert "succeed again" not in caplog.text
    injector.error = None
    with caplog.at_level(logging.WARNING, logger="core.writer"):
        await _wait_for(lambda: writer.fault is None)
    assert "succeed again" in caplog.text
    await writer.drain()
    stored = file_storage.list_minutes(None, None, 10)
    assert [row.kw for row in stored] == [pytest.approx(20.0)]
    await core.stop()


def test_sqlite_error_codes_are_recognised_as_corruption() -> None:
    assert looks_corrupt(_sqlite_error("anything", 11))
    assert looks_corrupt(_sqlite_error("anything", 26))
    assert not looks_corrupt(sqlite3.OperationalError("database is locked"))


@pytest.mark.parametrize("how", ["deleted", "replaced", "overwritten"])
async def test_file_gone_or_garbled_is_a_sticky_fault_that_refuses_writes(  # type: ignore[no-untyped-def]
    settings, clock: FakeClock, db_path: Path, file_storage: Storage, how: str
):
    core = await _core(settings, file_storage, clock, db_path)
    writer = core.writer
    await submit_reading(core, 20.0)
    if how == "deleted":
        db_path.unlink()
    elif how == "replaced":
        other = db_path.with_name("other.sqlite3")
        other.write_bytes(db_path.read_bytes())
        os.replace(other, db_path)
    else:
        with open(db_path, "r+b") as handle:  # same inode, garbage inside
            handle.write(os.urandom(4096))
    problem = await writer.check_now(integrity=False)
    assert problem is not None and how in problem and str(db_path) in problem
    assert writer.fault is not None and writer.fault.error == problem
    assert core.snapshot.storage_fault == problem
    assert not await core.reads.ready()
    with pytest.raises(StorageUnavailable, match=str(db_path)):
        await submit_reading(core, 21.0)
    with pytest.raises(StorageUnavailable):
        await core.command(WriteInputs({"demand_target_kw": 30.0}))
    # A write would commit into the unlinked or old inode and keep nothing: the queued minute is
    # held, the fault stays, and a stop hands the acknowledged reading to the recovery file.
    clock.advance(60)
    await core.tick()
    await asyncio.sleep(0.1)
    assert writer.pending > 0 and writer.fault is not None
    await writer.stop(timeout_s=5)
    kept = [doc for doc in writer.unkept if doc["kind"] == "minutes"]
    assert any(kw == pytest.approx(20.0) for doc in kept for _, kw, _ in doc["minutes"])


async def test_integrity_check_finds_damage_in_a_sound_header(tmp_path: Path) -> None:
    path = tmp_path / "damaged.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (x INTEGER PRIMARY KEY, y TEXT)")
    conn.executemany("INSERT INTO t VALUES (?, ?)", [(i, "v" * 200) for i in range(2000)])
    conn.commit()
    conn.close()
    watch = health.FileWatch(path)
    assert watch(True) is None
    with open(path, "r+b") as handle:  # keep the header page, damage the b-tree pages
        handle.seek(4096 * 2)
        handle.write(b"\xff" * 4096 * 4)
    problem = watch(True)
    assert problem is not None and "damaged" in problem


def test_start_refuses_when_the_previous_file_vanished(  # type: ignore[no-untyped-def]
    settings, db_path: Path
):
    settings = settings.model_copy(update={"data_dir": db_path.parent})
    engine = create_db_engine(settings.database_url)
    storage = Storage(engine)
    assert remember_database(settings, storage) is not None
    engine.dispose()
    check_database_file(settings)  # the file is there: fine
    db_path.unlink()
    with pytest.raises(StartupError, match="--start-empty") as refused:
        check_database_file(settings)
    assert "\n" not in str(refused.value) and str(db_path) in str(refused.value)
    check_database_file(settings.model_copy(update={"start_empty": True}))


async def test_acknowledged_writes_stranded_by_a_stop_are_kept_and_imported(  # type: ignore[no-untyped-def]
    settings, clock: FakeClock, db_path: Path, file_storage: Storage, tmp_path: Path
):
    core = await _core(settings, file_storage, clock, db_path)
    injector = _Injector(file_storage.engine)
    acknowledged = {}
    await submit_reading(core, 31.0)
    acknowledged[minute_of(clock.now())] = 31.0
    injector.error = sqlite3.OperationalError("disk I/O error")
    clock.advance(60)
    await core.tick()
    await _wait_for(lambda: core.writer.fault is not None)
    await core.stop()  # the writer gives up after its timeout ...
    core.writer._check = None
    kept = core.writer.unkept
    assert any(doc["kind"] == "minutes" for doc in kept)
    path = recovery.write(tmp_path, kept)
    assert path is not None
    injector.error = None
    fresh = tmp_path / "fresh.sqlite3"
    engine = create_db_engine(f"sqlite:///{fresh}")
    upgrade_to_head(engine)
    assert recovery.import_all(Storage(engine), tmp_path) >= 1
    stored = {row.minute: row.kw for row in Storage(engine).list_minutes(None, None, 10)}
    for minute, kw in acknowledged.items():
        assert stored[minute] == pytest.approx(kw)
    assert recovery.pending_files(tmp_path) == []
    engine.dispose()


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 4 MB tmpfs (needs root and mount rights; skipped otherwise)."""
    import subprocess

    mount_point = tmp_path / "small"
    mount_point.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount_point)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


async def test_a_full_disk_is_a_fault_until_a_write_commits_again(  # type: ignore[no-untyped-def]
    settings, clock: FakeClock, small_tmpfs: Path
):
    path = small_tmpfs / "open-dsm.sqlite3"
    engine = create_db_engine(f"sqlite:///{path}")
    upgrade_to_head(engine)
    storage = Storage(engine)
    core = await _core(settings, storage, clock, path)
    writer = core.writer
    await submit_reading(core, 20.0)
    filler = small_tmpfs / "filler"
    with open(filler, "wb") as handle, pytest.raises(OSError):  # fill it to the last byte
        while True:
            handle.write(b"\0" * 65536)
            handle.flush()
    acknowledged = {minute_of(clock.now()): 20.0}
    refused = False
    for _ in range(200):  # a day of minutes of history fills what is left, if anything is
        clock.advance(60)
        try:
            await submit_reading(core, 30.0)
        except StorageUnavailable:
            refused = True
            break
        acknowledged[minute_of(clock.now())] = 30.0
    assert refused and writer.fault is not None
    assert "full" in writer.fault.error.lower()
    assert not await core.reads.ready()
    filler.unlink()
    await _wait_for(lambda: writer.fault is None, timeout_s=10)
    await writer.drain()
    stored = {row.minute: row.kw for row in storage.list_minutes(None, None, 1000)}
    for minute, kw in acknowledged.items():
        assert stored[minute] == pytest.approx(kw)
    assert writer.dropped_total == 0
    await core.stop()
    engine.dispose()


async def test_a_history_batch_arriving_as_the_fault_starts_is_refused_at_once(  # type: ignore[no-untyped-def]
    settings, clock: FakeClock, db_path: Path, file_storage: Storage
):
    from datetime import timedelta

    from core.intake import Reading

    core = await _core(settings, file_storage, clock, db_path)
    injector = _Injector(file_storage.engine)
    injector.error = _sqlite_error("file is not a database", 26)
    old = clock.now() - timedelta(hours=2)
    batch = [Reading(10.0 + i, old + timedelta(minutes=i)) for i in range(5)]
    # Accepted at the door (no fault known yet), then answered as soon as the fault is known:
    # not acknowledged, no hang, no 500.
    with pytest.raises(StorageUnavailable, match="corrupt"):
        await asyncio.wait_for(core.command(SubmitReadings(batch, "rest")), 3.0)
    assert core.writer.fault is not None
    injector.error = None
    await _wait_for(lambda: core.writer.fault is None)
    await core.stop()
