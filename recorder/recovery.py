"""Start-up checks of the recording index: crash recovery and rebuild from the files.

Runs in a thread before the disk writer starts, so nothing else writes.

Recovery: a segment still marked ``recording`` was open when the process
died. Its file is cut back to its last complete fragment, and the row gets
the file's real end and size. A file without one complete fragment is
removed with its row. The downtime becomes a ``service_stopped`` gap, from
the end of the camera's recording (or the last heartbeat, for a camera that
was already in a gap) to the next segment.

Rebuild: when the index file is missing or unreadable, every segment file
is scanned and indexed again, and the gap ledger is restored from the
``gap_before`` entries of the files' metadata boxes.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recorder import index
from recorder.segment import SegmentFileError, SegmentScan, scan_segment, start_from_name
from relay.logs import get_logger


def log() -> Any:
    """Return the recorder's logger; bound at call time, after logging is configured."""
    return get_logger(component="recorder")


@dataclass
class RecoveryReport:
    rebuilt: bool = False
    rebuilt_segments: int = 0
    recovered_segments: int = 0
    removed_segments: int = 0
    pending_deletions: int = 0


def prepare_index(index_path: Path, recordings_dir: Path) -> RecoveryReport:
    """Open (or rebuild) the index and repair what a crash left; return what was done."""
    report = RecoveryReport()
    recordings_dir.mkdir(parents=True, exist_ok=True)
    needs_rebuild = not index_path.exists()
    if needs_rebuild and not any(recordings_dir.iterdir()):
        # A new data directory: an empty index is all there is to build, not a rebuild.
        needs_rebuild = False
        log().info("recording_index_created", path=str(index_path))
    connection: sqlite3.Connection | None = None
    if not needs_rebuild:
        try:
            connection = index.connect(index_path)
            check = connection.execute("PRAGMA quick_check").fetchone()
            if check is None or check[0] != "ok":
                raise sqlite3.DatabaseError(f"quick_check returned {check}")
        except sqlite3.DatabaseError as exc:
            if connection is not None:
                connection.close()
                connection = None
            broken = index_path.with_name(f"{index_path.name}.broken-{int(time.time())}")
            log().error(
                "recording_index_unreadable", path=str(index_path), reason=str(exc), moved_to=str(broken)
            )
            for suffix in ("", "-wal", "-shm"):
                source = Path(str(index_path) + suffix)
                if source.exists():
                    os.replace(source, Path(str(broken) + suffix))
            needs_rebuild = True
    if connection is None:
        connection = index.connect(index_path)
    try:
        if needs_rebuild:
            report.rebuilt = True
            report.rebuilt_segments = rebuild(connection, recordings_dir)
        report.pending_deletions = finish_deletions(connection, recordings_dir)
        recover_open_segments(connection, recordings_dir, report)
    finally:
        connection.close()
    return report


def finish_deletions(connection: sqlite3.Connection, recordings_dir: Path) -> int:
    """Remove the files of retention deletions that a crash interrupted."""
    paths = [row[0] for row in connection.execute("SELECT path FROM pending_deletions").fetchall()]
    for relpath in paths:
        with contextlib.suppress(FileNotFoundError):
            (recordings_dir / relpath).unlink()
        with index.transaction(connection):
            connection.execute("DELETE FROM pending_deletions WHERE path = ?", (relpath,))
    return len(paths)


def recover_open_segments(
    connection: sqlite3.Connection, recordings_dir: Path, report: RecoveryReport
) -> None:
    heartbeat = index.get_state(connection, index.HEARTBEAT)
    rows = connection.execute(
        f"SELECT {index.SEGMENT_COLUMNS} FROM segments WHERE status = 'recording'"
    ).fetchall()
    crashed_cameras: dict[str, float] = {}
    for raw in rows:
        row = index.SegmentRow.from_row(raw)
        path = recordings_dir / row.path
        scan = _scan_or_none(path)
        if scan is None or not scan.fragments:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            with index.transaction(connection):
                connection.execute("DELETE FROM segments WHERE id = ?", (row.id,))
            report.removed_segments += 1
            log().warning(
                "segment_recovery_removed",
                camera_id=row.camera_id,
                path=row.path,
                reason="no complete fragment",
            )
            crashed_cameras[row.camera_id] = max(crashed_cameras.get(row.camera_id, 0.0), row.start_utc)
            continue
        if scan.complete_size < scan.file_size:
            with open(path, "r+b") as handle:
                handle.truncate(scan.complete_size)
                os.fsync(handle.fileno())
        end_utc = row.start_utc + scan.duration_seconds
        with index.transaction(connection):
            index.complete_segment(connection, row.id, row.start_utc, end_utc, scan.complete_size)
        report.recovered_segments += 1
        crashed_cameras[row.camera_id] = max(crashed_cameras.get(row.camera_id, 0.0), end_utc)
        log().info(
            "segment_recovered",
            camera_id=row.camera_id,
            path=row.path,
            duration_seconds=round(scan.duration_seconds, 3),
            bytes=scan.complete_size,
            cut_bytes=scan.file_size - scan.complete_size,
        )

    # Gaps that were open when the process died end where the process stopped.
    open_gaps = connection.execute(
        "SELECT id, camera_id, start_utc, end_utc, cause FROM gaps WHERE end_utc IS NULL"
    ).fetchall()
    with index.transaction(connection):
        for raw in open_gaps:
            gap = index.GapRow(*raw)
            if gap.cause == "service_stopped":
                continue
            stopped_at = max(gap.start_utc, heartbeat or gap.start_utc)
            index.end_gap(connection, gap.camera_id, stopped_at)
            index.begin_gap(connection, gap.camera_id, stopped_at, "service_stopped")
        for camera_id, end_utc in crashed_cameras.items():
            index.begin_gap(connection, camera_id, end_utc, "service_stopped")


