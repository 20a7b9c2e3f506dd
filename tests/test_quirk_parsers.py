"""The camera quirk corpus against Pantau's parsers: parameter sets, RTSP headers, SDP, RTP payloads.

Expected resolutions come from the corpus README's summary table, so a
parser that disagrees with the corpus fails here. Each fault kind also
has variants the corpus does not contain (other spellings, whitespace,
missing pieces) to show the rule covers the kind, not the one sample.
"""

from __future__ import annotations

import base64
import re
import struct

import pytest

from loadtest.cases import block_bytes, read_case, scenarios_for
from proto import h264, h265, rtsp
from proto.aac import parse_audio_specific_config
from proto.annexb import split_annexb
from proto.bits import BitstreamError
from proto.mpeg4 import parse_vol
from proto.rtp import parse_sender_reports
from proto.sdp import parse_sdp
from relay.depacketize import AacDepacketizer, H264Depacketizer, H265Depacketizer
from relay.ingest import choose_tracks
from relay.parameter_sets import ParameterSets, decode_parameter_set
from relay.timeline import CameraTimeline
from relay.tracks import AudioTrack
from tests.quirk_support import CORPUS, corpus_files


def _case(case_id: str):
    return read_case(next(CORPUS.glob(f"{case_id}-*.txt")))


def _table_resolutions() -> dict[str, set[str]]:
    """Read the README summary table: case id -> {"H.264 1920x1080", ...}."""
    table: dict[str, set[str]] = {}
    for line in (CORPUS / "README.md").read_text(encoding="utf-8").splitlines():
        match = re.match(r"^\| (q\d+) \|", line)
        if match:
            cell = line.strip().strip("|").split("|")[-1].strip()
            # Drop remarks such as "(V380 Pro)" after a size.
            sizes = {re.sub(r"\s*\(.*\)$", "", item.strip()) for item in cell.split(",")}
            table[match.group(1)] = {size for size in sizes if size}
    return table


TABLE = _table_resolutions()


def _sps_resolution(nal: bytes) -> str | None:
    """Return "H.264 WxH" or "H.265 WxH" for an SPS NAL unit, None for anything else."""
    if len(nal) > 3 and (nal[0] >> 1) & 0x3F == h265.NAL_SPS and nal[1] == 0x01:
        info = h265.parse_sps(nal)
        return f"H.265 {info.width}x{info.height}"
    if len(nal) > 3 and not nal[0] & 0x80 and nal[0] & 0x1F == h264.NAL_SPS:
        info = h264.parse_sps(nal)
        return f"H.264 {info.width}x{info.height}"
    return None


def _published_parameter_sets(case_id: str) -> list[bytes]:
    """Every NAL unit a case publishes: sprop values, base64 blocks and hex blocks."""
    case = _case(case_id)
    nals: list[bytes] = []
    for block in case.blocks:
        text = block.text
        for match in re.finditer(r"(?i)sprop-(?:parameter-sets|vps|sps|pps)=([^;\s]+)", text):
            for entry in match.group(1).split(","):
                nals += decode_parameter_set(entry)
        stripped = text.strip()
        if re.fullmatch(r"[A-Za-z0-9+/]+=*", stripped):
            nals += decode_parameter_set(stripped)
        if (
            re.search(r"(?m)^(?:[0-9a-fA-F]{4}:|(?:SPS |PPS )?[0-9a-fA-F]{2} [0-9a-fA-F]{2} )", text)
            or "hex" in block.label
        ):
            nals += split_annexb(block_bytes(block))
            for line in text.splitlines():
                nals += split_annexb(block_bytes(type(block)(block.label, line)))
    return [nal for nal in nals if nal]


CASES_WITH_PARAMETER_SETS = sorted(case for case, sizes in TABLE.items() if sizes)


def test_table_lists_every_case():
    assert sorted(TABLE) == sorted(path.name.split("-")[0] for path in corpus_files())


