"""Camera facts from real cameras' parameter sets, and fuzzing of the SPS/VPS parsers.

The parameter sets come from the quirk corpus in ``tests/data/cameras``,
one file per camera model with its source. The expected sizes are the
ones the corpus README lists per case.
"""

from __future__ import annotations

import base64
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proto import h264, h265
from proto.bits import BitstreamError
from relay.cameras import CameraConfig, Owner
from relay.compliance import evaluate
from relay.ingest import decode_parameter_set
from relay.media import VideoInfo, h264_video_info, h265_video_info
from relay.prober import ProbeRecord
from relay.probe import declared_fps, static_facts
from relay.settings import Settings
from tests.support import REPO

CORPUS = REPO / "tests" / "data" / "cameras"


def corpus_parameter_sets(case: str) -> dict[str, list[bytes]]:
    """Return the distinct VPS, SPS and PPS NAL units of the sprop attributes in one corpus case."""
    path = next(CORPUS.glob(f"{case}-*.txt"))
    text = path.read_text(encoding="utf-8", errors="replace")
    found: dict[str, list[bytes]] = {"vps": [], "sps": [], "pps": []}

    def add(kind: str, nal: bytes) -> None:
        if nal not in found[kind]:
            found[kind].append(nal)

    for match in re.finditer(r"sprop-parameter-sets=([^;\s]*)", text):
        for entry in match.group(1).split(","):
            for nal in decode_parameter_set(entry):
                kind = {h264.NAL_SPS: "sps", h264.NAL_PPS: "pps"}.get(h264.nal_type(nal))
                if kind:
                    add(kind, nal)
    for match in re.finditer(r"sprop-(vps|sps|pps)=([^;\s]*)", text):
        for nal in decode_parameter_set(match.group(2)):
            add(match.group(1), nal)
    return found


# case: (codec, width, height, coded width, coded height, profile)
H264_CASES = {
    "q01": ("h264", 1920, 1080, 1920, 1088, "Main"),  # cropped 1080p (Hikvision)
    "q07": ("h264", 3200, 1800, 3200, 1808, "High"),  # cropped 6 MP (Hikvision)
    "q14": ("h264", 2560, 1440, 2560, 1440, "High"),  # Reolink 1440p
    "q29": ("h264", 2592, 1520, 2592, 1520, "Main"),  # Wisenet NVR
    "q56": ("h264", 1920, 1080, 1920, 1088, "High"),  # Sony
    "q59": ("h264", 3840, 2160, 3840, 2160, "High"),  # Verint 4K, 150-byte PPS
    "q73": ("h264", 640, 360, 640, 368, "Main"),  # Wyze sub stream
}
H265_CASES = {
    "q11": ("h265", 704, 480, 704, 480, "Main"),  # Dahua, sprop order sps/pps/vps
    "q17": ("h265", 3840, 2160, 3840, 2160, "Main"),  # Reolink 4K, scaling lists
    "q52": ("h265", 2304, 1296, 2304, 1296, "Main"),  # Xiaomi, inter RPS prediction
}


def video_info_of(case: str) -> VideoInfo:
    sets = corpus_parameter_sets(case)
    if sets["vps"]:
        return h265_video_info(sets["vps"][0], sets["sps"][0], sets["pps"][0])
    return h264_video_info(sets["sps"][0], sets["pps"])


@pytest.mark.parametrize("case", sorted({**H264_CASES, **H265_CASES}))
def test_corpus_sizes_and_profiles(case):
    expected = {**H264_CASES, **H265_CASES}[case]

    facts = static_facts(video_info_of(case), None)

    assert (facts.codec, facts.width, facts.height) == expected[:3]
    assert (facts.coded_width, facts.coded_height) == expected[3:5]
    assert facts.profile == expected[5]
    assert facts.pixels == expected[1] * expected[2]


def test_cropped_1080p_reports_1080_lines():
    info = h264.parse_sps(corpus_parameter_sets("q01")["sps"][0])

    assert info.coded_height == 1088
    assert info.height == 1080
    assert info.level == 4.1


def test_high_profile_4k_level_and_fps():
    info = h264.parse_sps(corpus_parameter_sets("q59")["sps"][0])

    assert info.profile_name == "High"
    assert info.level == 5.1
    assert info.fps == pytest.approx(9.99, abs=0.01)


def test_h265_vps_profile_level_and_timing():
    vps = h265.parse_vps(corpus_parameter_sets("q11")["vps"][0])

    assert vps.ptl.profile_idc == 1
    assert vps.ptl.level_idc == 90
    assert vps.max_sub_layers == 1
    assert vps.fps == pytest.approx(12.0)


def test_h265_4k_vps_without_timing():
    vps = h265.parse_vps(corpus_parameter_sets("q17")["vps"][0])

    assert vps.ptl.level_idc == 150
    assert vps.fps is None


