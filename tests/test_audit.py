"""The audit log: one event per viewing, export and change, the SHA-256 chain and its verification."""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urljoin

import pytest

from proto.hls import parse_media_playlist
from tests.access_support import OWNERS, audit_events, create_consumer, make_token, settled_events
from tests.recording_support import complete_segments, iso, wait_until
from tests.support import REPO, GstRtspServer, Pantau, camera_entry, ffprobe_frames, http_get


@pytest.fixture
def audited(own_gst, pantau, tmp_path):
    """Pantau with checks on, a short session idle time and two cameras of different owners."""

    def start(record: bool = False) -> Pantau:
        server = GstRtspServer({"/d1": "d1"}).start()
        own_gst.append(server)
        extra = {"mode": "always", "record": True} if record else {}
        cameras = [
            camera_entry("hotel-cam", server.url("/d1"), owner=OWNERS["hotel-cam"], **extra),
            camera_entry("desa-cam", server.url("/d1"), owner=OWNERS["desa-cam"]),
        ]
        instance = Pantau(
            data_dir=tmp_path / "data",
            cameras=cameras,
            auth=True,
            env={"PANTAU_IDLE_CLOSE_SECONDS": "2", "PANTAU_SEGMENT_SECONDS": "3"},
        )
        pantau.append(instance)
        return instance.start()

    return start


def read_body(response: http.client.HTTPResponse) -> int:
    """Read a response to its end and return the number of body bytes."""
    total = 0
    try:
        while chunk := response.read1(65536):
            total += len(chunk)
    except (http.client.IncompleteRead, ConnectionError):
        pass
    return total


def test_flv_session_is_one_event(audited):
    instance = audited()
    key = create_consumer(instance, "videowall", {"owner_categories": ["swasta"], "actions": ["live"]})
    connection = http.client.HTTPConnection("127.0.0.1", instance.port, timeout=30)
    started = time.monotonic()
    connection.request(
        "GET",
        "/live/hotel-cam.flv",
        headers={"Authorization": f"Bearer {key}", "X-Pantau-Reason": "laporan kecelakaan 42", "User-Agent": "wall/1.0"},
    )
    response = connection.getresponse()
    assert response.status == 200
    received = 0
    while time.monotonic() - started < 4:
        received += len(response.read1(65536))
    # Removing the camera ends the response from the server's side, so every byte sent is read.
    assert instance.admin("DELETE", "/api/cameras/hotel-cam")[0] == 204
    received += read_body(response)
    measured = time.monotonic() - started
    connection.close()

    events = settled_events(instance, lambda event: event["action"] == "live")

    assert len(events) == 1, events
    event = events[0]
    assert event["format"] == "flv"
    assert event["consumer"] == "videowall"
    assert event["credential"] == "consumer"
    assert event["camera_id"] == "hotel-cam"
    assert event["owner"] == OWNERS["hotel-cam"]
    assert event["client"] == "127.0.0.1"
    assert event["user_agent"] == "wall/1.0"
    assert event["reason"] == "laporan kecelakaan 42"
    assert event["result"] == "ok"
    assert event["ended"] == "server"
    assert received > 100_000
    assert event["bytes"] == received
    assert abs(event["duration_seconds"] - measured) < 1.0, (event, measured)


def test_hls_session_is_one_event(audited):
    instance = audited()
    key = create_consumer(instance, "dashboard", {"actions": ["live"]})
    token = make_token(instance, key, "hotel-cam", reason="pemantauan lalu lintas")["token"]
    playlist_url = f"{instance.base}/live/hotel-cam/index.m3u8?token={token}"
    fetched: set[str] = set()
    received = 0
    requests = 0
    first = time.monotonic()
    while time.monotonic() - first < 6:
        status, _, body = http_get(playlist_url)
        assert status == 200, body
        received += len(body)
        requests += 1
        playlist = parse_media_playlist(body.decode())
        for segment in playlist["segments"]:
            for uri in (segment["map"], segment["uri"]):
                if uri and uri not in fetched:
                    fetched.add(uri)
                    status, _, data = http_get(urljoin(playlist_url, uri))
                    assert status == 200
                    received += len(data)
                    requests += 1
        time.sleep(0.5)
    last = time.monotonic()

    # The session ends PANTAU_IDLE_CLOSE_SECONDS (2 s) after its last request.
    events = settled_events(instance, lambda event: event["action"] == "live", quiet=3)

    assert len(events) == 1, events
    event = events[0]
    assert event["format"] == "hls_fmp4"
    assert event["credential"] == "token"
    assert event["consumer"] == "dashboard"
    assert event["reason"] == "pemantauan lalu lintas"
    assert event["requests"] == requests
    assert event["bytes"] == received
    assert abs(event["duration_seconds"] - (last - first)) < 1.0, event
    assert event["statuses"] == {"200": requests}


