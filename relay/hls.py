"""HLS output: one segmenter per camera and format, segments in memory, shared by every player.

An :class:`HlsStream` is a reader (lease kind ``"hls"``) and a sink of its
camera. It cuts the frames the relay already has into segments at keyframes:
a keyframe ends the current segment once that segment reaches 90 % of
``PANTAU_HLS_SEGMENT_SECONDS``, so segment lengths follow the camera's GOP.
Each segment is muxed once, as fragmented MP4 (CMAF, H.264 or H.265) or as
MPEG-TS (H.264), and the same ``bytes`` go to every player.

The playlist lists the last ``PANTAU_HLS_WINDOW`` segments. A segment that
left the playlist stays downloadable for its own duration plus the
playlist's (RFC 8216, section 6.2.2), so a player that fetched an older
playlist still gets it. The stream stops, releasing its lease, when no
playlist, init segment or segment was requested for
``PANTAU_IDLE_CLOSE_SECONDS``.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import deque
from collections.abc import Callable

from proto import mpegts
from proto.aac import adts_header
from proto.hls import PlaylistEntry, media_playlist, rounded_duration
from relay.camera import Camera, CameraUnavailable
from relay.fmp4 import Fmp4Muxer
from relay.logs import get_logger
from relay.media import TIMEBASE, AudioInfo, Frame, VideoInfo

FORMATS = ("fmp4", "ts")
# A keyframe ends a segment once it reached this share of the target length.
CUT_AT_TARGET_SHARE = 0.9
# A camera that sends no keyframe for this long (or this many bytes) gets its
# segment cut anyway, so that memory stays bounded. The next segment then
# starts without a keyframe, and the playlist drops EXT-X-INDEPENDENT-SEGMENTS.
MAX_SEGMENT_SECONDS = 30.0
MAX_SEGMENT_BYTES = 64 * 1024 * 1024


class Segment:
    """One finished media segment."""

    __slots__ = (
        "sequence",
        "data",
        "duration_seconds",
        "discontinuity",
        "init_name",
        "started_at",
        "independent",
        "unlisted_at",
    )

    def __init__(
        self,
        sequence: int,
        data: bytes,
        duration_seconds: float,
        discontinuity: bool,
        init_name: str | None,
        started_at: float,
        independent: bool,
    ) -> None:
        self.sequence = sequence
        self.data = data
        self.duration_seconds = duration_seconds
        self.discontinuity = discontinuity
        self.init_name = init_name
        self.started_at = started_at  # Unix time the first frame reached Pantau
        self.independent = independent  # starts with a keyframe
        self.unlisted_at: float | None = None  # loop time it left the playlist


class TsSegmentWriter:
    """Frames to MPEG-TS segments with the interface of :class:`relay.fmp4.Fmp4Muxer`."""

    def __init__(self, video: VideoInfo, audio: AudioInfo | None) -> None:
        if video.codec != "h264":
            raise ValueError(f"MPEG-TS segments carry H.264 only, not {video.codec}")
        self.video = video
        self.audio = audio if audio is not None and audio.relayed and audio.config is not None else None
        self._muxer = mpegts.TsMuxer(has_audio=self.audio is not None)
        self._parameter_sets = b"".join(
            b"\x00\x00\x00\x01" + nal for nal in (video.sps, *video.pps) if nal
        )
        self._pending: list[bytes] = []

    def init_segment(self) -> None:
        return None

    def add(self, frame: Frame) -> None:
        if frame.video:
            nals = mpegts.length_prefixed_to_annexb(frame.data)
            parts = [mpegts.ACCESS_UNIT_DELIMITER]
            if frame.key and not any(nal and (nal[0] & 0x1F) == 7 for nal in nals):
                # The camera sends its SPS and PPS only out of band; TS players need them in band.
                parts.append(self._parameter_sets)
            for nal in nals:
                if nal and (nal[0] & 0x1F) != 9:  # an AUD from the camera would be a second one
                    parts.append(b"\x00\x00\x00\x01")
                    parts.append(nal)
            self._pending.append(self._muxer.video(b"".join(parts), frame.pts, frame.dts, frame.key))
        elif self.audio is not None and self.audio.config is not None:
            adts = adts_header(self.audio.config, len(frame.data)) + frame.data
            self._pending.append(self._muxer.audio(adts, frame.pts))

    def cut(self, next_video_dts: int | None = None) -> bytes | None:
        if not self._pending:
            return None
        data = self._muxer.tables() + b"".join(self._pending)
        self._pending = []
        return data


SegmentWriter = Fmp4Muxer | TsSegmentWriter


class HlsStream:
    """The HLS output of one camera in one format; a sink of the camera's frames."""

    def __init__(
        self, camera: Camera, fmt: str, first_sequence: int, on_stop: Callable[[HlsStream], None]
    ) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"unknown HLS format {fmt!r}")
        self.camera = camera
        self.fmt = fmt
        self.settings = camera.settings
        self.log = get_logger(camera_id=camera.id, output=f"hls_{fmt}")
        self._loop = asyncio.get_running_loop()
        self._on_stop = on_stop

        self.window = self.settings.hls_window
        self.segments: deque[Segment] = deque()
        self.next_sequence = first_sequence
        self.discontinuity_sequence = 0
        # Announced EXT-X-TARGETDURATION; raised only when a segment would exceed it.
        self.target_duration = max(1, rounded_duration(self.settings.hls_segment_seconds))
        self._cut_ticks = int(self.settings.hls_segment_seconds * CUT_AT_TARGET_SHARE * TIMEBASE)

        self._writer: SegmentWriter | None = None
        self._config_key: tuple[object, ...] | None = None
        self._inits: dict[str, bytes] = {}
        self._init_name: str | None = None
        self._waiting_for_key = True
        self._start_dts = 0
        self._last_dts = 0
        self._last_video_duration = TIMEBASE // 15
        self._started_at = 0.0
        self._pending_bytes = 0
        self._pending_independent = True
        self._discontinuity_next = False

        self._first_segment = asyncio.Event()
        self._playlist_cache: bytes | None = None
        self.stream_ended_at: float | None = None  # loop time the camera's stream ended, until it resumes
        self.last_request = self._loop.time()
        self.requests = 0
        self._waiting_requests = 0  # playlist requests waiting for the first segment
        self.stopped = False

        self._lease = camera.acquire("hls")
        self._idle_handle = self._loop.call_later(self.settings.idle_close_seconds, self._check_idle)
        self.log.info("hls_started", first_sequence=first_sequence)
        camera.add_sink(self)
        # Start from the camera's cached GOP, so a live camera's first segment is ready sooner.
        for frame in list(camera.gop):
            self.on_frame(frame)

    # --- sink ---------------------------------------------------------------------

    def on_stream_info(self, video: VideoInfo | None, audio: AudioInfo | None) -> None:
        if video is None or not video.relayed or (self.fmt == "ts" and video.codec != "h264"):
            if self._writer is not None:
                self._cut(None)
                self.log.warning("hls_codec_unsupported", codec=video.codec if video else None)
            self._writer = None
            self._config_key = None
            return
        relayed_audio = audio if audio is not None and audio.relayed else None
        key = (video.codec, video.decoder_config, relayed_audio.specific_config if relayed_audio else None)
        if key == self._config_key:
            return
        if self._writer is not None:
            # New parameters: finish the segment in progress; the next one needs a new init segment.
            self._cut(None)
            self._waiting_for_key = True
            if self.segments:
                self._discontinuity_next = True
        self._config_key = key
        if self.fmt == "ts":
            self._writer = TsSegmentWriter(video, relayed_audio)
            return
        writer = Fmp4Muxer(video, relayed_audio)
        init = writer.init_segment()
        # Named by content, so a URL always means the same bytes and may be cached for long.
        self._init_name = f"init-{hashlib.sha256(init).hexdigest()[:16]}.mp4"
        self._inits[self._init_name] = init
        self._writer = writer

    def on_frame(self, frame: Frame) -> None:
        writer = self._writer
        if writer is None:
            return
        if frame.video:
            if self._waiting_for_key:
                if not frame.key:
                    return
                self._begin_segment(frame, independent=True)
                self._waiting_for_key = False
                self.stream_ended_at = None
            else:
                elapsed = frame.dts - self._start_dts
                if frame.dts > self._last_dts:
                    self._last_video_duration = frame.dts - self._last_dts
                if frame.key and elapsed >= self._cut_ticks:
                    self._cut(frame.dts)
                    self._begin_segment(frame, independent=True)
                elif elapsed >= MAX_SEGMENT_SECONDS * TIMEBASE or self._pending_bytes >= MAX_SEGMENT_BYTES:
                    self.log.warning(
                        "hls_segment_forced_cut",
                        seconds=round(elapsed / TIMEBASE, 3),
                        size_bytes=self._pending_bytes,
                    )
                    self._cut(frame.dts)
                    self._begin_segment(frame, independent=False)
            self._last_dts = frame.dts
        elif self._waiting_for_key:
            return
        writer.add(frame)
        self._pending_bytes += len(frame.data)

    def on_stream_end(self, reason: str) -> None:
        if not self._waiting_for_key:
            self._cut(None)
        self._waiting_for_key = True
        if self.segments:
            self._discontinuity_next = True
        self.stream_ended_at = self._loop.time()

    def on_camera_removed(self, reason: str = "camera_removed") -> None:
        self.stop(reason)

    # --- segments -----------------------------------------------------------------

    def _begin_segment(self, frame: Frame, independent: bool) -> None:
        self._start_dts = frame.dts
        self._last_dts = frame.dts
        self._started_at = frame.wallclock
        self._pending_bytes = 0
        self._pending_independent = independent

    def _cut(self, next_video_dts: int | None) -> None:
        """Finish the segment in progress; ``next_video_dts`` is where the next one starts."""
        if self._writer is None:
            return
        data = self._writer.cut(next_video_dts)
        if data is None:
            return

        end = next_video_dts if next_video_dts is not None else self._last_dts + self._last_video_duration
        duration = max(1, end - self._start_dts) / TIMEBASE
        segment = Segment(
            self.next_sequence,
            data,
            duration,
            self._discontinuity_next,
            self._init_name if self.fmt == "fmp4" else None,
            self._started_at,
            self._pending_independent,
        )
        self._discontinuity_next = False
        self.next_sequence += 1
        self._pending_bytes = 0

        if rounded_duration(duration) > self.target_duration:
            # The camera's GOP is longer than the announced target: keep the tag true.
            self.log.warning(
                "hls_target_duration_raised",
                previous_seconds=self.target_duration,
                target_seconds=rounded_duration(duration),
            )
            self.target_duration = rounded_duration(duration)
        self.segments.append(segment)
        self._retire()
        self._playlist_cache = None
        self._first_segment.set()

    def _retire(self) -> None:
        """Unlist segments beyond the window and drop those no player can still need."""
        now = self._loop.time()
        listed_from = len(self.segments) - self.window
        for index in range(max(0, listed_from)):
            segment = self.segments[index]
            if segment.unlisted_at is None:
                segment.unlisted_at = now
                if segment.discontinuity:
                    self.discontinuity_sequence += 1
        listed_seconds = sum(segment.duration_seconds for segment in self.listed())
        while self.segments and self.segments[0].unlisted_at is not None:
            oldest = self.segments[0]
            expired = now - oldest.unlisted_at >= oldest.duration_seconds + listed_seconds
            if not expired and len(self.segments) <= 2 * self.window:
                break
            self.segments.popleft()
        in_use = {segment.init_name for segment in self.segments}
        in_use.add(self._init_name)
        for name in [name for name in self._inits if name not in in_use]:
            del self._inits[name]

    def listed(self) -> list[Segment]:
        return list(self.segments)[-self.window :]

    def segment(self, sequence: int) -> Segment | None:
        if not self.segments:
            return None
        index = sequence - self.segments[0].sequence
        if 0 <= index < len(self.segments):
            return self.segments[index]
        return None

    def init_segment(self, name: str) -> bytes | None:
        return self._inits.get(name)

    def segment_name(self, sequence: int) -> str:
        return f"seg-{sequence}.m4s" if self.fmt == "fmp4" else f"seg-{sequence}.ts"

    def playlist(self, query: str = "") -> bytes:
        """Return the media playlist; ``query`` (with its ``?``) is appended to every URI it lists."""
        if not query and self._playlist_cache is not None:
            return self._playlist_cache
        listed = self.listed()
        entries = [
            PlaylistEntry(
                uri=self.segment_name(segment.sequence) + query,
                duration_seconds=segment.duration_seconds,
                discontinuity=segment.discontinuity,
                map_uri=segment.init_name + query if segment.init_name else None,
                program_date_time=segment.started_at or None,
            )
            for segment in listed
        ]
        text = media_playlist(
            entries,
            target_duration=self.target_duration,
            media_sequence=listed[0].sequence if listed else self.next_sequence,
            discontinuity_sequence=self.discontinuity_sequence,
            independent_segments=all(segment.independent for segment in listed),
        )
        data = text.encode()
        if not query:
            self._playlist_cache = data
        return data

    async def wait_first_segment(self, timeout: float) -> None:
        """Wait until a segment exists; raise :class:`CameraUnavailable` with the reason."""
        if self.segments:
            return
        self._waiting_requests += 1
        try:
            async with asyncio.timeout(timeout):
                await self.camera.wait_ready(timeout)
                if self._writer is None and not self.stopped:
                    codec = self.camera.video.codec if self.camera.video else "unknown"
                    raise CameraUnavailable("unsupported_codec", f"{codec} video cannot be muxed as HLS {self.fmt}")
                await self._first_segment.wait()
        except TimeoutError as exc:
            raise CameraUnavailable(
                "hls_timeout", f"no HLS segment from camera {self.camera.id!r} within {timeout:g} s"
            ) from exc
        finally:
            self._waiting_requests -= 1
            self.touch()
        if not self.segments:
            raise CameraUnavailable("hls_stopped", "the HLS output stopped before its first segment")

    def offline_seconds(self) -> float:
        """Return how long the camera's stream has been gone, 0 while it flows."""
        if self.stream_ended_at is None:
            return 0.0
        return self._loop.time() - self.stream_ended_at

    # --- lifecycle ----------------------------------------------------------------

    def touch(self) -> None:
        """Record a player's request, which keeps the stream running."""
        self.last_request = self._loop.time()
        self.requests += 1

    def _check_idle(self) -> None:
        idle = self.settings.idle_close_seconds
        elapsed = self._loop.time() - self.last_request
        if elapsed >= idle and not self._waiting_requests:
            self.stop("idle")
        else:
            self._idle_handle = self._loop.call_later(max(0.1, idle - elapsed), self._check_idle)

    def stop(self, reason: str) -> None:
        """Stop muxing, free the segments and release the camera."""
        if self.stopped:
            return
        self.stopped = True
        self._idle_handle.cancel()
        self.camera.remove_sink(self)
        self._lease.release()
        self.segments.clear()
        self._inits.clear()
        self._writer = None
        self._first_segment.set()  # wakes waiters, which then see no segment
        self.log.info("hls_stopped", reason=reason, next_sequence=self.next_sequence, requests=self.requests)
        self._on_stop(self)
