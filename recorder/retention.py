"""Retention: delete the oldest segments by age, total size and free disk space.

One run, in a thread with its own index connection:

1. Age: a segment whose end is older than its camera's ``retention_days``
   (``PANTAU_RETENTION_DAYS`` unless the camera entry sets its own) goes.
2. Quota: while all complete segments together exceed
   ``PANTAU_RETENTION_MAX_BYTES``, the oldest segment of any camera goes.
3. Free space: while the recordings disk has less than
   ``PANTAU_MIN_FREE_BYTES`` free, the oldest segment of any camera goes,
   whatever its age.

Never deleted: a segment being written (status ``recording``) and a
segment that overlaps an evidence hold. Each batch removes the rows, trims
the gap ledger to the camera's oldest remaining segment and records the
paths in ``pending_deletions``, all in one transaction. The files are
unlinked after the commit, and start-up finishes any unlink that a crash
interrupted.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recorder import index
from recorder.holds import Hold
from recorder.playback import iso
from relay.logs import get_logger


def log() -> Any:
    """Return the recorder's logger; bound at call time, after logging is configured."""
    return get_logger(component="recorder")


BATCH = 200


@dataclass(frozen=True)
class RetentionPolicy:
    default_days: float
    camera_days: dict[str, float]  # cameras whose entry sets retention_days
    max_bytes: int | None  # None: no quota
    min_free_bytes: int


@dataclass
class RetentionReport:
    deleted: Counter[str] = field(default_factory=Counter)  # segments by reason
    deleted_bytes: Counter[str] = field(default_factory=Counter)
    # camera id -> segments and bytes deleted, and the end (UTC) of the newest deleted video
    by_camera: dict[str, dict[str, float]] = field(default_factory=dict)
    total_bytes: int = 0
    free_bytes: int = 0
    short_of_free_bytes: int = 0  # still missing after deleting all it could
    duration_seconds: float = 0.0

    def as_log(self) -> dict[str, object]:
        return {
            "deleted_segments": sum(self.deleted.values()),
            "deleted_bytes": sum(self.deleted_bytes.values()),
            "deleted_by_age": self.deleted["age"],
            "deleted_by_quota": self.deleted["quota"],
            "deleted_for_free_space": self.deleted["free_space"],
            "deleted_by_camera": {
                camera_id: {
                    "segments": int(counts["segments"]),
                    "bytes": int(counts["bytes"]),
                    "deleted_through": iso(counts["deleted_through"]),
                }
                for camera_id, counts in sorted(self.by_camera.items())
            },
            "total_bytes": self.total_bytes,
            "free_bytes": self.free_bytes,
            "short_of_free_bytes": self.short_of_free_bytes,
            "duration_seconds": round(self.duration_seconds, 3),
        }


_SELECT = (
    "SELECT id, camera_id, path, bytes, start_utc, end_utc FROM segments s "
    "WHERE status = 'complete' AND NOT EXISTS (SELECT 1 FROM temp.holds h WHERE h.camera_id = s.camera_id "
    "AND h.start_utc < s.end_utc AND h.end_utc > s.start_utc) "
)


def free_bytes(path: Path) -> int:
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def run_retention(
    index_path: Path, recordings_dir: Path, policy: RetentionPolicy, holds: list[Hold], now: float
) -> RetentionReport:
    started = time.monotonic()
    report = RetentionReport()
    connection = index.connect(index_path)
    try:
        connection.execute(
            "CREATE TEMP TABLE IF NOT EXISTS holds (camera_id TEXT, start_utc REAL, end_utc REAL)"
        )
        connection.execute("DELETE FROM temp.holds")
        connection.executemany(
            "INSERT INTO temp.holds VALUES (?, ?, ?)", [(h.camera_id, h.start_utc, h.end_utc) for h in holds]
        )
        _by_age(connection, recordings_dir, policy, now, report)
        if policy.max_bytes:
            _by_quota(connection, recordings_dir, policy.max_bytes, report)
        _by_free_space(connection, recordings_dir, policy.min_free_bytes, report)
        report.total_bytes = int(index.get_state(connection, index.TOTAL_BYTES) or 0)
        report.free_bytes = free_bytes(recordings_dir)
    finally:
        connection.close()
    report.duration_seconds = time.monotonic() - started
    return report


