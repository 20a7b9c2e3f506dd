"""One RTSP session with a camera, from DESCRIBE to frames on the output timeline.

``IngestSession.run`` connects, picks the tracks worth receiving, sets them
up, plays, and turns RTP into :class:`relay.media.Frame` objects until the
session fails. It never decides about retries: that is the camera
supervisor's job (``relay.camera``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from proto import h264, h265, rtsp
from proto.aac import AudioConfig, parse_audio_specific_config
from proto.annexb import split_annexb
from proto.bits import BitReader, BitstreamError, unescape_rbsp
from proto.rtp import RTP_HEADER, SenderReport, parse_sender_reports, payload_bounds
from proto.sdp import Media, SessionDescription, direction_is_backchannel, parse_sdp
from relay.depacketize import AacDepacketizer, H264Depacketizer, H265Depacketizer, VideoDepacketizer, to_sample
from relay.media import TIMEBASE, AudioInfo, Frame, VideoInfo, h264_video_info, h265_video_info, reorder_depth
from relay.rtsp_client import RtspClient, RtspError, RtspRedirect
from relay.timeline import CameraTimeline, DecodeTimestamps, TrackClock

MAX_REDIRECTS = 3
# After this long without packets from the expected source, a new SSRC or
# payload type that keeps arriving is adopted.
SOURCE_SWITCH_SECONDS = 1.0
DEFAULT_FRAME_TICKS = TIMEBASE // 15


class IngestListener(Protocol):
    """The callbacks through which a session reports to its camera."""

    def on_session_started(self, description: dict[str, Any]) -> None: ...
    def on_video_info(self, info: VideoInfo) -> None: ...
    def on_audio_info(self, info: AudioInfo | None) -> None: ...
    def on_frame(self, frame: Frame) -> None: ...
    def on_timestamp_jump(self, track: str, seconds: float, kind: str) -> None: ...
    def on_sender_report(self, track: str, report: SenderReport, clock_rate: int) -> None: ...
    def on_packet_bytes(self, count: int) -> None: ...


VIDEO_ENCODINGS = {"H264": "h264", "H265": "h265", "HEVC": "h265", "JPEG": "mjpeg", "MP4V-ES": "mpeg4"}
AUDIO_ENCODINGS = {
    "MPEG4-GENERIC": "aac",
    "MP4A-LATM": "aac-latm",
    "PCMA": "pcma",
    "PCMU": "pcmu",
    "L16": "l16",
    "PCM": "pcm",
    "G726-32": "g726",
    "G722": "g722",
    "OPUS": "opus",
}


@dataclass(slots=True)
class TrackChoice:
    media: Media
    payload_type: int
    codec: str
    clock_rate: int
    channels: int
    fmtp: dict[str, str]


def _video_codec_from_fmtp(declared: str, fmtp: dict[str, str]) -> str:
    """Trust the fmtp keys over the encoding name when they disagree."""
    if declared in ("h264", "h265"):
        if "sprop-vps" in fmtp or "sprop-sps" in fmtp:
            return "h265"
        if "sprop-parameter-sets" in fmtp or "packetization-mode" in fmtp:
            return "h264"
    return declared


def choose_tracks(session: SessionDescription) -> tuple[TrackChoice | None, TrackChoice | None]:
    """Pick the video track to relay (H.264/H.265 first) and at most one audio track.

    Media of unknown type (``application/TP-LINK``, ``text``, ``vana``),
    ONVIF metadata and back-channels are never set up.
    """
    video_candidates: list[TrackChoice] = []
    audio_candidates: list[TrackChoice] = []
    for media in session.media:
        if media.kind not in ("video", "audio") or media.port < 0:
            continue
        if media.kind == "audio" and direction_is_backchannel(session, media):
            continue
        for payload_type in media.payload_types:
            rtpmap = media.rtpmap_for(payload_type)
            if rtpmap is None:
                continue
            fmtp = media.fmtp_for(payload_type)
            if media.kind == "video":
                codec = VIDEO_ENCODINGS.get(rtpmap.encoding)
                if codec is None:
                    continue
                codec = _video_codec_from_fmtp(codec, fmtp)
                video_candidates.append(TrackChoice(media, payload_type, codec, rtpmap.clock_rate, 1, fmtp))
            else:
                codec = AUDIO_ENCODINGS.get(rtpmap.encoding)
                if codec is None:
                    continue
                audio_candidates.append(
                    TrackChoice(media, payload_type, codec, rtpmap.clock_rate, rtpmap.channels, fmtp)
                )
            break  # one payload type per media section
    video_candidates.sort(key=lambda choice: 0 if choice.codec in ("h264", "h265") else 1)
    audio_candidates.sort(key=lambda choice: 0 if choice.codec == "aac" else 1)
    video = video_candidates[0] if video_candidates else None
    audio = audio_candidates[0] if audio_candidates else None
    return video, audio


def decode_parameter_set(text: str) -> list[bytes]:
    """Decode one base64 sprop entry into NAL units.

    Cameras send entries that are empty, ``(null)``, unpadded, wrapped in
    start codes or followed by zero bytes. Each of those decodes or yields
    nothing, and none raises.
    """
    text = text.strip().strip('"')
    if not text or text.lower() in ("(null)", "null", "none"):
        return []
    text += "=" * (-len(text) % 4)
    try:
        raw = base64.b64decode(text, validate=False)
    except (binascii.Error, ValueError):
        return []
    return [nal.rstrip(b"\x00") for nal in split_annexb(raw) if nal.rstrip(b"\x00")]


class ParameterSets:
    """The parameter sets of a video track, from the SDP first and in-band later.

    In-band parameter sets win: when they differ from what is known, the
    track description is rebuilt, so outputs regenerate their sequence
    headers and init segments.
    """

    def __init__(self, codec: str) -> None:
        self.codec = codec
        self.vps: bytes | None = None
        self.sps: bytes | None = None
        self.pps: dict[int, bytes] = {}
        self.info: VideoInfo | None = None
        self.error: str | None = None

    def add(self, nal: bytes) -> bool:
        """Store a VPS, SPS or PPS; return True when it changed anything."""
        nal = nal.rstrip(b"\x00")
        if len(nal) < 2:
            return False
        if self.codec == "h264":
            kind = nal[0] & 0x1F
            if kind == h264.NAL_SPS:
                return self._set_sps(nal)
            if kind == h264.NAL_PPS:
                return self._set_pps(nal, _pps_id(nal, 1))
            return False
        kind = (nal[0] >> 1) & 0x3F
        if kind == h265.NAL_VPS:
            changed = nal != self.vps
            self.vps = nal
            return changed
        if kind == h265.NAL_SPS:
            return self._set_sps(nal)
        if kind == h265.NAL_PPS:
            return self._set_pps(nal, _pps_id(nal, 2))
        return False

    def _set_sps(self, nal: bytes) -> bool:
        if nal == self.sps:
            return False
        try:
            (h264.parse_sps if self.codec == "h264" else h265.parse_sps)(nal)
        except (BitstreamError, IndexError) as exc:
            # An SPS that does not parse (shifted sprop, garbage) is ignored
            # and the in-band one is awaited instead.
            self.error = f"invalid SPS: {exc}"
            return False
        self.sps = nal
        return True

    def _set_pps(self, nal: bytes, pps_id: int | None) -> bool:
        if pps_id is None:
            return False
        if self.pps.get(pps_id) == nal:
            return False
        self.pps[pps_id] = nal
        return True

    def rebuild(self) -> VideoInfo | None:
        """Rebuild the description once every needed set is known."""
        if self.sps is None or not self.pps:
            return None
        pps_list = [self.pps[key] for key in sorted(self.pps)]
        try:
            if self.codec == "h264":
                self.info = h264_video_info(self.sps, pps_list)
            else:
                if self.vps is None:
                    return None
                self.info = h265_video_info(self.vps, self.sps, pps_list[0])
        except (BitstreamError, IndexError) as exc:
            self.error = f"invalid parameter sets: {exc}"
            return None
        return self.info


def _pps_id(nal: bytes, header_length: int) -> int | None:
    try:
        return BitReader(unescape_rbsp(nal), header_length).ue_max(255, "pps_id")
    except BitstreamError:
        return None


class _SourceFilter:
    """Accept packets of one SSRC and payload type; adopt a new one only after silence.

    A stale session's packets (another SSRC on the same channel) and foreign
    payload types are dropped. When the expected source has been silent for
    a second while another keeps sending, the camera really changed and the
    new one is adopted.
    """

    __slots__ = ("ssrc", "payload_type", "_last_good", "dropped", "switches")

    def __init__(self, ssrc: int | None, payload_type: int) -> None:
        self.ssrc = ssrc
        self.payload_type = payload_type
        self._last_good = time.monotonic()
        self.dropped = 0
        self.switches = 0

    def accept(self, ssrc: int, payload_type: int) -> bool:
        if self.ssrc is None:
            self.ssrc = ssrc
        if ssrc == self.ssrc and payload_type == self.payload_type:
            self._last_good = time.monotonic()
            return True
        now = time.monotonic()
        if now - self._last_good > SOURCE_SWITCH_SECONDS:
            self.ssrc = ssrc
            self.payload_type = payload_type
            self._last_good = now
            self.switches += 1
            return True
        self.dropped += 1
        return False


class _Track:
    """RTP and RTCP handling shared by the video and audio tracks."""

    kind = ""
    choice: TrackChoice
    filter: _SourceFilter
    _listener: IngestListener

    def on_rtp(self, buf: bytes | bytearray, start: int, end: int) -> None:
        """Take one RTP packet from ``buf[start:end]``; runs once per packet."""
        if end - start < 12:
            return
        first, second, seq, ts, ssrc = RTP_HEADER.unpack_from(buf, start)
        if first >> 6 != 2 or not self.filter.accept(ssrc, second & 0x7F):
            return
        payload_start, payload_end = payload_bounds(buf, start, end)
        if payload_start < 0:
            return
        self._listener.on_packet_bytes(end - start)
        self._payload(buf, payload_start, payload_end, seq, ts, bool(second & 0x80))

    def on_rtcp(self, buf: bytes | bytearray, start: int, end: int) -> None:
        for report in parse_sender_reports(buf, start, end):
            self._listener.on_sender_report(self.kind, report, self.choice.clock_rate)

    def _payload(self, buf: bytes | bytearray, start: int, end: int, seq: int, ts: int, marker: bool) -> None:
        raise NotImplementedError


class VideoTrack(_Track):
    """Receive one video track and hand complete frames to the listener."""

    kind = "video"

    def __init__(self, choice: TrackChoice, listener: IngestListener, timeline: CameraTimeline) -> None:
        self.choice = choice
        self.codec = choice.codec
        self._listener = listener
        self.clock = TrackClock(timeline, choice.clock_rate or TIMEBASE, "video", listener.on_timestamp_jump)
        self.filter = _SourceFilter(None, choice.payload_type)
        self.params = ParameterSets(self.codec) if self.codec in ("h264", "h265") else None
        self.depacketizer: VideoDepacketizer | None = None
        if self.codec == "h264":
            self.depacketizer = H264Depacketizer(self._on_access_unit)
        elif self.codec == "h265":
            self.depacketizer = H265Depacketizer(self._on_access_unit)
        self._timeline = timeline
        self._dts: DecodeTimestamps | None = None
        self._started = False
        self.frames = 0
        self.frames_waiting_for_parameters = 0
        self.frames_waiting_for_keyframe = 0
        self.other_info: VideoInfo | None = None
        self._load_sdp_parameter_sets()

    def _load_sdp_parameter_sets(self) -> None:
        if self.params is None:
            return
        fmtp = self.choice.fmtp
        if self.codec == "h264":
            entries = fmtp.get("sprop-parameter-sets", "").split(",")
        else:
            entries = [fmtp.get(key, "") for key in ("sprop-vps", "sprop-sps", "sprop-pps")]
        for entry in entries:
            for nal in decode_parameter_set(entry):
                self.params.add(nal)
        info = self.params.rebuild()
        if info is not None:
            self._listener.on_video_info(info)

    def _payload(self, buf: bytes | bytearray, start: int, end: int, seq: int, ts: int, marker: bool) -> None:
        if self.depacketizer is not None:
            self.depacketizer.push(buf, start, end, seq, ts, marker)
        elif marker:
            self._other_frame(buf, start, end, ts)

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

    def _other_frame(self, buf: bytes | bytearray, start: int, end: int, ts: int) -> None:
        """Count frames of a codec that is reported but not relayed, and read its size."""
        self.frames += 1
        if self.other_info is None and self.codec == "mjpeg" and end - start >= 8:
            # RFC 2435 JPEG header: width and height in units of 8 pixels.
            width, height = buf[start + 6] * 8, buf[start + 7] * 8
            self.other_info = VideoInfo(codec="mjpeg", width=width, height=height)
            self._listener.on_video_info(self.other_info)
        elif self.other_info is None and self.codec != "mjpeg":
            dimensions = self.choice.media.dimensions or (0, 0)
            self.other_info = VideoInfo(codec=self.codec, width=dimensions[0], height=dimensions[1])
            self._listener.on_video_info(self.other_info)


def _is_parameter_set(codec: str, nal: bytes) -> bool:
    if codec == "h264":
        return (nal[0] & 0x1F) in (h264.NAL_SPS, h264.NAL_PPS)
    return ((nal[0] >> 1) & 0x3F) in (h265.NAL_VPS, h265.NAL_SPS, h265.NAL_PPS)


class AudioTrack(_Track):
    """Receive one audio track; AAC frames are relayed, other codecs only reported."""

    kind = "audio"

    def __init__(self, choice: TrackChoice, listener: IngestListener, timeline: CameraTimeline) -> None:
        self.choice = choice
        self._listener = listener
        self._timeline = timeline
        self.filter = _SourceFilter(None, choice.payload_type)
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
            self.depacketizer = AacDepacketizer(
                self._on_frame,
                self.config.frame_length,
                _int(fmtp.get("sizelength"), 13),
                _int(fmtp.get("indexlength"), 3),
                _int(fmtp.get("indexdeltalength"), 3),
            )
            # The AudioSpecificConfig states the real rate when rtpmap disagrees.
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
        frame_ticks = self.config.frame_length * TIMEBASE // max(1, self.choice.clock_rate or 1)
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


class IngestSession:
    """One connection to a camera, from connect to failure."""

    def __init__(
        self,
        url: str,
        *,
        transport: str,
        connect_timeout: float,
        read_timeout: float,
        timeline: CameraTimeline,
        listener: IngestListener,
        on_connected: Callable[[], None] | None = None,
    ) -> None:
        self._url = url
        self._transport = transport
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._timeline = timeline
        self._listener = listener
        self._on_connected = on_connected
        self.client: RtspClient | None = None
        self.video: VideoTrack | None = None
        self.audio: AudioTrack | None = None
        self._stopped = False

    async def run(self) -> None:
        """Connect and stream until the session fails; raises :class:`RtspError`."""
        url = self._url
        for _ in range(MAX_REDIRECTS + 1):
            try:
                await self._run_once(url)
            except RtspRedirect as redirect:
                url = redirect.location
                continue
            return
        raise RtspError("redirect_loop", f"more than {MAX_REDIRECTS} redirects")

    async def _run_once(self, url: str) -> None:
        client = RtspClient(
            url, connect_timeout=self._connect_timeout, read_timeout=self._read_timeout, transport=self._transport
        )
        self.client = client
        if self._stopped:
            raise RtspError("stopped", "the session was stopped")
        try:
            await client.connect()
            try:
                await client.options()
            except RtspError as exc:
                # OPTIONS is a courtesy; some cameras reject it yet stream fine.
                if exc.code in ("connection_closed", "protocol_error", "response_timeout", "unauthorized"):
                    raise
            body, base = await client.describe()
            description = parse_sdp(body)
            video_choice, audio_choice = choose_tracks(description)
            if video_choice is None:
                raise RtspError("no_video", "the session description has no video track Pantau can receive")

            self._timeline.new_session()
            self.video = VideoTrack(video_choice, self._listener, self._timeline)
            session_control = description.control
            session_base = rtsp.join_control(base, session_control) if session_control not in (None, "*") else base
            video_channel, video_transport = await client.setup(rtsp.join_control(base, video_choice.media.control))
            self.video.filter.ssrc = _usable_ssrc(video_transport.ssrc)
            client.handlers[video_channel] = self.video.on_rtp
            client.handlers[video_channel + 1] = self.video.on_rtcp

            if audio_choice is not None:
                self.audio = AudioTrack(audio_choice, self._listener, self._timeline)
                try:
                    audio_channel, audio_transport = await client.setup(
                        rtsp.join_control(base, audio_choice.media.control)
                    )
                except RtspError as exc:
                    if exc.code not in ("camera_error", "not_found", "unsupported_transport"):
                        raise
                    # Video alone is still worth relaying.
                    self.audio = None
                else:
                    self.audio.filter.ssrc = _usable_ssrc(audio_transport.ssrc)
                    client.handlers[audio_channel] = self.audio.on_rtp
                    client.handlers[audio_channel + 1] = self.audio.on_rtcp
            self._listener.on_audio_info(self.audio.info if self.audio else None)

            response = await client.play(session_base)
            self._apply_rtp_info(response.headers.get("RTP-Info"), base)
            self._listener.on_session_started(
                {
                    "video_codec": video_choice.codec,
                    "audio_codec": audio_choice.codec if audio_choice else None,
                    "tool": description.tool,
                }
            )
            if self._on_connected is not None:
                self._on_connected()
            await client.run()
        finally:
            client.close()

    def _apply_rtp_info(self, value: str | None, base: str) -> None:
        """Take SSRCs from RTP-Info when SETUP did not give them; never fail on it."""
        if not value:
            return
        tracks = [track for track in (self.video, self.audio) if track is not None]
        for entry in rtsp.parse_rtp_info(value):
            if entry.ssrc is None or entry.ssrc == 0:
                continue
            for track in tracks:
                control = track.choice.media.control or ""
                if control and entry.url.rstrip("/").endswith(control.rstrip("/").rsplit("/", 1)[-1]):
                    if track.filter.ssrc is None:
                        track.filter.ssrc = entry.ssrc
                    break

    def stop(self) -> None:
        self._stopped = True
        if self.client is not None:
            self.client.fail("stopped", "the session was stopped")


def _usable_ssrc(ssrc: int | None) -> int | None:
    # ssrc=0 in a Transport header means "not stated" on several cameras.
    return ssrc if ssrc else None
