"""Access control with checks on: credentials, scopes, signed tokens, revocation and rate limits."""

from __future__ import annotations

import http.client
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import pytest

from proto.hls import parse_media_playlist
from relay.access import read_token
from tests.access_support import OWNERS, RANGE, create_consumer, make_token, request_from, wait_for_events
from tests.support import REPO, GstRtspServer, Pantau, camera_entry, http_get


@pytest.fixture(scope="module")
def service(tmp_path_factory) -> Iterator[Pantau]:
    """Pantau with access control on and three cameras of different owners, all on one d1 stream."""
    server = GstRtspServer({"/d1": "d1"}).start()
    cameras = [camera_entry(camera_id, server.url("/d1"), owner=owner) for camera_id, owner in OWNERS.items()]
    instance = Pantau(
        data_dir=tmp_path_factory.mktemp("access"),
        cameras=cameras,
        auth=True,
        # Failures of one test must not lock the next one out; the limit has its own tests.
        env={"PANTAU_AUTH_MAX_FAILURES": "100000"},
    ).start()
    try:
        yield instance
    finally:
        instance.stop()
        server.stop()


PROTECTED = [
    ("GET", "/api/cameras"),
    ("GET", "/api/cameras/hotel-cam"),
    ("GET", "/api/cameras/hotel-cam/probe"),
    ("GET", "/api/compliance"),
    ("GET", "/api/compliance.csv"),
    ("GET", "/live/hotel-cam.flv"),
    ("GET", "/live/hotel-cam/index.m3u8"),
    ("GET", "/live/hotel-cam/ts/index.m3u8"),
    ("GET", f"/api/recordings/hotel-cam?{RANGE}"),
    ("GET", f"/api/recordings/hotel-cam/export?{RANGE}"),
    ("GET", f"/vod/hotel-cam/index.m3u8?{RANGE}"),
    ("GET", "/metrics"),
    ("GET", "/api/consumers"),
    ("GET", "/api/audit"),
    ("POST", "/api/tokens"),
    ("DELETE", "/api/cameras/hotel-cam"),
]


def test_public_endpoints_need_no_credentials(service):
    for path in ("/healthz", "/readyz", "/", "/static/status.js", "/static/status.css", "/static/vendor/hls.min.js"):
        status, _, _ = http_get(service.base + path)
        assert status == 200, path


def test_missing_credentials_get_401(service):
    for method, path in PROTECTED:
        status, headers, body = http_get(service.base + path, method=method)
        assert status == 401, (method, path, body)
        assert b'"error":"unauthorized"' in body, body
        assert headers["WWW-Authenticate"].startswith("Bearer")
    # Nothing was changed or leaked: the camera is still there.
    assert service.camera("hotel-cam")["id"] == "hotel-cam"


def test_wrong_key_gets_401(service):
    key = create_consumer(service, "wrong-key", {})
    key_id = key.split("_")[1]
    wrong_secret = f"pk_{key_id}_{'x' * 43}"
    for header in (f"Bearer {wrong_secret}", "Bearer pk_000000000000_" + "y" * 43, "Bearer not-a-key", f"Basic {key}", "Bearer"):
        status, _, body = http_get(service.base + "/api/cameras", headers={"Authorization": header})
        assert status == 401, (header, body)
    status, _, _ = http_get(service.base + "/api/cameras", headers={"Authorization": f"Bearer {key}"})
    assert status == 200
    failures = [
        event
        for event in service.admin("GET", "/api/audit?action=auth_failed")[1]["items"]
        if event["consumer"] == "wrong-key"
    ]
    assert len(failures) == 1  # only the wrong secret of a real key id names the consumer
    assert failures[0]["error"] == "invalid_key"