def _scan_or_none(path: Path) -> SegmentScan | None:
    try:
        return scan_segment(path)
    except (OSError, SegmentFileError, ValueError, IndexError) as exc:
        log().warning("segment_unreadable", path=str(path), reason=str(exc))
        return None


def rebuild(connection: sqlite3.Connection, recordings_dir: Path) -> int:
    """Index every segment file below ``recordings_dir``; return how many were indexed."""
    started = time.monotonic()
    count = 0
    total = 0
    longest = 0.0
    with index.transaction(connection):
        connection.execute("DELETE FROM segments")
        connection.execute("DELETE FROM gaps")
        for path in sorted(recordings_dir.glob("*/[0-9][0-9][0-9][0-9]/[0-9][0-9]/[0-9][0-9]/*.mp4")):
            row = _row_from_file(path, recordings_dir)
            if row is None:
                continue
            connection.execute(
                "INSERT INTO segments (camera_id, start_utc, end_utc, bytes, path, codec, width, height, "
                "has_audio, clock_source, clock_skew_seconds, status) "
                "VALUES (:camera_id, :start_utc, :end_utc, :bytes, :path, :codec, :width, :height, "
                ":has_audio, :clock_source, :clock_skew_seconds, 'complete')",
                row,
            )
            gap = row.pop("gap_before")
            if gap is not None:
                connection.execute(
                    "INSERT INTO gaps (camera_id, start_utc, end_utc, cause) VALUES (?, ?, ?, ?)",
                    (row["camera_id"], gap.start_utc, row["start_utc"], gap.cause),
                )
            count += 1
            total += row["bytes"]
            longest = max(longest, row["end_utc"] - row["start_utc"])
        # The lost index contained the open service_stopped gaps. The service was down from
        # each camera's last segment until now, and the camera's first new segment ends the gap.
        last_ends = connection.execute("SELECT camera_id, MAX(end_utc) FROM segments GROUP BY camera_id").fetchall()
        for camera_id, end_utc in last_ends:
            index.begin_gap(connection, camera_id, end_utc, "service_stopped")
        index.set_state(connection, index.TOTAL_BYTES, total)
        index.set_state(connection, index.MAX_SEGMENT_SECONDS, longest)
    log().info(
        "recording_index_rebuilt",
        segments=count,
        bytes=total,
        duration_seconds=round(time.monotonic() - started, 3),
    )
    return count


def _row_from_file(path: Path, recordings_dir: Path) -> dict[str, Any] | None:
    camera_id = path.relative_to(recordings_dir).parts[0]
    named_start = start_from_name(path.name)
    if named_start is None:
        return None
    scan = _scan_or_none(path)
    if scan is None or not scan.fragments or scan.video is None:
        return None
    if scan.complete_size < scan.file_size:
        with open(path, "r+b") as handle:
            handle.truncate(scan.complete_size)
    meta = scan.meta
    # The metadata box has the exact start; the name has it to the millisecond.
    trusted = meta is not None and abs(meta.start_utc - named_start) < 1.0
    start_utc = meta.start_utc if trusted and meta is not None else named_start
    video = scan.video
    return {
        "camera_id": camera_id,
        "start_utc": start_utc,
        "end_utc": start_utc + scan.duration_seconds,
        "bytes": scan.complete_size,
        "path": path.relative_to(recordings_dir).as_posix(),
        "codec": video.codec,
        "width": video.width,
        "height": video.height,
        "has_audio": int(scan.has_audio),
        "clock_source": meta.clock_source if meta is not None else "unknown",
        "clock_skew_seconds": meta.clock_skew_seconds if meta is not None else None,
        "gap_before": meta.gap_before if trusted and meta is not None else None,
    }
