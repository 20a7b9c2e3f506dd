"""A test clip read once and cut into RTP payloads, ready to replay to many sessions.

The clip's video is packetised the way a typical IP camera does it. The
parameter sets (SPS, PPS and for H.265 the VPS) are in the SDP and again
in-band before every keyframe. NAL units up to the MTU go as single-NAL
packets and larger ones as FU-A (H.264) or FU (H.265) fragments, with the
marker bit on the last packet of each picture. AAC audio uses RFC 3640
(AAC-hbr), one frame per packet.
"""

from __future__ import annotations

import base64
import struct
from dataclasses import dataclass, field
from pathlib import Path

import av

from proto import h264, h265

MAX_PAYLOAD = 1400
VIDEO_CLOCK = 90000


@dataclass(slots=True)
class ClipFrame:
    """One video frame: its NAL units, its RTP payloads and the audio payloads sent with it."""

    pts: int  # 90 kHz from the start of the clip
    key: bool
    payloads: list[bytes]
    audio: list[tuple[int, bytes]] = field(default_factory=list)  # (audio clock ts, payload)
    nals: list[bytes] = field(default_factory=list)  # parameter sets first on keyframes


@dataclass(slots=True)
class Clip:
    path: Path
    codec: str  # "h264" or "h265"
    width: int
    height: int
    fps: float
    duration: int  # 90 kHz, one loop
    frames: list[ClipFrame]
    parameter_sets: list[bytes]  # VPS?, SPS, PPS in order
    audio_rate: int | None = None
    audio_channels: int = 1
    audio_config: bytes | None = None
    audio_frame_samples: int = 1024

    @property
    def bitrate_bps(self) -> float:
        total = sum(len(payload) for frame in self.frames for payload in frame.payloads)
        return total * 8 / (self.duration / VIDEO_CLOCK)

    def sdp(self, host: str = "127.0.0.1") -> str:
        """Build the session description a camera would send for this clip."""
        lines = [
            "v=0",
            f"o=- 0 0 IN IP4 {host}",
            "s=Pantau camera simulator",
            "t=0 0",
            "a=control:*",
            "a=range:npt=0-",
            "m=video 0 RTP/AVP 96",
            "c=IN IP4 0.0.0.0",
        ]
        encoded = [base64.b64encode(nal).decode() for nal in self.parameter_sets]
        if self.codec == "h264":
            sps = self.parameter_sets[0]
            lines += [
                "a=rtpmap:96 H264/90000",
                f"a=fmtp:96 packetization-mode=1;profile-level-id={sps[1:4].hex().upper()};"
                f"sprop-parameter-sets={','.join(encoded)}",
            ]
        else:
            vps, sps, pps = encoded
            lines += [
                "a=rtpmap:96 H265/90000",
                f"a=fmtp:96 sprop-vps={vps};sprop-sps={sps};sprop-pps={pps}",
            ]
        lines += [f"a=framerate:{self.fps:g}", "a=control:trackID=0"]
        if self.audio_rate and self.audio_config:
            lines += [
                "m=audio 0 RTP/AVP 97",
                "c=IN IP4 0.0.0.0",
                f"a=rtpmap:97 MPEG4-GENERIC/{self.audio_rate}/{self.audio_channels}",
                "a=fmtp:97 streamtype=5;profile-level-id=15;mode=AAC-hbr;sizelength=13;"
                f"indexlength=3;indexdeltalength=3;config={self.audio_config.hex()}",
                "a=control:trackID=1",
            ]
        return "\r\n".join(lines) + "\r\n"


def _split_sample(sample: bytes) -> list[bytes]:
    """Split a length-prefixed (4-byte) MP4 sample into NAL units."""
    nals = []
    pos = 0
    while pos + 4 <= len(sample):
        (size,) = struct.unpack_from(">I", sample, pos)
        pos += 4
        nals.append(sample[pos : pos + size])
        pos += size
    return nals


def _avcc_parameter_sets(extradata: bytes) -> list[bytes]:
    sets = []
    count = extradata[5] & 0x1F
    pos = 6
    for _ in range(count):
        (size,) = struct.unpack_from(">H", extradata, pos)
        sets.append(extradata[pos + 2 : pos + 2 + size])
        pos += 2 + size
    count = extradata[pos]
    pos += 1
    for _ in range(count):
        (size,) = struct.unpack_from(">H", extradata, pos)
        sets.append(extradata[pos + 2 : pos + 2 + size])
        pos += 2 + size
    return sets


def _hvcc_parameter_sets(extradata: bytes) -> list[bytes]:
    by_type: dict[int, bytes] = {}
    arrays = extradata[22]
    pos = 23
    for _ in range(arrays):
        kind = extradata[pos] & 0x3F
        (count,) = struct.unpack_from(">H", extradata, pos + 1)
        pos += 3
        for _ in range(count):
            (size,) = struct.unpack_from(">H", extradata, pos)
            by_type.setdefault(kind, extradata[pos + 2 : pos + 2 + size])
            pos += 2 + size
    return [by_type[h265.NAL_VPS], by_type[h265.NAL_SPS], by_type[h265.NAL_PPS]]


