"""The receiving end of one RTP track: packets in, frames (or a description) out.

:class:`VideoTrack` relays H.264 and H.265 and only describes other video
(MJPEG, MPEG-4 Part 2): their codec and picture size are reported, their
frames are counted, and nothing is relayed. :class:`AudioTrack` relays AAC
and only describes other audio.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any, Protocol

from proto import h264, h265, mpeg4
from proto.aac import AudioConfig, parse_audio_specific_config
from proto.bits import BitstreamError
from proto.rtp import RTP_HEADER, SenderReport, parse_sender_reports, payload_bounds
from proto.sdp import Media
from relay.depacketize import (
    AacDepacketizer,
    H264Depacketizer,
    H265Depacketizer,
    VideoDepacketizer,
    to_sample,
)
from relay.media import TIMEBASE, AudioInfo, Frame, VideoInfo, reorder_depth
from relay.parameter_sets import ParameterSets
from relay.rtp_source import SourceFilter
from relay.timeline import CameraTimeline, DecodeTimestamps, TrackClock

DEFAULT_FRAME_TICKS = TIMEBASE // 15
# Packets looked at before trusting the SDP's H.264/H.265 label (see VideoTrack):
# this many that all fit confirm it at once, and a verdict comes after at most the second number.
CODEC_CONFIRM_PACKETS = 4
CODEC_CHECK_PACKETS = 16

_VOL_START = re.compile(rb"\x00\x00\x01[\x20-\x2f]")
MPEG4_PROFILES = {range(0x01, 0x09): "Simple", range(0xF0, 0xF8): "Advanced Simple"}


class IngestListener(Protocol):
    """The callbacks through which a session reports to its camera."""

    def on_session_started(self, description: dict[str, Any]) -> None: ...
    def on_video_info(self, info: VideoInfo) -> None: ...
    def on_audio_info(self, info: AudioInfo | None) -> None: ...
    def on_frame(self, frame: Frame) -> None: ...
    def on_timestamp_jump(self, track: str, seconds: float, kind: str) -> None: ...
    def on_sender_report(self, track: str, report: SenderReport, clock_rate: int) -> None: ...
    def on_packet_bytes(self, count: int) -> None: ...
    def on_codec_corrected(self, declared: str, detected: str) -> None: ...


@dataclass(slots=True)
class TrackChoice:
    media: Media
    payload_type: int
    codec: str
    clock_rate: int
    channels: int
    fmtp: dict[str, str]


def _payload_check(codec: str) -> Any:
    if codec == "h264":
        return h264.plausible_rtp_payload
    if codec == "h265":
        return h265.plausible_rtp_payload
    return None


class _Track:
    """RTP and RTCP handling shared by the video and audio tracks."""

    kind = ""
    choice: TrackChoice
    filter: SourceFilter
    _listener: IngestListener

    def on_rtp(self, buf: bytes | bytearray, start: int, end: int) -> None:
        """Take one RTP packet from ``buf[start:end]``; runs once per packet."""
        if end - start < 12:
            return
        first, second, seq, ts, ssrc = RTP_HEADER.unpack_from(buf, start)
        if first >> 6 != 2:
            return
        payload_start, payload_end = payload_bounds(buf, start, end)
        if payload_start < 0:
            return
        if not self.filter.accept(ssrc, second & 0x7F, seq, buf, payload_start, payload_end):
            if ssrc == self.filter.ssrc:
                # Another payload type from the same source takes sequence numbers too.
                self._skip_sequence(seq)
            return
        self._listener.on_packet_bytes(end - start)
        self._payload(buf, payload_start, payload_end, seq, ts, bool(second & 0x80))

    def on_rtcp(self, buf: bytes | bytearray, start: int, end: int) -> None:
        """Read sender reports; nothing waits for them, so broken or missing RTCP delays no frame."""
        for report in parse_sender_reports(buf, start, end):
            self._listener.on_sender_report(self.kind, report, self.choice.clock_rate)

    def _skip_sequence(self, seq: int) -> None:
        pass

    def _payload(self, buf: bytes | bytearray, start: int, end: int, seq: int, ts: int, marker: bool) -> None:
        raise NotImplementedError


def _is_parameter_set(codec: str, nal: bytes) -> bool:
    if codec == "h264":
        return (nal[0] & 0x1F) in (h264.NAL_SPS, h264.NAL_PPS)
    return ((nal[0] >> 1) & 0x3F) in (h265.NAL_VPS, h265.NAL_SPS, h265.NAL_PPS)


class VideoTrack(_Track):
    """Receive one video track and hand complete frames to the listener.

    The SDP's codec label is checked against the NAL unit headers of the
    first packets: cameras label H.264 as H265 and the reverse. The first
    ``CODEC_CONFIRM_PACKETS`` payloads confirm the label when they all fit
    it. Otherwise, when most of the first ``CODEC_CHECK_PACKETS`` do not fit
    the declared codec but do fit the other one, the track switches codec
    (and logs it) before any frame is delivered.
    """

    kind = "video"

    def __init__(self, choice: TrackChoice, listener: IngestListener, timeline: CameraTimeline) -> None:
        self.choice = choice
        self.declared_codec = choice.codec
        self._listener = listener
        self.clock = TrackClock(timeline, choice.clock_rate or TIMEBASE, "video", listener.on_timestamp_jump)
        self.filter = SourceFilter(choice.payload_type, _payload_check(choice.codec))

        self._timeline = timeline
        self._dts: DecodeTimestamps | None = None
        self._started = False
        self.frames = 0
        self.frames_waiting_for_parameters = 0
        self.frames_waiting_for_keyframe = 0
        self.other_info: VideoInfo | None = None
        self._frame_start = True  # the next packet starts a frame (codecs that are only described)

        relayed = choice.codec in ("h264", "h265")
        self._checking: list[tuple[bytes, int, int, bool]] | None = [] if relayed else None
        self._set_codec(choice.codec)
        if choice.codec == "mpeg4":
            self._describe_mpeg4(bytes.fromhex(_hex(choice.fmtp.get("config", ""))))

    def _set_codec(self, codec: str) -> None:
        self.codec = codec
        self.params = ParameterSets(codec) if codec in ("h264", "h265") else None
        self.depacketizer: VideoDepacketizer | None = None
        if codec == "h264":
            self.depacketizer = H264Depacketizer(self._on_access_unit)
        elif codec == "h265":
            self.depacketizer = H265Depacketizer(self._on_access_unit)
        if self.params is not None:
            self.params.load_sdp(self.choice.fmtp)
            if self.params.info is not None:
                self._listener.on_video_info(self.params.info)

    def _skip_sequence(self, seq: int) -> None:
        if self.depacketizer is not None:
            self.depacketizer.skip_sequence(seq)

    def _payload(self, buf: bytes | bytearray, start: int, end: int, seq: int, ts: int, marker: bool) -> None:
        if self._checking is not None:
            self._check_codec(bytes(buf[start:end]), seq, ts, marker)
        elif self.depacketizer is not None:
            self.depacketizer.push(buf, start, end, seq, ts, marker)
        else:
            self._other_packet(buf, start, end, marker)

    def _check_codec(self, payload: bytes, seq: int, ts: int, marker: bool) -> None:
        """Hold the first packets until their NAL headers confirm or correct the codec."""
        checking = self._checking
        assert checking is not None
        checking.append((payload, seq, ts, marker))
        fits = _payload_check(self.codec)
        declared = sum(1 for item in checking if fits(item[0], 0, len(item[0])))
        confirmed = len(checking) >= CODEC_CONFIRM_PACKETS and declared == len(checking)
        if not confirmed and len(checking) < CODEC_CHECK_PACKETS:
            return
        self._checking = None
        other = "h265" if self.codec == "h264" else "h264"
        fits_other = _payload_check(other)
        alternative = sum(1 for item in checking if fits_other(item[0], 0, len(item[0])))
        if declared * 2 < len(checking) and alternative * 10 >= len(checking) * 9:
            self._listener.on_codec_corrected(self.codec, other)
            self.filter = _refilter(self.filter, _payload_check(other))
            self._set_codec(other)
        assert self.depacketizer is not None
        for held, held_seq, held_ts, held_marker in checking:
            self.depacketizer.push(held, 0, len(held), held_seq, held_ts, held_marker)

    def _on_access_unit(self, nals: list[bytes], rtp_ts: int, key: bool) -> None:
        params = self.params
        assert params is not None
        changed = False
        for nal in nals:
            if len(nal) > 1 and _is_parameter_set(self.codec, nal):
                changed = params.add(nal) or changed
        if changed:
            info = params.rebuild()
            if info is not None:
                self._dts = None
                self._listener.on_video_info(info)
        if params.info is None:
            self.frames_waiting_for_parameters += 1
            return
        if not self._started:
            if not key:
                self.frames_waiting_for_keyframe += 1
                return
            self._started = True

        if self._dts is None:
            fps = params.info.sps_fps
            frame_ticks = int(TIMEBASE / fps) if fps and 1 <= fps <= 120 else DEFAULT_FRAME_TICKS
            self._dts = DecodeTimestamps(reorder_depth(params.info), frame_ticks)
        arrival = time.monotonic()
        pts = self.clock.map(rtp_ts, arrival, self._dts.frame_ticks)
        dts, pts = self._dts.compute(pts, key)
        self.frames += 1
        self._listener.on_frame(Frame(True, dts, pts, key, to_sample(nals), time.time()))
        self._timeline.advance(dts, arrival)

    # --- codecs that are described, not relayed --------------------------------

    def _other_packet(self, buf: bytes | bytearray, start: int, end: int, marker: bool) -> None:
        """Count frames of a codec that is reported but not relayed, and follow its picture size."""
        if (
            self.codec == "mjpeg"
            and end - start >= 8
            and buf[start + 1] == buf[start + 2] == buf[start + 3] == 0
        ):
            # RFC 2435 JPEG header of a frame's first packet (fragment offset 0):
            # width and height in units of 8 pixels.
            self._report_other(buf[start + 6] * 8, buf[start + 7] * 8, None)
        elif self.codec == "mpeg4" and self._frame_start:
            # A keyframe repeats the VOL header, which contains the picture size.
            self._describe_mpeg4(bytes(buf[start:end]))
        elif self.other_info is None and self.codec not in ("mjpeg", "mpeg4"):
            self._report_other(0, 0, None)
        self._frame_start = marker
        if marker:
            self.frames += 1

    def _describe_mpeg4(self, data: bytes) -> None:
        if _VOL_START.search(data) is None:
            return
        try:
            vol = mpeg4.parse_vol(data)
        except BitstreamError:
            return
        profile = None
        if vol.profile_level is not None:
            profile = next(
                (name for levels, name in MPEG4_PROFILES.items() if vol.profile_level in levels), None
            )
        self._report_other(vol.width, vol.height, profile)

    def _report_other(self, width: int, height: int, profile: str | None) -> None:
        info = self.other_info
        if info is not None and (info.width, info.height) == (width, height):
            return
        self.other_info = VideoInfo(codec=self.codec, width=width, height=height, profile=profile)
        self._listener.on_video_info(self.other_info)


def _refilter(old: SourceFilter, check: Any) -> SourceFilter:
    new = SourceFilter(old.payload_type, check)
    new.ssrc, new.expected_seq, new.stale = old.ssrc, old.expected_seq, old.stale
    return new


def _hex(text: str) -> str:
    return "".join(char for char in text if char in "0123456789abcdefABCDEF")


class AudioTrack(_Track):
    """Receive one audio track; AAC frames are relayed, other codecs only reported."""

    kind = "audio"

    def __init__(self, choice: TrackChoice, listener: IngestListener, timeline: CameraTimeline) -> None:
        self.choice = choice
        self._listener = listener
        self._timeline = timeline
        self.filter = SourceFilter(choice.payload_type)
        self.config: AudioConfig | None = None
        self.depacketizer: AacDepacketizer | None = None
        self.clock = TrackClock(timeline, choice.clock_rate or 8000, "audio", listener.on_timestamp_jump)
        self._last_ticks = -1
        self.frames = 0
        specific_config: bytes | None = None
        if choice.codec == "aac":
            try:
                specific_config = bytes.fromhex(choice.fmtp.get("config", ""))
                self.config = parse_audio_specific_config(specific_config)
            except (ValueError, BitstreamError):
                specific_config = None
        if self.config is not None and specific_config is not None:
            fmtp = choice.fmtp
            # The RTP clock is the rtpmap rate, which some cameras set apart
            # from the real sample rate in the AudioSpecificConfig.
            clock_rate = choice.clock_rate or self.config.sample_rate
            self._frame_rtp_ticks = self.config.frame_length * clock_rate // self.config.sample_rate
            self.depacketizer = AacDepacketizer(
                self._on_frame,
                self._frame_rtp_ticks,
                _int(fmtp.get("sizelength"), 13),
                _int(fmtp.get("indexlength"), 3),
                _int(fmtp.get("indexdeltalength"), 3),
            )
            sample_rate, channels = self.config.sample_rate, self.config.channels or choice.channels
        else:
            sample_rate, channels = choice.clock_rate, choice.channels
        self.info = AudioInfo(
            codec=choice.codec,
            sample_rate=sample_rate,
            channels=channels,
            config=self.config,
            specific_config=specific_config if self.config else None,
        )

    def _payload(self, buf: bytes | bytearray, start: int, end: int, seq: int, ts: int, marker: bool) -> None:
        if self.depacketizer is not None:
            self.depacketizer.push(buf, start, end, seq, ts, marker)
        else:
            self.frames += 1

    def _on_frame(self, frame: bytes, rtp_ts: int) -> None:
        arrival = time.monotonic()
        assert self.config is not None
        frame_ticks = self.config.frame_length * TIMEBASE // self.config.sample_rate
        ticks = self.clock.map(rtp_ts, arrival, frame_ticks)
        if ticks <= self._last_ticks:
            ticks = self._last_ticks + 1
        self._last_ticks = ticks
        self.frames += 1
        self._listener.on_frame(Frame(False, ticks, ticks, True, frame, time.time()))


def _int(value: str | None, default: int) -> int:
    try:
        return int(value) if value not in (None, "") else default
    except ValueError:
        return default
