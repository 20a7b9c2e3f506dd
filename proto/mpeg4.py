"""MPEG-4 Part 2 Visual (ISO 14496-2) headers: enough to report a camera's profile and size.

Pantau does not relay MPEG-4 Part 2 video, but reports what such a camera
sends. The sizes are in the video object layer (VOL) header, which cameras
put in the SDP's ``config=`` parameter (RFC 6416) and again in-band before
keyframes.
"""

from __future__ import annotations

from dataclasses import dataclass

from proto.bits import BitReader, BitstreamError

VOS_START = 0xB0  # visual_object_sequence_start_code
VOL_START_FIRST = 0x20  # video_object_layer_start_code is 0x20 to 0x2F
VOL_START_LAST = 0x2F
VOP_START = 0xB6

_RECTANGULAR = 0
_GRAYSCALE = 3


@dataclass(frozen=True, slots=True)
class VolInfo:
    """Fields of a video object layer header."""

    width: int
    height: int
    profile_level: int | None  # profile_and_level_indication of the VOS header, when present
    time_increment_resolution: int


def _start_codes(data: bytes) -> list[tuple[int, int]]:
    """Return (start code value, offset after the code) for every ``00 00 01 xx`` in ``data``."""
    found = []
    pos = data.find(b"\x00\x00\x01")
    while 0 <= pos < len(data) - 3:
        found.append((data[pos + 3], pos + 4))
        pos = data.find(b"\x00\x00\x01", pos + 3)
    return found


def parse_vol(data: bytes) -> VolInfo:
    """Find and parse the first VOL header in a configuration or an elementary stream.

    Raises :class:`BitstreamError` when there is no VOL header, the shape is
    not rectangular, or the header is truncated.
    """
    profile_level: int | None = None
    for code, offset in _start_codes(data):
        if code == VOS_START and offset < len(data):
            profile_level = data[offset]
        elif VOL_START_FIRST <= code <= VOL_START_LAST:
            return _parse_vol_header(data[offset:], profile_level)
    raise BitstreamError("no video object layer header")


def _parse_vol_header(data: bytes, profile_level: int | None) -> VolInfo:
    reader = BitReader(data)
    reader.skip(1)  # random_accessible_vol
    reader.skip(8)  # video_object_type_indication
    verid = 1
    if reader.flag():  # is_object_layer_identifier
        verid = reader.u(4)
        reader.skip(3)  # video_object_layer_priority
    if reader.u(4) == 15:  # aspect_ratio_info: extended PAR
        reader.skip(16)
    if reader.flag():  # vol_control_parameters
        reader.skip(3)  # chroma_format, low_delay
        if reader.flag():  # vbv_parameters: bit rate, buffer size and occupancy with markers
            reader.skip(79)

    shape = reader.u(2)
    if shape == _GRAYSCALE and verid != 1:
        reader.skip(4)  # video_object_layer_shape_extension
    reader.skip(1)  # marker_bit
    resolution = reader.u(16)
    if resolution == 0:
        raise BitstreamError("vop_time_increment_resolution is 0")
    reader.skip(1)  # marker_bit
    if reader.flag():  # fixed_vop_rate
        reader.skip(max(1, (resolution - 1).bit_length()))

    if shape != _RECTANGULAR:
        raise BitstreamError(f"video_object_layer_shape {shape} is not rectangular")
    reader.skip(1)
    width = reader.u(13)
    reader.skip(1)
    height = reader.u(13)
    if width == 0 or height == 0:
        raise BitstreamError(f"picture size {width}x{height}")
    return VolInfo(width, height, profile_level, resolution)
