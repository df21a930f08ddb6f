"""Is the database file still the one the service opened, and sound? (SQLite only.)

A running service holds its SQLite file open: deleting or replacing the file under it goes
unnoticed by SQLite, whose writes then commit into an unlinked inode and are lost at the next
start. ``FileWatch`` compares the path's identity (device, inode) and header with what was opened,
and on request runs ``PRAGMA quick_check``. The marker beside the database remembers that a file
existed, so a start that finds it gone refuses rather than silently creating an empty one.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import uuid
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url

log = logging.getLogger(__name__)

SQLITE_HEADER = b"SQLite format 3\x00"
# How often a running service checks its database file (the brief: noticed within 30 s).
WATCH_INTERVAL_S = 5.0
MARKER_NAME = ".open-dsm-database.json"
STATE_DATABASE_ID = "database_id"


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL, None for another backend or an in-memory database."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return None
    if parsed.database == ":memory:" or parsed.database.startswith("file:"):
        return None
    return Path(parsed.database).resolve()


def database_name(url: str) -> str:
    """How logs and /readyz name the database (the SQLite file, or the URL without password)."""
    path = sqlite_path(url)
    if path is not None:
        return f"database {path}"
    return f"database {make_url(url).render_as_string(hide_password=True)}"


@dataclass(frozen=True, slots=True)
class FileIdentity:
    """Which file a path named when it was opened."""

    device: int
    inode: int


def identity_of(path: Path) -> FileIdentity:
    """The identity of the file at ``path`` now (OSError if there is none)."""
    st = os.stat(path)
    return FileIdentity(st.st_dev, st.st_ino)


class FileWatch:
    """Checks that ``path`` is still the SQLite file that was opened, and (on request) sound."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.identity = identity_of(path)

    def __call__(self, integrity: bool) -> str | None:
        """A problem with the file, or None. Blocking: call it in a thread."""
        try:
            now = identity_of(self.path)
        except FileNotFoundError:
            return f"the database file {self.path} was deleted while open"
        if now != self.identity:
            return f"the database file {self.path} was replaced by another file while open"
        try:
            with open(self.path, "rb") as handle:
                header = handle.read(len(SQLITE_HEADER))
        except OSError as exc:
            return f"the database file {self.path} cannot be read: {exc.strerror or exc}"
        if header and header != SQLITE_HEADER[: len(header)]:
            return f"the database file {self.path} was overwritten: it is not a SQLite database"
        return quick_check(self.path) if integrity else None


def quick_check(path: Path) -> str | None:
    """SQLite's own quick integrity check of ``path`` (read-only); a problem, or None."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            rows = conn.execute("PRAGMA quick_check(3)").fetchall()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return f"the database file {path} is damaged: {exc}"
    problems = [str(row[0]) for row in rows if row and row[0] != "ok"]
    if problems:
        return f"the database file {path} is damaged: {'; '.join(problems)[:200]}"
    return None


# -- the marker: a database existed here ---------------------------------------------------------


def marker_path(path: Path) -> Path:
    """Where the marker of the SQLite file ``path`` lives (beside it)."""
    return path.parent / MARKER_NAME


def vanished(path: Path) -> str | None:
    """Why starting on ``path`` would silently start empty (a marker but no file), or None."""
    marker = marker_path(path)
    if path.exists() or not marker.exists():
        return None
    try:
        record = json.loads(marker.read_text())
    except (OSError, ValueError):
        record = {}
    if record.get("path") not in (None, str(path)):
        return None
    return (
        f"the database file {path} is gone (it held database {record.get('id', '?')}); "
        "restore it, or start with --start-empty true to begin with an empty database"
    )


def remember(path: Path, database_id: str) -> None:
    """Write the marker for ``path`` holding ``database_id`` (atomic replace)."""
    marker = marker_path(path)
    record = {"path": str(path), "id": database_id}
    temporary = marker.with_name(f"{marker.name}.tmp")
    temporary.write_text(json.dumps(record) + "\n")
    os.replace(temporary, marker)


def remembered_id(path: Path) -> str | None:
    """The database id the marker of ``path`` holds, if any."""
    try:
        record = json.loads(marker_path(path).read_text())
    except (OSError, ValueError):
        return None
    value = record.get("id") if isinstance(record, dict) else None
    return value if isinstance(value, str) else None


def new_database_id() -> str:
    """A fresh random id for a new database."""
    return uuid.uuid4().hex