@pytest.mark.parametrize("case_id", CASES_WITH_PARAMETER_SETS)
def test_sps_resolution_matches_table(case_id):
    expected = {size for size in TABLE[case_id] if "undecodable" not in size}
    found = set()
    for nal in _published_parameter_sets(case_id):
        try:
            resolution = _sps_resolution(nal)
        except BitstreamError:
            continue  # a shifted or broken SPS (q35) decodes to nothing, which the table states
        if resolution:
            found.add(resolution)
    assert found == expected


def test_shifted_sprop_is_ignored():
    """q35: the broken firmware's sprop starts with e9, which is no NAL header at all."""
    fmtp = dict(item.split("=", 1) for item in _case("q35").blocks[1].text.strip().split(";"))
    params = ParameterSets("h264")
    params.load_sdp(fmtp)
    assert params.sps is None
    assert params.pps == {}
    assert params.sdp_status.startswith("ignored")


@pytest.mark.parametrize(
    ("case_id", "fmtp", "expected_status"),
    [
        ("q04", "sprop-parameter-sets=Z0IAH5WoPASaEAAAcIAAFfkIQA==,", "incomplete"),
        ("q20", "sprop-parameter-sets=(null),(null)", "ignored"),
        ("q38", "sprop-parameter-sets=AAAAAWdNAB6NjUBaHtCAAAOEAACvyAI=,AAAAAWjuOIA=", "ok"),
        (
            "q56",
            "sprop-parameter-sets=Z2QAKKwa0A8ARPy4CIAAAAMAgAAADLWgAtwAHJ173CPFCKg=,KO4ESSJAAAAAAAAAAA==",
            "ok",
        ),
        # Variants: quoted entries, a start code after the PPS, an SEI entry, URL-safe base64.
        ("v14", 'sprop-parameter-sets="Z0LAH9kAwBJoQAAAAwBAAAAGA8YMkg==","aMuMsgAAAAE=",BgX/', "ok"),
        ("v15", "sprop-vps=QAEMAf__AWAAAAMAkAAAAwAAAwCWkoCQ;sprop-pps=", "incomplete"),
        ("null-spelling", "sprop-parameter-sets=NULL, (NULL)", "ignored"),
    ],
)
def test_sdp_parameter_set_status(case_id, fmtp, expected_status):
    params_fmtp = {}
    for item in fmtp.split(";"):
        key, _, value = item.partition("=")
        params_fmtp[key.strip().lower()] = value.strip()
    params = ParameterSets("h265" if "sprop-vps" in params_fmtp else "h264")
    params.load_sdp(params_fmtp)
    assert params.sdp_status.split(":")[0] == expected_status


def test_pps_trailing_zeros_stripped():
    """q56: the PPS is stored without its seven trailing zero bytes."""
    nals = decode_parameter_set("KO4ESSJAAAAAAAAAAA==")
    assert nals == [bytes.fromhex("28ee04492240")]


def test_unpadded_and_url_safe_base64():
    assert decode_parameter_set("RAHA8oSJAzJA") == [base64.b64decode("RAHA8oSJAzJA")]  # q52
    standard = base64.b64decode("QAEMAf//AWAAAAMAkAAAAwAAAwCWkoCQ")
    assert decode_parameter_set("QAEMAf__AWAAAAMAkAAAAwAAAwCWkoCQ") == [standard]


def test_in_band_sps_with_trailing_byte():
    """q16: the in-band SPS has a stray byte after its trailing bits; it still parses."""
    case = _case("q16")
    in_band = block_bytes(case.blocks[1])
    out_of_band = block_bytes(case.blocks[0])
    assert in_band[-1] == 0x04
    assert (h264.parse_sps(in_band).width, h264.parse_sps(in_band).height) == (640, 480)
    assert (h264.parse_sps(out_of_band).width, h264.parse_sps(out_of_band).height) == (640, 480)


