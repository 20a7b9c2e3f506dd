"""Every camera of the quirk corpus, replayed, through Pantau to a real decoder.

One replay process (``loadtest.replay``) serves every scenario of every
corpus case and of the variants in ``tests/data/camera-variants`` on its
own port, and one Pantau process pulls all of them as ``always`` cameras.
Each test then reads ``/live/{id}.flv`` with FFmpeg (PyAV) and checks the
decoded picture size against the parameter sets the replay streams, the
frame timing, and what the replay saw Pantau do.

The replay streams test clips, so the size a test expects is the clip's
(in-band SPS), not the SDP's: Pantau must follow the parameter sets it
receives. The corpus table's sizes are checked against the SDP parameter
sets in ``test_quirk_parsers.py``.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import pytest

from tests.quirk_support import ReplayProcess, corpus_files, variant_files
from tests.support import Pantau, camera_entry, decode_stream

# Scenarios whose Transport is UDP-style in the case; each also gets a camera with transport udp.
UDP_SCENARIOS = ["q02", "q37-1", "q47", "q73"]
KEEPALIVE_VARIANTS = ["v20", "v21", "v22"]
KEEPALIVE_TIMEOUT_SECONDS = 10  # the Session timeout those variants announce
# Variants with a test of their own below; the others run through test_variant_plays.
DEDICATED_VARIANTS = {*KEEPALIVE_VARIANTS, "v23", "v24", "v25", "v26", "v27"}
CLIENT_KINDS = {"video", "audio"}


@dataclass
class Lab:
    replay: ReplayProcess
    pantau: Pantau

    def mount(self, name: str) -> dict[str, Any]:
        return self.replay.mounts[name]

    def setups(self, name: str) -> list[dict[str, Any]]:
        return self.replay.events_of(name, "setup")

    def connected_event(self, camera_id: str) -> dict[str, Any]:
        events = [
            event
            for event in self.pantau.log_events("camera_connected")
            if event.get("camera_id") == camera_id
        ]
        assert events, f"camera {camera_id} never connected"
        return events[-1]


def _camera_id(name: str) -> str:
    return name.lower()


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    data_dir: Path = tmp_path_factory.mktemp("quirks")
    replay = ReplayProcess(corpus_files() + variant_files(), data_dir).start()
    cameras = [
        camera_entry(_camera_id(name), mount["url"], mode="always") for name, mount in replay.mounts.items()
    ]
    cameras += [
        camera_entry(f"{_camera_id(name)}-udp", replay.mounts[name]["url"], mode="always", transport="udp")
        for name in UDP_SCENARIOS
    ]
    pantau = Pantau(data_dir=data_dir, cameras=cameras, env={"PANTAU_READ_TIMEOUT_SECONDS": "6"})
    try:
        pantau.start()
        yield Lab(replay, pantau)
    finally:
        pantau.stop()
        replay.stop()


def check_plays(
    lab: Lab,
    name: str,
    camera_id: str | None = None,
    *,
    frames: int = 10,
    frame_gaps: bool = False,
    corrections: bool = False,
) -> tuple[dict[str, Any], Any]:
    """Assert that a replayed camera is live and decodes at the size the replay streams."""
    mount = lab.mount(name)
    camera_id = camera_id or _camera_id(name)
    video = mount["video"]
    expected_size = (video["width"], video["height"])
    lab.pantau.wait_state(camera_id, "live", timeout=40)

    decoded = decode_stream(
        f"{lab.pantau.base}/live/{camera_id}.flv", frames=frames, timeout=30, analyze_seconds=0.5
    )
    assert (decoded.width, decoded.height) == expected_size
    assert decoded.codec == {"h264": "h264", "h265": "hevc"}[video["codec"]]
    assert decoded.video_frames >= frames
    interval = 1 / video["fps"]
    steps = [b - a for a, b in zip(decoded.video_times, decoded.video_times[1:], strict=False)]
    # A skipped picture (frame_gaps) shows as a double step; anything else is a lost or extra frame.
    limit = 2.6 * interval if frame_gaps else 1.5 * interval
    assert all(0 < step <= limit for step in steps), steps
    if "aac" in mount["audio"]:
        assert decoded.audio_frames > 0

    view = lab.pantau.camera(camera_id)
    assert view["state"] == "live"
    assert (view["width"], view["height"]) == expected_size
    assert view["codec"] == video["codec"]
    assert view["reconnects"] == 0
    if not corrections:
        assert view["timestamp_corrections"] == 0

    kinds = {event["kind"] for event in lab.setups(name)}
    assert "video" in kinds
    assert kinds <= CLIENT_KINDS, f"Pantau set up {kinds - CLIENT_KINDS}"
    assert not lab.replay.events_of(name, "setup_unmatched")
    assert not lab.replay.events_of(name, "session_expired")
    return view, decoded


def check_refused(lab: Lab, name: str) -> dict[str, Any]:
    """Assert that a camera without H.264/H.265 video is probed and refused with unsupported_codec."""
    mount = lab.mount(name)
    camera_id = _camera_id(name)
    lab.pantau.wait_state(camera_id, "live", timeout=40)
    deadline = time.monotonic() + 20
    view = lab.pantau.camera(camera_id)
    while view["width"] != mount["video"]["width"] and time.monotonic() < deadline:
        time.sleep(0.2)
        view = lab.pantau.camera(camera_id)
    assert view["codec"] == mount["video"]["codec"]
    assert (view["width"], view["height"]) == (mount["video"]["width"], mount["video"]["height"])
    status, body = lab.pantau.request("GET", f"/live/{camera_id}.flv")
    assert status == 406
    assert body["error"] == "unsupported_codec"
    assert {event["kind"] for event in lab.setups(name)} <= CLIENT_KINDS
    return view


# --- per-case checks beyond "plays at the streamed size" -------------------------------------


def _q01(lab: Lab, view: dict[str, Any]) -> None:
    # profile-level-id states Baseline and the SDP's SPS Main, but the streamed SPS is Constrained Baseline.
    assert view["profile"] == "Constrained Baseline"
    assert [event["kind"] for event in lab.setups("q01")] == ["video"]  # ONVIF metadata not set up


def _q08(lab: Lab, view: dict[str, Any]) -> None:
    # The camera echoes user:password into Content-Base and every control URL.
    assert "quirk-pass" not in lab.pantau.log_text()
    setups = lab.replay.requests("q08", "SETUP")
    assert setups and all("@" not in request["url"] for request in setups)


def _q10(lab: Lab, view: dict[str, Any]) -> None:
    assert sorted(event["kind"] for event in lab.setups("q10")) == ["audio", "video"]  # not the metadata
    urls = [request["url"] for request in lab.replay.requests("q10", "SETUP")]
    assert urls[0].endswith("proto=Onvif/trackID=0")  # appended to a base with a query string


def _q14(lab: Lab, view: dict[str, Any]) -> None:
    assert lab.replay.events_of("q14", "rtcp_before_play")
    assert lab.replay.events_of("q14", "stale_session")


def _q20(lab: Lab, view: dict[str, Any]) -> None:
    assert lab.connected_event("q20")["sdp_parameter_sets"].startswith("ignored")
    assert any(request["auth"] == "digest" for request in lab.replay.requests("q20"))


def _q23(lab: Lab, view: dict[str, Any]) -> None:
    for name in ("q23-1", "q23-2", "q23-3", "q23-4"):
        statuses = [request["status"] for request in lab.replay.requests(name, "DESCRIBE")]
        assert statuses[:2] == [401, 200]  # one challenge, one authenticated attempt
    assert sorted(event["kind"] for event in lab.setups("q23-2")) == ["audio", "video"]  # no back-channel


def _q26(lab: Lab, view: dict[str, Any]) -> None:
    # Cannot affect Pantau: Pantau never requests the ONVIF back-channel, so it never
    # sends the Require header this camera rejects with 551. The replay does reject it.
    assert all("require" not in request for request in lab.replay.requests("q26", "DESCRIBE"))


def _q28(lab: Lab, view: dict[str, Any]) -> None:
    # Cannot affect delivery: Pantau never waits for a sender report, so a compound RTCP
    # packet with a broken SDES (sent every second here) changes nothing. The SR itself
    # is still read, as test_malformed_sdes_keeps_sender_report shows.
    assert view["fps"] is None or view["fps"] > 0


def _q31(lab: Lab, view: dict[str, Any]) -> None:
    # Cannot affect Pantau: the o= line is never read, so a space in its user name
    # changes nothing. The published SDP has no media; the replay adds the clip's video.
    assert view["state"] == "live"


def _q37(lab: Lab, view: dict[str, Any]) -> None:
    # Content-Base and Transport advertise 127.0.0.1:554; SETUP still went over this connection.
    setups = lab.replay.requests("q37-1", "SETUP")
    assert setups and all(request["url"].startswith("rtsp://127.0.0.1:554/camera/") for request in setups)


def _q64(lab: Lab, view: dict[str, Any]) -> None:
    assert [event["kind"] for event in lab.setups("q64")] == ["video"]  # metadata marked sendonly
    assert lab.connected_event("q64")["sdp_parameter_sets"] == "absent"


def _q67(lab: Lab, view: dict[str, Any]) -> None:
    # GET_PARAMETER is listed but never gets a response, so Pantau sends it at most once per session.
    unanswered = lab.replay.events_of("q67", "unanswered")
    connections = lab.replay.events_of("q67", "connected")
    assert len(unanswered) <= len(connections)


def _q68(lab: Lab, view: dict[str, Any]) -> None:
    # Every media is sendonly, which makes none of them a back-channel.
    assert sorted(event["kind"] for event in lab.setups("q68")) == ["audio", "video"]


CASE_CHECKS = {
    "q01": _q01,
    "q08": _q08,
    "q10": _q10,
    "q14": _q14,
    "q20": _q20,
    "q23": _q23,
    "q26": _q26,
    "q28": _q28,
    "q31": _q31,
    "q37": _q37,
    "q64": _q64,
    "q67": _q67,
    "q68": _q68,
}
REFUSED_CASES = {"q58", "q62"}  # MPEG-4 Part 2 and MJPEG cameras
FRAME_GAP_CASES = {"q53"}  # the camera leaves out pictures (frame_num gaps)
CORPUS_CASES = [path.name.split("-")[0] for path in corpus_files()]


@pytest.mark.parametrize("case_id", CORPUS_CASES)
def test_corpus_case_plays(lab, case_id):
    names = [name for name, mount in lab.replay.mounts.items() if mount["case"] == case_id]
    assert names, f"the replay has no scenario for {case_id}"
    for name in names:
        if case_id in REFUSED_CASES:
            view = check_refused(lab, name)
        else:
            view, _ = check_plays(lab, name, frame_gaps=case_id in FRAME_GAP_CASES)
    check = CASE_CHECKS.get(case_id)
    if check is not None:
        check(lab, view)


def test_refused_sizes_come_from_stream(lab):
    """q58's config= states 640x480 and q62's x-dimensions 1280x960, but the streams differ."""
    assert (lab.pantau.camera("q58")["width"], lab.pantau.camera("q58")["height"]) != (640, 480)
    assert (lab.pantau.camera("q62")["width"], lab.pantau.camera("q62")["height"]) != (1280, 960)


@pytest.mark.parametrize("name", UDP_SCENARIOS)
def test_udp_camera_plays(lab, name):
    check_plays(lab, name, f"{_camera_id(name)}-udp")


VARIANT_CHECKS = {
    "v04": lambda lab: {r["auth"] for r in lab.replay.requests("v04") if r["auth"]} == {"basic"},
    "v05": lambda lab: {r["auth"] for r in lab.replay.requests("v05") if r["auth"]} == {"digest"},
    "v06": lambda lab: {r["auth"] for r in lab.replay.requests("v06") if r["auth"]} == {"digest"},
    "v07": lambda lab: [event["channel"] for event in lab.setups("v07")][:2] == [4, 6],
    "v12": lambda lab: [event["control"] for event in lab.setups("v12")] == ["trackID=1", "trackID=3"],
    "v13": lambda lab: sorted(event["kind"] for event in lab.setups("v13")) == ["audio", "video"],
}
VARIANTS = [
    path.name.split("-")[0] for path in variant_files() if path.name.split("-")[0] not in DEDICATED_VARIANTS
]


REFUSED_VARIANTS = {"v28", "v29"}  # MPEG-4 Part 2 without config=, MJPEG on a dynamic payload type


@pytest.mark.parametrize("name", VARIANTS)
def test_variant_plays(lab, name):
    if name in REFUSED_VARIANTS:
        check_refused(lab, name)
    else:
        check_plays(lab, name)
    check = VARIANT_CHECKS.get(name)
    if check is not None:
        assert check(lab)


# --- what the replay showed FFmpeg's RTSP client leaves to its caller ------------------------


def test_codec_and_payload_type_from_nal_headers(lab):
    """H.264 labelled H265 (v25) and video on another payload type than declared (v27) still play."""
    view, _ = check_plays(lab, "v25")
    assert view["codec"] == "h264"
    corrected = [
        event for event in lab.pantau.log_events("video_codec_corrected") if event["camera_id"] == "v25"
    ]
    assert corrected and (corrected[0]["declared"], corrected[0]["detected"]) == ("h265", "h264")
    check_plays(lab, "v27")


def test_only_used_media_set_up(lab):
    """Metadata, vendor sections and back-channels are never set up, for any scenario."""
    for name, mount in lab.replay.mounts.items():
        kinds = [event["kind"] for event in lab.setups(name)]
        assert set(kinds) <= CLIENT_KINDS, f"{name}: {kinds}"
        offered = {media["kind"] for media in mount["media"]}
        if offered - CLIENT_KINDS:
            assert kinds, f"{name} was never set up"


def test_keepalive_outlives_session_timeout(lab):
    """Sessions of 10 s stay up: GET_PARAMETER unanswered (v20), only GET_PARAMETER counts (v21), only RTCP counts (v22)."""
    for name in KEEPALIVE_VARIANTS:
        lab.pantau.wait_state(_camera_id(name), "live", timeout=40)
    play_times = [lab.replay.wait_event(name, "play")["time"] for name in KEEPALIVE_VARIANTS]
    wait = 3 * KEEPALIVE_TIMEOUT_SECONDS - (time.time() - min(play_times))
    if wait > 0:
        time.sleep(wait)
    for name in KEEPALIVE_VARIANTS:
        assert not lab.replay.events_of(name, "session_expired"), name
        assert len(lab.replay.events_of(name, "play")) == 1, name
        view = lab.pantau.camera(_camera_id(name))
        assert view["state"] == "live"
        assert view["reconnects"] == 0
    assert len(lab.replay.events_of("v20", "unanswered")) == 1
    assert len(lab.replay.requests("v21", "GET_PARAMETER")) >= 2


def test_stale_session_packets_dropped(lab):
    """An earlier session's packets (another SSRC, a 1080p picture) arrive around PLAY; Pantau keeps to the new one."""
    for name in ("v24", "q14", "q41"):
        assert lab.replay.events_of(name, "stale_session"), name
        view, _ = check_plays(lab, name)
        assert (view["width"], view["height"]) != (1920, 1080)


