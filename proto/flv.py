"""FLV muxing (Adobe FLV 10.1) with enhanced FLV for H.265 (FourCC ``hvc1``).

Tags are built as whole ``bytes`` objects, previous-tag-size trailer included,
so one tag can be written unchanged to every client.
"""

from __future__ import annotations

import struct

TAG_AUDIO = 8
TAG_VIDEO = 9
TAG_SCRIPT = 18

CODEC_AVC = 7
FOURCC_HEVC = b"hvc1"

# Enhanced FLV: IsExHeader bit, then frame type and packet type in the first byte.
_EX_HEADER = 0x80
_EX_SEQUENCE_START = 0
_EX_CODED_FRAMES = 1
_FRAME_KEY = 1
_FRAME_INTER = 2

_TAG_HEADER = struct.Struct(">IIBH")  # type+size, timestamp (24+8 bits), stream id (24 bits)
_TRAILER = struct.Struct(">I")
_AVC_VIDEO_HEADER = struct.Struct(">BI")  # frame type/codec, packet type + composition time


def file_header(has_audio: bool, has_video: bool) -> bytes:
    flags = 0
    if has_audio:
        flags |= 0x04
    if has_video:
        flags |= 0x01
    return b"FLV\x01" + bytes((flags,)) + b"\x00\x00\x00\x09" + b"\x00\x00\x00\x00"


def _tag_prefix(tag_type: int, size: int, timestamp_ms: int) -> bytes:
    timestamp_ms &= 0xFFFFFFFF
    stamp = ((timestamp_ms & 0xFFFFFF) << 8) | (timestamp_ms >> 24)
    return _TAG_HEADER.pack((tag_type << 24) | size, stamp, 0, 0)


def tag(tag_type: int, timestamp_ms: int, payload: bytes) -> bytes:
    """Build one complete tag: header, payload and previous-tag-size trailer."""
    size = len(payload)
    return b"".join(
        (_tag_prefix(tag_type, size, timestamp_ms), payload, _TRAILER.pack(size + 11))
    )


# --- AMF0 metadata ------------------------------------------------------------------


def _amf_string(value: str) -> bytes:
    data = value.encode()
    return struct.pack(">H", len(data)) + data


def _amf_value(value: object) -> bytes:
    if isinstance(value, bool):
        return b"\x01" + (b"\x01" if value else b"\x00")
    if isinstance(value, (int, float)):
        return b"\x00" + struct.pack(">d", float(value))
    if isinstance(value, str):
        return b"\x02" + _amf_string(value)
    raise TypeError(f"AMF0 value of type {type(value).__name__} is not supported")


def metadata_tag(fields: dict[str, object]) -> bytes:
    """Build the ``onMetaData`` script tag with an ECMA array of ``fields``."""
    body = bytearray(b"\x02" + _amf_string("onMetaData"))
    body += b"\x08" + struct.pack(">I", len(fields))
    for key, value in fields.items():
        body += _amf_string(key) + _amf_value(value)
    body += b"\x00\x00\x09"
    return tag(TAG_SCRIPT, 0, bytes(body))


def hevc_codec_id() -> int:
    """Return the FourCC ``hvc1`` as the number enhanced FLV puts in ``videocodecid``."""
    return int.from_bytes(FOURCC_HEVC, "big")


# --- Video --------------------------------------------------------------------------


def avc_sequence_header(record: bytes, timestamp_ms: int) -> bytes:
    return tag(TAG_VIDEO, timestamp_ms, b"\x17\x00\x00\x00\x00" + record)


def hevc_sequence_header(record: bytes, timestamp_ms: int) -> bytes:
    first = _EX_HEADER | (_FRAME_KEY << 4) | _EX_SEQUENCE_START
    return tag(TAG_VIDEO, timestamp_ms, bytes((first,)) + FOURCC_HEVC + record)


