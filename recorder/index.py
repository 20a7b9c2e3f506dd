"""The recording index: segments and the gap ledger in SQLite.

Times are Unix seconds (UTC) as REAL. A segment row is inserted with status
``recording`` once its file exists, and completed with its end and size
when the file is closed. A crash therefore leaves a row that start-up
recovery can finish, never a row without a file.
A gap row with a NULL end is the camera's current interval without
recording. Every change that must stay consistent (a segment and the gap
it ends, a retention deletion and the ledger trimmed with it) is one
transaction.

Each thread opens its own connection (:func:`connect`); WAL mode lets the
HTTP handlers read while the disk writer and retention write.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS segments (
    id INTEGER PRIMARY KEY,
    camera_id TEXT NOT NULL,
    start_utc REAL NOT NULL,
    end_utc REAL NOT NULL,
    bytes INTEGER NOT NULL,
    path TEXT NOT NULL UNIQUE,
    codec TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    has_audio INTEGER NOT NULL,
    clock_source TEXT NOT NULL,
    clock_skew_seconds REAL,
    status TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS segments_camera_start ON segments (camera_id, start_utc);
CREATE INDEX IF NOT EXISTS segments_start ON segments (start_utc);
CREATE INDEX IF NOT EXISTS segments_status ON segments (status) WHERE status = 'recording';
CREATE TABLE IF NOT EXISTS gaps (
    id INTEGER PRIMARY KEY,
    camera_id TEXT NOT NULL,
    start_utc REAL NOT NULL,
    end_utc REAL,
    cause TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS gaps_camera_start ON gaps (camera_id, start_utc);
CREATE INDEX IF NOT EXISTS gaps_open ON gaps (camera_id) WHERE end_utc IS NULL;
CREATE TABLE IF NOT EXISTS pending_deletions (path TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value REAL NOT NULL);
"""

# Keys of the state table.
HEARTBEAT = "heartbeat_utc"  # last time the writer was known to run
TOTAL_BYTES = "total_bytes"  # size of all complete segments
MAX_SEGMENT_SECONDS = "max_segment_seconds"  # maximum segment duration, bounds range queries

SEGMENT_COLUMNS = (
    "id, camera_id, start_utc, end_utc, bytes, path, codec, width, height, has_audio, "
    "clock_source, clock_skew_seconds, status"
)


@dataclass(frozen=True, slots=True)
class SegmentRow:
    id: int
    camera_id: str
    start_utc: float
    end_utc: float
    bytes: int
    path: str
    codec: str
    width: int
    height: int
    has_audio: bool
    clock_source: str
    clock_skew_seconds: float | None
    status: str

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> SegmentRow:
        values = list(row)
        values[9] = bool(values[9])
        return cls(*values)


@dataclass(frozen=True, slots=True)
class GapRow:
    id: int
    camera_id: str
    start_utc: float
    end_utc: float | None
    cause: str


def connect(path: Path, create: bool = True) -> sqlite3.Connection:
    """Open the index; one connection per thread.

    With ``create`` the schema is put in place and WAL mode set; readers of
    an index that the recorder already prepared skip both.
    """
    connection = sqlite3.connect(path, timeout=10.0, isolation_level=None)
    if not create:
        return connection
    connection.execute("PRAGMA journal_mode=WAL")
    # NORMAL with WAL: a power loss may lose the last transactions, never corrupts.
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.executescript(SCHEMA)
    return connection


