"""Camera RTP timestamps to one monotonic output timeline in 90 kHz ticks.

A camera's timestamps wrap every 13.25 hours at 90 kHz, restart from a
random value on every reconnect and jump when the camera reboots or its
clock is set. Players and the recorder need one line that only moves
forward, so each track maps its extended RTP time onto the camera's output
timeline and rebases the mapping whenever the camera's time disagrees with
the arrival time by more than the limits below. A single frame hours away
is rebased, and the next frame that fits the old mapping restores it.
"""

from __future__ import annotations

from collections.abc import Callable

from relay.media import TIMEBASE

# The camera's time may run ahead of arrival time by this much between two
# frames before the step counts as a jump. Bursts after a network stall have
# the camera's time behind arrival time, which is never a jump.
FORWARD_JUMP_SECONDS = 3.0
# Decode-order timestamps go back by the reorder depth with B-frames; more
# than this is a jump.
BACKWARD_JUMP_SECONDS = 1.0

# The line starts here rather than at 0, so decode times, which run ahead of
# presentation times by the B-frame reorder delay, never go negative.
START_TICKS = 10 * TIMEBASE

# Called with (track kind, jump in seconds, "jump" or "outlier") once per correction.
JumpCallback = Callable[[str, float, str], None]


class CameraTimeline:
    """The output timeline of one camera, kept across RTSP sessions."""

    __slots__ = ("last_ticks", "last_wallclock", "session_origin")

    def __init__(self) -> None:
        self.last_ticks = -1  # highest timestamp handed out, any track
        self.last_wallclock = 0.0
        # (arrival time, output ticks) of the first packet of the current session
        self.session_origin: tuple[float, int] | None = None

    def new_session(self) -> None:
        """Forget the previous session's origin; the next packet starts a new one."""
        self.session_origin = None

    def origin_for(self, arrival: float) -> int:
        """Return the output ticks that correspond to ``arrival`` in this session.

        The first packet after a reconnect continues the line where it
        stopped, plus the wall-clock time of the outage, so players and the
        recorder see the gap as time and not as a rewind.
        """
        if self.session_origin is None:
            if self.last_ticks < 0:
                start = START_TICKS
            else:
                gap = max(0.0, arrival - self.last_wallclock)
                start = self.last_ticks + max(1, int(gap * TIMEBASE))
            self.session_origin = (arrival, start)
            return start
        origin_arrival, origin_ticks = self.session_origin
        return origin_ticks + int((arrival - origin_arrival) * TIMEBASE)

    def advance(self, ticks: int, wallclock: float) -> None:
        if ticks > self.last_ticks:
            self.last_ticks = ticks
            self.last_wallclock = wallclock