def packetize_nal(codec: str, nal: bytes, max_payload: int = MAX_PAYLOAD) -> list[bytes]:
    """Return the RTP payloads of one NAL unit (single packet or fragments)."""
    if len(nal) <= max_payload:
        return [nal]
    payloads = []
    if codec == "h264":
        indicator = (nal[0] & 0xE0) | h264.NAL_FU_A
        kind = nal[0] & 0x1F
        body = nal[1:]
        step = max_payload - 2
        for offset in range(0, len(body), step):
            start = 0x80 if offset == 0 else 0
            end = 0x40 if offset + step >= len(body) else 0
            payloads.append(bytes((indicator, start | end | kind)) + body[offset : offset + step])
    else:
        kind = (nal[0] >> 1) & 0x3F
        header = bytes(((nal[0] & 0x81) | (h265.NAL_FU << 1), nal[1]))
        body = nal[2:]
        step = max_payload - 3
        for offset in range(0, len(body), step):
            start = 0x80 if offset == 0 else 0
            end = 0x40 if offset + step >= len(body) else 0
            payloads.append(header + bytes((start | end | kind,)) + body[offset : offset + step])
    return payloads


def load_clip(path: str | Path) -> Clip:
    """Read a clip's packets (no decoding) and packetise them once."""
    path = Path(path)
    with av.open(str(path)) as container:
        video_stream = container.streams.video[0]
        audio_stream = container.streams.audio[0] if container.streams.audio else None
        codec = {"h264": "h264", "hevc": "h265"}[video_stream.codec_context.name]
        extradata = bytes(video_stream.codec_context.extradata)
        parameter_sets = (
            _avcc_parameter_sets(extradata) if codec == "h264" else _hvcc_parameter_sets(extradata)
        )
        video_base = video_stream.time_base
        width, height = video_stream.codec_context.width, video_stream.codec_context.height
        rate = video_stream.average_rate or video_stream.guessed_rate
        fps = float(rate) if rate else 15.0

        video_packets: list[tuple[int, bool, bytes]] = []
        audio_packets: list[tuple[int, bytes]] = []
        audio_config = bytes(audio_stream.codec_context.extradata) if audio_stream else None
        audio_rate = audio_stream.codec_context.sample_rate if audio_stream else None
        audio_channels = audio_stream.codec_context.channels if audio_stream else 1
        for packet in container.demux():
            if packet.size == 0 or packet.pts is None:
                continue
            if packet.stream.type == "video":
                pts = int(packet.pts * video_base * VIDEO_CLOCK)
                video_packets.append((pts, bool(packet.is_keyframe), bytes(packet)))
            elif audio_stream is not None and packet.stream is audio_stream and packet.pts >= 0:
                audio_packets.append((int(packet.pts * audio_stream.time_base * audio_rate), bytes(packet)))

    # Start at the first keyframe and at presentation time 0.
    first_key = next(index for index, item in enumerate(video_packets) if item[1])
    video_packets = video_packets[first_key:]
    origin = min(pts for pts, _, _ in video_packets)
    frame_ticks = round(VIDEO_CLOCK / fps)
    duration = max(pts for pts, _, _ in video_packets) - origin + frame_ticks

    pictures = [(pts - origin, key, _split_sample(sample)) for pts, key, sample in video_packets]
    frames = _clip_frames(codec, pictures, parameter_sets)

    if audio_packets and audio_rate:
        # Frames go out at a steady pace in decode order, frame i at i / fps
        # seconds, so each audio frame rides with the video frame sent just before it.
        for audio_ts, payload in audio_packets:
            index = min(len(frames) - 1, int(audio_ts / audio_rate * fps))
            header = struct.pack(">HH", 16, (len(payload) << 3) & 0xFFFF)
            frames[index].audio.append((audio_ts, header + payload))

    return Clip(
        path=path,
        codec=codec,
        width=width,
        height=height,
        fps=fps,
        duration=duration,
        frames=frames,
        parameter_sets=parameter_sets,
        audio_rate=audio_rate,
        audio_channels=audio_channels,
        audio_config=audio_config,
    )


def _clip_frames(
    codec: str, pictures: list[tuple[int, bool, list[bytes]]], parameter_sets: list[bytes]
) -> list[ClipFrame]:
    """Packetise pictures given as (pts, keyframe, NAL units), with the parameter sets before each keyframe."""
    frames = []
    for pts, key, nals in pictures:
        if key:
            nals = list(parameter_sets) + [nal for nal in nals if not _is_parameter_set(codec, nal)]
        payloads = [payload for nal in nals for payload in packetize_nal(codec, nal)]
        frames.append(ClipFrame(pts, key, payloads, nals=nals))
    return frames


def clip_from_pictures(
    path: Path, codec: str, width: int, height: int, fps: float, pictures: list[tuple[int, bool, list[bytes]]]
) -> Clip:
    """Build a video-only clip from encoder output: (pts in 90 kHz, keyframe, NAL units) per picture.

    The parameter sets are taken from the first keyframe, which must carry them in-band.
    """
    first_key = next(nals for _, key, nals in pictures if key)
    parameter_sets = [nal for nal in first_key if _is_parameter_set(codec, nal)]
    if codec == "h265":
        by_type = {(nal[0] >> 1) & 0x3F: nal for nal in parameter_sets}
        parameter_sets = [by_type[h265.NAL_VPS], by_type[h265.NAL_SPS], by_type[h265.NAL_PPS]]
    else:
        by_type = {nal[0] & 0x1F: nal for nal in parameter_sets}
        parameter_sets = [by_type[h264.NAL_SPS], by_type[h264.NAL_PPS]]
    frames = _clip_frames(codec, pictures, parameter_sets)
    frame_ticks = round(VIDEO_CLOCK / fps)
    duration = max(frame.pts for frame in frames) + frame_ticks
    return Clip(path, codec, width, height, fps, duration, frames, parameter_sets)


def _is_parameter_set(codec: str, nal: bytes) -> bool:
    if codec == "h264":
        return (nal[0] & 0x1F) in (h264.NAL_SPS, h264.NAL_PPS)
    return ((nal[0] >> 1) & 0x3F) in (h265.NAL_VPS, h265.NAL_SPS, h265.NAL_PPS)