@contextlib.contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[None]:
    """Run the block as one write transaction, rolled back on any exception."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def get_state(connection: sqlite3.Connection, key: str) -> float | None:
    row = connection.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
    return row[0] if row else None


def set_state(connection: sqlite3.Connection, key: str, value: float) -> None:
    connection.execute(
        "INSERT INTO state (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (key, value),
    )


def add_state(connection: sqlite3.Connection, key: str, delta: float) -> None:
    connection.execute(
        "INSERT INTO state (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = value + excluded.value",
        (key, delta),
    )


def raise_state(connection: sqlite3.Connection, key: str, value: float) -> None:
    connection.execute(
        "INSERT INTO state (key, value) VALUES (?, ?) "
        "ON CONFLICT (key) DO UPDATE SET value = max(value, excluded.value)",
        (key, value),
    )


# --- queries ------------------------------------------------------------------------


def insert_segment(
    connection: sqlite3.Connection,
    *,
    camera_id: str,
    start_utc: float,
    path: str,
    codec: str,
    width: int,
    height: int,
    has_audio: bool,
    clock_source: str,
    clock_skew_seconds: float | None,
) -> int:
    """Insert the row of a segment being recorded (end = start, no bytes yet); return its id."""
    cursor = connection.execute(
        "INSERT INTO segments (camera_id, start_utc, end_utc, bytes, path, codec, width, height, "
        "has_audio, clock_source, clock_skew_seconds, status) VALUES (?, ?, ?, 0, ?, ?, ?, ?, ?, ?, ?, 'recording')",
        (
            camera_id,
            start_utc,
            start_utc,
            path,
            codec,
            width,
            height,
            int(has_audio),
            clock_source,
            clock_skew_seconds,
        ),
    )
    assert cursor.lastrowid is not None
    return cursor.lastrowid


def complete_segment(
    connection: sqlite3.Connection, segment_id: int, start_utc: float, end_utc: float, size: int
) -> None:
    """Mark a segment complete with its end and size, and count it in the state totals."""
    connection.execute(
        "UPDATE segments SET end_utc = ?, bytes = ?, status = 'complete' WHERE id = ?",
        (end_utc, size, segment_id),
    )
    add_state(connection, TOTAL_BYTES, size)
    raise_state(connection, MAX_SEGMENT_SECONDS, end_utc - start_utc)


def segments_in_range(
    connection: sqlite3.Connection, camera_id: str, start: float, end: float
) -> list[SegmentRow]:
    """Return the segments of a camera that overlap [start, end), oldest first.

    A segment being recorded overlaps when it started before ``end``.
    """
    longest = get_state(connection, MAX_SEGMENT_SECONDS) or 0.0
    rows = connection.execute(
        f"SELECT {SEGMENT_COLUMNS} FROM segments "
        "WHERE camera_id = ? AND start_utc < ? AND start_utc >= ? "
        "AND (end_utc > ? OR status = 'recording') ORDER BY start_utc",
        (camera_id, end, start - longest - 1.0, start),
    ).fetchall()
    recording = connection.execute(
        f"SELECT {SEGMENT_COLUMNS} FROM segments WHERE status = 'recording' AND camera_id = ? AND start_utc < ?",
        (camera_id, end),
    ).fetchall()
    found = {row[0]: row for row in rows}
    for row in recording:
        found.setdefault(row[0], row)
    return sorted((SegmentRow.from_row(row) for row in found.values()), key=lambda item: item.start_utc)


def gaps_in_range(connection: sqlite3.Connection, camera_id: str, start: float, end: float) -> list[GapRow]:
    rows = connection.execute(
        "SELECT id, camera_id, start_utc, end_utc, cause FROM gaps "
        "WHERE camera_id = ? AND start_utc < ? AND (end_utc IS NULL OR end_utc > ?) ORDER BY start_utc",
        (camera_id, end, start),
    ).fetchall()
    return [GapRow(*row) for row in rows]


def segment_by_id(connection: sqlite3.Connection, segment_id: int) -> SegmentRow | None:
    row = connection.execute(f"SELECT {SEGMENT_COLUMNS} FROM segments WHERE id = ?", (segment_id,)).fetchone()
    return SegmentRow.from_row(row) if row else None


def camera_has_history(connection: sqlite3.Connection, camera_id: str) -> bool:
    found = connection.execute("SELECT 1 FROM segments WHERE camera_id = ? LIMIT 1", (camera_id,)).fetchone()
    if found is None:
        found = connection.execute("SELECT 1 FROM gaps WHERE camera_id = ? LIMIT 1", (camera_id,)).fetchone()
    return found is not None


def open_gap(connection: sqlite3.Connection, camera_id: str) -> GapRow | None:
    row = connection.execute(
        "SELECT id, camera_id, start_utc, end_utc, cause FROM gaps WHERE camera_id = ? AND end_utc IS NULL",
        (camera_id,),
    ).fetchone()
    return GapRow(*row) if row else None


def latest_segment(connection: sqlite3.Connection, camera_id: str) -> SegmentRow | None:
    row = connection.execute(
        f"SELECT {SEGMENT_COLUMNS} FROM segments WHERE camera_id = ? ORDER BY start_utc DESC LIMIT 1",
        (camera_id,),
    ).fetchone()
    return SegmentRow.from_row(row) if row else None


# --- gap ledger ---------------------------------------------------------------------


def begin_gap(connection: sqlite3.Connection, camera_id: str, start: float, cause: str) -> bool:
    """Open a gap unless the camera already has one; return True when a gap was opened."""
    if open_gap(connection, camera_id) is not None:
        return False
    connection.execute(
        "INSERT INTO gaps (camera_id, start_utc, end_utc, cause) VALUES (?, ?, NULL, ?)",
        (camera_id, start, cause),
    )
    return True


def end_gap(connection: sqlite3.Connection, camera_id: str, end: float) -> GapRow | None:
    """Close the camera's open gap at ``end`` (never before its start); return it."""
    gap = open_gap(connection, camera_id)
    if gap is None:
        return None
    end = max(end, gap.start_utc)
    connection.execute("UPDATE gaps SET end_utc = ? WHERE id = ?", (end, gap.id))
    return GapRow(gap.id, gap.camera_id, gap.start_utc, end, gap.cause)
