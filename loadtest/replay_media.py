"""Media for the quirk replay: test clips, clips derived from them, audio, and quirky packetisation.

Video comes from the test clips in ``media/``. Codecs and layouts the clips
do not have (several slices per picture, MJPEG, MPEG-4 Part 2) are encoded
once at start-up from the first seconds of the D1 clip with PyAV's
encoders. Audio is a tone encoded to match what the case's SDP declares.

:func:`plan_video` turns a clip into RTP payloads the way a case's camera
packs them: marker bits on parameter sets, an Annex B stream inside one
FU-A, changing FU types, access unit delimiters, SEI and so on.
"""

from __future__ import annotations

import math
import struct
from array import array
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av

from loadtest.cases import Behaviour
from loadtest.clip import VIDEO_CLOCK, Clip, ClipFrame, clip_from_pictures, load_clip, packetize_nal
from proto import h264, h265
from proto.annexb import split_annexb

MEDIA_DIR = Path(__file__).resolve().parent / "media"
CLIP_FILES = {
    "h264": "street-d1-h264.mp4",
    "h264-1080p": "street-1080p-h264-aac.mp4",
    "h265": "street-4mp-h265.mp4",
    "bframes": "street-1440p-h264-bframes.mp4",
}
DERIVED_SOURCE = "street-d1-h264.mp4"
DERIVED_FRAMES = 48  # four seconds of the 12 fps D1 clip
DERIVED_GOP = 24
MAX_SINGLE_NAL = 65000  # an interleaved frame carries at most 65535 bytes
JPEG_PAYLOAD = 1400


@dataclass(slots=True)
class PlannedPacket:
    payload: bytes
    marker: bool
    ts_offset: int = 0  # added to the picture's timestamp (parameter sets stamped early)
    kind: str = "video"  # "video" or "foreign" (another payload type on the same stream)


@dataclass(slots=True)
class PlannedFrame:
    pts: int
    key: bool
    packets: list[PlannedPacket]
    skip: bool = False  # never sent (a frame_num gap), but its time passes


@dataclass(slots=True)
class VideoPlan:
    codec: str
    width: int
    height: int
    fps: float
    duration: int  # 90 kHz, one loop
    frames: list[PlannedFrame]


class MediaLibrary:
    """Clips and derived media, loaded or encoded the first time a scenario needs them."""

    def __init__(self, media_dir: Path = MEDIA_DIR) -> None:
        self._dir = media_dir
        self._clips: dict[str, Clip] = {}
        self._audio: dict[tuple[str, int, int], list[bytes]] = {}

    def clip(self, name: str) -> Clip:
        if name not in self._clips:
            if name in CLIP_FILES:
                self._clips[name] = load_clip(self._dir / CLIP_FILES[name])
            elif name in ("h264-slices", "h265-slices"):
                codec = name.split("-")[0]
                self._clips[name] = _encode_h26x(
                    self._dir / DERIVED_SOURCE, codec, slices=4 if codec == "h264" else 2
                )
            elif name in ("mjpeg", "mpeg4"):
                self._clips[name] = _encode_other(self._dir / DERIVED_SOURCE, name)
            elif name == "mjpeg-small":
                self._clips[name] = _encode_other(self._dir / DERIVED_SOURCE, "mjpeg", scale=2)
            else:
                raise ValueError(f"unknown clip {name!r}")
        return self._clips[name]

    def aac_frames(self, sample_rate: int, channels: int) -> list[bytes]:
        """Raw AAC-LC frames of a tone, one second or more, encoded at the given rate."""
        key = ("aac", sample_rate, channels)
        if key not in self._audio:
            self._audio[key] = _encode_aac_tone(sample_rate, channels)
        return self._audio[key]


def _decoded_source(path: Path, count: int) -> list[av.VideoFrame]:
    frames = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            frames.append(frame)
            if len(frames) >= count:
                break
    return frames