def test_in_band_sets_replace_sdp_sets():
    """In-band parameter sets win, and the SDP's PPSs leave with the first in-band PPS."""
    params = ParameterSets("h264")
    params.load_sdp(
        {"sprop-parameter-sets": "Z00AKZpkA8ARPyzUBAQFAAADA+gAAOpgBA==,aO48gA=="}
    )  # q01, 1920x1080
    assert params.info is not None and (params.info.width, params.info.height) == (1920, 1080)
    sps = base64.b64decode("Z0LAH9kAwBJoQAAAAwBAAAAGA8YMkg==")
    pps_id_1 = bytes.fromhex("68") + bytes((0b01001000 | 0x04,))  # pps_id 1, then arbitrary bits
    assert params.add(sps)
    assert params.add(pps_id_1)
    info = params.rebuild()
    assert info is not None and (info.width, info.height) == (768, 576)
    assert list(params.pps) == [1]


def test_codec_strings_from_sps_not_profile_level_id():
    """q01, q34: profile-level-id states Baseline or Main@1.2, and the SPS states otherwise."""
    q01 = decode_parameter_set("Z00AKZpkA8ARPyzUBAQFAAADA+gAAOpgBA==")[0]
    q34 = decode_parameter_set("Z0LgHtoCwEkQ")[0]
    assert h264.parse_sps(q01).codec_string == "avc1.4D0029"
    assert h264.parse_sps(q34).profile_name == "Constrained Baseline"
    assert h264.parse_sps(q34).level == 3.0


def test_h265_sps_with_inter_rps_prediction():
    """q52: the SPS predicts reference picture sets from earlier ones; parsing gets to the end."""
    nal = decode_parameter_set("QgEBAWAAAAMAAAMAAAMAAAMAuqABICAFEf5a7kSIi/Lc1AQEBAI=")[0]
    info = h265.parse_sps(nal)
    assert (info.width, info.height) == (2304, 1296)
    assert info.level == 186 / 30


def test_mpeg4_config_size():
    """q58: the MPEG-4 Part 2 VOL header in config= gives the picture size and profile."""
    fmtp = re.search(r"config=([0-9A-Fa-f]+)", _case("q58").blocks[0].text)
    assert fmtp is not None
    vol = parse_vol(bytes.fromhex(fmtp.group(1)))
    assert (vol.width, vol.height) == (640, 480)
    assert vol.profile_level == 0xF5  # Advanced Simple Profile, level 5


# --- RTSP headers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "ssrc", "tcp", "channels"),
    [
        ("RTP/AVP/TCP;unicast;interleaved=0-1;ssrc= d6d6627", 0x0D6D6627, True, (0, 1)),  # q02
        (
            "RTP/AVP/UDP;unicast;client_port=14186;server_port=8052;ssrc= 4317f;mode=play",
            0x4317F,
            False,
            None,
        ),  # q02
        ("RTP/AVP/TCP;unicast;interleaved=0-1;ssrc=     D93FF", 0xD93FF, True, (0, 1)),  # q13
        ("RTP/AVP/TCP;ssrc=22345684;interleaved=0-1", 0x22345684, True, (0, 1)),  # q47
        ('RTP/AVP/TCP;unicast;interleaved=0-1;ssrc=61441f1;mode="play"', 0x61441F1, True, (0, 1)),  # q50
        (
            "RTP/AVP;unicast;mode=PLAY;source=127.0.0.1;client_port=18714-18715;server_port=40004-40005;ssrc=0",
            0,
            False,
            None,
        ),  # q37
        # Variants: upper-case keys, spaces around '=' and ';', the transport spec in the middle.
        ("RTP/AVP/TCP ;UNICAST; INTERLEAVED = 0-1 ; SSRC = 0000ABCD", 0xABCD, True, (0, 1)),
        ('ssrc=1234ABCD;RTP/AVP/TCP;interleaved=4-5;mode="PLAY"', 0x1234ABCD, True, (4, 5)),
        ("RTP/AVP/TCP;interleaved=6", None, True, (6, 7)),
    ],
)
def test_transport_variants(value, ssrc, tcp, channels):
    parsed = rtsp.parse_transport(value)
    assert parsed.ssrc == ssrc
    assert parsed.tcp is tcp
    assert parsed.interleaved == channels


def test_single_udp_ports():
    parsed = rtsp.parse_transport(
        "RTP/AVP/UDP;unicast;client_port=14186;server_port=8052;ssrc= 4317f;mode=play"
    )
    assert parsed.client_port == (14186, 14187)
    assert parsed.server_port == (8052, 8053)