def test_vod_playback_and_export_are_one_event_each(audited):
    instance = audited(record=True)
    assert wait_until(lambda: len(complete_segments(instance, "hotel-cam")) >= 2, timeout=40)
    segments = complete_segments(instance, "hotel-cam")
    start, end = segments[0]["start"], segments[1]["end"]
    key = create_consumer(instance, "polres", {"owners": ["Hotel Contoh"], "actions": ["playback", "export"]})
    token = make_token(instance, key, "hotel-cam")["token"]
    span = f"start={start}&end={end}"

    # A player's requests: the playlist, then every byte range it lists.
    vod_url = f"{instance.base}/vod/hotel-cam/index.m3u8?{span}&token={token}"
    first = time.monotonic()
    status, _, body = http_get(vod_url)
    assert status == 200
    received = len(body)
    ranges = 0
    text = body.decode()
    for uri, length, offset in re.findall(r'URI="([^"]+)",BYTERANGE="(\d+)@(\d+)"', text):
        status, _, data = http_get(urljoin(vod_url, uri), headers={"Range": f"bytes={offset}-{int(offset) + int(length) - 1}"})
        assert status == 206
        assert len(data) == int(length)
        received += len(data)
        ranges += 1
    for length, offset, uri in re.findall(r"#EXT-X-BYTERANGE:(\d+)@(\d+)\n(\S+)", text):
        assert "token=" in uri
        assert "session=" in uri
        status, _, data = http_get(urljoin(vod_url, uri), headers={"Range": f"bytes={offset}-{int(offset) + int(length) - 1}"})
        assert status == 206
        assert len(data) == int(length)
        received += len(data)
        ranges += 1
    vod_seconds = time.monotonic() - first

    export_started = time.monotonic()
    status, _, clip = http_get(f"{instance.base}/api/recordings/hotel-cam/export?{span}&token={token}")
    export_seconds = time.monotonic() - export_started
    assert status == 200
    status, _, manifest_body = http_get(f"{instance.base}/api/recordings/hotel-cam/export.json?{span}&token={token}")
    manifest = json.loads(manifest_body)

    playbacks = settled_events(instance, lambda event: event["action"] == "playback", quiet=3)
    events = audit_events(instance, camera="hotel-cam")
    exports = [event for event in events if event["action"] == "export"]
    manifests = [event for event in events if event["action"] == "export_manifest"]

    assert ranges >= 3
    assert len(playbacks) == 1, playbacks
    assert playbacks[0]["format"] == "vod"
    assert playbacks[0]["consumer"] == "polres"
    assert playbacks[0]["bytes"] == received
    assert playbacks[0]["requests"] == ranges + 1
    assert abs(playbacks[0]["duration_seconds"] - vod_seconds) < 1.0
    assert len(exports) == 1, exports
    assert exports[0]["bytes"] == len(clip) == manifest["bytes"]
    assert exports[0]["detail"]["sha256"] == manifest["sha256"]
    assert exports[0]["detail"]["start"] == start
    assert abs(exports[0]["duration_seconds"] - export_seconds) < 1.0
    assert len(manifests) == 1

    # The signed VOD URL also plays in FFmpeg, whose requests follow the token in the playlist.
    probed = ffprobe_frames(vod_url, packets=None)
    assert probed.frames > 24
    assert (probed.width, probed.height) == (768, 576)


def test_changes_are_audited(audited):
    instance = audited()
    entry = camera_entry("new-cam", "rtsp://127.0.0.1:9/x", owner=OWNERS["pemkab-cam"])
    assert instance.admin("PUT", "/api/cameras/new-cam", entry)[0] == 201
    assert instance.admin("PUT", "/api/cameras/new-cam", entry)[0] == 200
    assert instance.admin("DELETE", "/api/cameras/new-cam")[0] == 204
    status, hold = instance.admin(
        "POST",
        "/api/recordings/desa-cam/holds",
        {"start": "2024-05-01T00:00:00Z", "end": "2024-05-01T01:00:00Z", "reason": "perkara 12/2024"},
    )
    assert status == 201, hold
    assert instance.admin("DELETE", f"/api/recordings/desa-cam/holds/{hold['id']}")[0] == 204
    key = create_consumer(instance, "satpol-pp", {"owner_categories": ["desa"]})
    status, second = instance.admin("POST", "/api/consumers/satpol-pp/keys")
    assert status == 201
    assert instance.admin("DELETE", f"/api/consumers/satpol-pp/keys/{second['key_id']}")[0] == 204
    assert instance.admin("DELETE", "/api/consumers/satpol-pp")[0] == 204

    events = audit_events(instance)
    actions = [event["action"] for event in events]

    assert actions == [
        "camera_put",
        "camera_put",
        "camera_delete",
        "hold_create",
        "hold_release",
        "consumer_create",
        "key_create",
        "key_revoke",
        "consumer_delete",
    ]
    assert [event["detail"]["created"] for event in events[:2]] == [True, False]
    assert events[2]["owner"] == OWNERS["pemkab-cam"]
    assert events[3]["detail"]["reason"] == "perkara 12/2024"
    assert events[4]["detail"]["hold_id"] == str(hold["id"])
    assert events[5]["detail"]["consumer"] == "satpol-pp"
    assert events[7]["detail"]["key_id"] == second["key_id"]
    assert all(event["credential"] == "admin" for event in events)
    audit_text = "".join(path.read_text() for path in (instance.data_dir / "audit").glob("audit-*.jsonl"))
    assert key not in audit_text
    assert second["key"] not in audit_text


