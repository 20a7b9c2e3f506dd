"""The recorder: which cameras record, the disk writer, retention and start-up recovery.

:class:`relay.service.Service` owns one :class:`Recorder` and calls it when
cameras start, change and stop. Files live in
``PANTAU_DATA_DIR/recordings``; the index is
``PANTAU_DATA_DIR/recordings.sqlite`` and the evidence holds are
``PANTAU_DATA_DIR/holds.json``, outside the recordings directory so that a
full recordings disk still lets the ledger record why recording stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from recorder import index
from recorder.camera_recorder import CameraRecorder
from recorder.holds import HoldStore
from recorder.recovery import prepare_index
from recorder.retention import RetentionPolicy, run_retention
from recorder.writer import DiskWriter, SegmentHandle
from relay.camera import Camera
from relay.logs import get_logger
from relay.settings import Settings

T = TypeVar("T")


class Recorder:
    """Recording for every camera whose entry sets ``record: true``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        data_dir = Path(settings.data_dir)
        self.recordings_dir = data_dir / "recordings"
        self.index_path = data_dir / "recordings.sqlite"
        self.holds = HoldStore(data_dir / "holds.json")
        self.log = get_logger(component="recorder")
        self.writer = DiskWriter(
            self.index_path, self.recordings_dir, settings.record_queue_bytes, self._on_write_failed
        )
        self.cameras: dict[str, CameraRecorder] = {}
        self.retention_days: dict[str, float] = {}  # cameras with their own retention_days
        self.started = False
        self._retention_task: asyncio.Task[None] | None = None
        self._retention_wake = asyncio.Event()
        self._retention_lock = asyncio.Lock()
        self.deleted_segments: Counter[str] = Counter()  # by reason (age, quota, free_space)
        self.deleted_bytes: Counter[str] = Counter()

    # --- lifecycle ----------------------------------------------------------------

    async def start(self) -> None:
        """Recover the index, then start the writer thread and the retention task."""
        self.holds.load()
        report = await asyncio.to_thread(prepare_index, self.index_path, self.recordings_dir)
        self.log.info(
            "recorder_started",
            recordings_dir=str(self.recordings_dir),
            index_rebuilt=report.rebuilt,
            rebuilt_segments=report.rebuilt_segments,
            recovered_segments=report.recovered_segments,
            removed_segments=report.removed_segments,
            holds=len(self.holds.holds),
        )
        self.writer.start(asyncio.get_running_loop())
        self.started = True

    def cameras_loaded(self) -> None:
        """Start retention, which needs every camera's retention_days, and end stale gaps.

        A camera that no longer records expects nothing from now on, so its open gap ends.
        """
        self.writer.end_gaps_except(set(self.cameras), time.time())
        if self._retention_task is None:
            self._retention_task = asyncio.create_task(self._retention_loop(), name="recorder-retention")

    async def stop(self) -> None:
        """Close every segment, start service_stopped gaps and wait for the disk."""
        if not self.started:
            return
        self.started = False
        if self._retention_task is not None:
            self._retention_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retention_task
        now = time.time()
        for recorder in list(self.cameras.values()):
            recorder.detach(None)
            self.writer.service_stopping(recorder.camera_id, now)
        self.cameras.clear()
        await self.writer.stop()
        self.log.info("recorder_stopped")

    # --- cameras ------------------------------------------------------------------

    def camera_started(self, camera: Camera) -> None:
        config = camera.config
        if config.retention_days is not None:
            self.retention_days[camera.id] = float(config.retention_days)
        else:
            self.retention_days.pop(camera.id, None)
        if not self.started:
            return
        existing = self.cameras.get(camera.id)
        if config.record and existing is None:
            recorder = CameraRecorder(camera, self.writer, self.settings.segment_seconds)
            self.cameras[camera.id] = recorder
            recorder.attach()
            self.log.info("recording_enabled", camera_id=camera.id)
        elif not config.record and existing is not None:
            self.camera_stopped(camera.id, restarting=False)

    def camera_stopped(self, camera_id: str, restarting: bool) -> None:
        """Stop recording a camera that is removed, restarted or no longer records.

        A restart (new URL or transport) is an interval without video, so it
        becomes a camera_offline gap. Otherwise nothing is expected any more,
        so the camera's open gap, if any, ends now.
        """
        recorder = self.cameras.pop(camera_id, None)
        if recorder is None:
            return
        recorder.detach("camera_offline" if restarting else None)
        if not restarting:
            self.writer.end_gap(camera_id, time.time())
            self.log.info("recording_disabled", camera_id=camera_id)

    def _on_write_failed(self, handle: SegmentHandle) -> None:
        recorder = self.cameras.get(handle.camera_id)
        if recorder is not None:
            recorder.on_write_failed(handle)
        self._retention_wake.set()  # free space now rather than at the next interval

    # --- retention ----------------------------------------------------------------

    def retention_policy(self) -> RetentionPolicy:
        settings = self.settings
        return RetentionPolicy(
            default_days=settings.retention_days,
            camera_days=dict(self.retention_days),
            max_bytes=settings.retention_max_bytes,
            min_free_bytes=settings.min_free_bytes,
        )

    async def run_retention(self) -> dict[str, Any]:
        async with self._retention_lock:
            report = await asyncio.to_thread(
                run_retention,
                self.index_path,
                self.recordings_dir,
                self.retention_policy(),
                list(self.holds.holds),
                time.time(),
            )
        self.deleted_segments.update(report.deleted)
        self.deleted_bytes.update(report.deleted_bytes)
        fields = report.as_log()
        self.log.info("retention_run", **fields)
        if report.short_of_free_bytes:
            self.log.warning(
                "retention_short_of_space",
                missing_bytes=report.short_of_free_bytes,
                reason="every remaining segment is being written or held",
            )
        return fields

    async def _retention_loop(self) -> None:
        interval = self.settings.retention_interval_seconds
        while True:
            try:
                await self.run_retention()
            except (OSError, sqlite3.Error) as exc:
                self.log.error("retention_failed", reason=str(exc))
            self._retention_wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._retention_wake.wait()

    # --- queries ------------------------------------------------------------------

    async def query(self, function: Callable[..., T], *args: Any) -> T:
        """Run ``function(connection, *args)`` on a fresh index connection in a thread."""

        def run() -> T:
            connection = index.connect(self.index_path, create=False)
            try:
                return function(connection, *args)
            finally:
                connection.close()

        return await asyncio.to_thread(run)

    def metrics(self) -> Iterator[Metric]:
        """Yield the recorder's Prometheus metric families (see relay.metrics)."""
        writer = self.writer
        labels = ["camera_id"]
        written = CounterMetricFamily("pantau_recording_bytes", "Bytes written to recording segments.", labels=labels)
        segments = CounterMetricFamily("pantau_recording_segments", "Recording segments closed.", labels=labels)
        gaps = CounterMetricFamily("pantau_recording_gaps", "Recording gaps started, by cause.", labels=["camera_id", "cause"])
        deleted = CounterMetricFamily("pantau_retention_deleted_segments", "Segments deleted by retention.", labels=["reason"])
        deleted_bytes = CounterMetricFamily("pantau_retention_deleted_bytes", "Bytes deleted by retention.", labels=["reason"])
        queue = GaugeMetricFamily("pantau_recording_queue_bytes", "Recording data waiting for the disk.")
        for camera_id, value in list(writer.bytes_written.items()):
            written.add_metric([camera_id], value)
        for camera_id, value in list(writer.segments_closed.items()):
            segments.add_metric([camera_id], value)
        for (camera_id, cause), value in list(writer.gaps_started.items()):
            gaps.add_metric([camera_id, cause], value)
        for reason in ("age", "quota", "free_space"):
            deleted.add_metric([reason], self.deleted_segments[reason])
            deleted_bytes.add_metric([reason], self.deleted_bytes[reason])
        queue.add_metric([], writer.queued_bytes)
        yield from (written, segments, gaps, deleted, deleted_bytes, queue)

    def live_segment(self, camera_id: str) -> dict[str, Any] | None:
        recorder = self.cameras.get(camera_id)
        return recorder.current() if recorder is not None else None