def test_declared_fps_falls_back_to_vps():
    sets = corpus_parameter_sets("q11")
    info = video_info_of("q11")
    without_vui = VideoInfo(codec="h265", width=info.width, height=info.height, vps=sets["vps"][0])

    assert declared_fps(without_vui) == pytest.approx(12.0)


@pytest.mark.parametrize(
    ("case", "min_pixels", "expected"),
    [
        ("q14", 3686400, "compliant"),  # 2560x1440, sold as 4 MP
        ("q14", 4000000, "below_minimum"),
        ("q29", 3686400, "compliant"),  # 2592x1520 = 3,939,840
        ("q29", 4000000, "below_minimum"),
        ("q07", 4000000, "compliant"),  # 3200x1800
        ("q01", 3686400, "below_minimum"),  # cropped 1080p
        ("q17", 3686400, "compliant"),  # H.265 4K
    ],
)
def test_corpus_camera_against_rule(case, min_pixels, expected):
    facts = static_facts(video_info_of(case), None)
    record = ProbeRecord(facts=facts, probed_at="2026-01-01T00:00:00.000Z")
    config = CameraConfig(
        id=case, name=case, url="rtsp://192.0.2.1/stream", owner=Owner(category="swasta", name="Hotel")
    )

    verdict = evaluate(config, record, Settings(min_pixels=min_pixels))

    assert verdict.status == expected


def test_vps_rejects_other_nal_units():
    sps = corpus_parameter_sets("q11")["sps"][0]

    with pytest.raises(BitstreamError):
        h265.parse_vps(sps)


def test_vps_rejects_bad_reserved_bits():
    vps = bytearray(corpus_parameter_sets("q11")["vps"][0])
    vps[4] = 0x00  # first byte of vps_reserved_0xffff_16bits

    with pytest.raises(BitstreamError):
        h265.parse_vps(bytes(vps))


# --- fuzzing -----------------------------------------------------------------------------
# Any byte string gives a result or a BitstreamError. The deadline flags a slow parse;
# a parse that never returns is ended by the per-test timeout.

SEED_SPS_264 = [base64.b64decode(text) for text in ("Z00AKZpkA8ARPyzUBAQFAAADA+gAAOpgBA==", "Z2QAM6zoAoALWQ==")]
SEED_SPS_265 = [base64.b64decode("QgEBAWAAAAMAsAAAAwAAAwBaoAWCAeFja5JFL83BQYFBAAADAAEAAAMADKE=")]
SEED_VPS = [base64.b64decode("QAEMAf//AWAAAAMAsAAAAwAAAwBarAwAAAMABAAAAwAyqA==")]
FUZZ = settings(max_examples=1500, deadline=2000, suppress_health_check=[HealthCheck.too_slow])


def mutated(seeds: list[bytes], header_length: int) -> st.SearchStrategy[bytes]:
    """Real parameter sets with a few bytes replaced and the tail cut at a random point."""

    def apply(args: tuple[bytes, list[tuple[int, int]], int]) -> bytes:
        data, changes, length = args
        out = bytearray(data)
        for position, value in changes:
            if header_length <= position < len(out):
                out[position] = value
        return bytes(out[:length])

    changes = st.lists(st.tuples(st.integers(0, 80), st.integers(0, 255)), max_size=6)
    return st.tuples(st.sampled_from(seeds), changes, st.integers(0, 120)).map(apply)


def with_header(header: bytes) -> st.SearchStrategy[bytes]:
    return st.binary(max_size=400).map(lambda body: header + body)


def check_h264(data: bytes) -> None:
    try:
        info = h264.parse_sps(data)
    except BitstreamError:
        return
    assert 0 < info.width <= info.coded_width
    assert 0 < info.height <= info.coded_height
    h264_video_info(data, [b"\x68\xce\x3c\x80"])


def check_h265_sps(data: bytes) -> None:
    try:
        info = h265.parse_sps(data)
    except BitstreamError:
        return
    assert 0 < info.width <= info.coded_width
    assert 0 < info.height <= info.coded_height
    h265_video_info(SEED_VPS[0], data, b"\x44\x01\xc0\xf2\xc6\x8d\x03\xb3\x40")


def check_vps(data: bytes) -> None:
    try:
        info = h265.parse_vps(data)
    except BitstreamError:
        return
    assert 1 <= info.max_sub_layers <= 7
    assert info.fps is None or info.fps >= 0


@FUZZ
@given(st.one_of(st.binary(max_size=64), with_header(b"\x67"), mutated(SEED_SPS_264, 1)))
def test_fuzz_h264_sps(data):
    check_h264(data)


@FUZZ
@given(st.one_of(st.binary(max_size=64), with_header(b"\x42\x01"), mutated(SEED_SPS_265, 2)))
def test_fuzz_h265_sps(data):
    check_h265_sps(data)


@FUZZ
@given(st.one_of(st.binary(max_size=64), with_header(b"\x40\x01"), mutated(SEED_VPS, 2)))
def test_fuzz_h265_vps(data):
    check_vps(data)