def test_revoked_key_gets_401(service):
    first = create_consumer(service, "revoked", {})
    status, second_body = service.admin("POST", "/api/consumers/revoked/keys")
    assert status == 201, second_body
    second = second_body["key"]
    token = make_token(service, first, "hotel-cam", actions=["live"])["token"]
    first_id = first.split("_")[1]
    assert service.request("GET", "/api/cameras", key=first)[0] == 200

    assert service.admin("DELETE", f"/api/consumers/revoked/keys/{first_id}")[0] == 204
    key_status, key_body = service.request("GET", "/api/cameras", key=first)
    token_status, _, token_body = http_get(f"{service.base}/live/hotel-cam/index.m3u8?token={token}")
    second_status, _ = service.request("GET", "/api/cameras", key=second)
    assert service.admin("DELETE", "/api/consumers/revoked")[0] == 204
    deleted_status, _ = service.request("GET", "/api/cameras", key=second)
    again_status, _ = service.admin("DELETE", f"/api/consumers/revoked/keys/{first_id}")

    assert key_status == 401
    assert key_body["error"] == "invalid_key"
    assert token_status == 401
    assert b"token_revoked" in token_body
    assert second_status == 200
    assert deleted_status == 401
    assert again_status == 404


def test_expired_token_gets_401(service):
    key = create_consumer(service, "expiring", {"actions": ["live"]})
    token = make_token(service, key, "hotel-cam", expires_in_seconds=1)["token"]
    too_long, body = service.request(
        "POST", "/api/tokens", {"camera_id": "hotel-cam", "expires_in_seconds": 86401}, key=key
    )
    time.sleep(1.5)

    status, _, expired = http_get(f"{service.base}/live/hotel-cam/index.m3u8?token={token}")

    assert status == 401
    assert b"token_expired" in expired
    assert too_long == 400
    assert body["field"] == "expires_in_seconds"


def test_token_for_another_camera_gets_403(service):
    key = create_consumer(service, "one-camera", {})
    token = make_token(service, key, "hotel-cam", actions=["live"])["token"]

    other, _, _ = http_get(f"{service.base}/live/desa-cam.flv?token={token}")
    other_hls, _, _ = http_get(f"{service.base}/live/desa-cam/index.m3u8?token={token}")
    listing, _, _ = http_get(f"{service.base}/api/cameras?token={token}")
    playback, _, _ = http_get(f"{service.base}/api/recordings/hotel-cam?{RANGE}&token={token}")
    own, _, _ = http_get(f"{service.base}/live/hotel-cam/index.m3u8?token={token}")

    assert other == 403
    assert other_hls == 403
    assert listing == 403  # a token is no key for the API
    assert playback == 403  # the token allows live only
    assert own == 200


def test_consumer_outside_owner_scope_gets_403(service):
    hotel = create_consumer(service, "hotel", {"owners": ["Hotel Contoh"]})
    villages = create_consumer(service, "villages", {"owner_categories": ["desa", "pemkab"]})

    status, listing = service.request("GET", "/api/cameras", key=hotel)
    _, village_listing = service.request("GET", "/api/cameras", key=villages)
    _, report = service.request("GET", "/api/compliance", key=hotel)
    csv_status, _, csv_body = http_get(service.base + "/api/compliance.csv", headers={"Authorization": f"Bearer {hotel}"})
    camera_status, camera_body = service.request("GET", "/api/cameras/desa-cam", key=hotel)
    live_status, _, _ = http_get(service.base + "/live/desa-cam.flv", headers={"Authorization": f"Bearer {hotel}"})
    missing_status, missing_body = service.request("GET", "/api/cameras/no-such-cam", key=hotel)
    missing_live, _, _ = http_get(service.base + "/live/no-such-cam.flv", headers={"Authorization": f"Bearer {hotel}"})
    token_status, _ = service.request("POST", "/api/tokens", {"camera_id": "desa-cam"}, key=hotel)
    admin_missing, admin_body = service.admin("GET", "/api/cameras/no-such-cam")

    assert status == 200
    assert [item["id"] for item in listing["items"]] == ["hotel-cam"]
    assert "url" not in listing["items"][0]  # a consumer never gets the camera's RTSP address
    assert listing["rejected"] == []
    assert sorted(item["id"] for item in village_listing["items"]) == ["desa-cam", "pemkab-cam"]
    assert [item["id"] for item in report["items"]] == ["hotel-cam"]
    assert [row["cameras"] for row in report["totals"]["by_owner_category"]] == [1]
    assert csv_status == 200
    assert b"hotel-cam" in csv_body
    assert b"desa-cam" not in csv_body
    assert camera_status == 403
    assert live_status == 403
    # An id that does not exist looks exactly like one outside the scope.
    assert missing_status == 403
    assert missing_live == 403
    assert set(missing_body) == set(camera_body)
    assert missing_body["error"] == camera_body["error"] == "forbidden"
    assert token_status == 403
    assert admin_missing == 404
    assert admin_body["error"] == "camera_not_found"