def _encode_h26x(path: Path, codec: str, slices: int) -> Clip:
    """Encode the D1 clip's first seconds with several slices per picture."""
    source = _decoded_source(path, DERIVED_FRAMES)
    width, height = source[0].width, source[0].height
    fps = 12.0
    encoder = av.CodecContext.create("libx264" if codec == "h264" else "libx265", "w")
    encoder.width, encoder.height = width, height
    encoder.pix_fmt = "yuv420p"
    encoder.time_base = Fraction(1, int(fps))
    encoder.framerate = Fraction(int(fps))
    encoder.gop_size = DERIVED_GOP
    encoder.bit_rate = 1_200_000
    if codec == "h264":
        encoder.options = {
            "preset": "veryfast",
            "x264-params": f"slices={slices}:keyint={DERIVED_GOP}:min-keyint={DERIVED_GOP}:scenecut=0:bframes=0",
        }
    else:
        encoder.options = {
            "preset": "ultrafast",
            "x265-params": (
                f"slices={slices}:keyint={DERIVED_GOP}:min-keyint={DERIVED_GOP}:scenecut=0:bframes=0:"
                "repeat-headers=1:log-level=error"
            ),
        }
    encoder.open()
    pictures: list[tuple[int, bool, list[bytes]]] = []

    def take(packets: list[av.Packet]) -> None:
        for packet in packets:
            pts = int(packet.pts) * VIDEO_CLOCK // int(fps)
            pictures.append((pts, bool(packet.is_keyframe), split_annexb(bytes(packet))))

    for index, frame in enumerate(source):
        frame = frame.reformat(format="yuv420p")
        frame.pts = index
        frame.time_base = encoder.time_base
        take(encoder.encode(frame))
    take(encoder.encode(None))
    return clip_from_pictures(
        path.with_name(f"{path.stem}-{codec}-{slices}slices"), codec, width, height, fps, pictures
    )


def _encode_other(path: Path, codec: str, scale: int = 1) -> Clip:
    """Encode MJPEG or MPEG-4 Part 2 pictures, optionally scaled down by ``scale``.

    Each picture is one undivided unit in the clip's ``nals``.
    """
    source = _decoded_source(path, DERIVED_FRAMES)
    width, height = source[0].width // scale, source[0].height // scale
    fps = 12.0
    encoder = av.CodecContext.create(codec, "w")
    encoder.width, encoder.height = width, height
    encoder.time_base = Fraction(1, int(fps))
    if codec == "mjpeg":
        encoder.pix_fmt = "yuvj420p"
        # RTP/JPEG (RFC 2435) assumes the standard Huffman tables.
        encoder.options = {"huffman": "default"}
        encoder.bit_rate = 3_000_000
        pix_fmt = "yuvj420p"
    else:
        encoder.pix_fmt = "yuv420p"
        encoder.gop_size = DERIVED_GOP
        encoder.bit_rate = 1_000_000
        pix_fmt = "yuv420p"
    encoder.open()
    frames: list[ClipFrame] = []

    def take(packets: list[av.Packet]) -> None:
        for packet in packets:
            data = bytes(packet)
            pts = int(packet.pts) * VIDEO_CLOCK // int(fps)
            key = bool(packet.is_keyframe) or codec == "mjpeg"
            frames.append(ClipFrame(pts, key, [], nals=[data]))

    for index, frame in enumerate(source):
        frame = frame.reformat(width=width, height=height, format=pix_fmt)
        frame.pts = index
        frame.time_base = encoder.time_base
        take(encoder.encode(frame))
    take(encoder.encode(None))
    duration = max(frame.pts for frame in frames) + round(VIDEO_CLOCK / fps)
    return Clip(path.with_name(f"{path.stem}-{codec}"), codec, width, height, fps, duration, frames, [])


def _encode_aac_tone(sample_rate: int, channels: int) -> list[bytes]:
    """Encode a 440 Hz tone to raw AAC-LC frames with FFmpeg's AAC encoder."""
    encoder = av.CodecContext.create("aac", "w")
    encoder.sample_rate = sample_rate
    encoder.layout = "stereo" if channels == 2 else "mono"
    encoder.format = "fltp"
    encoder.time_base = Fraction(1, sample_rate)
    encoder.open()
    frame_samples = encoder.frame_size or 1024
    frames: list[bytes] = []
    total = 0
    seconds = 2
    while total < sample_rate * seconds:
        samples = array(
            "f", (0.2 * math.sin(2 * math.pi * 440 * (total + i) / sample_rate) for i in range(frame_samples))
        )
        frame = av.AudioFrame(format="fltp", layout=encoder.layout.name, samples=frame_samples)
        for plane in frame.planes:
            plane.update(samples.tobytes())
        frame.sample_rate = sample_rate
        frame.pts = total
        total += frame_samples
        frames += [bytes(packet) for packet in encoder.encode(frame)]
    frames += [bytes(packet) for packet in encoder.encode(None)]
    return frames


# --- video packetisation ------------------------------------------------------------------


def _nal_kind(codec: str, nal: bytes) -> int:
    return nal[0] & 0x1F if codec == "h264" else (nal[0] >> 1) & 0x3F


def _is_parameter_set(codec: str, nal: bytes) -> bool:
    if codec == "h264":
        return _nal_kind(codec, nal) in (h264.NAL_SPS, h264.NAL_PPS)
    return _nal_kind(codec, nal) in (h265.NAL_VPS, h265.NAL_SPS, h265.NAL_PPS)


def _is_slice(codec: str, nal: bytes) -> bool:
    kind = _nal_kind(codec, nal)
    return 1 <= kind <= 5 if codec == "h264" else kind < 32


