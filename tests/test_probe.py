"""Camera facts and the resolution rule, against GStreamer's RTSP server serving the test clips.

Expected values are the clips' own: sizes, frame rates and GOPs from
``loadtest/media/README.md``, video bit rates measured with Debian 12's
ffprobe 5.1 (``-show_entries stream=bit_rate``) over each whole clip.
"""

from __future__ import annotations

import csv
import http.client
import io
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import start_pantau
from tests.support import GstRtspServer, Pantau, camera_entry, free_port

SWASTA = {"category": "swasta", "name": "Hotel Puri Sari"}
SCHEDULED = {"PANTAU_PROBE_INTERVAL_HOURS": "24"}  # the default; the test harness turns probes off
PEMKAB = {"category": "pemkab", "name": "Diskominfo Kabupaten Badung"}

# clip: (codec, width, height, fps, GOP frames, video bit rate in bit/s, B-frames, audio codec)
CLIPS = {
    "h264": ("h264", 2688, 1520, 15, 30, 3955776, False, None),
    "h265": ("h265", 2688, 1520, 15, 30, 2832598, False, None),
    "bframes": ("h264", 2560, 1440, 15, 50, 2725439, True, None),
    "aac": ("h264", 1920, 1080, 15, 30, 1989595, False, "aac"),
    "d1": ("h264", 768, 576, 12, 24, 797500, False, None),
}
DEFAULT_STATUS = {"h264": "compliant", "h265": "compliant", "bframes": "compliant", "aac": "below_minimum", "d1": "below_minimum"}
ISO_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")


def wait_probed(instance: Pantau, camera_ids: list[str], timeout: float = 60) -> dict[str, dict[str, Any]]:
    """Wait until every camera has facts or a failed probe; return the camera views."""
    deadline = time.monotonic() + timeout
    views: dict[str, dict[str, Any]] = {}
    while time.monotonic() < deadline:
        views = {camera_id: instance.camera(camera_id) for camera_id in camera_ids}
        if all(view["probe"]["facts"] or view["probe"]["last_error"] for view in views.values()):
            return views
        time.sleep(0.5)
    raise AssertionError(f"not all of {camera_ids} probed within {timeout} s: {views}")


@pytest.fixture(scope="module")
def probed(gst, tmp_path_factory) -> Iterator[tuple[Pantau, dict[str, dict[str, Any]]]]:
    """One Pantau whose start-up probes measured every clip, a pemkab camera and an unreachable one."""
    cameras = [camera_entry(name, gst.url(f"/{name}"), owner=SWASTA) for name in CLIPS]
    cameras.append(camera_entry("pemkab-h264", gst.url("/h264"), owner=PEMKAB))
    cameras.append(camera_entry("unreachable", f"rtsp://127.0.0.1:{free_port()}/stream", owner=SWASTA))
    data_dir = tmp_path_factory.mktemp("probe") / "data"
    instance = Pantau(data_dir=data_dir, cameras=cameras, env={**SCHEDULED, "PANTAU_PROBE_CONCURRENCY": "8"}).start()
    try:
        views = wait_probed(instance, [camera["id"] for camera in cameras])
        yield instance, views
    finally:
        instance.stop()


@pytest.mark.parametrize("clip", sorted(CLIPS))
def test_clip_facts(probed, clip):
    codec, width, height, _fps, _gop, _bitrate, b_frames, audio = CLIPS[clip]

    facts = probed[1][clip]["probe"]["facts"]

    assert facts["codec"] == codec
    assert (facts["width"], facts["height"]) == (width, height)
    assert facts["pixels"] == width * height
    assert facts["megapixels"] == round(width * height / 1e6, 2)
    assert facts["b_frames"] is b_frames
    assert facts["audio_codec"] == audio
    assert probed[1][clip]["probe"]["probed_at"]


@pytest.mark.parametrize("clip", sorted(CLIPS))
def test_clip_rates_within_ten_percent(probed, clip):
    _codec, _width, _height, fps, gop, bitrate, _b_frames, _audio = CLIPS[clip]

    facts = probed[1][clip]["probe"]["facts"]
    print(f"{clip}: fps {facts['fps']}, GOP {facts['gop_frames']} frames / {facts['gop_seconds']} s, "
          f"{facts['video_bitrate_bps']} bit/s (clip {bitrate}) over {facts['window_seconds']} s")

    assert facts["fps"] == pytest.approx(fps, rel=0.10)
    assert facts["gop_frames"] == pytest.approx(gop, rel=0.10)
    assert facts["gop_seconds"] == pytest.approx(gop / fps, rel=0.10)
    assert facts["video_bitrate_bps"] == pytest.approx(bitrate, rel=0.10)


def test_cropped_1080p_coded_size(probed):
    facts = probed[1]["aac"]["probe"]["facts"]

    assert (facts["coded_width"], facts["coded_height"]) == (1920, 1088)
    assert facts["audio_sample_rate"] == 16000