def test_audit_api_filters(audited):
    instance = audited()
    key = create_consumer(instance, "filterer", {})
    time.sleep(1.1)
    before = iso(time.time())
    for camera_id in ("hotel-cam", "desa-cam", "hotel-cam"):
        make_token(instance, key, camera_id)

    by_camera = audit_events(instance, camera="hotel-cam")
    by_owner = audit_events(instance, owner="Desa%20Kuta")
    by_category = audit_events(instance, owner="swasta")
    by_consumer = audit_events(instance, consumer="filterer", action="token_create")
    in_range = audit_events(instance, start=before, end=iso(time.time() + 1))
    future = audit_events(instance, start=iso(time.time() + 3600))
    limited = instance.admin("GET", "/api/audit?action=token_create&limit=1")[1]
    bad_start, bad = instance.admin("GET", "/api/audit?start=yesterday")
    typo_status, typo = instance.admin("GET", "/api/audit?camrea=hotel-cam")
    changes_to_consumer = audit_events(instance, consumer="filterer", action="consumer_create")

    assert [event["camera_id"] for event in by_camera] == ["hotel-cam", "hotel-cam"]
    assert [event["camera_id"] for event in by_owner] == ["desa-cam"]
    assert len(by_category) == 2
    assert len(by_consumer) == 3
    assert [event["action"] for event in in_range] == ["token_create"] * 3
    assert future == []
    assert len(limited["items"]) == 1
    assert limited["truncated"] is True
    assert bad_start == 400
    assert bad["field"] == "start"
    assert typo_status == 400
    assert typo["field"] == "camrea"
    assert [event["credential"] for event in changes_to_consumer] == ["admin"]


def run_verify(directory: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "relay", "audit", "verify", str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env=dict(os.environ),
    )


def test_audit_verify_detects_edit_and_deletion(audited, tmp_path):
    instance = audited()
    for number in range(6):
        create_consumer(instance, f"consumer-{number}", {})
    assert instance.stop() == 0
    # A second run continues the same chain.
    instance.start()
    create_consumer(instance, "after-restart", {})
    assert instance.stop() == 0
    directory = instance.data_dir / "audit"
    files = sorted(directory.glob("audit-*.jsonl"))
    lines = files[-1].read_text().splitlines()

    intact = run_verify(directory)

    edited = tmp_path / "edited"
    shutil.copytree(directory, edited)
    changed = lines[:]
    changed[2] = changed[2].replace('"consumer-2"', '"consumer-X"')
    (edited / files[-1].name).write_text("\n".join(changed) + "\n")
    after_edit = run_verify(edited)

    deleted = tmp_path / "deleted"
    shutil.copytree(directory, deleted)
    (deleted / files[-1].name).write_text("\n".join(lines[:3] + lines[4:]) + "\n")
    after_delete = run_verify(deleted)

    truncated = tmp_path / "truncated"
    shutil.copytree(directory, truncated)
    (truncated / files[-1].name).write_text("\n".join(lines[:-1]) + "\n")
    after_truncation = run_verify(truncated)

    assert len(files) == 1
    assert len(lines) == 7
    assert intact.returncode == 0, intact.stdout
    assert intact.stdout.startswith("intact: 7 events"), intact.stdout
    assert after_edit.returncode == 1
    assert f"{files[-1].name} line 4: prev does not match the SHA-256 of line 3" in after_edit.stdout
    assert after_delete.returncode == 1
    assert f"{files[-1].name} line 4: prev does not match the SHA-256 of line 3" in after_delete.stdout
    assert after_truncation.returncode == 1
    assert "head.json" in after_truncation.stdout
    assert stat_mode(files[-1]) == 0o600


def stat_mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_audit_torn_line_is_repaired_on_start(audited):
    instance = audited()
    create_consumer(instance, "before-crash", {})
    assert instance.stop() == 0
    path = sorted((instance.data_dir / "audit").glob("audit-*.jsonl"))[-1]
    with open(path, "ab") as handle:
        handle.write(b'{"time": "2024-01-01T00:00:00.000Z", "action": "liv')  # a write cut by power loss

    instance.start()
    create_consumer(instance, "after-crash", {})
    assert instance.stop() == 0
    result = run_verify(path.parent)

    assert result.returncode == 0, result.stdout
    assert instance.log_events("audit_torn_line_removed")
    actions = [json.loads(line)["action"] for line in path.read_text().splitlines()]
    assert actions == ["consumer_create", "audit_repaired", "consumer_create"]