@pytest.mark.parametrize(
    ("value", "session_id", "timeout"),
    [
        ("       708345999;timeout=60", "708345999", 60),  # q01
        ("eKoPfUYGRpb", "eKoPfUYGRpb", 60),  # q67: no timeout, 60 s by default
        ("C128E013;timeout=65", "C128E013", 65),  # q73
        # Variants: spaces around '=', a trailing ';', a tab.
        ("7f3a9c21; timeout = 10", "7f3a9c21", 10),
        ("000000001234ABCD;timeout=20;", "000000001234ABCD", 20),
        ("\t2a3b4c5d ; timeout = 30", "2a3b4c5d", 30),
    ],
)
def test_session_variants(value, session_id, timeout):
    parsed = rtsp.parse_session(value)
    assert parsed.id == session_id
    assert parsed.timeout_seconds == timeout


def test_rtp_info_trailing_semicolon_and_relative_urls():
    q46 = rtsp.parse_rtp_info("url=rtsp://192.0.2.19:554/0/main/trackID=0;seq=0;rtptime=0;")
    assert [(entry.seq, entry.rtptime) for entry in q46] == [(0, 0)]
    q10 = rtsp.parse_rtp_info(
        "url=trackID=0;seq=47121;rtptime=3475222385,url=trackID=1;seq=45186;rtptime=2234446919,"
        "url=trackID=4;seq=36583;rtptime=816418535"
    )
    assert [entry.url for entry in q10] == ["trackID=0", "trackID=1", "trackID=4"]
    spaced = rtsp.parse_rtp_info("url=rtsp://h/a/trackID=1 ; seq=1000 ; rtptime=-5, url=trackID=2;ssrc=0x1f")
    assert spaced[0].seq == 1000
    assert spaced[0].rtptime == (-5) & 0xFFFFFFFF
    assert spaced[1].ssrc == 0x1F


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("rtsp://rtsp://192.0.2.83:554/stream0/", "rtsp://192.0.2.83:554/stream0/"),  # q61
        ("rtsp://::ffff:192.0.2.123/onvif/profile.1/", "rtsp://[::ffff:192.0.2.123]/onvif/profile.1/"),  # q61
        ("192.0.2.220:1935/", "rtsp://192.0.2.220:1935/"),  # q61
        (
            "rtsp://admin:secret@camera.example:17970/h264/ch1/main/av_stream/",
            "rtsp://camera.example:17970/h264/ch1/main/av_stream/",
        ),  # q08
        # Variants: upper-case doubled scheme, a user name without password.
        ("RTSP://rtsp://192.0.2.9/live/", "rtsp://192.0.2.9/live/"),
        ("rtsp://admin@192.0.2.71/cam1/", "rtsp://192.0.2.71/cam1/"),
    ],
)
def test_content_base_repair(raw, expected):
    assert rtsp.sanitize_base_url(raw, "rtsp://192.0.2.1/request") == expected


@pytest.mark.parametrize(
    ("base", "control", "joined"),
    [
        # q10: the base carries a query string; controls are appended, not resolved.
        (
            "rtsp://h/cam/realmonitor?channel=1&subtype=1/",
            "trackID=0",
            "rtsp://h/cam/realmonitor?channel=1&subtype=1/trackID=0",
        ),
        # q01: absolute controls with a query are used as they are.
        (
            "rtsp://h/S/101/",
            "rtsp://h:554/S/101/trackID=1?transportmode=unicast",
            "rtsp://h:554/S/101/trackID=1?transportmode=unicast",
        ),
        ("rtsp://h/a/", "0", "rtsp://h/a/0"),  # q70: numeric controls
        # Variants: a base without slash, an upper-case absolute control on another port.
        ("rtsp://h/h264/main", "track1", "rtsp://h/h264/main/track1"),
        (
            "rtsp://h/h264/main",
            "RTSP://127.0.0.2:8554/h264/main/track2",
            "RTSP://127.0.0.2:8554/h264/main/track2",
        ),
    ],
)
def test_control_joining(base, control, joined):
    assert rtsp.join_control(base, control) == joined