def test_profiles_and_levels(probed):
    views = probed[1]

    assert views["bframes"]["probe"]["facts"]["profile"] == "High"
    assert views["d1"]["probe"]["facts"]["profile"] == "Constrained Baseline"
    assert views["h265"]["probe"]["facts"]["level"] == 5.0


@pytest.mark.parametrize("clip", sorted(CLIPS))
def test_default_rule_status(probed, clip):
    assert probed[1][clip]["compliance"]["status"] == DEFAULT_STATUS[clip]


def test_pemkab_camera_exempt_with_facts(probed):
    view = probed[1]["pemkab-h264"]

    assert view["compliance"]["status"] == "exempt"
    assert "pemkab" in view["compliance"]["reason"]
    assert view["probe"]["facts"]["width"] == 2688


def test_unreachable_camera_unknown_with_reason(probed):
    view = probed[1]["unreachable"]

    assert view["compliance"]["status"] == "unknown"
    assert "refused" in view["compliance"]["reason"]
    assert view["probe"]["last_error"]["code"] == "connection_refused"


def test_probed_cameras_go_idle(probed):
    instance, views = probed
    on_demand = [camera_id for camera_id in views if camera_id != "unreachable"]

    states = {camera_id: instance.camera(camera_id)["state"] for camera_id in on_demand}
    closes = instance.log_events("camera_idle_close")

    assert set(states.values()) == {"idle"}
    assert closes
    assert all(event["idle_seconds"] < 1 for event in closes)


def test_compliance_json_totals(probed):
    status, report = probed[0].request("GET", "/api/compliance")

    assert status == 200
    assert report["rule"]["min_pixels"] == 3686400
    assert len(report["items"]) == 7
    swasta = next(group for group in report["totals"]["by_owner_category"] if group["owner_category"] == "swasta")
    assert swasta == {
        "owner_category": "swasta", "cameras": 6, "compliant": 3, "below_minimum": 2, "exempt": 0, "unknown": 1,
    }
    kuta = report["totals"]["by_kecamatan"][0]
    assert (kuta["kecamatan"], kuta["cameras"], kuta["exempt"]) == ("Kuta", 7, 1)


def test_compliance_csv_for_spreadsheets(probed):
    connection = http.client.HTTPConnection("127.0.0.1", probed[0].port, timeout=10)
    connection.request("GET", "/api/compliance.csv")
    response = connection.getresponse()
    body = response.read()
    connection.close()

    assert response.status == 200
    assert response.getheader("Content-Type").startswith("text/csv")
    assert body.startswith(b"\xef\xbb\xbf")
    text = body.decode("utf-8-sig")
    assert "\r\n" in text
    cameras_table, totals_table = text.split("\r\n\r\n")
    rows = list(csv.DictReader(io.StringIO(cameras_table, newline="")))
    assert len(rows) == 7
    row = next(row for row in rows if row["id"] == "h264")
    assert (row["resolution"], row["status"], row["megapixels"]) == ("2688x1520", "compliant", "4.09")
    assert ISO_UTC.match(row["probed_at"])
    totals = list(csv.reader(io.StringIO(totals_table, newline="")))
    assert totals[0] == ["total_by", "group", "cameras", "compliant", "below_minimum", "exempt", "unknown"]
    assert ["owner_category", "swasta", "6", "3", "2", "0", "1"] in totals
    assert ["kecamatan", "Kuta", "7", "3", "2", "1", "1"] in totals


def test_compliance_csv_indonesian_locale(probed):
    status, body = probed[0].request("GET", "/api/compliance.csv?locale=id")

    text = body.decode("utf-8-sig")
    header = text.split("\r\n", 1)[0]
    assert status == 200
    assert header.startswith("id;name;owner_category")
    assert ";4,09;" in text


def test_strict_minimum_fails_1440p(gst, pantau, tmp_path):
    cameras = [camera_entry(name, gst.url(f"/{name}"), owner=SWASTA) for name in ("bframes", "h264")]
    instance = start_pantau(
        pantau, tmp_path / "data", cameras, PANTAU_MIN_PIXELS="4000000", PANTAU_PROBE_WINDOW_SECONDS="4", **SCHEDULED
    )

    views = wait_probed(instance, ["bframes", "h264"])

    assert (views["bframes"]["probe"]["facts"]["width"], views["bframes"]["probe"]["facts"]["height"]) == (2560, 1440)
    assert views["bframes"]["compliance"]["status"] == "below_minimum"
    assert "4 000 000" in views["bframes"]["compliance"]["reason"]
    assert views["h264"]["compliance"]["status"] == "compliant"