def test_timestamp_steps_and_outliers_smoothed(lab):
    """v23's clock steps two hours, one picture is five hours off, the clock restarts; the output stays smooth."""
    check_plays(lab, "v23", frames=60, corrections=True)
    kinds = {
        event["kind"] for event in lab.pantau.log_events("timestamp_corrected") if event["camera_id"] == "v23"
    }
    assert {"jump", "outlier"} <= kinds
    # The replay really sends those steps: FFmpeg's own RTSP client passes them through.
    container = av.open(lab.mount("v23")["url"], options={"rtsp_transport": "tcp"}, timeout=10)
    try:
        stream = container.streams.video[0]
        times = []
        deadline = time.monotonic() + 10
        for packet in container.demux(stream):
            if packet.pts is not None:
                times.append(float(packet.pts * stream.time_base))
            if len(times) > 1 and abs(times[-1] - times[-2]) > 1000 or time.monotonic() > deadline:
                break
    finally:
        container.close()
    assert max(abs(b - a) for a, b in itertools.pairwise(times)) > 1000


def test_stream_without_decodable_frame_reported(lab):
    """v26 connects and streams but never sends parameter sets: the camera fails with a reason."""
    deadline = time.monotonic() + 60
    view = lab.pantau.camera("v26")
    while (view["last_error"] or {}).get("code") != "no_video_frames" and time.monotonic() < deadline:
        time.sleep(0.5)
        view = lab.pantau.camera("v26")
    assert view["last_error"]["code"] == "no_video_frames"
    assert "SPS/PPS" in view["last_error"]["reason"]
    status, body = lab.pantau.request("GET", "/live/v26.flv")
    assert status == 503
    assert body["error"] == "no_video_frames"