def test_playback_without_export_gets_403(service):
    key = create_consumer(service, "playback-only", {"actions": ["live", "playback"]})
    auth = {"Authorization": f"Bearer {key}"}

    listing, _, _ = http_get(f"{service.base}/api/recordings/hotel-cam?{RANGE}", headers=auth)
    vod, _, vod_body = http_get(f"{service.base}/vod/hotel-cam/index.m3u8?{RANGE}", headers=auth)
    export, _, export_body = http_get(f"{service.base}/api/recordings/hotel-cam/export?{RANGE}", headers=auth)
    manifest, _, _ = http_get(f"{service.base}/api/recordings/hotel-cam/export.json?{RANGE}", headers=auth)
    token_status, _ = service.request("POST", "/api/tokens", {"camera_id": "hotel-cam", "actions": ["export"]}, key=key)
    default_token = make_token(service, key, "hotel-cam")

    assert listing == 200
    assert vod == 404  # allowed, and the range contains no video
    assert b"no_recording" in vod_body
    assert export == 403
    assert b"export" in export_body
    assert manifest == 403
    assert token_status == 403
    assert default_token["actions"] == ["live", "playback"]
    assert set(default_token["urls"]) == {"flv", "hls", "hls_ts", "recordings", "vod"}


def test_empty_scope_list_means_none(service):
    no_cameras = create_consumer(service, "no-cameras", {"cameras": []})
    no_actions = create_consumer(service, "no-actions", {"actions": []})
    everything = create_consumer(service, "everything", {})

    _, none_listed = service.request("GET", "/api/cameras", key=no_cameras)
    none_camera, _ = service.request("GET", "/api/cameras/hotel-cam", key=no_cameras)
    _, visible = service.request("GET", "/api/cameras", key=no_actions)
    live, _, _ = http_get(service.base + "/live/hotel-cam.flv", headers={"Authorization": f"Bearer {no_actions}"})
    _, all_listed = service.request("GET", "/api/cameras", key=everything)

    assert none_listed["items"] == []
    assert none_camera == 403
    assert len(visible["items"]) == 3  # cameras are in scope, but no action is
    assert live == 403
    assert len(all_listed["items"]) == 3