def test_since_date_exempts_older_cameras(gst, pantau, tmp_path):
    cameras = [
        camera_entry("old", gst.url("/aac"), owner=SWASTA, installed_on="2023-05-01"),
        camera_entry("new", gst.url("/aac"), owner=SWASTA, installed_on="2025-02-01"),
        camera_entry("undated", gst.url("/aac"), owner=SWASTA),
    ]
    instance = start_pantau(
        pantau,
        tmp_path / "data",
        cameras,
        PANTAU_MIN_PIXELS_SINCE="2025-01-01",
        PANTAU_PROBE_WINDOW_SECONDS="3",
        **SCHEDULED,
    )

    views = wait_probed(instance, ["old", "new", "undated"])

    assert views["old"]["compliance"]["status"] == "exempt"
    assert views["new"]["compliance"]["status"] == "below_minimum"
    assert views["undated"]["compliance"] == {"status": "unknown", "reason": "installed_on missing"}


class FlvReader:
    """A live HTTP-FLV client in a thread, reading until stopped."""

    def __init__(self, port: int, camera_id: str) -> None:
        self.bytes = 0
        self._stop = threading.Event()
        self._connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self._connection.request("GET", f"/live/{camera_id}.flv")
        self._response = self._connection.getresponse()
        assert self._response.status == 200
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            data = self._response.read1(65536)
            if not data:
                return
            self.bytes += len(data)

    def close(self) -> None:
        self._stop.set()
        self._connection.close()
        self._thread.join(5)


def test_probe_shares_live_upstream(own_gst, pantau, tmp_path):
    server = GstRtspServer({"/cam": "h264"}).start()
    own_gst.append(server)
    instance = start_pantau(
        pantau,
        tmp_path / "data",
        [camera_entry("cam", server.url("/cam"), owner=SWASTA)],
        PANTAU_PROBE_INTERVAL_HOURS="0",
        PANTAU_PROBE_WINDOW_SECONDS="3",
    )
    assert instance.camera("cam")["probe"]["facts"] is None  # no scheduled probe with interval 0

    viewer = FlvReader(instance.port, "cam")
    try:
        # The viewer's connect is probed on its own session.
        first = wait_probed(instance, ["cam"])["cam"]["probe"]
        status, requested = instance.request("POST", "/api/cameras/cam/probe")
        connections = server.connections
    finally:
        viewer.close()

    assert first["facts"]["width"] == 2688
    assert status == 200
    assert requested["facts"]["width"] == 2688
    assert requested["probed_at"] > first["probed_at"]
    assert connections == 1
    assert viewer.bytes > 0


def test_probe_closes_upstream_it_opened(own_gst, pantau, tmp_path):
    server = GstRtspServer({"/cam": "d1"}).start()
    own_gst.append(server)
    instance = start_pantau(
        pantau,
        tmp_path / "data",
        [camera_entry("cam", server.url("/cam"), owner=SWASTA)],
        PANTAU_IDLE_CLOSE_SECONDS="120",
        PANTAU_PROBE_WINDOW_SECONDS="3",
        **SCHEDULED,
    )

    wait_probed(instance, ["cam"])
    deadline = time.monotonic() + 5
    while server.open_connections and time.monotonic() < deadline:
        time.sleep(0.1)

    assert server.connections == 1
    assert server.open_connections == 0
    assert instance.camera("cam")["state"] == "idle"


def test_change_logged_kept_and_persisted(gst, pantau, tmp_path):
    data_dir = tmp_path / "data"
    entry = camera_entry("cam", gst.url("/h264"), owner=SWASTA)
    env = {"PANTAU_PROBE_WINDOW_SECONDS": "3"}
    instance = start_pantau(pantau, data_dir, [entry], **env, **SCHEDULED)
    wait_probed(instance, ["cam"])

    # The owner switches the camera to a 1080p stream.
    status, _ = instance.request("PUT", "/api/cameras/cam", {**entry, "url": gst.url("/aac")})
    assert status == 200
    status, probe = instance.request("POST", "/api/cameras/cam/probe")
    changes = instance.log_events("camera_facts_changed")
    instance.stop()

    assert status == 200
    assert [(item["width"], item["height"]) for item in probe["history"]] == [(2688, 1520), (1920, 1080)]
    assert len(changes) == 1
    assert "2688x1520" in changes[0]["previous"]
    assert "1920x1080" in changes[0]["current"]

    # A restart keeps the facts and the history.
    restarted = start_pantau(pantau, data_dir, None, PANTAU_PROBE_INTERVAL_HOURS="0", **env)
    status, kept = restarted.request("GET", "/api/cameras/cam/probe")
    assert status == 200
    assert kept["facts"]["height"] == 1080
    assert len(kept["history"]) == 2


def test_probe_unknown_camera_404(pantau, tmp_path):
    instance = start_pantau(pantau, tmp_path / "data", [])

    status, body = instance.request("POST", "/api/cameras/nope/probe")

    assert status == 404
    assert body["error"] == "camera_not_found"

