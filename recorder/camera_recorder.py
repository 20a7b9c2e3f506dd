"""One camera's recording: a sink of its frames that cuts segments and fragments.

Runs on the event loop and only builds bytes, which the :class:`DiskWriter`
thread writes. A segment starts at a keyframe and is cut at the first
keyframe after ``PANTAU_SEGMENT_SECONDS``. Within it a fragment is cut at
every keyframe and whenever the pending video reaches
``FRAGMENT_SECONDS``, so a crash loses at most about that much.

Whenever recording stops (stream end, timestamp jump, disk trouble) the
open segment is closed at its last frame and a gap is opened there with
its cause; the next segment, which starts at the next keyframe, ends it.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from recorder.writer import DiskWriter, SegmentHandle
from relay.camera import Camera, Lease
from relay.fmp4 import Fmp4Muxer
from relay.logs import get_logger
from relay.media import TIMEBASE, AudioInfo, Frame, VideoInfo

FRAGMENT_SECONDS = 1.0
# After a failed write, try a new segment no sooner than this.
DISK_RETRY_SECONDS = 5.0
# A camera clock further than this from the receive time is not trusted:
# its sender reports still give the measured skew, but segments are dated
# by receive time.
MAX_TRUSTED_SKEW_SECONDS = 2.0
# A new segment that continues the previous one keeps its chained start
# time unless the clock reading differs by more than this.
CHAIN_TOLERANCE_SECONDS = 1.0

# Session errors that mean the camera stopped sending rather than went away.
TIMEOUT_ERRORS = frozenset({"read_timeout", "response_timeout", "no_video_frames"})


def gap_cause(error_code: str | None) -> str:
    return "rtsp_timeout" if error_code in TIMEOUT_ERRORS else "camera_offline"


class CameraRecorder:
    """Record one camera through the shared disk writer."""

    def __init__(self, camera: Camera, writer: DiskWriter, segment_seconds: float) -> None:
        self.camera = camera
        self.camera_id = camera.id
        self.writer = writer
        self.segment_ticks = int(segment_seconds * TIMEBASE)
        self.log = get_logger(camera_id=camera.id, component="recorder")
        self.video: VideoInfo | None = None
        self.audio: AudioInfo | None = None
        self.muxer: Fmp4Muxer | None = None
        self.handle: SegmentHandle | None = None
        self.fragment_start_dts = 0
        self.last_dts: int | None = None
        self.frame_ticks = TIMEBASE // 15
        self.config_changed = False
        self.retry_at = 0.0
        self.last_end_utc: float | None = None  # end of the previous segment, for chaining
        self.last_end_dts: int | None = None
        self.skew_warned = False
        self._lease: Lease | None = None
        self._loop = asyncio.get_running_loop()

    # --- attach and detach --------------------------------------------------------

    def attach(self) -> None:
        self._lease = self.camera.acquire("record")
        self.camera.add_sink(self)

    def detach(self, gap_cause_on_close: str | None) -> None:
        """Stop recording: close the segment, and open a gap with the cause if one is given."""
        self.camera.remove_sink(self)
        if self._lease is not None:
            self._lease.release()
            self._lease = None
        end = self._close_segment()
        if gap_cause_on_close is not None and end is not None:
            self.writer.begin_gap(self.camera_id, end, gap_cause_on_close)

    # --- sink ---------------------------------------------------------------------

    def on_stream_info(self, video: VideoInfo | None, audio: AudioInfo | None) -> None:
        old = self._config_key()
        self.video = video
        self.audio = audio
        if self.handle is not None and self._config_key() != old:
            # The next keyframe starts a segment with the new parameters.
            self.config_changed = True
        if video is not None and not video.relayed and self.handle is not None:
            end = self._close_segment()
            if end is not None:
                self.writer.begin_gap(self.camera_id, end, "unsupported_codec")

    def _config_key(self) -> tuple[Any, ...]:
        video, audio = self.video, self.audio
        return (
            video.decoder_config if video else None,
            audio.specific_config if audio is not None and audio.relayed else None,
        )

    def on_frame(self, frame: Frame) -> None:
        if not frame.video:
            if self.muxer is not None:
                self.muxer.add(frame)
            return
        if self.handle is None:
            if frame.key:
                self._open_segment(frame)
            return
        muxer = self.muxer
        assert muxer is not None
        if frame.key:
            if muxer.pending_video:
                self._cut_fragment(frame.dts)
            if self.handle is not None and (
                frame.dts - self.handle.first_dts >= self.segment_ticks or self.config_changed
            ):
                self._close_segment(frame.dts)
                self._open_segment(frame)
                return
        elif muxer.pending_video and frame.dts - self.fragment_start_dts >= FRAGMENT_SECONDS * TIMEBASE:
            self._cut_fragment(frame.dts)
        if self.handle is None or self.muxer is None:
            return  # the queue rejected the cut, which closed the segment
        if self.last_dts is not None and frame.dts > self.last_dts:
            self.frame_ticks = frame.dts - self.last_dts
        self.last_dts = frame.dts
        self.muxer.add(frame)

    def on_stream_end(self, reason: str) -> None:
        end = self._close_segment()
        if end is None:
            return
        previous_error = self.camera.last_error
        # The camera records the session's error right after this callback.
        self._loop.call_soon(self._begin_stream_gap, end, previous_error)

    def _begin_stream_gap(self, start: float, previous_error: dict[str, Any] | None) -> None:
        error = self.camera.last_error
        code = error.get("code") if error is not None and error is not previous_error else None
        self.writer.begin_gap(self.camera_id, start, gap_cause(code))

    def on_timestamp_jump(self, track: str, seconds: float) -> None:
        if track != "video":
            return
        end = self._close_segment()
        if end is not None:
            self.writer.begin_gap(self.camera_id, end, "timestamp_jump")

    def on_camera_removed(self, reason: str = "camera_removed") -> None:
        del reason  # the recorder's own stop records the service_stopped gap
        self.detach(None)

    # --- segments -----------------------------------------------------------------

    def _open_segment(self, frame: Frame) -> None:
        video = self.video
        if video is None or not video.relayed or video.decoder_config is None:
            return
        if time.monotonic() < self.retry_at:
            return
        if self.writer.queued_bytes > self.writer.max_queue_bytes // 2:
            return  # still draining after an overflow

        self.config_changed = False
        muxer = Fmp4Muxer(video, self.audio)
        start_utc, source, skew = self._wallclock(frame)
        chained = self.last_end_utc
        if (
            self.last_end_dts == frame.dts
            and chained is not None
            and abs(start_utc - chained) <= CHAIN_TOLERANCE_SECONDS
        ):
            start_utc = chained  # continues the previous segment without a gap

        handle = SegmentHandle(
            camera_id=self.camera_id,
            start_utc=start_utc,
            first_dts=frame.dts,
            init=muxer.init_segment(),
            codec=video.codec,
            width=video.width,
            height=video.height,
            has_audio=muxer.audio is not None,
            clock_source=source,
            clock_skew_seconds=skew,
            queued_end_dts=frame.dts,
        )
        self.muxer = muxer
        self.handle = handle
        self.fragment_start_dts = frame.dts
        self.last_dts = frame.dts
        self.writer.open_segment(handle)
        muxer.add(frame)

    def _wallclock(self, frame: Frame) -> tuple[float, str, float | None]:
        """Return (UTC of the frame, clock source, measured skew) for a segment's first frame."""
        reference = self.camera.wallclock_reference
        if reference is None:
            return frame.wallclock, "receive", None
        ticks, ntp_seconds = reference
        camera_time = ntp_seconds + (frame.pts - ticks) / TIMEBASE
        skew = round(camera_time - frame.wallclock, 6)
        if abs(skew) > MAX_TRUSTED_SKEW_SECONDS:
            if not self.skew_warned:
                self.skew_warned = True
                self.log.warning(
                    "camera_clock_untrusted",
                    skew_seconds=round(skew, 3),
                    limit_seconds=MAX_TRUSTED_SKEW_SECONDS,
                )
            return frame.wallclock, "receive", skew
        return camera_time, "rtcp", skew

    def _cut_fragment(self, next_dts: int | None) -> bool:
        """Queue the pending frames as one fragment; return False when the queue rejected them."""
        muxer, handle = self.muxer, self.handle
        if muxer is None or handle is None:
            return False
        if next_dts is None:
            if self.last_dts is None:
                return False
            end_dts = self.last_dts + self.frame_ticks
        else:
            end_dts = next_dts
        data = muxer.cut(next_dts if next_dts is not None else end_dts)
        self.fragment_start_dts = end_dts
        if data is None:
            return True
        if self.writer.append(handle, data, end_dts):
            return True
        # The disk is too slow: give up this segment rather than buffer without bound.
        self.log.warning("recording_queue_full", queued_bytes=self.writer.queued_bytes)
        end = self._close_segment(flush=False)
        if end is not None:
            self.writer.begin_gap(self.camera_id, end, "disk_slow")
        return False

    def _close_segment(self, next_dts: int | None = None, flush: bool = True) -> float | None:
        """Close the open segment; return the UTC where its recording ends, or None when none was open."""
        handle = self.handle
        if handle is None:
            return None
        if flush and self.muxer is not None and self.muxer.pending_video:
            self._cut_fragment(next_dts)
            if self.handle is None:
                return self.last_end_utc  # the queue rejected the flush, which closed the segment
        self.handle = None
        self.muxer = None
        self.writer.close_segment(handle)
        end_dts = handle.queued_end_dts
        self.last_end_dts = end_dts
        self.last_end_utc = handle.utc_at(end_dts)
        return self.last_end_utc

    def on_write_failed(self, handle: SegmentHandle) -> None:
        """Called on the loop when the writer gave up on ``handle`` (disk full or unwritable)."""
        self.retry_at = time.monotonic() + DISK_RETRY_SECONDS
        if handle is self.handle:
            self.handle = None
            self.muxer = None
            self.last_end_dts = None
            self.log.warning("recording_paused", reason=handle.failure, retry_seconds=DISK_RETRY_SECONDS)

    # --- views --------------------------------------------------------------------

    def current(self) -> dict[str, Any] | None:
        """Return the segment being recorded, as far as it is queued for the disk."""
        handle = self.handle
        if handle is None:
            return None
        return {
            "start_utc": handle.start_utc,
            "end_utc": handle.utc_at(handle.queued_end_dts),
            "path": handle.relpath,
            "bytes": handle.size,
        }