def _by_age(
    connection: sqlite3.Connection,
    recordings_dir: Path,
    policy: RetentionPolicy,
    now: float,
    report: RetentionReport,
) -> None:
    for camera_id, days in policy.camera_days.items():
        cutoff = now - days * 86400
        while rows := connection.execute(
            _SELECT + "AND camera_id = ? AND start_utc < ? AND end_utc < ? ORDER BY start_utc LIMIT ?",
            (camera_id, cutoff, cutoff, BATCH),
        ).fetchall():
            _delete(connection, recordings_dir, rows, "age", report)
    cutoff = now - policy.default_days * 86400
    exempt = list(policy.camera_days)
    placeholders = ",".join("?" * len(exempt))
    exempt_clause = f"AND camera_id NOT IN ({placeholders}) " if exempt else ""
    while rows := connection.execute(
        _SELECT + "AND start_utc < ? AND end_utc < ? " + exempt_clause + "ORDER BY start_utc LIMIT ?",
        (cutoff, cutoff, *exempt, BATCH),
    ).fetchall():
        _delete(connection, recordings_dir, rows, "age", report)


def _by_quota(
    connection: sqlite3.Connection, recordings_dir: Path, max_bytes: int, report: RetentionReport
) -> None:
    # NOTE: the quota counts complete segments; the few segments being written are not included.
    excess = int(index.get_state(connection, index.TOTAL_BYTES) or 0) - max_bytes
    while excess > 0:
        freed = _delete_oldest(connection, recordings_dir, excess, "quota", report)
        if not freed:
            return
        excess -= freed


def _by_free_space(
    connection: sqlite3.Connection, recordings_dir: Path, min_free: int, report: RetentionReport
) -> None:
    missing = min_free - free_bytes(recordings_dir)
    while missing > 0:
        if not _delete_oldest(connection, recordings_dir, missing, "free_space", report):
            report.short_of_free_bytes = missing
            return
        # Measure again: other files on the disk change too.
        missing = min_free - free_bytes(recordings_dir)


def _delete_oldest(
    connection: sqlite3.Connection, recordings_dir: Path, amount: int, reason: str, report: RetentionReport
) -> int:
    """Delete the oldest deletable segments until ``amount`` bytes are freed; return the bytes freed."""
    rows = connection.execute(_SELECT + "ORDER BY start_utc LIMIT ?", (BATCH,)).fetchall()
    chosen = []
    freed = 0
    for row in rows:
        chosen.append(row)
        freed += row[3]
        if freed >= amount:
            break
    if chosen:
        _delete(connection, recordings_dir, chosen, reason, report)
    return freed


def _delete(
    connection: sqlite3.Connection,
    recordings_dir: Path,
    rows: list[tuple[int, str, str, int, float, float]],
    reason: str,
    report: RetentionReport,
) -> None:
    """Remove rows, trim each camera's gap ledger and unlink the files."""
    paths = [row[2] for row in rows]
    size = sum(row[3] for row in rows)
    last_end: dict[str, float] = {}
    for _, camera_id, _, _, _, end_utc in rows:
        last_end[camera_id] = max(last_end.get(camera_id, end_utc), end_utc)
    with index.transaction(connection):
        connection.executemany("DELETE FROM segments WHERE id = ?", [(row[0],) for row in rows])
        connection.executemany(
            "INSERT OR IGNORE INTO pending_deletions (path) VALUES (?)", [(p,) for p in paths]
        )
        index.add_state(connection, index.TOTAL_BYTES, -size)
        for camera_id, deleted_end in last_end.items():
            oldest = connection.execute(
                "SELECT MIN(start_utc) FROM segments WHERE camera_id = ?", (camera_id,)
            ).fetchone()[0]
            # Gaps before the camera's oldest remaining segment describe video that is gone.
            limit = oldest if oldest is not None else deleted_end
            connection.execute(
                "DELETE FROM gaps WHERE camera_id = ? AND end_utc IS NOT NULL AND end_utc <= ?",
                (camera_id, limit),
            )
    removed = []
    for relpath in paths:
        path = recordings_dir / relpath
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            # Stays in pending_deletions; start-up tries again.
            log().error("segment_unlink_failed", path=relpath, reason=exc.strerror or str(exc))
            continue
        removed.append(relpath)
        _remove_empty_parents(path.parent, recordings_dir)
    with index.transaction(connection):
        connection.executemany("DELETE FROM pending_deletions WHERE path = ?", [(p,) for p in removed])
    report.deleted[reason] += len(rows)
    report.deleted_bytes[reason] += size
    for _, camera_id, _, segment_bytes, _, end_utc in rows:
        counts = report.by_camera.setdefault(camera_id, {"segments": 0, "bytes": 0, "deleted_through": end_utc})
        counts["segments"] += 1
        counts["bytes"] += segment_bytes
        counts["deleted_through"] = max(counts["deleted_through"], end_utc)


def _remove_empty_parents(directory: Path, recordings_dir: Path) -> None:
    """Remove the day, month and year directories once they are empty (never the camera's)."""
    for _ in range(3):
        if directory == recordings_dir or recordings_dir not in directory.parents:
            return
        try:
            directory.rmdir()
        except OSError:
            return
        directory = directory.parent
