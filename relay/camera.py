"""A camera at run time: its one upstream, its readers, its GOP cache and its outputs.

Every output (HTTP-FLV, HLS, the recorder, the probe) is a reader of the
camera and a :class:`Sink` of its frames. However many readers there are,
the camera has at most one RTSP session. One supervisor task per camera
connects, reconnects with backoff and closes an ``on_demand`` upstream when
its last reader has been gone for ``PANTAU_IDLE_CLOSE_SECONDS``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, Protocol

from proto.rtp import SenderReport
from relay.cameras import CameraConfig, expand_env, redact_url
from relay.ingest import IngestSession
from relay.logs import get_logger
from relay.media import TIMEBASE, AudioInfo, Frame, VideoInfo
from relay.rtsp_client import RtspError
from relay.settings import Settings
from relay.timeline import CameraTimeline

BACKOFF_START_SECONDS = 1.0
# A session that stayed up this long resets the backoff to its start.
STABLE_SESSION_SECONDS = 30.0
RATE_WINDOW_SECONDS = 5.0
SUMMARY_INTERVAL_SECONDS = 60.0

READER_KINDS = ("flv", "hls", "record", "probe")
# The keys Camera.status() adds to a camera's API view; all are read-only.
STATUS_FIELDS = (
    "state",
    "last_error",
    "connected_since",
    "retry_in_seconds",
    "reconnects",
    "readers",
    "bitrate_bps",
    "fps",
    "codec",
    "width",
    "height",
    "profile",
    "audio_codec",
    "audio_sample_rate",
    "audio_relayed",
    "timestamp_corrections",
    "offline_since",
)


class CameraUnavailable(Exception):
    """The camera cannot deliver video now, for the reason in ``code`` and ``reason``."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class Sink(Protocol):
    """A consumer of a camera's frames (FLV fan-out, HLS muxer, recorder, probe).

    A sink may also define ``on_camera_removed(reason)`` and
    ``on_timestamp_jump(track, seconds)``, which the camera calls when present.
    """

    def on_stream_info(self, video: VideoInfo | None, audio: AudioInfo | None) -> None: ...
    def on_frame(self, frame: Frame) -> None: ...
    def on_stream_end(self, reason: str) -> None: ...


class RateMeter:
    """Bytes and frames per second over consecutive windows of a few seconds."""

    __slots__ = ("_start", "_bytes", "_frames", "bitrate_bps", "fps")

    def __init__(self) -> None:
        self._start: float | None = None  # the first frame starts the first window
        self._bytes = 0
        self._frames = 0
        self.bitrate_bps: float | None = None
        self.fps: float | None = None

    def add(self, size: int, video_frame: bool, now: float) -> None:
        if self._start is None:
            self._start = now
        self._bytes += size
        if video_frame:
            self._frames += 1
        elapsed = now - self._start
        if elapsed >= RATE_WINDOW_SECONDS:
            self.bitrate_bps = self._bytes * 8 / elapsed
            self.fps = self._frames / elapsed
            self._start = now
            self._bytes = 0
            self._frames = 0

    def reset(self) -> None:
        self.__init__()  # type: ignore[misc]


class Lease:
    """One reader's claim on a camera; a second ``release`` does nothing."""

    __slots__ = ("_camera", "kind", "_released")

    def __init__(self, camera: Camera, kind: str) -> None:
        self._camera = camera
        self.kind = kind
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._camera._release(self.kind)