def test_admin_endpoints_need_admin_token(service):
    key = create_consumer(service, "not-admin", {})
    token = make_token(service, key, "hotel-cam", actions=["live"])["token"]
    camera = service.camera("hotel-cam")
    admin_only = [
        ("PUT", "/api/cameras/new-cam", {"name": "x", "url": "rtsp://127.0.0.1:9/x", "owner": OWNERS["hotel-cam"]}),
        ("DELETE", "/api/cameras/hotel-cam", None),
        ("POST", "/api/cameras/hotel-cam/probe", None),
        ("GET", "/api/recordings/hotel-cam/holds", None),
        ("POST", "/api/recordings/hotel-cam/holds", {"start": "2020-01-01T00:00:00Z", "end": "2020-01-01T01:00:00Z", "reason": "x"}),
        ("DELETE", "/api/recordings/hotel-cam/holds/1", None),
        ("GET", "/metrics", None),
        ("GET", "/api/consumers", None),
        ("POST", "/api/consumers", {"name": "sneaky", "scope": {}}),
        ("DELETE", "/api/consumers/not-admin", None),
        ("POST", "/api/consumers/not-admin/keys", None),
        ("GET", "/api/audit", None),
    ]
    for method, path, body in admin_only:
        with_key, key_body = service.request(method, path, body, key=key)
        with_token, _ = service.request(method, f"{path}{'&' if '?' in path else '?'}token={token}", body)
        without, _ = service.request(method, path, body)
        assert with_key == 403, (method, path, key_body)
        assert key_body["error"] == "forbidden"
        assert with_token == 403, (method, path)
        assert without == 401, (method, path)
    import_status, _ = service.request(
        "POST", "/api/cameras/import", raw=b"id,name\n", headers={"Content-Type": "text/csv"}, key=key
    )
    assert import_status == 403

    assert service.camera("hotel-cam")["name"] == camera["name"]  # DELETE with a consumer key changed nothing
    assert service.admin("GET", "/api/cameras/new-cam")[0] == 404
    assert service.admin("GET", "/api/consumers/sneaky")[0] == 404
    assert service.admin("GET", "/metrics")[0] == 200
    assert service.admin("GET", "/api/recordings/hotel-cam/holds")[0] == 200


def test_hls_playlist_carries_token_and_session(service):
    key = create_consumer(service, "hls-viewer", {"actions": ["live"]})
    token = make_token(service, key, "hotel-cam")["token"]

    for layout in ("", "ts/"):
        base = f"{service.base}/live/hotel-cam/{layout}"
        status, _, body = http_get(f"{base}index.m3u8?token={token}")
        assert status == 200, body
        playlist = parse_media_playlist(body.decode())
        uris = [segment["uri"] for segment in playlist["segments"]]
        uris += [segment["map"] for segment in playlist["segments"] if segment["map"]]
        sessions = set()
        for uri in uris:
            query = parse_qs(urlsplit(uri).query)
            assert query["token"] == [token], uri
            sessions.update(query["session"])
        assert len(sessions) == 1
        fetched, _, data = http_get(base + uris[0])
        assert fetched == 200
        assert len(data) > 1000
        bare, _, _ = http_get(base + urlsplit(uris[0]).path)
        assert bare == 401

    # Fetched with a key, a playlist's URIs carry only the session.
    status, _, body = http_get(
        f"{service.base}/live/hotel-cam/index.m3u8", headers={"Authorization": f"Bearer {key}"}
    )
    assert status == 200
    segment_uri = parse_media_playlist(body.decode())["segments"][0]["uri"]
    assert "session=" in segment_uri
    assert "token=" not in segment_uri


def test_revoked_key_ends_running_flv(service):
    key = create_consumer(service, "cut-off", {})
    key_id = key.split("_")[1]
    connection = http.client.HTTPConnection("127.0.0.1", service.port, timeout=20)
    connection.request("GET", "/live/desa-cam.flv", headers={"Authorization": f"Bearer {key}"})
    response = connection.getresponse()
    assert response.status == 200
    received = len(response.read1(65536))
    while received < 100_000:
        received += len(response.read1(65536))

    revoked_at = time.monotonic()
    assert service.admin("DELETE", f"/api/consumers/cut-off/keys/{key_id}")[0] == 204
    ended = False
    try:
        while time.monotonic() - revoked_at < 10:
            if not response.read1(65536):
                ended = True
                break
    except (http.client.IncompleteRead, ConnectionError):
        ended = True
    finally:
        connection.close()

    events = wait_for_events(service, lambda event: event["action"] == "live" and event["consumer"] == "cut-off")

    assert ended, "the FLV response went on after its key was revoked"
    assert time.monotonic() - revoked_at < 5
    assert len(events) == 1
    assert events[0]["ended"] == "revoked"
    assert events[0]["result"] == "ok"
    assert events[0]["bytes"] >= received