@pytest.mark.parametrize(
    ("values", "scheme", "realm"),
    [
        (
            ['Digest realm="A1B2C3D4E5F6",nonce="d809bdf662f8362492f0e04dfeee1751", stale="FALSE"'],
            "digest",
            "A1B2C3D4E5F6",
        ),  # q23
        # Variants: Basic offered first, a comma inside the realm, lower-case scheme.
        (
            [
                'Basic realm="Login to 2J0123, channel 1"',
                'Digest realm="Login to 2J0123, channel 1", nonce="b4", qop="auth"',
            ],
            "digest",
            "Login to 2J0123, channel 1",
        ),
        (['digest realm="IPCAM",nonce="0a1b",stale="false"'], "digest", "IPCAM"),
        (['Basic realm="NVR"'], "basic", "NVR"),
    ],
)
def test_challenge_choice(values, scheme, realm):
    challenge = rtsp.choose_challenge(rtsp.parse_challenges(values))
    assert challenge is not None
    assert challenge.scheme == scheme
    assert challenge.params["realm"] == realm


def test_digest_without_qop_follows_rfc2069():
    challenge = rtsp.parse_challenges(
        ['Digest realm="TP-LINK Streaming Media", nonce="54989645090abd69705b36970ce51ca6"']
    )[0]
    header = rtsp.Authenticator(challenge, "admin", "pw").header("SETUP", "rtsp://h/stream1/track1")
    assert 'realm="TP-LINK Streaming Media"' in header
    assert "qop=" not in header
    assert "nc=" not in header


# --- SDP ------------------------------------------------------------------------------------


def _sdp_of(case_id: str, index: int = 0) -> str:
    """The case's index-th published SDP, as the replay assembles it."""
    return scenarios_for(_case(case_id))[index].sdp


@pytest.mark.parametrize(
    ("case_id", "index", "video", "audio"),
    [
        ("q01", 0, "h264", None),  # ONVIF metadata is not set up
        ("q05", 0, "h264", "aac"),
        ("q07", 0, "h264", "pcm"),  # "PCM" on static payload type 11
        ("q10", 0, "h264", "aac"),
        ("q11", 0, "h265", "pcma"),
        ("q19", 0, "h265", "pcma"),  # m=application/TP-LINK with a non-numeric format is skipped
        ("q23", 1, "h264", "pcmu"),  # back-channel skipped, the receive audio on PT 0 is PCMU
        ("q29", 0, "h264", None),  # MPEG audio on PT 14 and an object-detection text track
        ("q35", 0, "h264", "pcma"),  # TAB and space after the audio format
        ("q37", 0, "h264", "pcma"),  # rtpmap with a trailing space, audio without rtpmap
        ("q41", 0, "h264", "aac"),  # AAC on static payload type 0
        ("q49", 0, "h264", "aac"),  # two audio sections both on PT 96
        ("q55", 0, "h264", None),  # H.264 on PT 35
        ("q58", 0, "mpeg4", None),
        ("q62", 0, "mjpeg", "pcmu"),  # m=vana and three-field rtpmaps
        ("q64", 0, "h264", None),  # attributes before s=, metadata sendonly
        ("q65", 0, "h264", None),  # only m= lines
        ("q68", 0, "h264", "aac"),  # every media sendonly: not back-channels
        ("q70", 0, "h264", "pcmu"),
        ("q71", 0, "h264", "aac"),  # s= and i= inside media sections
        ("q73", 0, "h264", "l16"),
    ],
)
def test_track_choice(case_id, index, video, audio):
    chosen_video, chosen_audio = choose_tracks(parse_sdp(_sdp_of(case_id, index)))
    assert chosen_video is not None and chosen_video.codec == video
    assert (chosen_audio.codec if chosen_audio else None) == audio


