"""One RTSP session with a camera, from DESCRIBE to frames on the output timeline.

``IngestSession.run`` connects, picks the tracks worth receiving, sets them
up, plays, and turns RTP into :class:`relay.media.Frame` objects until the
session fails. It never decides about retries: that is the camera
supervisor's job (``relay.camera``).
"""

from __future__ import annotations

from collections.abc import Callable

from proto import rtsp
from proto.sdp import SessionDescription, direction_is_backchannel, parse_sdp
from relay.parameter_sets import ParameterSets, decode_parameter_set
from relay.rtsp_client import RtspClient, RtspError, RtspRedirect
from relay.timeline import CameraTimeline
from relay.tracks import AudioTrack, IngestListener, TrackChoice, VideoTrack

__all__ = [
    "AudioTrack",
    "IngestListener",
    "IngestSession",
    "ParameterSets",
    "TrackChoice",
    "VideoTrack",
    "choose_tracks",
    "decode_parameter_set",
]

MAX_REDIRECTS = 3


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

    Only what Pantau uses is set up, because every set-up stream costs the
    camera and the link even when its packets are dropped. Media of other
    types (ONVIF metadata, ``application/TP-LINK``, ``text``, ``vana``) and
    ONVIF back-channels (see ``direction_is_backchannel``) are never set up.
    Payload types are read per media section, and an rtpmap beats the
    static payload type table (AAC on payload type 0, H.264 on 35).
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
            video_url = rtsp.join_control(base, video_choice.media.control)
            video_channel, video_transport = await client.setup(video_url)
            client.handlers[video_channel] = self.video.on_rtp
            client.handlers[video_channel + 1] = self.video.on_rtcp
            tracks: list[tuple[VideoTrack | AudioTrack, str, int, int | None]] = [
                (self.video, video_url, video_channel, _usable_ssrc(video_transport.ssrc))
            ]

            if audio_choice is not None:
                self.audio = AudioTrack(audio_choice, self._listener, self._timeline)
                audio_url = rtsp.join_control(base, audio_choice.media.control)
                try:
                    audio_channel, audio_transport = await client.setup(audio_url)
                except RtspError as exc:
                    if exc.code not in ("camera_error", "not_found", "unsupported_transport"):
                        raise
                    # Video alone is still worth relaying.
                    self.audio = None
                else:
                    client.handlers[audio_channel] = self.audio.on_rtp
                    client.handlers[audio_channel + 1] = self.audio.on_rtcp
                    tracks.append((self.audio, audio_url, audio_channel, _usable_ssrc(audio_transport.ssrc)))
            self._listener.on_audio_info(self.audio.info if self.audio else None)

            def on_play(response: rtsp.Response) -> None:
                _expect_sources(tracks, response.headers.get("RTP-Info"), client.pre_play_ssrcs)

            await client.play(session_base, on_play)
            self._listener.on_session_started(
                {
                    "video_codec": self.video.codec,
                    "audio_codec": audio_choice.codec if audio_choice else None,
                    "tool": description.tool,
                    "sdp_parameter_sets": self.video.params.sdp_status if self.video.params else None,
                }
            )
            if self._on_connected is not None:
                self._on_connected()
            await client.run()
        finally:
            client.close()

    def stop(self) -> None:
        self._stopped = True
        if self.client is not None:
            self.client.fail("stopped", "the session was stopped")


def _usable_ssrc(ssrc: int | None) -> int | None:
    # ssrc=0 in a Transport header means "not stated" on several cameras.
    return ssrc if ssrc else None


def _expect_sources(
    tracks: list[tuple[VideoTrack | AudioTrack, str, int, int | None]],
    rtp_info: str | None,
    pre_play_ssrcs: dict[int, set[int]],
) -> None:
    """Pass each track's source filter what SETUP, RTP-Info and the packets before PLAY stated.

    RTP-Info entries are matched to tracks by URL or last path segment;
    entries for streams that were not set up, and malformed ones, are
    ignored, and none of them can fail PLAY. ``seq=0;rtptime=0`` together is
    a placeholder some cameras send, not a sequence number to wait for.
    """
    entries = rtsp.parse_rtp_info(rtp_info) if rtp_info else []
    for track, url, channel, ssrc in tracks:
        entry = _rtp_info_entry(entries, url, len(tracks) == 1)
        seq = None
        if entry is not None:
            ssrc = ssrc or _usable_ssrc(entry.ssrc)
            if entry.seq is not None and (entry.seq, entry.rtptime) != (0, 0):
                seq = entry.seq
        track.filter.expect(ssrc, seq, pre_play_ssrcs.get(channel, set()))


def _rtp_info_entry(entries: list[rtsp.RtpInfoEntry], url: str, only_track: bool) -> rtsp.RtpInfoEntry | None:
    wanted = rtsp.strip_credentials(url).rstrip("/")
    last_segment = wanted.rsplit("/", 1)[-1]
    for entry in entries:
        candidate = rtsp.strip_credentials(entry.url).rstrip("/")
        if candidate == wanted or candidate.rsplit("/", 1)[-1] == last_segment:
            return entry
    if only_track and len(entries) == 1:
        # One stream and one entry whose URL the camera spelled some other way.
        return entries[0]
    return None