def _sei(codec: str, payload_type: int) -> bytes:
    """Build an SEI NAL unit with one message of ``payload_type`` and a one-byte payload."""
    body = bytes((payload_type, 1, 0xA7, 0x80))
    return (b"\x06" if codec == "h264" else b"\x4e\x01") + body


def _aud(codec: str, key: bool) -> bytes:
    if codec == "h264":
        return bytes((0x09, 0x10 if key else 0x30))  # primary_pic_type 0 (I) or 1 (I, P)
    return bytes((0x46, 0x01, 0x10 if key else 0x30))


def _aggregate(codec: str, nals: list[bytes]) -> bytes:
    """Pack NAL units into one STAP-A (H.264) or AP (H.265) payload."""
    if codec == "h264":
        nri = max(nal[0] & 0x60 for nal in nals)
        out = bytearray((nri | h264.NAL_STAP_A,))
    else:
        out = bytearray(((h265.NAL_AP << 1), 0x01))
    for nal in nals:
        out += struct.pack(">H", len(nal)) + nal
    return bytes(out)


def _fragments(codec: str, nal: bytes, type_changes: bool) -> list[bytes]:
    payloads = packetize_nal(codec, nal)
    if type_changes and codec == "h265" and len(payloads) > 1:
        # Continuation fragments name another type (FD_NUT, 38), as Tiandy cameras do.
        payloads = [payloads[0]] + [p[:2] + bytes(((p[2] & 0xC0) | 38,)) + p[3:] for p in payloads[1:]]
    return payloads


def _annexb_fu_a(nals: list[bytes]) -> list[bytes]:
    """Send a keyframe as one FU-A whose reassembled unit is SPS, PPS and slices in Annex B form.

    The FU header keeps the SPS type in every fragment, as V380 cameras do.
    """
    sps = nals[0]
    blob = sps[1:] + b"".join(b"\x00\x00\x00\x01" + nal for nal in nals[1:])
    indicator = (sps[0] & 0xE0) | h264.NAL_FU_A
    step = 1400 - 2
    payloads = []
    for offset in range(0, len(blob), step):
        start = 0x80 if offset == 0 else 0
        end = 0x40 if offset + step >= len(blob) else 0
        payloads.append(bytes((indicator, start | end | h264.NAL_SPS)) + blob[offset : offset + step])
    return payloads


def plan_video(clip: Clip, behaviour: Behaviour, packetization_mode: int = 1) -> VideoPlan:
    """Packetise a clip's pictures the way the scenario's camera does."""
    codec = clip.codec
    frames = []
    gop_index = 0
    for frame in clip.frames:
        gop_index = 0 if frame.key else gop_index + 1
        if codec == "mjpeg":
            packets = [PlannedPacket(p, False) for p in rtp_jpeg_payloads(frame.nals[0])]
        elif codec == "mpeg4":
            data = frame.nals[0]
            packets = [PlannedPacket(data[i : i + 1400], False) for i in range(0, len(data), 1400)]
        else:
            packets = _plan_h26x_frame(codec, frame, behaviour, packetization_mode)
        if packets and not behaviour.no_marker:
            packets[-1].marker = True
        skip = behaviour.frame_num_gap and gop_index == 5
        frames.append(PlannedFrame(frame.pts, frame.key, packets, skip))
    return VideoPlan(codec, clip.width, clip.height, clip.fps, clip.duration, frames)


