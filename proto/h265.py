"""H.265 (ITU-T H.265 / HEVC) NAL units, SPS parsing and the hvcC record."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from proto.bits import BitReader, BitstreamError, unescape_rbsp

NAL_IDR_W_RADL = 19
NAL_IDR_N_LP = 20
NAL_CRA = 21
NAL_VPS = 32
NAL_SPS = 33
NAL_PPS = 34
NAL_AUD = 35
NAL_SEI_PREFIX = 39
NAL_SEI_SUFFIX = 40
NAL_AP = 48
NAL_FU = 49

PROFILE_NAMES = {1: "Main", 2: "Main 10", 3: "Main Still Picture", 4: "Range Extensions"}


def nal_type(nal: bytes) -> int:
    return (nal[0] >> 1) & 0x3F


def is_vcl(kind: int) -> bool:
    return kind < 32


def is_keyframe(kind: int) -> bool:
    """Return True for IRAP pictures (BLA, IDR, CRA), where decoding can start."""
    return 16 <= kind <= 23


def plausible_rtp_payload(buf: bytes | bytearray, start: int, end: int) -> bool:
    """Return True when an RTP payload starts with an H.265 NAL header a camera would send.

    The two-byte header must have layer 0 and a temporal id plus 1 of at
    least 1, and a type that is a slice, a parameter set, an AUD, an SEI,
    an aggregation packet or a fragment. A payload that starts with an
    Annex B start code is judged by the unit after it.
    """
    if end - start >= 4 and buf[start] == 0 and buf[start + 1] == 0:
        if buf[start + 2] == 1:
            start += 3
        elif buf[start + 2] == 0 and buf[start + 3] == 1:
            start += 4
    if end - start < 2:
        return False
    first, second = buf[start], buf[start + 1]
    if first & 0x80 or first & 0x01 or second >> 3 or not second & 0x07:
        return False
    kind = (first >> 1) & 0x3F
    if kind == NAL_FU:
        # The FU header names the fragmented unit's type, which must be one of the others.
        return end - start >= 3 and _plausible_type(buf[start + 2] & 0x3F)
    return _plausible_type(kind) or kind == NAL_AP


def _plausible_type(kind: int) -> bool:
    return kind <= 9 or 16 <= kind <= 21 or 32 <= kind <= 40


def first_slice_of_picture(nal: bytes) -> bool:
    """Return True when a slice segment starts a picture (first_slice_segment_in_pic_flag)."""
    return len(nal) > 2 and bool(nal[2] & 0x80)


@dataclass(frozen=True, slots=True)
class ProfileTierLevel:
    profile_space: int
    tier_flag: int
    profile_idc: int
    compatibility_flags: int
    constraint_flags: int  # 48 bits: progressive, interlaced, non-packed, frame-only and 44 more
    level_idc: int


@dataclass(frozen=True, slots=True)
class SpsInfo:
    """Fields of a parsed H.265 sequence parameter set."""

    ptl: ProfileTierLevel
    max_sub_layers: int
    temporal_id_nesting: bool
    chroma_format_idc: int
    bit_depth_luma: int
    bit_depth_chroma: int
    width: int
    height: int
    coded_width: int
    coded_height: int
    fps: float | None
    max_num_reorder_pics: int
    min_spatial_segmentation: int

    @property
    def profile_idc(self) -> int:
        return self.ptl.profile_idc

    @property
    def profile_name(self) -> str:
        return PROFILE_NAMES.get(self.ptl.profile_idc, f"profile {self.ptl.profile_idc}")

    @property
    def level(self) -> float:
        # general_level_idc is 30 times the level number.
        return self.ptl.level_idc / 30

    @property
    def codec_string(self) -> str:
        """RFC 6381 / ISO 14496-15 codec string, e.g. ``hvc1.1.6.L150.B0``."""
        ptl = self.ptl
        space = "" if ptl.profile_space == 0 else "ABC"[ptl.profile_space - 1]
        # The compatibility flags are written in reverse bit order.
        compat = int(f"{ptl.compatibility_flags:032b}"[::-1], 2)
        tier = "H" if ptl.tier_flag else "L"
        constraint_bytes = ptl.constraint_flags.to_bytes(6, "big").rstrip(b"\x00")
        parts = [f"hvc1.{space}{ptl.profile_idc}", f"{compat:X}", f"{tier}{ptl.level_idc}"]
        parts += [f"{byte:X}" for byte in constraint_bytes] or ["B0"]
        return ".".join(parts)


def _parse_profile_tier_level(reader: BitReader, max_sub_layers_minus1: int) -> ProfileTierLevel:
    profile_space = reader.u(2)
    tier_flag = reader.u(1)
    profile_idc = reader.u(5)
    compatibility_flags = reader.u(32)
    constraint_flags = reader.u(48)
    level_idc = reader.u(8)
    profile_present = []
    level_present = []
    for _ in range(max_sub_layers_minus1):
        profile_present.append(reader.flag())
        level_present.append(reader.flag())
    if max_sub_layers_minus1 > 0:
        reader.skip(2 * (8 - max_sub_layers_minus1))
    for index in range(max_sub_layers_minus1):
        if profile_present[index]:
            reader.skip(88)
        if level_present[index]:
            reader.skip(8)
    return ProfileTierLevel(
        profile_space, tier_flag, profile_idc, compatibility_flags, constraint_flags, level_idc
    )


def _skip_scaling_list_data(reader: BitReader) -> None:
    for size_id in range(4):
        for _matrix_id in range(0, 6, 3 if size_id == 3 else 1):
            if not reader.flag():  # scaling_list_pred_mode_flag
                reader.ue()  # scaling_list_pred_matrix_id_delta
                continue
            coef_count = min(64, 1 << (4 + (size_id << 1)))
            if size_id > 1:
                reader.se()  # scaling_list_dc_coef_minus8
            for _ in range(coef_count):
                reader.se()


def _parse_short_term_rps(reader: BitReader, index: int, delta_poc_counts: list[int]) -> int:
    """Parse st_ref_pic_set(index) in an SPS and return its NumDeltaPocs."""
    inter_prediction = index != 0 and reader.flag()
    if inter_prediction:
        # In an SPS the reference set is always the previous one
        # (delta_idx_minus1 is only sent in slice headers).
        reader.skip(1)  # delta_rps_sign
        reader.ue_max(32767, "abs_delta_rps_minus1")
        count = 0
        for _ in range(delta_poc_counts[index - 1] + 1):
            used_by_curr_pic = reader.flag()
            use_delta = True if used_by_curr_pic else reader.flag()
            if used_by_curr_pic or use_delta:
                count += 1
        return count
    negative = reader.ue_max(16, "num_negative_pics")
    positive = reader.ue_max(16, "num_positive_pics")
    for _ in range(negative + positive):
        reader.ue()  # delta_poc_sX_minus1
        reader.skip(1)  # used_by_curr_pic_sX_flag
    return negative + positive


def _skip_hrd(reader: BitReader, common_info: bool, max_sub_layers_minus1: int) -> None:
    nal_hrd = vcl_hrd = sub_pic_hrd = False
    if common_info:
        nal_hrd = reader.flag()
        vcl_hrd = reader.flag()
        if nal_hrd or vcl_hrd:
            sub_pic_hrd = reader.flag()
            if sub_pic_hrd:
                reader.skip(8 + 5 + 1 + 5)
            reader.skip(4 + 4)
            if sub_pic_hrd:
                reader.skip(4)
            reader.skip(5 + 5 + 5)
    for _ in range(max_sub_layers_minus1 + 1):
        fixed_pic_rate_general = reader.flag()
        fixed_pic_rate_within_cvs = True if fixed_pic_rate_general else reader.flag()
        low_delay = False
        if fixed_pic_rate_within_cvs:
            reader.ue()  # elemental_duration_in_tc_minus1
        else:
            low_delay = reader.flag()
        cpb_count = 1
        if not low_delay:
            cpb_count = reader.ue_max(31, "cpb_cnt_minus1") + 1
        for present in (nal_hrd, vcl_hrd):
            if not present:
                continue
            for _ in range(cpb_count):
                reader.ue()
                reader.ue()
                if sub_pic_hrd:
                    reader.ue()
                    reader.ue()
                reader.skip(1)


def _parse_vui(reader: BitReader, max_sub_layers_minus1: int) -> tuple[float | None, int]:
    """Return (fps, min_spatial_segmentation_idc) from an SPS VUI."""
    fps: float | None = None
    min_spatial_segmentation = 0
    if reader.flag():  # aspect_ratio_info_present_flag
        if reader.u(8) == 255:
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
    reader.skip(3)  # neutral_chroma, field_seq, frame_field_info_present
    if reader.flag():  # default_display_window_flag
        for _ in range(4):
            reader.ue()
    if reader.flag():  # vui_timing_info_present_flag
        num_units_in_tick = reader.u(32)
        time_scale = reader.u(32)
        if num_units_in_tick:
            fps = time_scale / num_units_in_tick
        if reader.flag():  # vui_poc_proportional_to_timing_flag
            reader.ue()
        if reader.flag():  # vui_hrd_parameters_present_flag
            _skip_hrd(reader, True, max_sub_layers_minus1)
    if reader.flag():  # bitstream_restriction_flag
        reader.skip(3)
        min_spatial_segmentation = reader.ue_max(4095, "min_spatial_segmentation_idc")
    return fps, min_spatial_segmentation


def parse_sps(nal: bytes) -> SpsInfo:
    """Parse an SPS NAL unit (2-byte header included).

    Width and height have the conformance window applied. Raises
    :class:`BitstreamError` on a truncated or invalid SPS; a broken tail
    after the picture size (reference picture sets, VUI) leaves fps unknown
    instead of failing.
    """
    if len(nal) < 4 or nal_type(nal) != NAL_SPS:
        raise BitstreamError("not an H.265 SPS NAL unit")
    reader = BitReader(unescape_rbsp(nal), 2)
    reader.skip(4)  # sps_video_parameter_set_id
    max_sub_layers_minus1 = reader.u(3)
    if max_sub_layers_minus1 > 6:
        raise BitstreamError(f"sps_max_sub_layers_minus1={max_sub_layers_minus1} exceeds 6")
    temporal_id_nesting = reader.flag()
    ptl = _parse_profile_tier_level(reader, max_sub_layers_minus1)
    reader.ue_max(15, "sps_seq_parameter_set_id")

    chroma_format_idc = reader.ue_max(3, "chroma_format_idc")
    separate_colour_plane = chroma_format_idc == 3 and reader.flag()
    coded_width = reader.ue_max(16888, "pic_width_in_luma_samples")
    coded_height = reader.ue_max(16888, "pic_height_in_luma_samples")
    if coded_width == 0 or coded_height == 0:
        raise BitstreamError(f"picture size {coded_width}x{coded_height}")
    width, height = coded_width, coded_height
    if reader.flag():  # conformance_window_flag
        left, right, top, bottom = reader.ue(), reader.ue(), reader.ue(), reader.ue()
        chroma_array_type = 0 if separate_colour_plane else chroma_format_idc
        sub_width = 2 if chroma_array_type in (1, 2) else 1
        sub_height = 2 if chroma_array_type == 1 else 1
        width -= sub_width * (left + right)
        height -= sub_height * (top + bottom)
        if width <= 0 or height <= 0:
            raise BitstreamError(f"conformance window leaves {width}x{height}")
    bit_depth_luma = reader.ue_max(8, "bit_depth_luma_minus8") + 8
    bit_depth_chroma = reader.ue_max(8, "bit_depth_chroma_minus8") + 8

    fps: float | None = None
    max_num_reorder = 0
    min_spatial_segmentation = 0
    try:
        log2_max_poc_lsb = reader.ue_max(12, "log2_max_pic_order_cnt_lsb_minus4") + 4
        ordering_info_present = reader.flag()
        first = 0 if ordering_info_present else max_sub_layers_minus1
        for _ in range(first, max_sub_layers_minus1 + 1):
            reader.ue()  # sps_max_dec_pic_buffering_minus1
            max_num_reorder = reader.ue()
            reader.ue()  # sps_max_latency_increase_plus1
        for _ in range(6):  # coding block, transform block and hierarchy sizes
            reader.ue()
        if reader.flag() and reader.flag():  # scaling_list_enabled, sps_scaling_list_data_present
            _skip_scaling_list_data(reader)
        reader.skip(2)  # amp_enabled_flag, sample_adaptive_offset_enabled_flag
        if reader.flag():  # pcm_enabled_flag
            reader.skip(8)
            reader.ue()
            reader.ue()
            reader.skip(1)
        rps_count = reader.ue_max(64, "num_short_term_ref_pic_sets")
        delta_poc_counts: list[int] = []
        for index in range(rps_count):
            delta_poc_counts.append(_parse_short_term_rps(reader, index, delta_poc_counts))
        if reader.flag():  # long_term_ref_pics_present_flag
            for _ in range(reader.ue_max(32, "num_long_term_ref_pics_sps")):
                reader.skip(log2_max_poc_lsb + 1)
        reader.skip(2)  # sps_temporal_mvp_enabled_flag, strong_intra_smoothing_enabled_flag
        if reader.flag():  # vui_parameters_present_flag
            fps, min_spatial_segmentation = _parse_vui(reader, max_sub_layers_minus1)
    except BitstreamError:
        pass

    return SpsInfo(
        ptl=ptl,
        max_sub_layers=max_sub_layers_minus1 + 1,
        temporal_id_nesting=temporal_id_nesting,
        chroma_format_idc=chroma_format_idc,
        bit_depth_luma=bit_depth_luma,
        bit_depth_chroma=bit_depth_chroma,
        width=width,
        height=height,
        coded_width=coded_width,
        coded_height=coded_height,
        fps=fps,
        max_num_reorder_pics=max_num_reorder,
        min_spatial_segmentation=min_spatial_segmentation,
    )


def hevc_decoder_config(vps: bytes, sps: bytes, pps: bytes, info: SpsInfo) -> bytes:
    """Build an HEVCDecoderConfigurationRecord (hvcC payload, enhanced FLV sequence start)."""
    ptl = info.ptl
    out = bytearray()
    out.append(1)  # configurationVersion
    out.append((ptl.profile_space << 6) | (ptl.tier_flag << 5) | ptl.profile_idc)
    out += struct.pack(">I", ptl.compatibility_flags)
    out += ptl.constraint_flags.to_bytes(6, "big")
    out.append(ptl.level_idc)
    out += struct.pack(">H", 0xF000 | info.min_spatial_segmentation)
    out.append(0xFC)  # parallelismType unknown
    out.append(0xFC | info.chroma_format_idc)
    out.append(0xF8 | (info.bit_depth_luma - 8))
    out.append(0xF8 | (info.bit_depth_chroma - 8))
    out += struct.pack(">H", 0)  # avgFrameRate unknown
    # constantFrameRate 0, numTemporalLayers, temporalIdNested, lengthSizeMinusOne 3
    out.append((info.max_sub_layers << 3) | (int(info.temporal_id_nesting) << 2) | 3)
    arrays = ((NAL_VPS, vps), (NAL_SPS, sps), (NAL_PPS, pps))
    out.append(len(arrays))
    for kind, nal in arrays:
        out.append(0x80 | kind)  # array_completeness 1
        out += struct.pack(">HH", 1, len(nal))
        out += nal
    return bytes(out)


@dataclass(frozen=True, slots=True)
class VpsInfo:
    """Fields of a parsed H.265 video parameter set."""

    vps_id: int
    max_layers: int
    max_sub_layers: int
    temporal_id_nesting: bool
    ptl: ProfileTierLevel
    max_num_reorder_pics: int
    fps: float | None  # from vps_timing_info, None when absent or unreadable


def parse_vps(nal: bytes) -> VpsInfo:
    """Parse a VPS NAL unit (2-byte header included).

    Raises :class:`BitstreamError` when the fields up to the profile, tier
    and level are truncated or invalid; a broken tail (layer sets, timing,
    HRD) leaves fps unknown instead of failing.
    """
    if len(nal) < 4 or nal_type(nal) != NAL_VPS:
        raise BitstreamError("not an H.265 VPS NAL unit")
    reader = BitReader(unescape_rbsp(nal), 2)
    vps_id = reader.u(4)
    reader.skip(2)  # vps_base_layer_internal_flag, vps_base_layer_available_flag
    max_layers_minus1 = reader.u(6)
    max_sub_layers_minus1 = reader.u(3)
    if max_sub_layers_minus1 > 6:
        raise BitstreamError(f"vps_max_sub_layers_minus1={max_sub_layers_minus1} exceeds 6")
    temporal_id_nesting = reader.flag()
    if reader.u(16) != 0xFFFF:
        raise BitstreamError("vps_reserved_0xffff_16bits is not 0xffff")
    ptl = _parse_profile_tier_level(reader, max_sub_layers_minus1)

    max_num_reorder = 0
    fps: float | None = None
    try:
        ordering_info_present = reader.flag()
        first = 0 if ordering_info_present else max_sub_layers_minus1
        for _ in range(first, max_sub_layers_minus1 + 1):
            reader.ue()  # vps_max_dec_pic_buffering_minus1
            max_num_reorder = reader.ue()
            reader.ue()  # vps_max_latency_increase_plus1
        max_layer_id = reader.u(6)
        layer_sets = reader.ue_max(1023, "vps_num_layer_sets_minus1")
        reader.skip(layer_sets * (max_layer_id + 1))  # layer_id_included_flag
        if reader.flag():  # vps_timing_info_present_flag
            num_units_in_tick = reader.u(32)
            time_scale = reader.u(32)
            if num_units_in_tick:
                fps = time_scale / num_units_in_tick
    except BitstreamError:
        pass

    return VpsInfo(
        vps_id=vps_id,
        max_layers=max_layers_minus1 + 1,
        max_sub_layers=max_sub_layers_minus1 + 1,
        temporal_id_nesting=temporal_id_nesting,
        ptl=ptl,
        max_num_reorder_pics=max_num_reorder,
        fps=fps,
    )
