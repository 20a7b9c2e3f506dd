"""Camera facts measured from the camera's own bitstream.

A :class:`ProbeSink` is a sink of its camera for the camera's lifetime. After
every (re)connect, after every change of the video parameters and whenever
a probe is requested, it measures one window of the running stream. The
window starts at a keyframe and ends at the first keyframe that arrives
``PANTAU_PROBE_WINDOW_SECONDS`` of stream time later. Frame rate and bit
rate therefore cover whole GOPs, because an I-frame at only one end would
bias the bit rate. Times come from the frames' timestamps (the camera's RTP
clock), not from arrival times, so a busy host does not skew them.

Outside a window the sink costs one attribute check per frame.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import msgspec

from proto import h265
from proto.bits import BitstreamError
from relay.media import TIMEBASE, AudioInfo, Frame, VideoInfo

# A window that has not reached its closing keyframe after this many window
# lengths ends with what it has (long "smart codec" GOPs).
WINDOW_CAP_FACTOR = 3


class ProbeFacts(msgspec.Struct, kw_only=True):
    """Facts from one probe, with the unit in each field name."""

    codec: str
    profile: str | None = None
    level: float | None = None
    codec_string: str | None = None
    width: int
    height: int
    coded_width: int | None = None
    coded_height: int | None = None
    pixels: int
    megapixels: float
    fps: float | None = None  # measured from timestamps
    declared_fps: float | None = None  # from the SPS VUI or the H.265 VPS timing
    video_bitrate_bps: int | None = None
    gop_frames: int | None = None  # the maximum complete keyframe interval in the window
    gop_seconds: float | None = None
    b_frames: bool | None = None  # frames arrived out of presentation order
    audio_codec: str | None = None
    audio_sample_rate: int | None = None
    audio_channels: int | None = None
    audio_bitrate_bps: int | None = None
    window_seconds: float | None = None
    frames: int = 0
    notes: list[str] = []


class ProbeError(Exception):
    """A probe produced no facts, for the reason in ``code`` and ``reason``."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def declared_fps(video: VideoInfo) -> float | None:
    """Return the frame rate the parameter sets declare (SPS VUI, else H.265 VPS timing)."""
    if video.sps_fps:
        return round(video.sps_fps, 3)
    if video.codec == "h265" and video.vps is not None:
        try:
            fps = h265.parse_vps(video.vps).fps
        except BitstreamError:
            return None
        return round(fps, 3) if fps else None
    return None


def static_facts(video: VideoInfo, audio: AudioInfo | None, notes: list[str] | None = None) -> ProbeFacts:
    """Describe what the parameter sets alone tell: codec, profile, level, sizes and audio."""
    pixels = video.width * video.height
    return ProbeFacts(
        codec=video.codec,
        profile=video.profile,
        level=round(video.level, 2) if video.level is not None else None,
        codec_string=video.codec_string,
        width=video.width,
        height=video.height,
        coded_width=video.coded_width,
        coded_height=video.coded_height,
        pixels=pixels,
        megapixels=round(pixels / 1_000_000, 2),
        declared_fps=declared_fps(video),
        audio_codec=audio.codec if audio else None,
        audio_sample_rate=audio.sample_rate if audio else None,
        audio_channels=audio.channels if audio else None,
        notes=list(notes or []),
    )


class Measurement:
    """Counters of one window, from its opening keyframe on (90 kHz ticks)."""

    __slots__ = (
        "video",
        "audio",
        "window_ticks",
        "frames",
        "bytes",
        "keys",
        "first_dts",
        "last_dts",
        "max_pts",
        "reordered",
        "audio_bytes",
    )

    def __init__(self, video: VideoInfo, audio: AudioInfo | None, window_seconds: float) -> None:
        self.video = video
        self.audio = audio
        self.window_ticks = int(window_seconds * TIMEBASE)
        self.frames = 0
        self.bytes = 0
        # (frames before it, its DTS, bytes before it) for every keyframe
        self.keys: list[tuple[int, int, int]] = []
        self.first_dts = 0
        self.last_dts = 0
        self.max_pts = -1
        self.reordered = False
        self.audio_bytes = 0

    def add_video(self, frame: Frame) -> bool:
        """Count a video frame; return True when it is the keyframe that closes the window."""
        if frame.key:
            if not self.keys:
                self.first_dts = frame.dts
            self.keys.append((self.frames, frame.dts, self.bytes))
            if len(self.keys) > 1 and frame.dts - self.keys[0][1] >= self.window_ticks:
                return True
        self.frames += 1
        self.bytes += len(frame.data)
        if frame.pts < self.max_pts:
            self.reordered = True
        else:
            self.max_pts = frame.pts
        self.last_dts = frame.dts
        return False

    def facts(self, closed: bool, why_short: str = "") -> ProbeFacts:
        """Turn the counters into facts; raises :class:`ProbeError` when too little was seen.

        ``closed`` is True when the window reached its closing keyframe;
        otherwise it ended early for the reason ``why_short``.
        """
        facts = static_facts(self.video, self.audio)
        facts.b_frames = self.reordered
        if len(self.keys) >= 2:
            # Whole GOPs, from the first keyframe to the last one seen.
            frames, end_dts, end_bytes = self.keys[-1]
            span = (end_dts - self.keys[0][1]) / TIMEBASE
            gops = [
                (after[0] - before[0], (after[1] - before[1]) / TIMEBASE)
                for before, after in zip(self.keys, self.keys[1:], strict=False)
            ]
            gop_frames, gop_seconds = max(gops)
            facts.gop_frames = gop_frames
            facts.gop_seconds = round(gop_seconds, 3)
            if not closed:
                facts.notes.append(f"window shortened to {span:.1f} s: {why_short}")
        elif self.frames >= 2:
            # No second keyframe: all frames, and the GOP is longer than the window.
            frames, end_bytes = self.frames, self.bytes
            intervals = (self.last_dts - self.first_dts) / TIMEBASE
            span = intervals * self.frames / (self.frames - 1)
            facts.notes.append(f"no second keyframe within {span:.1f} s, so the GOP length is unknown ({why_short})")
        else:
            raise ProbeError("probe_too_short", f"too few video frames to measure: {why_short}")
        if span <= 0:
            raise ProbeError("probe_too_short", "the video frames carry no usable timestamps")
        facts.fps = round(frames / span, 3)
        facts.video_bitrate_bps = round(end_bytes * 8 / span)
        if self.audio is not None and self.audio.relayed:
            facts.audio_bitrate_bps = round(self.audio_bytes * 8 / span)
        facts.window_seconds = round(span, 3)
        facts.frames = frames
        return facts