def test_scope_change_applies_to_running_keys(service):
    key = create_consumer(service, "changing", {"owners": ["Hotel Contoh"]})
    before, _ = service.request("GET", "/api/cameras/desa-cam", key=key)

    status, body = service.admin("PUT", "/api/consumers/changing", {"scope": {"owners": ["Desa Kuta"]}})
    after, _ = service.request("GET", "/api/cameras/desa-cam", key=key)
    listed = service.admin("GET", "/api/consumers")[1]["items"]

    assert before == 403
    assert status == 200, body
    assert after == 200
    entry = next(item for item in listed if item["name"] == "changing")
    assert entry["scope"] == {"owners": ["Desa Kuta"]}
    assert "key" not in entry
    assert all(set(k) == {"key_id", "created"} for k in entry["keys"])


def test_consumer_body_is_validated(service):
    bad = [
        ({"name": "Bad Name", "scope": {}}, "name"),
        ({"name": "ok-name", "scope": {"actions": ["watch"]}}, "scope.actions[0]"),
        ({"name": "ok-name", "scope": {"cameras": ["../x"]}}, "scope.cameras[0]"),
        ({"name": "ok-name", "scope": {"owner_categories": ["hotel"]}}, "scope.owner_categories[0]"),
        ({"name": "ok-name"}, "scope"),
        ({"name": "ok-name", "scope": {}, "extra": 1}, "extra"),
    ]
    for body, field in bad:
        status, answer = service.admin("POST", "/api/consumers", body)
        assert status == 400, body
        assert answer["field"] == field, answer
    assert create_consumer(service, "dupe", {})
    assert service.admin("POST", "/api/consumers", {"name": "dupe", "scope": {}})[0] == 409


# --- rate limit on failed authentication --------------------------------------------------


@pytest.fixture
def limited(tmp_path) -> Iterator[Pantau]:
    instance = Pantau(
        data_dir=tmp_path / "data",
        cameras=[],
        auth=True,
        env={"PANTAU_AUTH_MAX_FAILURES": "3", "PANTAU_AUTH_FAILURE_WINDOW_SECONDS": "4"},
    ).start()
    try:
        yield instance
    finally:
        instance.stop()


def test_failed_auth_limited_per_address(limited):
    statuses = [request_from("127.0.0.2", limited, "GET", "/api/cameras", key="wrong-key")[0] for _ in range(3)]
    blocked, headers, body = request_from("127.0.0.2", limited, "GET", "/api/cameras", key=limited.admin_token)
    again, _, _ = request_from("127.0.0.2", limited, "GET", "/api/cameras", key=limited.admin_token)
    other, _, _ = request_from("127.0.0.3", limited, "GET", "/api/cameras", key=limited.admin_token)
    time.sleep(5)
    later, _, _ = request_from("127.0.0.2", limited, "GET", "/api/cameras", key=limited.admin_token)
    time.sleep(5)  # the next window ends and reports the counts

    assert statuses == [401, 401, 401]
    assert blocked == 429
    assert body["error"] == "too_many_failures"
    assert 1 <= int(headers["Retry-After"]) <= 4
    assert again == 429
    assert other == 200
    assert later == 200
    first = [event for event in limited.log_events("auth_failed") if event["client"] == "127.0.0.2"]
    repeated = [event for event in limited.log_events("auth_failures_repeated") if event.get("client") == "127.0.0.2"]
    rate_limited = [event for event in limited.log_events("auth_rate_limited") if event["client"] == "127.0.0.2"]
    assert len(first) == 1  # logged once, then counted
    assert [event["failures"] for event in repeated] == [3]
    assert [event["rejected"] for event in rate_limited] == [2]