class Camera:
    """Run-time state and supervisor of one configured camera."""

    def __init__(self, config: CameraConfig, settings: Settings) -> None:
        self.config = config
        self.settings = settings
        self.id = config.id
        self.log = get_logger(camera_id=config.id)
        self.state = "idle"
        self.last_error: dict[str, Any] | None = None
        self.connected_since: datetime | None = None
        self.offline_since: datetime | None = None  # first failure since the camera was last live
        self.retry_at: float | None = None
        self.reconnects = 0
        self.readers: dict[str, int] = {kind: 0 for kind in READER_KINDS}
        self.video: VideoInfo | None = None
        self.audio: AudioInfo | None = None
        self.gop: list[Frame] = []
        self._gop_bytes = 0
        self.gop_overflows = 0
        self.sinks: list[Sink] = []
        self.timeline = CameraTimeline()
        self.rate = RateMeter()
        self.ingest_bytes = 0
        self.frames_in = 0
        self.timestamp_corrections = 0
        self.sender_report: tuple[str, SenderReport, int] | None = None
        # (output ticks, Unix time) of the latest video sender report, on the current mapping
        self.wallclock_reference: tuple[int, float] | None = None
        self.last_frame_at = 0.0  # monotonic time of the last video frame
        self._session: IngestSession | None = None
        self._session_started_at = 0.0
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._idle_handle: asyncio.TimerHandle | None = None
        self._viewer_grace_until = 0.0  # loop time until which a viewer who left keeps an on_demand camera up
        self._ready_waiters: list[asyncio.Future[None]] = []
        self._stream_live = False
        self._stopping = False

    # --- lifecycle ----------------------------------------------------------------

    def start(self, delay: float = 0.0) -> None:
        """Start the supervisor; an ``always`` camera connects after ``delay`` seconds."""
        if self._task is None:
            self._task = asyncio.create_task(self._supervise(delay), name=f"camera-{self.id}")

    async def stop(self, reason: str = "camera_removed") -> None:
        """Stop the supervisor, close the upstream and end every output.

        ``reason`` is ``camera_removed``, or ``service_stopping`` at shutdown; outputs log it.
        """
        self._stopping = True
        if self._idle_handle is not None:
            self._idle_handle.cancel()
        if self._session is not None:
            self._session.stop()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._end_stream("camera removed")
        for sink in list(self.sinks):
            stop = getattr(sink, "on_camera_removed", None)
            if stop is not None:
                stop(reason)
        message = "the service is stopping" if reason == "service_stopping" else "the camera was removed"
        self._fail_waiters(CameraUnavailable(reason, message))

    def update_config(self, config: CameraConfig) -> None:
        """Apply an edit that does not touch how the camera is reached."""
        self.config = config
        if config.mode == "always" or self.has_readers():
            self._wake.set()

    @staticmethod
    def needs_restart(old: CameraConfig, new: CameraConfig) -> bool:
        return (old.url, old.transport, old.mode) != (new.url, new.transport, new.mode)

    # --- readers ------------------------------------------------------------------

    def has_readers(self) -> bool:
        return any(self.readers.values())

    def acquire(self, kind: str) -> Lease:
        """Register a reader; an idle ``on_demand`` camera starts connecting."""
        self.readers[kind] = self.readers.get(kind, 0) + 1
        if self._idle_handle is not None:
            self._idle_handle.cancel()
            self._idle_handle = None
        self._wake.set()
        return Lease(self, kind)

    @contextlib.contextmanager
    def reading(self, kind: str) -> Iterator[Lease]:
        lease = self.acquire(kind)
        try:
            yield lease
        finally:
            lease.release()

    def _release(self, kind: str) -> None:
        self.readers[kind] = max(0, self.readers.get(kind, 0) - 1)
        loop = asyncio.get_running_loop()
        delay = self.settings.idle_close_seconds
        if kind == "probe":
            # A probe keeps the upstream only as long as it measures, but the
            # grace period of a viewer who left during the probe still counts.
            delay = max(0.0, self._viewer_grace_until - loop.time())
        else:
            self._viewer_grace_until = loop.time() + delay
        if not self.has_readers() and self.config.mode == "on_demand" and self._idle_handle is None:
            self._idle_handle = loop.call_later(delay, self._idle_timeout, delay)

    def _idle_timeout(self, delay: float) -> None:
        self._idle_handle = None
        if self.has_readers() or self.config.mode != "on_demand":
            return
        self.log.info("camera_idle_close", idle_seconds=round(delay, 1))
        self._wake.set()
        if self._session is not None:
            self._session.stop()

    def _wanted(self) -> bool:
        return self.config.mode == "always" or self.has_readers() or self._idle_handle is not None

    async def wait_ready(self, timeout: float) -> None:
        """Wait until frames flow; raise :class:`CameraUnavailable` with the reason.

        A camera that is already retrying after a failure raises that
        failure at once instead of keeping the client waiting.
        """
        if self._stream_live:
            return
        if self.state == "retrying" and self.last_error is not None:
            raise CameraUnavailable(self.last_error["code"], self.last_error["reason"])
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._ready_waiters.append(future)
        try:
            async with asyncio.timeout(timeout):
                await future
        except TimeoutError as exc:
            raise CameraUnavailable(
                "camera_timeout", f"no video from the camera within {timeout:g} s"
            ) from exc
        finally:
            if future in self._ready_waiters:
                self._ready_waiters.remove(future)

    def _fail_waiters(self, error: CameraUnavailable) -> None:
        waiters, self._ready_waiters = self._ready_waiters, []
        for future in waiters:
            if not future.done():
                future.set_exception(error)
                future.exception()

    # --- supervisor ---------------------------------------------------------------

    async def _supervise(self, delay: float) -> None:
        backoff = BACKOFF_START_SECONDS
        loop = asyncio.get_running_loop()
        if delay > 0 and not self.has_readers():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()
        while not self._stopping:
            if not self._wanted():
                self._set_state("idle")
                self._wake.clear()
                await self._wake.wait()
                continue

            self._set_state("connecting")
            error = await self._run_session()
            if self._stopping:
                return
            if not self._wanted():
                backoff = BACKOFF_START_SECONDS
                continue
            if loop.time() - self._session_started_at >= STABLE_SESSION_SECONDS and self._session_started_at:
                backoff = BACKOFF_START_SECONDS

            delay = min(backoff, self.settings.retry_max_seconds) * random.uniform(0.8, 1.2)
            backoff = min(backoff * 2, self.settings.retry_max_seconds)
            self.retry_at = loop.time() + delay
            self._set_state("retrying")
            self.log.info(
                "camera_retry",
                delay_seconds=round(delay, 2),
                error=error.code if error else None,
                reason=error.reason if error else None,
            )
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    # Woken early only when the last reader of an on_demand camera left.
                    while self._wanted():
                        await self._wake.wait()
                        self._wake.clear()
            self.retry_at = None

    async def _run_session(self) -> RtspError | None:
        """Run one RTSP session to its end and record why it ended."""
        try:
            url = expand_env(self.config.url)
        except KeyError as exc:
            error = RtspError("config_error", f"environment variable {exc.args[0]} is not set")
            self._record_error(error)
            return error

        self._session_started_at = 0.0
        session = IngestSession(
            url,
            transport=self.config.transport,
            connect_timeout=self.settings.connect_timeout_seconds,
            read_timeout=self.settings.read_timeout_seconds,
            timeline=self.timeline,
            listener=self,
            on_connected=self._on_connected,
        )
        self._session = session
        self.log.info("camera_connecting", url=redact_url(self.config.url), transport=self.config.transport)
        watchdog = asyncio.create_task(self._watch_frames(session))
        error: RtspError | None = None
        try:
            await session.run()
        except RtspError as exc:
            error = exc
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug in Pantau, not in the camera
            self.log.exception("camera_session_crashed")
            error = RtspError("internal_error", f"{type(exc).__name__}: {exc}")
        finally:
            watchdog.cancel()
            self._session = None
            was_live = self.connected_since is not None
            self.connected_since = None
            self._end_stream(error.reason if error else "session ended")

        if error is not None and error.code == "stopped":
            self.log.info("camera_disconnected", reason="idle" if not self._stopping else "stopped")
            return None
        if error is not None:
            self._record_error(error)
            if was_live:
                self.reconnects += 1
        return error

    def _record_error(self, error: RtspError) -> None:
        self.last_error = {"code": error.code, "reason": error.reason, "at": _utc_now()}
        if self.offline_since is None:
            self.offline_since = datetime.now(UTC)
        self.log.warning("camera_error", error=error.code, reason=error.reason)
        self._fail_waiters(CameraUnavailable(error.code, error.reason))

    async def _watch_frames(self, session: IngestSession) -> None:
        """End a session that is connected but yields no decodable video."""
        read_timeout = self.settings.read_timeout_seconds
        loop = asyncio.get_running_loop()
        last_count = -1
        last_change = loop.time()
        last_summary = loop.time()
        while True:
            await asyncio.sleep(min(1.0, read_timeout / 4))
            track = session.video
            if track is None or session.client is None or not session.client.playing:
                last_change = loop.time()
                continue
            now = loop.time()
            if track.frames != last_count:
                last_count = track.frames
                last_change = now
            # The first frame may wait for a keyframe, so it gets twice as long.
            limit = read_timeout if last_count > 0 else 2 * read_timeout
            if now - last_change > limit:
                reason = self._no_frames_reason(track, limit)
                session.client.fail("no_video_frames", reason)
                return
            if now - last_summary >= SUMMARY_INTERVAL_SECONDS:
                last_summary = now
                self._log_packet_summary(session)

    def _no_frames_reason(self, track: Any, limit: float) -> str:
        if track.params is not None and track.params.info is None:
            detail = track.params.error or "no SPS/PPS in the SDP or the stream"
            return f"connected, but no decodable video for {limit:g} s: {detail}"
        return f"connected, but no decodable video frame for {limit:g} s"

    def _log_packet_summary(self, session: IngestSession) -> None:
        """Log per-packet faults as one summary line instead of one line each."""
        counters: dict[str, int] = {}
        video = session.video
        if video is not None and video.depacketizer is not None:
            counters.update({k: v for k, v in video.depacketizer.stats.snapshot().items() if v})
            if video.filter.dropped:
                counters["other_source_packets"] = video.filter.dropped
            if video.filter.foreign:
                counters["other_payload_type_packets"] = video.filter.foreign
        if session.client is not None and session.client.dropped_interleaved:
            counters["unexpected_channel_packets"] = session.client.dropped_interleaved
        if counters:
            self.log.info("camera_packet_summary", **counters)

    def _set_state(self, state: str) -> None:
        self.state = state

    # --- ingest callbacks ---------------------------------------------------------

    def _on_connected(self) -> None:
        self._session_started_at = asyncio.get_running_loop().time()

    def on_session_started(self, description: dict[str, Any]) -> None:
        self.connected_since = datetime.now(UTC)
        self.offline_since = None
        self._set_state("live")
        self.log.info("camera_connected", **description)

    def on_video_info(self, info: VideoInfo) -> None:
        previous = self.video
        self.video = info
        if previous is not None and (previous.width, previous.height, previous.codec) != (
            info.width,
            info.height,
            info.codec,
        ):
            self.log.info(
                "camera_video_changed",
                previous=f"{previous.codec} {previous.width}x{previous.height}",
                current=f"{info.codec} {info.width}x{info.height}",
            )
        if not info.relayed:
            # Reported (codec and size) but never relayed.
            self._fail_waiters(
                CameraUnavailable("unsupported_codec", f"the camera sends {info.codec}, not H.264 or H.265")
            )
        self._notify_info()

    def on_audio_info(self, info: AudioInfo | None) -> None:
        self.audio = info
        self._notify_info()

    def _notify_info(self) -> None:
        for sink in list(self.sinks):
            sink.on_stream_info(self.video, self.audio)

    def on_frame(self, frame: Frame) -> None:
        now = time.monotonic()
        self.frames_in += 1
        self.rate.add(len(frame.data), frame.video, now)
        if frame.video:
            self.last_frame_at = now
            if frame.key:
                self.gop = [frame]
                self._gop_bytes = len(frame.data)
                if not self._stream_live:
                    self._stream_live = True
                    waiters, self._ready_waiters = self._ready_waiters, []
                    for future in waiters:
                        if not future.done():
                            future.set_result(None)
            elif self.gop:
                self._add_to_gop(frame)
        elif self.gop:
            self._add_to_gop(frame)
        for sink in self.sinks:
            sink.on_frame(frame)

    def _add_to_gop(self, frame: Frame) -> None:
        self._gop_bytes += len(frame.data)
        self.gop.append(frame)
        if len(self.gop) > self.settings.gop_cache_max_frames or self._gop_bytes > self.settings.gop_cache_max_bytes:
            # New clients wait for the next keyframe instead of getting a GOP without its start.
            self.gop = []
            self._gop_bytes = 0
            self.gop_overflows += 1

    def on_timestamp_jump(self, track: str, seconds: float, kind: str) -> None:
        self.timestamp_corrections += 1
        self.wallclock_reference = None
        for sink in list(self.sinks):
            jumped = getattr(sink, "on_timestamp_jump", None)
            if jumped is not None:
                jumped(track, seconds)
        self.log.warning("timestamp_corrected", track=track, jump_seconds=round(seconds, 3), kind=kind)

    def on_sender_report(self, track: str, report: SenderReport, clock_rate: int) -> None:
        self.sender_report = (track, report, clock_rate)
        session = self._session
        if track == "video" and session is not None and session.video is not None:
            ticks = session.video.clock.ticks_at(report.rtp_timestamp)
            if ticks is not None:
                self.wallclock_reference = (ticks, report.ntp_seconds)

    def on_codec_corrected(self, declared: str, detected: str) -> None:
        self.log.warning("video_codec_corrected", declared=declared, detected=detected)

    def on_packet_bytes(self, count: int) -> None:
        self.ingest_bytes += count

    def _end_stream(self, reason: str) -> None:
        self.wallclock_reference = None
        self.gop = []
        self._gop_bytes = 0
        self.rate.reset()
        was_live = self._stream_live
        self._stream_live = False
        if was_live:
            for sink in list(self.sinks):
                sink.on_stream_end(reason)

    # --- outputs ------------------------------------------------------------------

    @property
    def stream_live(self) -> bool:
        return self._stream_live

    def add_sink(self, sink: Sink) -> None:
        self.sinks.append(sink)
        if self.video is not None or self.audio is not None:
            sink.on_stream_info(self.video, self.audio)

    def remove_sink(self, sink: Sink) -> None:
        if sink in self.sinks:
            self.sinks.remove(sink)

    def status(self) -> dict[str, Any]:
        """Return the state fields of ``GET /api/cameras/{id}``."""
        video = self.video
        audio = self.audio
        retry_in = None
        if self.retry_at is not None:
            retry_in = max(0.0, round(self.retry_at - asyncio.get_running_loop().time(), 1))
        return {
            "state": self.state,
            "last_error": self.last_error,
            "connected_since": _iso(self.connected_since),
            "offline_since": _iso(self.offline_since),
            "retry_in_seconds": retry_in,
            "reconnects": self.reconnects,
            "readers": dict(self.readers),
            "bitrate_bps": round(self.rate.bitrate_bps) if self.rate.bitrate_bps is not None else None,
            "fps": round(self.rate.fps, 2) if self.rate.fps is not None else None,
            "codec": video.codec if video else None,
            "width": video.width if video else None,
            "height": video.height if video else None,
            "profile": video.profile if video else None,
            "audio_codec": audio.codec if audio else None,
            "audio_sample_rate": audio.sample_rate if audio else None,
            "audio_relayed": audio.relayed if audio else False,
            "timestamp_corrections": self.timestamp_corrections,
        }


def _utc_now() -> str:
    return _iso(datetime.now(UTC)) or ""


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def ticks_to_seconds(ticks: int) -> float:
    return ticks / TIMEBASE