def test_track_choice_variants():
    """Fault kinds the corpus has once, spelled another way."""
    mismatch = "m=video 0 RTP/AVP 96\r\na=rtpmap:97 H264/90000\r\na=fmtp:97 packetization-mode=1\r\n"
    video, _ = choose_tracks(parse_sdp(mismatch))
    assert video is not None
    assert video.codec == "h264"
    assert video.payload_type == 96

    static_reuse = "m=video 0 RTP/AVP 8\na=rtpmap:8 H264/90000\nm=audio 0 RTP/AVP 97\na=rtpmap:97 PCMA/8000\n"
    video, audio = choose_tracks(parse_sdp(static_reuse))
    assert video is not None and video.codec == "h264"
    assert audio is not None and audio.codec == "pcma"

    unknown_first = (
        "m=video 0 RTP/AVP 98\na=rtpmap:98 VP8/90000\nm=video 0 RTP/AVP 96\na=rtpmap:96 H264/90000\n"
        "m=audio 0 RTP/AVP 99\na=rtpmap:99 AMR/8000\nm=audio 0 RTP/AVP 0\nm=data 0 RTP/AVP 100\n"
        "m=message 0 TCP/MSRP *\n"
    )
    video, audio = choose_tracks(parse_sdp(unknown_first))
    assert video is not None and video.payload_type == 96
    assert audio is not None and audio.codec == "pcmu"

    spaced = "m=video 0 RTP/AVP 96\t \t\nc=IN IP4\na = rtpmap: 96 h264/90000/\nm=audio 0 RTP/AVP\n"
    video, audio = choose_tracks(parse_sdp(spaced))
    assert video is not None and video.codec == "h264"
    assert audio is None


def test_aac_rate_from_config_not_rtpmap():
    """q05 and q41: the AudioSpecificConfig (16 kHz mono) beats rtpmap's 32000 or its 2 channels."""
    config = parse_audio_specific_config(bytes.fromhex("1408"))
    assert (config.sample_rate, config.channels) == (16000, 1)