def test_failed_auth_limited_per_consumer(limited):
    key = create_consumer(limited, "target", {})
    wrong = key[:-4] + ("aaaa" if not key.endswith("aaaa") else "bbbb")
    attackers = ["127.0.0.4", "127.0.0.5", "127.0.0.6"]
    statuses = [request_from(address, limited, "GET", "/api/cameras", key=wrong)[0] for address in attackers]

    attacker_with_key, _, _ = request_from("127.0.0.4", limited, "GET", "/api/cameras", key=key)
    attacker_other_credential, _, _ = request_from("127.0.0.4", limited, "GET", "/api/cameras", key=limited.admin_token)
    clean_client, _, _ = request_from("127.0.0.7", limited, "GET", "/api/cameras", key=key)

    assert statuses == [401, 401, 401]
    assert attacker_with_key == 429  # the consumer's keys are locked for addresses that failed
    assert attacker_other_credential == 200  # one failure is below the address limit
    assert clean_client == 200  # its own clients keep working


# --- secrets --------------------------------------------------------------------------------


def test_admin_token_generated_and_kept(own_gst, tmp_path):
    server = GstRtspServer({"/d1": "d1"}).start()
    own_gst.append(server)
    data_dir = tmp_path / "data"
    instance = Pantau(
        data_dir=data_dir,
        cameras=[camera_entry("cam", server.url("/d1"))],
        auth=True,
        env={"PANTAU_ADMIN_TOKEN": ""},
    )
    instance.start()
    try:
        created = instance.log_events("admin_token_created")
        token_file = data_dir / "admin-token"
        secret_file = data_dir / "token-secret"
        admin_token = token_file.read_text().strip()
        status, _ = instance.request("GET", "/api/consumers", key=admin_token)
        token = instance.request("POST", "/api/tokens", {"camera_id": "cam"}, key=admin_token)[1]["token"]
        assert instance.stop() == 0
        instance.start()
        loaded = instance.log_events("admin_token_loaded")
        after_restart, _ = instance.request("GET", "/api/consumers", key=admin_token)
        token_after, _, _ = http_get(f"{instance.base}/live/cam/index.m3u8?token={token}")
    finally:
        instance.stop()

    assert created
    assert created[0]["path"] == str(token_file)
    assert admin_token not in instance.log_text()
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert len(admin_token) >= 40
    assert status == 200
    assert loaded
    assert loaded[0]["path"] == str(token_file)
    assert after_restart == 200
    assert token_after == 200  # the token secret survived the restart


def test_auth_off_warns_and_allows_everything(pantau, tmp_path):
    instance = Pantau(data_dir=tmp_path / "data", cameras=[])
    pantau.append(instance)
    instance.start()

    status, _ = instance.request("GET", "/api/consumers")
    warnings = instance.log_events("access_control_off")

    assert status == 200
    assert len(warnings) == 1
    assert "closed network" in warnings[0]["effect"]


def test_secret_setting_is_not_echoed(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "relay", "serve"],
        env={**os.environ, "PANTAU_DATA_DIR": str(tmp_path), "PANTAU_ADMIN_TOKEN": "short-secret"},
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
    )

    assert result.returncode == 2
    assert "PANTAU_ADMIN_TOKEN" in result.stderr
    assert "short-secret" not in result.stderr


def test_demo_banner_prints_admin_token_and_signed_url(tmp_path):
    from relay.access import load_or_create_secret
    from relay.demo import demo_banner
    from relay.settings import load_settings

    admin_token, _ = load_or_create_secret(tmp_path / "admin-token")
    secret, _ = load_or_create_secret(tmp_path / "token-secret")
    settings = load_settings({"PANTAU_DATA_DIR": str(tmp_path)})

    banner = demo_banner(settings, "http://127.0.0.1:8080")

    assert admin_token in banner
    url = next(line for line in banner.splitlines() if "/live/demo.flv" in line)
    token = parse_qs(urlsplit(url.split('"')[1]).query)["token"][0]
    claims = read_token(secret, token)
    assert claims.cam == "demo"
    assert claims.act == ["live"]
    assert claims.exp > time.time() + 86000