class TrackClock:
    """Map one track's RTP timestamps (at ``clock_rate``) to output ticks."""

    __slots__ = (
        "_timeline",
        "_rate",
        "_kind",
        "_on_jump",
        "_last_rtp",
        "_ext",
        "_base_ext",
        "_base_ticks",
        "_last_arrival",
        "_last_ticks",
        "_previous_mapping",
        "corrections",
    )

    def __init__(self, timeline: CameraTimeline, clock_rate: int, kind: str, on_jump: JumpCallback) -> None:
        self._timeline = timeline
        self._rate = clock_rate
        self._kind = kind
        self._on_jump = on_jump
        self._last_rtp: int | None = None
        self._ext = 0
        self._base_ext = 0
        self._base_ticks = 0
        self._last_arrival = 0.0
        self._last_ticks = 0
        self._previous_mapping: tuple[int, int] | None = None
        self.corrections = 0

    def _ticks(self, ext: int) -> int:
        return self._base_ticks + (ext - self._base_ext) * TIMEBASE // self._rate

    def map(self, rtp_ts: int, arrival: float, frame_ticks: int) -> int:
        """Return output ticks for an RTP timestamp that arrived at ``arrival``.

        ``frame_ticks`` is the current frame duration estimate, used as the
        step after a rebase.
        """
        last_rtp = self._last_rtp
        if last_rtp is None:
            self._last_rtp = rtp_ts
            self._ext = self._base_ext = rtp_ts
            self._base_ticks = self._timeline.origin_for(arrival)
            self._last_arrival = arrival
            self._last_ticks = self._base_ticks
            return self._base_ticks

        # Unwrap the 32-bit timestamp: a step of more than half the range
        # is taken as going backwards.
        delta = (rtp_ts - last_rtp) & 0xFFFFFFFF
        if delta >= 0x80000000:
            delta -= 0x100000000
        ext = self._ext + delta
        self._last_rtp = rtp_ts
        self._ext = ext

        step_seconds = delta / self._rate
        wall_seconds = arrival - self._last_arrival
        self._last_arrival = arrival
        if step_seconds < -BACKWARD_JUMP_SECONDS or step_seconds - wall_seconds > FORWARD_JUMP_SECONDS:
            previous = self._previous_mapping
            if previous is not None and self._fits(previous, ext, frame_ticks):
                # The frame before was a lone outlier; go back to the mapping it broke.
                self._base_ext, self._base_ticks = previous
                self._previous_mapping = None
                self.corrections += 1
                self._on_jump(self._kind, step_seconds, "outlier")
            else:
                self._previous_mapping = (self._base_ext, self._base_ticks)
                self._base_ext = ext
                self._base_ticks = self._last_ticks + max(frame_ticks, int(wall_seconds * TIMEBASE))
                self.corrections += 1
                self._on_jump(self._kind, step_seconds, "jump")
        else:
            self._previous_mapping = None

        ticks = self._ticks(ext)
        if ticks > self._last_ticks:
            self._last_ticks = ticks
        return ticks

    def ticks_at(self, rtp_ts: int) -> int | None:
        """Return the output ticks of ``rtp_ts`` under the current mapping, without moving the clock.

        Places an RTCP sender report on the output timeline; None before the first packet.
        """
        if self._last_rtp is None:
            return None
        delta = (rtp_ts - self._last_rtp) & 0xFFFFFFFF
        if delta >= 0x80000000:
            delta -= 0x100000000
        return self._ticks(self._ext + delta)

    def _fits(self, mapping: tuple[int, int], ext: int, frame_ticks: int) -> bool:
        base_ext, base_ticks = mapping
        ticks = base_ticks + (ext - base_ext) * TIMEBASE // self._rate
        # Within two seconds after the last good frame counts as fitting.
        return self._last_ticks - 4 * frame_ticks <= ticks <= self._last_ticks + 2 * TIMEBASE


class DecodeTimestamps:
    """Derive decode timestamps for video whose RTP timestamps are presentation times.

    Without B-frames DTS equals PTS. With B-frames, frames arrive in decode
    order with presentation times that go back and forth, so DTS advances by
    one frame duration per frame, never passes PTS, and is set to PTS minus
    the reorder delay at each keyframe so that it cannot drift. When the SPS
    does not state the reorder depth, reordering is detected from the first
    frame that goes back; that frame gets PTS = DTS, a one-time glitch.
    """

    __slots__ = ("reorder_frames", "_last_dts", "_max_pts", "frame_ticks", "_gop_min", "_gop_max", "_gop_count")

    def __init__(self, reorder_frames: int | None, frame_ticks: int) -> None:
        self.reorder_frames = reorder_frames
        self.frame_ticks = frame_ticks
        self._last_dts: int | None = None
        self._max_pts: int | None = None
        self._gop_min = 0
        self._gop_max = 0
        self._gop_count = 0

    def _update_frame_ticks(self) -> None:
        # Over a GOP the presentation times span (frames - 1) durations,
        # whatever order the frames came in.
        if self._gop_count >= 3 and self._gop_max > self._gop_min:
            estimate = (self._gop_max - self._gop_min) // (self._gop_count - 1)
            if estimate > 0:
                self.frame_ticks = estimate

    def compute(self, pts: int, key: bool) -> tuple[int, int]:
        """Return (dts, pts) for the next frame in decode order."""
        if key:
            self._update_frame_ticks()
            self._gop_min = self._gop_max = pts
            self._gop_count = 0
        self._gop_count += 1
        self._gop_min = min(self._gop_min, pts)
        self._gop_max = max(self._gop_max, pts)

        last = self._last_dts
        max_pts = self._max_pts
        if self.reorder_frames is None and max_pts is not None and pts < max_pts:
            self.reorder_frames = max(1, -(-(max_pts - pts) // max(1, self.frame_ticks)))
        if max_pts is None or pts > max_pts:
            self._max_pts = pts

        if not self.reorder_frames:
            dts = pts
        elif key or last is None:
            dts = pts - self.reorder_frames * self.frame_ticks
        else:
            dts = min(pts, last + self.frame_ticks)
        if last is not None and dts <= last:
            dts = last + 1
        if pts < dts:
            pts = dts
        self._last_dts = dts
        return dts, pts