def test_aac_timestamps_follow_rtp_clock():
    """q05: 16 kHz AAC on a 32000 Hz RTP clock; the second frame of a packet is 2048 ticks later."""
    _video, audio = choose_tracks(parse_sdp(_sdp_of("q05")))
    assert audio is not None
    track = AudioTrack(audio, _Listener(), CameraTimeline())
    assert (track.info.sample_rate, track.info.channels) == (16000, 1)

    stamps: list[int] = []
    depacketizer = AacDepacketizer(lambda frame, ts: stamps.append(ts), 1024 * audio.clock_rate // 16000)
    # AU-headers-length of 32 bits: two headers of 13-bit size and 3-bit index.
    payload = struct.pack(">HHH", 32, 3 << 3, 2 << 3) + b"\x01\x02\x03\x04\x05"
    depacketizer.push(payload, 0, len(payload), 1, 1000, True)
    assert stamps == [1000, 3048]


class _Listener:
    """The one callback an audio track needs before its first packet."""

    def on_timestamp_jump(self, track: str, seconds: float, kind: str) -> None:
        pass


def test_malformed_sdes_keeps_sender_report():
    """q28: the SDES chunk after the SR is not terminated; the SR is still read."""
    compound = block_bytes(_case("q28").blocks[1])
    reports = parse_sender_reports(compound, 0, len(compound))
    assert len(reports) == 1
    assert reports[0].ssrc == 0x000B7FD5
    assert reports[0].rtp_timestamp == 0x0000D450


# --- RTP payloads ---------------------------------------------------------------------------


def _collect_units() -> tuple[list[tuple[list[bytes], int, bool]], object]:
    units: list[tuple[list[bytes], int, bool]] = []
    return units, lambda nals, ts, key: units.append((nals, ts, key))


def test_marked_parameter_sets_stay_with_picture():
    """q40: SPS, PPS and SEI each carry the marker bit; one access unit still contains them and the IDR."""
    units, callback = _collect_units()
    depacketizer = H264Depacketizer(callback)
    lines = _case("q40").blocks[1].text.splitlines()
    payloads = [block_bytes(type(_case("q40").blocks[1])("", line)) for line in lines]
    payloads[-1] = bytes.fromhex("6588840021")  # the published IDR payload is a placeholder
    for seq, payload in enumerate(payloads):
        depacketizer.push(payload, 0, len(payload), seq, 1000, True)
    assert len(units) == 1
    nals, _, key = units[0]
    assert [nal[0] & 0x1F for nal in nals] == [7, 8, 6, 5]
    assert key


def test_annexb_inside_fu_a_is_split():
    """q44: one FU-A typed SPS carries SPS, PPS and an IDR slice as an Annex B stream."""
    units, callback = _collect_units()
    depacketizer = H264Depacketizer(callback)
    reassembled = block_bytes(_case("q44").blocks[0])
    body = reassembled[1:]
    indicator = (reassembled[0] & 0xE0) | 28
    half = len(body) // 2
    first = bytes((indicator, 0x80 | 7)) + body[:half]
    last = bytes((indicator, 0x40 | 7)) + body[half:]
    depacketizer.push(first, 0, len(first), 1, 500, False)
    depacketizer.push(last, 0, len(last), 2, 500, True)
    assert len(units) == 1
    assert [nal[0] & 0x1F for nal in units[0][0]] == [7, 8, 5]
    assert depacketizer.stats.annexb_repairs == 1


def test_h265_fu_type_change_ignored():
    """q50: continuation fragments name another NAL type; the start fragment's type counts."""
    units, callback = _collect_units()
    depacketizer = H265Depacketizer(callback)
    idr = bytes((19 << 1, 1, 0x80)) + bytes(range(1, 200))
    header = bytes(((49 << 1), 1))
    start = header + bytes((0x80 | 19,)) + idr[2:100]
    end = header + bytes((0x40 | 38,)) + idr[100:]
    depacketizer.push(start, 0, len(start), 10, 900, False)
    depacketizer.push(end, 0, len(end), 11, 900, True)
    assert len(units) == 1
    assert units[0][0] == [idr]
    assert units[0][2]


def test_marker_on_every_slice_is_distrusted():
    """Variant of q40: the marker bit ends every slice; the picture's second slice must not start a frame."""
    units, callback = _collect_units()
    depacketizer = H264Depacketizer(callback)
    first_slice = bytes((0x65, 0x88))  # first_mb_in_slice 0
    second_slice = bytes((0x65, 0x40))  # first_mb_in_slice 1
    for ts in (0, 3000, 6000):
        depacketizer.push(first_slice, 0, 2, ts // 3000 * 2, ts, True)
        depacketizer.push(second_slice, 0, 2, ts // 3000 * 2 + 1, ts, True)
    depacketizer.push(first_slice, 0, 2, 99, 9000, True)
    assert depacketizer.stats.marker_distrusted == 1
    # The first picture was cut by the marker bit (one glitch); later pictures keep both slices.
    assert [len(nals) for nals, _, _ in units[-2:]] == [2, 2]


def test_aud_and_mixed_start_codes_split():
    """q17: an access unit in Annex B form with an AUD and 3- and 4-byte start codes."""
    data = block_bytes(_case("q17").blocks[2])
    nals = split_annexb(data)
    assert [(nal[0] >> 1) & 0x3F for nal in nals] == [35, 32, 33, 34, 19]


@pytest.mark.parametrize(
    ("payload", "h264_fits", "h265_fits"),
    [
        ("674d0029", True, False),  # H.264 SPS
        ("7c85", True, False),  # H.264 FU-A start of an IDR
        ("419a", True, False),  # H.264 P slice
        ("40010c01", False, True),  # H.265 VPS
        ("4201", False, True),  # H.265 SPS
        ("620193", False, True),  # H.265 FU starting an IDR slice
        ("0201d0", False, True),  # H.265 TRAIL_R
        ("00000001674d", True, False),  # H.264 SPS behind a start code
        ("e900f004", False, False),  # q35's shifted sprop: forbidden bit set
        ("3c74743a", False, False),  # "<tt:", ONVIF metadata XML on the video channel
        ("620126", False, True),  # H.265 FU continuation naming FD_NUT, as Tiandy cameras send
    ],
)
def test_nal_header_plausibility(payload, h264_fits, h265_fits):
    data = bytes.fromhex(payload)
    assert h264.plausible_rtp_payload(data, 0, len(data)) is h264_fits
    assert h265.plausible_rtp_payload(data, 0, len(data)) is h265_fits