def _plan_h26x_frame(codec: str, frame: ClipFrame, behaviour: Behaviour, mode: int) -> list[PlannedPacket]:
    nals = list(frame.nals)
    if behaviour.no_inband_parameter_sets:
        nals = [nal for nal in nals if not _is_parameter_set(codec, nal)]
    if behaviour.stray_sps_byte:
        sps_type = h264.NAL_SPS if codec == "h264" else h265.NAL_SPS
        nals = [nal + b"\x04" if _nal_kind(codec, nal) == sps_type else nal for nal in nals]
    parameter_sets = [nal for nal in nals if _is_parameter_set(codec, nal)]
    rest = [nal for nal in nals if not _is_parameter_set(codec, nal)]
    extra: list[bytes] = []
    if behaviour.sei >= 0:
        extra.append(_sei(codec, behaviour.sei))
    head: list[bytes] = [_aud(codec, frame.key)] if behaviour.aud else []

    if behaviour.annexb_in_fu and codec == "h264" and frame.key and parameter_sets:
        return [PlannedPacket(p, False) for p in _annexb_fu_a(parameter_sets + extra + rest)]

    packets: list[PlannedPacket] = [PlannedPacket(nal, False) for nal in head]
    if parameter_sets:
        offset = -behaviour.parameter_set_ts_offset
        if behaviour.aggregate_parameter_sets:
            packets.append(PlannedPacket(_aggregate(codec, parameter_sets), False, offset))
        else:
            packets += [
                PlannedPacket(nal, behaviour.marker_on_parameter_sets, offset) for nal in parameter_sets
            ]
    packets += [PlannedPacket(nal, behaviour.marker_on_parameter_sets) for nal in extra]
    for nal in rest:
        if mode == 0 and len(nal) <= MAX_SINGLE_NAL:
            # Single NAL unit mode: every unit in its own packet, however large.
            packets.append(PlannedPacket(nal, False))
        else:
            packets += [PlannedPacket(p, False) for p in _fragments(codec, nal, behaviour.fu_type_changes)]
        if behaviour.marker_on_slices and _is_slice(codec, nal):
            packets[-1].marker = True
    if behaviour.foreign_payload_type >= 0 and len(packets) > 2:
        # A packet of another payload type between the fragments of this picture.
        packets.insert(len(packets) // 2, PlannedPacket(b"<tt:MetadataStream/>", False, kind="foreign"))
    return packets


# --- RTP/JPEG (RFC 2435) ------------------------------------------------------------------


def _jpeg_segments(data: bytes) -> tuple[dict[int, bytes], int, int, int, bytes]:
    """Return (quantization tables by id, width, height, RFC 2435 type, scan data) of a baseline JPEG."""
    tables: dict[int, bytes] = {}
    width = height = 0
    jpeg_type = 1
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise ValueError("invalid JPEG marker")
        marker = data[pos + 1]
        length = struct.unpack_from(">H", data, pos + 2)[0]
        segment = data[pos + 4 : pos + 2 + length]
        if marker == 0xDB:
            offset = 0
            while offset < len(segment):
                table_id = segment[offset] & 0x0F
                tables[table_id] = segment[offset + 1 : offset + 65]
                offset += 65
        elif marker == 0xC0:
            height, width = struct.unpack_from(">HH", segment, 1)
            luma_sampling = segment[7]
            jpeg_type = 1 if luma_sampling == 0x22 else 0
        elif marker == 0xDA:
            end = data.rfind(b"\xff\xd9")
            return tables, width, height, jpeg_type, data[pos + 2 + length : end if end > 0 else len(data)]
        pos += 2 + length
    raise ValueError("JPEG without scan data")


def rtp_jpeg_payloads(data: bytes) -> list[bytes]:
    """Packetise one baseline JPEG per RFC 2435, quantization tables in-band (Q = 255)."""
    tables, width, height, jpeg_type, scan = _jpeg_segments(data)
    table_bytes = tables.get(0, b"\x10" * 64) + tables.get(1, tables.get(0, b"\x10" * 64))
    payloads = []
    offset = 0
    while offset < len(scan) or not payloads:
        header = struct.pack(">I", offset & 0xFFFFFF) + bytes(
            (jpeg_type, 255, width // 8 & 0xFF, height // 8 & 0xFF)
        )
        if offset == 0:
            header += bytes((0, 0)) + struct.pack(">H", len(table_bytes)) + table_bytes
        room = JPEG_PAYLOAD - len(header)
        payloads.append(header + scan[offset : offset + room])
        offset += room
    return payloads


# --- audio ----------------------------------------------------------------------------------


@dataclass(slots=True)
class AudioPlan:
    """Audio packets for one track: payload and duration in the track's RTP clock."""

    codec: str
    clock_rate: int
    packets: list[tuple[bytes, int]] = field(default_factory=list)


def plan_audio(
    library: MediaLibrary, encoding: str, clock_rate: int, channels: int, fmtp: dict[str, str]
) -> AudioPlan | None:
    """Build packets for an audio track as its SDP declares it; None for codecs the replay cannot make."""
    encoding = encoding.upper()
    if encoding == "MPEG4-GENERIC":
        from proto.aac import parse_audio_specific_config

        try:
            config = parse_audio_specific_config(bytes.fromhex(fmtp.get("config", "")))
        except ValueError:
            return None
        frames = library.aac_frames(config.sample_rate, config.channels or channels)
        # The RTP clock is the rtpmap rate, which some cameras set apart from the real rate.
        ticks = 1024 * clock_rate // config.sample_rate
        packets = [(struct.pack(">HH", 16, (len(frame) << 3) & 0xFFFF) + frame, ticks) for frame in frames]
        return AudioPlan("aac", clock_rate, packets)
    samples = clock_rate // 50  # 20 ms packets
    if encoding in ("PCMA", "PCMU"):
        silence = b"\xd5" if encoding == "PCMA" else b"\xff"
        return AudioPlan(encoding.lower(), clock_rate, [(silence * samples * channels, samples)])
    if encoding in ("L16", "PCM"):
        return AudioPlan(encoding.lower(), clock_rate, [(b"\x00\x00" * samples * channels, samples)])
    return None
