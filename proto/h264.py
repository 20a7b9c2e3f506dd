"""H.264 (ITU-T H.264 / ISO 14496-10) NAL units, SPS parsing and the avcC record."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from proto.bits import BitReader, BitstreamError, unescape_rbsp

NAL_SLICE = 1
NAL_IDR = 5
NAL_SEI = 6
NAL_SPS = 7
NAL_PPS = 8
NAL_AUD = 9
NAL_FILLER = 12
NAL_STAP_A = 24
NAL_FU_A = 28

# Profiles whose SPS carries chroma format, bit depth and scaling matrices.
_HIGH_PROFILES = frozenset({100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135})

PROFILE_NAMES = {
    66: "Baseline",
    77: "Main",
    88: "Extended",
    100: "High",
    110: "High 10",
    122: "High 4:2:2",
    244: "High 4:4:4 Predictive",
}


def nal_type(nal: bytes) -> int:
    return nal[0] & 0x1F


def is_vcl(kind: int) -> bool:
    """Return True for NAL types that carry coded slice data (1 to 5)."""
    return 1 <= kind <= 5


# NAL unit types an RTP payload of a camera starts with: slices, SEI, parameter
# sets, access unit delimiter, STAP-A and FU-A. Data partitions (2 to 4) are
# part of the Extended profile, which cameras do not use.
_RTP_PAYLOAD_TYPES = frozenset({1, 5, 6, 7, 8, 9, 12, NAL_STAP_A, NAL_FU_A})


def plausible_rtp_payload(buf: bytes | bytearray, start: int, end: int) -> bool:
    """Return True when an RTP payload starts with an H.264 NAL header a camera would send.

    A payload that starts with an Annex B start code is judged by the unit after it.
    """
    if end - start >= 4 and buf[start] == 0 and buf[start + 1] == 0:
        if buf[start + 2] == 1:
            start += 3
        elif buf[start + 2] == 0 and buf[start + 3] == 1:
            start += 4
    if end <= start:
        return False
    header = buf[start]
    kind = header & 0x1F
    if header & 0x80 or kind not in _RTP_PAYLOAD_TYPES:
        return False
    if kind == NAL_FU_A:
        # The FU header's reserved bit is 0 and it names the fragmented unit's type.
        return end - start >= 2 and not buf[start + 1] & 0x20 and (buf[start + 1] & 0x1F) in _RTP_PAYLOAD_TYPES
    return True


def first_slice_of_picture(nal: bytes) -> bool:
    """Return True when a slice NAL starts a picture (first_mb_in_slice is 0).

    first_mb_in_slice is the first ue(v) of the slice header, and ue(v) equals
    0 exactly when its first bit is 1.
    """
    return len(nal) > 1 and bool(nal[1] & 0x80)


@dataclass(frozen=True, slots=True)
class SpsInfo:
    """Fields of a parsed H.264 sequence parameter set."""

    profile_idc: int
    constraint_flags: int
    level_idc: int
    chroma_format_idc: int
    bit_depth_luma: int
    bit_depth_chroma: int
    width: int
    height: int
    coded_width: int
    coded_height: int
    frame_mbs_only: bool
    fps: float | None
    max_num_reorder_frames: int | None

    @property
    def profile_name(self) -> str:
        name = PROFILE_NAMES.get(self.profile_idc, f"profile {self.profile_idc}")
        if self.profile_idc == 66 and self.constraint_flags & 0x40:
            return "Constrained Baseline"
        return name

    @property
    def level(self) -> float:
        # level_idc 9 is level 1b; constraint_set3 on level 11 also means 1b.
        return self.level_idc / 10

    @property
    def codec_string(self) -> str:
        """RFC 6381 codec string, e.g. ``avc1.4D4033``."""
        return f"avc1.{self.profile_idc:02X}{self.constraint_flags:02X}{self.level_idc:02X}"


def _skip_scaling_list(reader: BitReader, size: int) -> None:
    last_scale = 8
    next_scale = 8
    for _ in range(size):
        if next_scale != 0:
            delta = reader.se()
            if not -128 <= delta <= 127:
                raise BitstreamError(f"delta_scale={delta} out of range")
            next_scale = (last_scale + delta + 256) % 256
        last_scale = last_scale if next_scale == 0 else next_scale


def _skip_hrd(reader: BitReader) -> None:
    cpb_count = reader.ue_max(31, "cpb_cnt_minus1") + 1
    reader.skip(8)  # bit_rate_scale, cpb_size_scale
    for _ in range(cpb_count):
        reader.ue()
        reader.ue()
        reader.skip(1)
    reader.skip(20)  # four 5-bit delay and length fields


def _parse_vui(reader: BitReader) -> tuple[float | None, int | None]:
    """Return (fps, max_num_reorder_frames) from the VUI, either may be None."""
    fps: float | None = None
    reorder: int | None = None
    if reader.flag():  # aspect_ratio_info_present_flag
        if reader.u(8) == 255:  # Extended_SAR
            reader.skip(32)
    if reader.flag():  # overscan_info_present_flag
        reader.skip(1)
    if reader.flag():  # video_signal_type_present_flag
        reader.skip(4)
        if reader.flag():
            reader.skip(24)
    if reader.flag():  # chroma_loc_info_present_flag
        reader.ue()
        reader.ue()
    if reader.flag():  # timing_info_present_flag
        num_units_in_tick = reader.u(32)
        time_scale = reader.u(32)
        reader.skip(1)
        if num_units_in_tick:
            # A frame lasts two ticks (one per field) in the VUI's clock.
            fps = time_scale / (2 * num_units_in_tick)
    nal_hrd = reader.flag()
    if nal_hrd:
        _skip_hrd(reader)
    vcl_hrd = reader.flag()
    if vcl_hrd:
        _skip_hrd(reader)
    if nal_hrd or vcl_hrd:
        reader.skip(1)  # low_delay_hrd_flag
    reader.skip(1)  # pic_struct_present_flag
    if reader.flag():  # bitstream_restriction_flag
        reader.skip(1)
        for _ in range(4):
            reader.ue()
        reorder = reader.ue()
        reader.ue()
    return fps, reorder


def parse_sps(nal: bytes) -> SpsInfo:
    """Parse an SPS NAL unit (header byte included).

    Width and height have the frame cropping applied, so a 1920x1088 coded
    picture cropped by 8 lines reports 1920x1080. Raises
    :class:`BitstreamError` on a truncated or invalid SPS. A broken VUI does
    not fail the parse; fps and reorder depth are then None.
    """
    if len(nal) < 4 or nal_type(nal) != NAL_SPS:
        raise BitstreamError("not an H.264 SPS NAL unit")
    reader = BitReader(unescape_rbsp(nal), 1)
    profile_idc = reader.u(8)
    constraint_flags = reader.u(8)
    level_idc = reader.u(8)
    reader.ue_max(31, "seq_parameter_set_id")

    chroma_format_idc = 1
    separate_colour_plane = False
    bit_depth_luma = bit_depth_chroma = 8
    if profile_idc in _HIGH_PROFILES:
        chroma_format_idc = reader.ue_max(3, "chroma_format_idc")
        if chroma_format_idc == 3:
            separate_colour_plane = reader.flag()
        bit_depth_luma = reader.ue_max(6, "bit_depth_luma_minus8") + 8
        bit_depth_chroma = reader.ue_max(6, "bit_depth_chroma_minus8") + 8
        reader.skip(1)  # qpprime_y_zero_transform_bypass_flag
        if reader.flag():  # seq_scaling_matrix_present_flag
            for index in range(8 if chroma_format_idc != 3 else 12):
                if reader.flag():
                    _skip_scaling_list(reader, 16 if index < 6 else 64)

    reader.ue_max(12, "log2_max_frame_num_minus4")
    poc_type = reader.ue_max(2, "pic_order_cnt_type")
    if poc_type == 0:
        reader.ue_max(12, "log2_max_pic_order_cnt_lsb_minus4")
    elif poc_type == 1:
        reader.skip(1)
        reader.se()
        reader.se()
        for _ in range(reader.ue_max(255, "num_ref_frames_in_pic_order_cnt_cycle")):
            reader.se()
    reader.ue()  # max_num_ref_frames
    reader.skip(1)  # gaps_in_frame_num_value_allowed_flag

    width_mbs = reader.ue_max(1023, "pic_width_in_mbs_minus1") + 1
    height_map_units = reader.ue_max(1023, "pic_height_in_map_units_minus1") + 1
    frame_mbs_only = reader.flag()
    if not frame_mbs_only:
        reader.skip(1)  # mb_adaptive_frame_field_flag
    reader.skip(1)  # direct_8x8_inference_flag

    coded_width = width_mbs * 16
    coded_height = (2 - frame_mbs_only) * height_map_units * 16
    width, height = coded_width, coded_height
    if reader.flag():  # frame_cropping_flag
        left, right, top, bottom = reader.ue(), reader.ue(), reader.ue(), reader.ue()
        chroma_array_type = 0 if separate_colour_plane else chroma_format_idc
        if chroma_array_type == 0:
            crop_x, crop_y = 1, 2 - frame_mbs_only
        else:
            sub_width = 1 if chroma_format_idc == 3 else 2
            sub_height = 2 if chroma_format_idc == 1 else 1
            crop_x, crop_y = sub_width, sub_height * (2 - frame_mbs_only)
        width -= crop_x * (left + right)
        height -= crop_y * (top + bottom)
        if width <= 0 or height <= 0:
            raise BitstreamError(f"cropping leaves {width}x{height}")

    fps: float | None = None
    reorder: int | None = None
    try:
        if reader.flag():  # vui_parameters_present_flag
            fps, reorder = _parse_vui(reader)
    except BitstreamError:
        pass

    return SpsInfo(
        profile_idc=profile_idc,
        constraint_flags=constraint_flags,
        level_idc=level_idc,
        chroma_format_idc=chroma_format_idc,
        bit_depth_luma=bit_depth_luma,
        bit_depth_chroma=bit_depth_chroma,
        width=width,
        height=height,
        coded_width=coded_width,
        coded_height=coded_height,
        frame_mbs_only=frame_mbs_only,
        fps=fps,
        max_num_reorder_frames=reorder,
    )


def avc_decoder_config(sps: bytes, pps_list: list[bytes], info: SpsInfo) -> bytes:
    """Build an AVCDecoderConfigurationRecord (the avcC box payload, FLV sequence header)."""
    out = bytearray((1, info.profile_idc, info.constraint_flags, info.level_idc, 0xFF, 0xE1))
    out += struct.pack(">H", len(sps)) + sps
    out.append(len(pps_list))
    for pps in pps_list:
        out += struct.pack(">H", len(pps)) + pps
    if info.profile_idc in _HIGH_PROFILES:
        out.append(0xFC | (info.chroma_format_idc & 3))
        out.append(0xF8 | ((info.bit_depth_luma - 8) & 7))
        out.append(0xF8 | ((info.bit_depth_chroma - 8) & 7))
        out.append(0)  # numOfSequenceParameterSetExt
    return bytes(out)
