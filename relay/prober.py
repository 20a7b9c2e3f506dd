"""Probe results per camera: when to probe, what was found, what changed.

Every camera gets a :class:`relay.probe.ProbeSink`, which measures after
each (re)connect. On top of that, scheduled probes cover cameras nobody
watches: an ``on_demand`` camera is probed soon after it starts (at
start-up, when added, when its URL changes) and again once its last probe
is ``PANTAU_PROBE_INTERVAL_HOURS`` old. A probe is a reader of the camera
like any other, so it shares a running upstream instead of opening a
second one, and it releases an upstream it opened as soon as it has
measured.

The last result, the last failure and a short history of changes are kept
per camera id in ``probes.json`` inside ``PANTAU_DATA_DIR``, so a restart
keeps the facts of cameras that are offline and still notices a change.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from relay.camera import Camera, CameraUnavailable
from relay.cameras import write_atomically
from relay.logs import get_logger
from relay.probe import WINDOW_CAP_FACTOR, ProbeError, ProbeFacts, ProbeSink, static_facts
from relay.settings import Settings

HISTORY_LENGTH = 10
SCHEDULE_CHECK_SECONDS = 60.0
SAVE_DELAY_SECONDS = 2.0
PROBES_FILE = "probes.json"


class HistoryEntry(msgspec.Struct, kw_only=True):
    """The facts a camera showed from ``at`` on, until the next entry."""

    at: str
    codec: str
    profile: str | None
    width: int
    height: int
    megapixels: float
    fps: float | None
    audio_codec: str | None
    audio_sample_rate: int | None


class ProbeFailure(msgspec.Struct, kw_only=True):
    code: str
    reason: str
    at: str


class ProbeRecord(msgspec.Struct, kw_only=True):
    """Everything known from probing one camera."""

    facts: ProbeFacts | None = None
    probed_at: str | None = None  # when ``facts`` were measured
    last_attempt_at: str | None = None
    last_error: ProbeFailure | None = None  # why the last attempt failed; None after a success
    history: list[HistoryEntry] = []


class ProbeFile(msgspec.Struct):
    version: int
    cameras: dict[str, ProbeRecord]


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def facts_identity(facts: ProbeFacts) -> tuple[Any, ...]:
    """Return the facts whose change is logged and kept; rates that drift (fps, bit rate) are left out."""
    return (facts.codec, facts.profile, facts.width, facts.height, facts.audio_codec, facts.audio_sample_rate)


def facts_summary(facts: ProbeFacts) -> str:
    """Describe facts in a few words for a log line: ``h264 Main 2688x1520 15 fps, aac 16000 Hz``."""
    text = f"{facts.codec} {facts.profile or ''} {facts.width}x{facts.height}".replace("  ", " ")
    if facts.fps:
        text += f" {facts.fps:g} fps"
    if facts.audio_codec:
        text += f", {facts.audio_codec} {facts.audio_sample_rate} Hz"
    return text


class ProbeManager:
    """Probe sinks, scheduled probes and the stored results of every camera."""

    def __init__(self, settings: Settings, cameras: dict[str, Camera]) -> None:
        self.settings = settings
        self.cameras = cameras  # the service's running cameras, by id
        self.path = Path(settings.data_dir) / PROBES_FILE
        self.records: dict[str, ProbeRecord] = {}
        self.sinks: dict[str, ProbeSink] = {}
        self.log = get_logger(component="probe")
        self._last_attempt: dict[str, float] = {}  # loop time of each camera's last probe
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._queued: set[str] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._save_handle: asyncio.TimerHandle | None = None
        self._save_task: asyncio.Task[None] | None = None
        self._save_lock = asyncio.Lock()
        self._save_failures = 0  # consecutive failed writes; only the first is logged

    @property
    def scheduling(self) -> bool:
        return self.settings.probe_interval_hours > 0

    # --- lifecycle ----------------------------------------------------------------------

    def load(self) -> None:
        """Read stored results; a missing or unreadable file starts empty (logged)."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        except OSError as exc:
            self.log.warning("probe_file_unreadable", path=str(self.path), reason=exc.strerror or str(exc))
            return
        try:
            stored = msgspec.json.decode(data, type=ProbeFile)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            self.log.warning("probe_file_invalid", path=str(self.path), reason=str(exc))
            return
        self.records = stored.cameras

    def start(self) -> None:
        if self._tasks:
            return
        if self.scheduling:
            for index in range(self.settings.probe_concurrency):
                self._tasks.append(asyncio.create_task(self._worker(), name=f"probe-worker-{index}"))
            self._tasks.append(asyncio.create_task(self._schedule(), name="probe-schedule"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._save_handle is not None:
            self._save_handle.cancel()
            self._save_handle = None
        await self._save()

    def attach(self, camera: Camera) -> None:
        """Measure the camera after each (re)connect; queue an ``on_demand`` camera for a first probe."""
        sink = ProbeSink(camera.id, self.settings.probe_window_seconds, self.record_success)
        camera.add_sink(sink)
        self.sinks[camera.id] = sink
        if self.scheduling and camera.config.mode == "on_demand":
            self._enqueue(camera.id)

    def forget(self, camera_id: str) -> None:
        """Drop a deleted camera's results."""
        self.sinks.pop(camera_id, None)
        self._last_attempt.pop(camera_id, None)
        if self.records.pop(camera_id, None) is not None:
            self._save_soon()

    # --- probing ------------------------------------------------------------------------

    async def probe(self, camera: Camera) -> ProbeRecord:
        """Measure the camera now, over its running upstream or one opened for the probe.

        Never raises for a camera fault: the failure is stored in the
        returned record's ``last_error``.
        """
        sink = self.sinks.get(camera.id)
        if sink is None:
            raise RuntimeError(f"camera {camera.id} has no probe sink")
        self._last_attempt[camera.id] = asyncio.get_running_loop().time()
        settings = self.settings
        ready_timeout = settings.connect_timeout_seconds + settings.read_timeout_seconds
        window_timeout = settings.probe_window_seconds * WINDOW_CAP_FACTOR + settings.read_timeout_seconds + 5
        waiter = sink.request()
        lease = camera.acquire("probe")
        try:
            await camera.wait_ready(ready_timeout)
            async with asyncio.timeout(window_timeout):
                await waiter
        except CameraUnavailable as exc:
            self._record_unavailable(camera, exc)
        except ProbeError as exc:
            if exc.code != "camera_removed":
                self.record_failure(camera.id, exc.code, exc.reason)
        except TimeoutError:
            self.record_failure(camera.id, "probe_timeout", f"no complete measurement within {window_timeout:g} s")
        finally:
            sink.cancel(waiter)
            lease.release()
        return self.records.get(camera.id) or ProbeRecord()

    def _record_unavailable(self, camera: Camera, error: CameraUnavailable) -> None:
        if error.code == "service_stopping":
            return  # a shutdown is no fact about the camera
        video = camera.video
        if error.code == "unsupported_codec" and video is not None and not video.relayed:
            # Size and codec are known without relaying: enough for the resolution rule.
            note = f"the camera sends {video.codec}, which is not relayed, so frame rate, bit rate and GOP were not measured"
            self.record_success(camera.id, static_facts(video, camera.audio, [note]))
            return
        self.record_failure(camera.id, error.code, error.reason)

    def record_success(self, camera_id: str, facts: ProbeFacts) -> None:
        now = utc_now()
        record = self.records.setdefault(camera_id, ProbeRecord())
        previous = record.facts
        record.facts = facts
        record.probed_at = now
        record.last_attempt_at = now
        record.last_error = None
        self._last_attempt[camera_id] = asyncio.get_running_loop().time()
        if previous is None or facts_identity(previous) != facts_identity(facts):
            if previous is not None:
                self.log.warning(
                    "camera_facts_changed",
                    camera_id=camera_id,
                    previous=facts_summary(previous),
                    current=facts_summary(facts),
                )
            entry = HistoryEntry(
                at=now,
                codec=facts.codec,
                profile=facts.profile,
                width=facts.width,
                height=facts.height,
                megapixels=facts.megapixels,
                fps=facts.fps,
                audio_codec=facts.audio_codec,
                audio_sample_rate=facts.audio_sample_rate,
            )
            record.history = [*record.history, entry][-HISTORY_LENGTH:]
        self.log.info(
            "camera_probed",
            camera_id=camera_id,
            codec=facts.codec,
            width=facts.width,
            height=facts.height,
            fps=facts.fps,
            video_bitrate_bps=facts.video_bitrate_bps,
            gop_frames=facts.gop_frames,
            b_frames=facts.b_frames,
            window_seconds=facts.window_seconds,
        )
        self._save_soon()

    def record_failure(self, camera_id: str, code: str, reason: str) -> None:
        now = utc_now()
        record = self.records.setdefault(camera_id, ProbeRecord())
        record.last_attempt_at = now
        record.last_error = ProbeFailure(code=code, reason=reason, at=now)
        self.log.warning("camera_probe_failed", camera_id=camera_id, error=code, reason=reason)
        self._save_soon()

    # --- scheduling ---------------------------------------------------------------------

    def _enqueue(self, camera_id: str) -> None:
        if camera_id not in self._queued:
            self._queued.add(camera_id)
            self._queue.put_nowait(camera_id)

    async def _worker(self) -> None:
        while True:
            camera_id = await self._queue.get()
            self._queued.discard(camera_id)
            camera = self.cameras.get(camera_id)
            if camera is None:
                continue
            try:
                await self.probe(camera)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug in Pantau; the other probes go on
                self.log.exception("camera_probe_crashed", camera_id=camera_id)

    async def _schedule(self) -> None:
        """Queue every camera whose last probe is older than the interval."""
        interval = self.settings.probe_interval_hours * 3600
        loop = asyncio.get_running_loop()
        started = loop.time()
        while True:
            await asyncio.sleep(min(SCHEDULE_CHECK_SECONDS, interval))
            now = loop.time()
            for camera_id in list(self.cameras):
                last = self._last_attempt.get(camera_id, started)
                if now - last >= interval:
                    self._enqueue(camera_id)

    # --- views --------------------------------------------------------------------------

    def view(self, camera_id: str, history: bool = False) -> dict[str, Any]:
        """Return the probe fields of the camera API; the history only when asked."""
        record = self.records.get(camera_id) or ProbeRecord()
        sink = self.sinks.get(camera_id)
        data: dict[str, Any] = {
            "facts": msgspec.to_builtins(record.facts) if record.facts else None,
            "probed_at": record.probed_at,
            "last_attempt_at": record.last_attempt_at,
            "last_error": msgspec.to_builtins(record.last_error) if record.last_error else None,
            "measuring": bool(sink and sink.measuring),
        }
        if history:
            data["history"] = msgspec.to_builtins(record.history)
        return data

    # --- persistence --------------------------------------------------------------------

    def _save_soon(self) -> None:
        """Coalesce the results of a burst of probes into one write."""
        if self._save_handle is None:
            loop = asyncio.get_running_loop()
            self._save_handle = loop.call_later(SAVE_DELAY_SECONDS, self._start_save)

    def _start_save(self) -> None:
        self._save_handle = None
        self._save_task = asyncio.create_task(self._save(), name="probe-save")

    async def _save(self) -> None:
        data = msgspec.json.encode(ProbeFile(version=1, cameras=self.records))
        async with self._save_lock:
            try:
                await asyncio.to_thread(write_atomically, self.path, data)
            except OSError as exc:
                self._save_failures += 1
                if self._save_failures == 1:
                    reason = exc.strerror or str(exc)
                    self.log.warning("probe_file_write_failed", path=str(self.path), reason=reason)
                return
            if self._save_failures:
                self.log.info("probe_file_written", path=str(self.path), failed_before=self._save_failures)
                self._save_failures = 0
