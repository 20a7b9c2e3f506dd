"""The disk writer: one thread that owns every segment file and the index writes.

The event loop never touches the disk for recording. It hands commands
(open a segment, append a fragment, close, open or end a gap) to
:meth:`DiskWriter.submit`, which returns at once. Fragments count against
``PANTAU_RECORD_QUEUE_BYTES``: when the disk falls that far behind, the
submit is rejected and the camera's recorder closes its segment and records
a ``disk_slow`` gap, so memory stays bounded and live delivery is never
delayed by a slow disk.

A failed write (disk full, read-only, I/O error) truncates the file to its
last complete fragment and completes its index row. When nothing was
written, file and row are removed instead. Either way a ``disk_full`` gap
opens and ``on_failure`` reports the segment to the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recorder import index
from recorder.segment import GapBefore, SegmentMeta, header_bytes, segment_relpath
from relay.logs import get_logger
from relay.media import TIMEBASE

HEARTBEAT_SECONDS = 5.0


@dataclass(eq=False)
class SegmentHandle:
    """A segment from its first keyframe to its close, shared by the loop and the writer."""

    camera_id: str
    start_utc: float
    first_dts: int
    init: bytes
    codec: str
    width: int
    height: int
    has_audio: bool
    clock_source: str
    clock_skew_seconds: float | None
    # Written by the loop only.
    queued_end_dts: int = 0
    # Written by the writer thread only.
    relpath: str = ""
    row_id: int | None = None
    fd: int | None = None
    size: int = 0  # bytes on disk, all complete boxes
    fragments: int = 0
    written_end_dts: int = 0
    failed: bool = False
    closed: bool = False
    failure: str | None = None

    def utc_at(self, dts: int) -> float:
        return self.start_utc + (dts - self.first_dts) / TIMEBASE


class DiskWriter:
    """The writer thread and its bounded queue."""

    def __init__(
        self,
        index_path: Path,
        recordings_dir: Path,
        max_queue_bytes: int,
        on_failure: Callable[[SegmentHandle], None],
    ) -> None:
        self.index_path = index_path
        self.recordings_dir = recordings_dir
        self.max_queue_bytes = max_queue_bytes
        self.on_failure = on_failure
        self.log = get_logger(component="recorder")
        self.queued_bytes = 0
        # Counters for /metrics, written by the writer thread only.
        self.bytes_written: Counter[str] = Counter()  # by camera
        self.segments_closed: Counter[str] = Counter()
        self.gaps_started: Counter[tuple[str, str]] = Counter()  # by (camera, cause)
        self._queue: deque[tuple[Callable[..., None], tuple[Any, ...], int]] = deque()
        self._condition = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._db: sqlite3.Connection | None = None
        self._last_heartbeat = 0.0

    # --- loop side ----------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._thread = threading.Thread(target=self._run, name="recorder-writer", daemon=True)
        self._thread.start()

    def submit(self, function: Callable[..., None], *args: Any, size: int = 0) -> bool:
        """Queue ``function(*args)`` for the writer thread; return False when ``size`` bytes do not fit."""
        with self._condition:
            if size and self.queued_bytes + size > self.max_queue_bytes:
                return False
            self._queue.append((function, args, size))
            self.queued_bytes += size
            self._condition.notify()
        return True

    def open_segment(self, handle: SegmentHandle) -> None:
        self.submit(self._open, handle)

    def append(self, handle: SegmentHandle, data: bytes, end_dts: int) -> bool:
        accepted = self.submit(self._append, handle, data, end_dts, size=len(data))
        if accepted:
            handle.queued_end_dts = end_dts
        return accepted

    def close_segment(self, handle: SegmentHandle) -> None:
        self.submit(self._close, handle)

    def begin_gap(self, camera_id: str, start: float, cause: str) -> None:
        self.submit(self._begin_gap, camera_id, start, cause)

    def end_gap(self, camera_id: str, end: float) -> None:
        self.submit(self._end_gap, camera_id, end)

    def end_gaps_except(self, camera_ids: set[str], now: float) -> None:
        self.submit(self._end_gaps_except, camera_ids, now)

    def service_stopping(self, camera_id: str, now: float) -> None:
        self.submit(self._service_stopping, camera_id, now)

    async def stop(self) -> None:
        """Write everything queued, then end the thread."""
        with self._condition:
            self._stopping = True
            self._condition.notify()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
            self._thread = None

    # --- writer thread ------------------------------------------------------------

    def _run(self) -> None:
        self._db = index.connect(self.index_path)
        try:
            while True:
                with self._condition:
                    while not self._queue and not self._stopping:
                        self._condition.wait(timeout=1.0)
                        self._heartbeat()
                    if not self._queue:
                        break
                    function, args, size = self._queue.popleft()
                    self.queued_bytes -= size
                try:
                    function(*args)
                except Exception:
                    self.log.exception("recording_writer_error", operation=function.__name__)
                self._heartbeat()
            self._heartbeat(force=True)
        finally:
            self._db.close()
            self._db = None

    def _heartbeat(self, force: bool = False) -> None:
        now = time.time()
        if self._db is None or (not force and now - self._last_heartbeat < HEARTBEAT_SECONDS):
            return
        self._last_heartbeat = now
        try:
            index.set_state(self._db, index.HEARTBEAT, now)
        except sqlite3.Error as exc:
            self.log.error("recording_index_error", operation="heartbeat", reason=str(exc))

    def _notify_failure(self, handle: SegmentHandle) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self.on_failure, handle)

    def _open(self, handle: SegmentHandle) -> None:
        db = self._db
        assert db is not None
        gap = index.open_gap(db, handle.camera_id)
        meta = SegmentMeta(
            camera_id=handle.camera_id,
            start_utc=handle.start_utc,
            clock_source=handle.clock_source,
            clock_skew_seconds=handle.clock_skew_seconds,
            gap_before=GapBefore(gap.start_utc, gap.cause) if gap is not None else None,
        )
        header = header_bytes(handle.init, meta)
        try:
            handle.relpath, handle.fd = self._create_file(handle)
            _write_all(handle.fd, header)
        except OSError as exc:
            self._fail(handle, exc)
            return
        handle.size = len(header)
        handle.written_end_dts = handle.first_dts

        try:
            with index.transaction(db):
                handle.row_id = index.insert_segment(
                    db,
                    camera_id=handle.camera_id,
                    start_utc=handle.start_utc,
                    path=handle.relpath,
                    codec=handle.codec,
                    width=handle.width,
                    height=handle.height,
                    has_audio=handle.has_audio,
                    clock_source=handle.clock_source,
                    clock_skew_seconds=handle.clock_skew_seconds,
                )
                ended = index.end_gap(db, handle.camera_id, handle.start_utc)
        except sqlite3.Error as exc:
            self.log.error(
                "recording_index_error", camera_id=handle.camera_id, operation="open", reason=str(exc)
            )
            handle.failed = True
            handle.closed = True
            handle.failure = f"index: {exc}"
            with contextlib.suppress(OSError):
                os.close(handle.fd)
            handle.fd = None
            self._discard(handle)
            self._notify_failure(handle)
            return

        if ended is not None:
            self.log.info(
                "recording_gap_ended",
                camera_id=handle.camera_id,
                cause=ended.cause,
                gap_seconds=round((ended.end_utc or 0) - ended.start_utc, 3),
            )
        self.log.info("segment_opened", camera_id=handle.camera_id, path=handle.relpath)

    def _create_file(self, handle: SegmentHandle) -> tuple[str, int]:
        for attempt in range(100):
            relpath = segment_relpath(handle.camera_id, handle.start_utc, f"-{attempt}" if attempt else "")
            path = self.recordings_dir / relpath
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                continue
            return relpath, fd
        raise FileExistsError(f"no free segment name for {handle.camera_id} at {handle.start_utc}")

    def _append(self, handle: SegmentHandle, data: bytes, end_dts: int) -> None:
        if handle.failed or handle.closed or handle.fd is None:
            return
        try:
            _write_all(handle.fd, data)
        except OSError as exc:
            self._fail(handle, exc)
            return
        handle.size += len(data)
        self.bytes_written[handle.camera_id] += len(data)
        handle.fragments += 1
        handle.written_end_dts = end_dts

    def _close(self, handle: SegmentHandle) -> None:
        if handle.failed or handle.closed or handle.fd is None:
            return
        try:
            os.fsync(handle.fd)
        except OSError as exc:
            self._fail(handle, exc)
            return
        self._finish(handle)

    def _finish(self, handle: SegmentHandle) -> None:
        """Close the file and complete its row, or remove both when no fragment was written."""
        db = self._db
        assert db is not None
        handle.closed = True
        if handle.fd is not None:
            with contextlib.suppress(OSError):
                os.close(handle.fd)
            handle.fd = None
        if handle.fragments == 0:
            self._discard(handle)
            return
        end_utc = handle.utc_at(handle.written_end_dts)
        try:
            assert handle.row_id is not None
            with index.transaction(db):
                index.complete_segment(db, handle.row_id, handle.start_utc, end_utc, handle.size)
        except sqlite3.Error as exc:
            # The row stays 'recording'; start-up recovery completes it from the file.
            self.log.error(
                "recording_index_error", camera_id=handle.camera_id, operation="close", reason=str(exc)
            )
            return
        self.segments_closed[handle.camera_id] += 1
        self.log.info(
            "segment_closed",
            camera_id=handle.camera_id,
            path=handle.relpath,
            duration_seconds=round(end_utc - handle.start_utc, 3),
            bytes=handle.size,
        )

    def _discard(self, handle: SegmentHandle) -> None:
        if handle.relpath:
            with contextlib.suppress(OSError):
                os.unlink(self.recordings_dir / handle.relpath)
        if handle.row_id is not None and self._db is not None:
            try:
                with index.transaction(self._db):
                    self._db.execute("DELETE FROM segments WHERE id = ?", (handle.row_id,))
            except sqlite3.Error as exc:
                self.log.error(
                    "recording_index_error", camera_id=handle.camera_id, operation="discard", reason=str(exc)
                )

    def _fail(self, handle: SegmentHandle, exc: OSError) -> None:
        """Keep what is complete on disk, record a disk_full gap and tell the loop."""
        handle.failed = True
        handle.failure = f"{exc.strerror or exc} ({_errno_name(exc)})"
        if handle.fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(handle.fd, handle.size)
        kept = handle.fragments > 0
        gap_start = handle.utc_at(handle.written_end_dts) if kept else handle.start_utc
        self.log.error(
            "recording_write_failed",
            camera_id=handle.camera_id,
            path=handle.relpath or None,
            error=_errno_name(exc),
            reason=exc.strerror or str(exc),
            kept_fragments=handle.fragments,
        )
        if handle.row_id is not None:
            self._finish(handle)
        else:
            handle.closed = True
            if handle.fd is not None:
                with contextlib.suppress(OSError):
                    os.close(handle.fd)
                handle.fd = None
            self._discard(handle)
        self._begin_gap(handle.camera_id, gap_start, "disk_full")
        self._notify_failure(handle)

    def _begin_gap(self, camera_id: str, start: float, cause: str) -> None:
        db = self._db
        assert db is not None
        try:
            with index.transaction(db):
                opened = index.begin_gap(db, camera_id, start, cause)
        except sqlite3.Error as exc:
            self.log.error(
                "recording_index_error", camera_id=camera_id, operation="begin_gap", reason=str(exc)
            )
            return
        if opened:
            self.gaps_started[(camera_id, cause)] += 1
            self.log.warning("recording_gap_started", camera_id=camera_id, cause=cause)

    def _end_gap(self, camera_id: str, end: float) -> None:
        db = self._db
        assert db is not None
        try:
            with index.transaction(db):
                index.end_gap(db, camera_id, end)
        except sqlite3.Error as exc:
            self.log.error("recording_index_error", camera_id=camera_id, operation="end_gap", reason=str(exc))

    def _end_gaps_except(self, camera_ids: set[str], now: float) -> None:
        db = self._db
        assert db is not None
        try:
            with index.transaction(db):
                for (camera_id,) in db.execute("SELECT camera_id FROM gaps WHERE end_utc IS NULL").fetchall():
                    if camera_id not in camera_ids:
                        index.end_gap(db, camera_id, now)
        except sqlite3.Error as exc:
            self.log.error("recording_index_error", operation="end_gaps", reason=str(exc))

    def _service_stopping(self, camera_id: str, now: float) -> None:
        """Start a service_stopped gap where the camera's recording ends."""
        db = self._db
        assert db is not None
        try:
            with index.transaction(db):
                gap = index.open_gap(db, camera_id)
                if gap is not None and gap.cause == "service_stopped":
                    return
                if gap is not None:
                    index.end_gap(db, camera_id, now)
                    start = now
                else:
                    latest = index.latest_segment(db, camera_id)
                    start = latest.end_utc if latest is not None and latest.status == "complete" else now
                index.begin_gap(db, camera_id, start, "service_stopped")
        except sqlite3.Error as exc:
            self.log.error("recording_index_error", camera_id=camera_id, operation="stop", reason=str(exc))


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _errno_name(exc: OSError) -> str:
    return errno.errorcode.get(exc.errno or 0, "EIO") if exc.errno else type(exc).__name__
