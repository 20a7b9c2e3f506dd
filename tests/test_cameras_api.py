"""Admin camera API: validation, write-back, password masking and live changes."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from tests.conftest import SECURE_CREDENTIALS, start_pantau
from tests.support import camera_entry, decode_stream

USER, PASSWORD = SECURE_CREDENTIALS.split(":")


def test_put_creates_camera_and_writes_file(gst, pantau, tmp_path):
    instance = start_pantau(pantau, tmp_path, [])

    status, body = instance.request("PUT", "/api/cameras/legian-1", camera_entry("legian-1", gst.url("/h264")))

    assert status == 201
    assert body["id"] == "legian-1"
    written = yaml.safe_load((tmp_path / "cameras.yaml").read_text())
    assert [entry["id"] for entry in written] == ["legian-1"]
    decoded = decode_stream(f"{instance.base}/live/legian-1.flv", frames=10)
    assert (decoded.width, decoded.height) == (2688, 1520)


def test_get_masks_password_and_put_keeps_it(gst, pantau, tmp_path):
    url = gst.url("/secure", f"{USER}:{PASSWORD}")
    instance = start_pantau(pantau, tmp_path, [camera_entry("secure", url)])

    view = instance.camera("secure")
    assert PASSWORD not in view["url"]
    assert view["url"] == gst.url("/secure", f"{USER}:***")

    # GET, edit the name, PUT back: the stored password survives.
    edited = {key: view[key] for key in ("id", "url", "owner", "location", "mode", "transport")}
    edited["name"] = "Renamed"
    status, body = instance.request("PUT", "/api/cameras/secure", edited)
    assert status == 200
    assert body["name"] == "Renamed"
    written = yaml.safe_load((tmp_path / "cameras.yaml").read_text())
    assert written[0]["url"] == url

    decoded = decode_stream(f"{instance.base}/live/secure.flv", frames=5)
    assert decoded.video_frames == 5
    assert PASSWORD not in instance.log_text()


def test_env_reference_stays_a_reference(gst, pantau, tmp_path):
    instance = start_pantau(pantau, tmp_path, [], CAM_SECURE_PASSWORD=PASSWORD)
    url = gst.url("/secure", f"{USER}:${{CAM_SECURE_PASSWORD}}")

    status, body = instance.request("PUT", "/api/cameras/ref", camera_entry("ref", url))

    assert status == 201
    assert "${CAM_SECURE_PASSWORD}" in body["url"]
    written = yaml.safe_load((tmp_path / "cameras.yaml").read_text())
    assert written[0]["url"] == url
    decoded = decode_stream(f"{instance.base}/live/ref.flv", frames=5)
    assert decoded.video_frames == 5
    assert PASSWORD not in instance.log_text()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "x", "url": "http://cam/", "owner": {"category": "pemkab", "name": "a"}}, "url"),
        ({"name": "x", "url": "rtsp://cam/", "owner": {"category": "hotel", "name": "a"}}, "owner.category"),
        ({"name": "x", "url": "rtsp://cam/", "owner": {"category": "desa", "name": "a"}, "mode": "sometimes"}, "mode"),
        ({"url": "rtsp://cam/", "owner": {"category": "desa", "name": "a"}}, "name"),
        ({"name": "x", "url": "rtsp://cam/", "owner": {"category": "desa", "name": "a"}, "colour": "red"}, "colour"),
        ({"name": "x", "url": "rtsp://cam/", "owner": {"category": "desa", "name": "a"},
          "location": {"lat": 123.0}}, "location.lat"),
    ],
)
def test_put_rejects_bad_field(body, field, pantau, tmp_path):
    instance = start_pantau(pantau, tmp_path, [])

    status, error = instance.request("PUT", "/api/cameras/cam-1", body)

    assert status == 400
    assert error["error"] == "invalid_field"
    assert error["field"] == field
    assert error["reason"]
    assert not (tmp_path / "cameras.yaml").read_text().strip("[]\n")


def test_put_rejects_bad_id_and_bad_json(pantau, tmp_path):
    instance = start_pantau(pantau, tmp_path, [])
    good = {"name": "x", "url": "rtsp://cam/", "owner": {"category": "desa", "name": "a"}}

    bad_id_status, bad_id = instance.request("PUT", "/api/cameras/Bad..Id", good)
    mismatch_status, mismatch = instance.request("PUT", "/api/cameras/cam-1", dict(good, id="cam-2"))
    json_status, json_error = instance.request("PUT", "/api/cameras/cam-1", raw=b"{not json")
    list_status, list_error = instance.request("PUT", "/api/cameras/cam-1", raw=b"[1, 2]")

    assert (bad_id_status, bad_id["field"]) == (400, "id")
    assert (mismatch_status, mismatch["field"]) == (400, "id")
    assert (json_status, json_error["error"]) == (400, "invalid_json")
    assert (list_status, list_error["error"]) == (400, "invalid_body")


def test_delete_removes_camera(gst, pantau, tmp_path):
    instance = start_pantau(
        pantau, tmp_path, [camera_entry("a", gst.url("/h264")), camera_entry("b", gst.url("/h264"))]
    )

    status, _ = instance.request("DELETE", "/api/cameras/a")
    missing_status, missing = instance.request("GET", "/api/cameras/a")

    assert status == 204
    assert missing_status == 404
    assert missing == {"error": "camera_not_found", "reason": "no camera with id 'a'", "field": "id"}
    written = yaml.safe_load((tmp_path / "cameras.yaml").read_text())
    assert [entry["id"] for entry in written] == ["b"]


def test_unwritable_file_refuses_change(gst, pantau, tmp_path):
    cameras_dir = tmp_path / "ro"
    cameras_dir.mkdir()
    cameras_file = cameras_dir / "cameras.yaml"
    cameras_file.write_text(yaml.safe_dump([camera_entry("a", gst.url("/h264"))]))
    # Tests run as root, and chmod does not stop root from writing, so mount the directory read-only.
    mounted = subprocess.run(["mount", "--bind", str(cameras_dir), str(cameras_dir)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot bind-mount a directory: {mounted.stderr.decode().strip()}")
    subprocess.run(["mount", "-o", "remount,bind,ro", str(cameras_dir)], check=True)
    try:
        instance = start_pantau(pantau, tmp_path / "data", None, PANTAU_CAMERAS=str(cameras_file))
        status, error = instance.request("PUT", "/api/cameras/b", camera_entry("b", gst.url("/h264")))
        list_status, listing = instance.request("GET", "/api/cameras")

        assert status == 409
        assert error["error"] == "cameras_file_not_writable"
        assert "cameras.yaml" in error["reason"]
        assert list_status == 200
        assert [item["id"] for item in listing["items"]] == ["a"]
        assert instance.log_events("camera_change_failed")
    finally:
        for instance in pantau:
            instance.stop()
        subprocess.run(["umount", str(cameras_dir)], check=False)


def test_malformed_entry_does_not_stop_others(gst, pantau, tmp_path):
    cameras = [
        camera_entry("good", gst.url("/h264")),
        camera_entry("bad-owner", gst.url("/h264"), owner={"category": "villa", "name": "X"}),
        camera_entry("Bad Id", gst.url("/h264")),
        camera_entry("good", gst.url("/h265")),
    ]
    instance = start_pantau(pantau, tmp_path, cameras)

    status, listing = instance.request("GET", "/api/cameras")

    assert status == 200
    assert [item["id"] for item in listing["items"]] == ["good"]
    rejected = {(item["camera_id"], item["field"]) for item in listing["rejected"]}
    assert ("bad-owner", "owner.category") in rejected
    assert ("Bad Id", "id") in rejected
    assert ("good", "id") in rejected  # the duplicate
    logged = {(event.get("camera_id"), event.get("field")) for event in instance.log_events("camera_rejected")}
    assert ("bad-owner", "owner.category") in logged
    decoded = decode_stream(f"{instance.base}/live/good.flv", frames=5)
    assert (decoded.width, decoded.height) == (2688, 1520)


def test_get_response_can_be_put_back_whole(gst, pantau, tmp_path):
    url = gst.url("/secure", f"{USER}:{PASSWORD}")
    instance = start_pantau(pantau, tmp_path, [camera_entry("secure", url)])
    decode_stream(f"{instance.base}/live/secure.flv", frames=3)
    view = instance.camera("secure")

    status, body = instance.request("PUT", "/api/cameras/secure", dict(view, name="Round trip"))

    assert status == 200, body
    assert body["name"] == "Round trip"
    written = yaml.safe_load((tmp_path / "cameras.yaml").read_text())
    assert list(written[0])[0] == "id"
    assert "state" not in written[0]
    assert written[0]["url"] == url


def test_mask_without_stored_password_is_rejected(gst, pantau, tmp_path):
    url = gst.url("/secure", f"{USER}:{PASSWORD}")
    instance = start_pantau(pantau, tmp_path, [camera_entry("secure", url)])
    moved = camera_entry("secure", url.replace("127.0.0.1", "localhost").replace(PASSWORD, "***"))
    created = camera_entry("other", gst.url("/secure", f"{USER}:***"))

    moved_status, moved_error = instance.request("PUT", "/api/cameras/secure", moved)
    created_status, created_error = instance.request("PUT", "/api/cameras/other", created)

    assert (moved_status, moved_error["field"]) == (400, "url")
    assert (created_status, created_error["field"]) == (400, "url")
    assert "***" in moved_error["reason"]
    written = yaml.safe_load((tmp_path / "cameras.yaml").read_text())
    assert [entry["url"] for entry in written] == [url]


def test_enum_error_lists_allowed_values(pantau, tmp_path):
    instance = start_pantau(pantau, tmp_path, [])
    body = {"name": "x", "url": "rtsp://cam/", "owner": {"category": "hotel", "name": "a"}}

    status, error = instance.request("PUT", "/api/cameras/cam-1", body)

    assert status == 400
    assert "pemkab, desa, swasta" in error["reason"]


def test_written_file_is_private(gst, pantau, tmp_path):
    instance = start_pantau(pantau, tmp_path / "data", None)

    status, _ = instance.request("PUT", "/api/cameras/a", camera_entry("a", gst.url("/secure", f"{USER}:{PASSWORD}")))

    assert status == 201
    assert oct((tmp_path / "data" / "cameras.yaml").stat().st_mode & 0o777) == "0o600"


def test_sighup_reloads_cameras_file(gst, pantau, tmp_path):
    import signal
    import time

    instance = start_pantau(pantau, tmp_path, [camera_entry("a", gst.url("/h264")), camera_entry("b", gst.url("/h264"))])
    (tmp_path / "cameras.yaml").write_text(
        yaml.safe_dump([camera_entry("b", gst.url("/h265"), name="Renamed"), camera_entry("c", gst.url("/d1"))])
    )

    instance.process.send_signal(signal.SIGHUP)
    time.sleep(1.5)
    status, listing = instance.request("GET", "/api/cameras")

    assert status == 200
    assert sorted(item["id"] for item in listing["items"]) == ["b", "c"]
    assert instance.camera("b")["url"] == gst.url("/h265")
    decoded = decode_stream(f"{instance.base}/live/c.flv", frames=5)
    assert (decoded.width, decoded.height) == (768, 576)

    (tmp_path / "cameras.yaml").write_text("- id: [broken\n")
    instance.process.send_signal(signal.SIGHUP)
    time.sleep(1.5)
    status, listing = instance.request("GET", "/api/cameras")
    assert sorted(item["id"] for item in listing["items"]) == ["b", "c"]
    assert instance.log_events("cameras_reload_failed")