def video_identity(video: VideoInfo | None) -> tuple[str, int, int, str | None] | None:
    return None if video is None else (video.codec, video.width, video.height, video.profile)


class ProbeSink:
    """Measure a window of one camera's stream after each (re)connect or request.

    ``on_result`` receives the facts of every window that completes. A
    future from :meth:`request` gets the facts of the next window to
    complete, or a :class:`ProbeError`.
    """

    def __init__(
        self, camera_id: str, window_seconds: float, on_result: Callable[[str, ProbeFacts], None]
    ) -> None:
        self.camera_id = camera_id
        self.window_seconds = window_seconds
        self._on_result = on_result
        self.video: VideoInfo | None = None
        self.audio: AudioInfo | None = None
        self._armed = True  # the next keyframe opens a window
        self._measurement: Measurement | None = None
        self._cap_handle: asyncio.TimerHandle | None = None
        self._waiters: list[asyncio.Future[ProbeFacts]] = []

    @property
    def measuring(self) -> bool:
        return self._measurement is not None

    def request(self) -> asyncio.Future[ProbeFacts]:
        """Return a future for the next window to complete, opening one at the next keyframe if needed."""
        future: asyncio.Future[ProbeFacts] = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        if self._measurement is None:
            self._armed = True
        return future

    def cancel(self, future: asyncio.Future[ProbeFacts]) -> None:
        if future in self._waiters:
            self._waiters.remove(future)
        future.cancel()

    # --- Sink ------------------------------------------------------------------------

    def on_stream_info(self, video: VideoInfo | None, audio: AudioInfo | None) -> None:
        changed = self.video is not None and video_identity(video) != video_identity(self.video)
        self.video = video
        self.audio = audio
        if changed:
            # New parameters mean new facts: measure them from their first keyframe.
            self._stop_window()
            self._armed = True

    def on_frame(self, frame: Frame) -> None:
        measurement = self._measurement
        if measurement is None:
            if self._armed and frame.video and frame.key and self.video is not None and self.video.relayed:
                self._open_window(frame)
            return
        if frame.video:
            if measurement.add_video(frame):
                self._close_window(closed=True)
        else:
            measurement.audio_bytes += len(frame.data)

    def on_stream_end(self, reason: str) -> None:
        if self._measurement is not None:
            self._close_window(closed=False, why_short=f"the stream ended ({reason})")
        self._armed = True

    def on_camera_removed(self, reason: str = "camera_removed") -> None:
        del reason  # a probe ends the same way either way
        self._stop_window()
        self._fail_waiters(ProbeError("camera_removed", "the camera was removed or restarted"))

    # --- windows ---------------------------------------------------------------------

    def _open_window(self, frame: Frame) -> None:
        assert self.video is not None
        self._armed = False
        self._measurement = Measurement(self.video, self.audio, self.window_seconds)
        self._measurement.add_video(frame)
        loop = asyncio.get_running_loop()
        cap = self.window_seconds * WINDOW_CAP_FACTOR
        self._cap_handle = loop.call_later(cap, self._close_window, False, f"no closing keyframe within {cap:g} s")

    def _stop_window(self) -> None:
        self._measurement = None
        if self._cap_handle is not None:
            self._cap_handle.cancel()
            self._cap_handle = None

    def _close_window(self, closed: bool, why_short: str = "") -> None:
        measurement = self._measurement
        self._stop_window()
        if measurement is None:
            return
        try:
            facts = measurement.facts(closed, why_short)
        except ProbeError as exc:
            self._fail_waiters(exc)
            return
        self._on_result(self.camera_id, facts)
        waiters, self._waiters = self._waiters, []
        for future in waiters:
            if not future.done():
                future.set_result(facts)

    def _fail_waiters(self, error: ProbeError) -> None:
        waiters, self._waiters = self._waiters, []
        for future in waiters:
            if not future.done():
                future.set_exception(error)
                future.exception()  # retrieved here, so an abandoned future logs nothing