def avc_frame(key: bool, dts_ms: int, cts_ms: int, sample: bytes) -> bytes:
    """Build an AVC NALU tag; ``sample`` is length-prefixed (4-byte) NAL units."""
    size = len(sample) + 5
    header = _AVC_VIDEO_HEADER.pack(0x17 if key else 0x27, (1 << 24) | (cts_ms & 0xFFFFFF))
    return b"".join(
        (_tag_prefix(TAG_VIDEO, size, dts_ms), header, sample, _TRAILER.pack(size + 11))
    )


def hevc_frame(key: bool, dts_ms: int, cts_ms: int, sample: bytes) -> bytes:
    """Build an enhanced-FLV CodedFrames tag with a signed 24-bit composition time."""
    size = len(sample) + 8
    first = _EX_HEADER | ((_FRAME_KEY if key else _FRAME_INTER) << 4) | _EX_CODED_FRAMES
    cts = (cts_ms & 0xFFFFFF).to_bytes(3, "big")
    return b"".join(
        (
            _tag_prefix(TAG_VIDEO, size, dts_ms),
            bytes((first,)),
            FOURCC_HEVC,
            cts,
            sample,
            _TRAILER.pack(size + 11),
        )
    )


# --- Audio --------------------------------------------------------------------------

# SoundFormat 10 (AAC); rate, size and type bits are fixed at 3, 1, 1 for AAC.
_AAC_FLAGS = 0xAF


def aac_sequence_header(audio_specific_config: bytes, timestamp_ms: int) -> bytes:
    return tag(TAG_AUDIO, timestamp_ms, bytes((_AAC_FLAGS, 0)) + audio_specific_config)


def aac_frame(timestamp_ms: int, frame: bytes) -> bytes:
    size = len(frame) + 2
    return b"".join(
        (
            _tag_prefix(TAG_AUDIO, size, timestamp_ms),
            bytes((_AAC_FLAGS, 1)),
            frame,
            _TRAILER.pack(size + 11),
        )
    )


# --- Reading ------------------------------------------------------------------------


class FlvTag:
    """One tag read from a stream: type, timestamp and payload."""

    __slots__ = ("tag_type", "timestamp_ms", "payload")

    def __init__(self, tag_type: int, timestamp_ms: int, payload: bytes) -> None:
        self.tag_type = tag_type
        self.timestamp_ms = timestamp_ms
        self.payload = payload

    @property
    def is_video_keyframe(self) -> bool:
        """True for a coded key frame (H.264 NALU or enhanced-FLV coded frames), not a sequence header."""
        if self.tag_type != TAG_VIDEO or len(self.payload) < 2:
            return False
        first = self.payload[0]
        if first & _EX_HEADER:
            return (first >> 4) & 0x07 == _FRAME_KEY and first & 0x0F in (_EX_CODED_FRAMES, 3)
        return first >> 4 == _FRAME_KEY and self.payload[1] == 1

    @property
    def is_video_frame(self) -> bool:
        if self.tag_type != TAG_VIDEO or len(self.payload) < 2:
            return False
        first = self.payload[0]
        if first & _EX_HEADER:
            return first & 0x0F in (_EX_CODED_FRAMES, 3)
        return self.payload[1] == 1


class FlvReader:
    """Incremental FLV parser for clients and tests: feed bytes, get tags.

    Raises ValueError when the stream does not start with an FLV header.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._header_done = False

    def feed(self, data: bytes) -> list[FlvTag]:
        self._buf += data
        tags: list[FlvTag] = []
        buf = self._buf
        pos = 0
        if not self._header_done:
            if len(buf) < 13:
                return tags
            if buf[:3] != b"FLV":
                raise ValueError("not an FLV stream")
            pos = int.from_bytes(buf[5:9], "big") + 4
            self._header_done = True
        while len(buf) - pos >= 11:
            tag_type = buf[pos] & 0x1F
            size = int.from_bytes(buf[pos + 1 : pos + 4], "big")
            if len(buf) - pos < 11 + size + 4:
                break
            timestamp = int.from_bytes(buf[pos + 4 : pos + 7], "big") | (buf[pos + 7] << 24)
            tags.append(FlvTag(tag_type, timestamp, bytes(buf[pos + 11 : pos + 11 + size])))
            pos += 11 + size + 4
        del buf[:pos]
        return tags
