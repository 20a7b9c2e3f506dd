"""Hostile requests: path traversal in every parameter, random requests, oversized bodies, leaked secrets."""

from __future__ import annotations

import json
import os
import random
import socket
import string
import threading
import time
from collections.abc import Iterator

import pytest

from tests.access_support import OWNERS, create_consumer
from tests.recording_support import complete_segments, wait_until
from tests.support import GstRtspServer, Pantau, camera_entry, http_get

SENTINEL = "pantau-outside-data-dir-7f3a9c"
# Every route with a path parameter, with the parameter to attack marked {} and the others filled in.
TEMPLATES = [
    ("GET", "/api/cameras/{}"),
    ("GET", "/api/cameras/{}/probe"),
    ("GET", "/live/{}.flv"),
    ("GET", "/live/{}/index.m3u8"),
    ("GET", "/live/{}/ts/index.m3u8"),
    ("GET", "/live/cam/init-{}.mp4"),
    ("GET", "/live/cam/seg-{}.m4s"),
    ("GET", "/live/cam/ts/seg-{}.ts"),
    ("GET", "/api/recordings/{}?start=2020-01-01T00:00:00Z&end=2020-01-01T01:00:00Z"),
    ("GET", "/api/recordings/{}/holds"),
    ("DELETE", "/api/recordings/cam/holds/{}"),
    ("GET", "/api/recordings/{}/export?start=2020-01-01T00:00:00Z&end=2020-01-01T01:00:00Z"),
    ("GET", "/api/recordings/{}/export.json?start=2020-01-01T00:00:00Z&end=2020-01-01T01:00:00Z"),
    ("GET", "/vod/{}/index.m3u8?start=2020-01-01T00:00:00Z&end=2020-01-01T01:00:00Z"),
    ("GET", "/vod/{}/segments/1.mp4"),
    ("GET", "/vod/cam/segments/{}.mp4"),
    ("GET", "/api/consumers/{}"),
    ("POST", "/api/consumers/{}/keys"),
    ("DELETE", "/api/consumers/wall/keys/{}"),
    ("GET", "/static/{}"),
    ("GET", "/static/vendor/{}"),
]
ATTACKS = [
    "..",
    "%2e%2e",
    "../../../../outside.txt",
    "..%2f..%2f..%2foutside.txt",
    "..%2F..%2F..%2Foutside.txt",
    "%2e%2e%2f%2e%2e%2foutside.txt",
    "..%5c..%5coutside.txt",
    "%2fetc%2fpasswd",
    "%2F{outside}",
    "....%2f%2foutside.txt",
    "cam%00.mp4",
    "~root",
]
RANGE_ATTACKS = ["../../outside.txt", "..%2f..%2foutside.txt", "%2fetc%2fpasswd", "1;rm", "2024-01-01T00:00:00Z/.."]


def raw_request(port: int, request: bytes, timeout: float = 10, limit: int = 4_000_000) -> tuple[int | None, bytes]:
    """Send raw bytes as one HTTP request; return the status (None if none came) and the body.

    Reading stops when the server closes, after ``limit`` bytes, or ``timeout`` seconds after the
    request went out, so a live stream or a request whose body never arrives ends too.
    """
    deadline = time.monotonic() + timeout
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        data = b""
        try:
            while (left := deadline - time.monotonic()) > 0 and len(data) < limit:
                sock.settimeout(left)
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        except (ConnectionResetError, TimeoutError, socket.timeout):
            pass
    head, _, body = data.partition(b"\r\n\r\n")
    parts = head.split(b" ", 2)
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
    return status, body


def send(port: int, method: str, path: str, headers: dict[str, str]) -> tuple[int | None, bytes]:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close", "Content-Length: 0"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return raw_request(port, ("\r\n".join(lines) + "\r\n\r\n").encode())


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> Iterator[Pantau]:
    """Pantau with checks on, a recorded camera and a secret file next to (not inside) its data directory."""
    root = tmp_path_factory.mktemp("hostile")
    (root / "outside.txt").write_text(SENTINEL)
    server = GstRtspServer({"/d1": "d1"}).start()
    cameras = [camera_entry("cam", server.url("/d1"), mode="always", record=True, owner=OWNERS["hotel-cam"])]
    instance = Pantau(
        data_dir=root / "data",
        cameras=cameras,
        auth=True,
        env={"PANTAU_AUTH_MAX_FAILURES": "1000000", "PANTAU_SEGMENT_SECONDS": "2"},
    ).start()
    try:
        yield instance
    finally:
        instance.stop()
        server.stop()


def test_path_traversal_in_every_parameter(hostile):
    assert wait_until(lambda: complete_segments(hostile, "cam"), timeout=30)
    key = create_consumer(hostile, "wall", {})
    outside = str(hostile.data_dir.parent / "outside.txt")
    tried = 0
    for method, template in TEMPLATES:
        for attack in ATTACKS:
            path = template.replace("{}", attack.replace("{outside}", outside.lstrip("/").replace("/", "%2F")))
            for credential in (hostile.admin_token, key):
                status, body = send(hostile.port, method, path, {"Authorization": f"Bearer {credential}"})
                tried += 1
                assert status in (400, 403, 404), (path, status, body[:200])
                if credential == hostile.admin_token:
                    assert status in (400, 404), (path, status, body[:200])
                assert SENTINEL.encode() not in body, path
                assert b"root:" not in body, path
    for attack in RANGE_ATTACKS:
        for name in ("start", "end"):
            for endpoint in ("/api/recordings/cam", "/api/recordings/cam/export", "/vod/cam/index.m3u8"):
                other = "end=2020-01-01T01:00:00Z" if name == "start" else "start=2020-01-01T00:00:00Z"
                status, body = send(
                    hostile.port, "GET", f"{endpoint}?{name}={attack}&{other}", {"Authorization": f"Bearer {hostile.admin_token}"}
                )
                tried += 1
                assert status == 400, (endpoint, attack, body[:200])
                assert SENTINEL.encode() not in body
    print(f"{tried} traversal attempts, all 400, 403 or 404")


def random_text(rng: random.Random, limit: int = 40) -> str:
    alphabet = string.printable + "éñ漢\u202e"
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, limit)))


def random_request(rng: random.Random, port: int, method: str, credential: str | None) -> bytes:
    """Build one random request with ``method``: path, query, headers and body, valid HTTP or not."""
    template = rng.choice([template for _, template in TEMPLATES] + ["/", "/healthz", "/readyz", "/metrics", "/api/cameras", "/api/compliance",
                                        "/api/compliance.csv", "/api/consumers", "/api/tokens", "/api/audit",
                                        "/api/cameras/import", "/" + random_text(rng)])
    filler = rng.choice(["cam", "wall", "1", "0" * 16, random_text(rng, 20), "%" + random_text(rng, 4), "a" * 3000])
    path = template.replace("{}", filler)
    query_names = ["start", "end", "token", "session", "limit", "camera", "owner", "locale", "dry_run", "replace", random_text(rng, 6)]
    query = "&".join(
        f"{rng.choice(query_names)}={rng.choice(['', '2024-01-01T00:00:00Z', 'x' * 500, random_text(rng), '%ZZ', '1e999'])}"
        for _ in range(rng.randint(0, 4))
    )
    target = path + ("?" + query if query else "")
    target = "".join(character if character.isprintable() and character != " " else "%20" for character in target)
    headers = [f"Host: 127.0.0.1:{port}", "Connection: close"]
    if credential is not None:
        headers.append(f"Authorization: {credential}")
    for _ in range(rng.randint(0, 4)):
        name = rng.choice(["Content-Type", "Range", "X-Pantau-Reason", "User-Agent", "Accept-Encoding", "Cookie",
                           "X-" + random_text(rng, 6).replace(":", "")])
        value = rng.choice(["application/json", "text/csv", "multipart/form-data; boundary=x", "bytes=0-", "bytes=-5",
                            "bytes=999999999-", random_text(rng, 200), "\u00e9\u6f22"])
        headers.append(f"{name}: {value}")
    body = rng.choice([b"", b"{}", b"[]", b'{"camera_id": "cam"}', b'{"name": "x", "scope": {}}', b"id,name\r\ncam,x\r\n",
                       os.urandom(rng.randint(1, 3000)), json.dumps({"start": random_text(rng), "reason": random_text(rng)}).encode()])
    declared = len(body) if rng.random() > 0.1 else rng.randint(0, 10 ** rng.randint(1, 9))
    headers.append(f"Content-Length: {declared}")
    head = f"{method} {target} HTTP/1.1\r\n" + "\r\n".join(headers) + "\r\n\r\n"
    return head.encode("utf-8", "surrogateescape") + body


def test_fuzz_never_gets_500(hostile):
    """Random requests from four clients for 20 s: no 500, no handler exception, the process stays up."""
    consumer = create_consumer(hostile, "fuzzed", {"actions": ["live"]})
    seed = random.randrange(2**32)
    print(f"fuzz seed {seed}")
    statuses: dict[int | None, int] = {}
    failures: list[str] = []
    lock = threading.Lock()
    deadline = time.monotonic() + 20

    def client(index: int) -> None:
        rng = random.Random(seed + index)
        while time.monotonic() < deadline:
            if rng.random() < 0.2:
                # The admin token goes only with reading methods, so the fuzz changes nothing and
                # registers no camera that could point off this machine.
                method = rng.choice(["GET", "HEAD", "OPTIONS"])
                credential: str | None = f"Bearer {hostile.admin_token}"
            else:
                method = rng.choice(["GET", "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH",
                                     random_text(rng, 8).replace(" ", "") or "X"])
                credential = rng.choice([None, "garbage", "Bearer ", "Bearer pk_000000000000_" + "x" * 43,
                                         "Basic " + random_text(rng), f"Bearer {consumer}"])
            request = random_request(rng, hostile.port, method, credential)
            try:
                status, body = raw_request(hostile.port, request, timeout=2, limit=200_000)
            except OSError as exc:
                with lock:
                    failures.append(f"connection failed: {exc}")
                continue
            with lock:
                statuses[status] = statuses.get(status, 0) + 1
                if status is not None and status >= 500 and status != 503:
                    failures.append(f"{status}: {request[:300]!r} -> {body[:300]!r}")
                if b"Traceback" in body:
                    failures.append(f"traceback in response to {request[:300]!r}")

    threads = [threading.Thread(target=client, args=(index,)) for index in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    print(f"statuses: {dict(sorted(statuses.items(), key=lambda item: str(item[0])))}")
    assert sum(statuses.values()) > 500
    assert failures == []
    assert hostile.process is not None
    assert hostile.process.poll() is None
    assert hostile.request("GET", "/healthz")[0] == 200
    assert hostile.admin("GET", "/api/cameras/cam")[0] == 200
    assert hostile.log_events("http_handler_failed") == []


def test_oversized_bodies_get_413(hostile):
    big_json = json.dumps({"name": "x", "scope": {"owners": ["y" * 100]}, "pad": "z" * 70_000}).encode()
    consumer_status, consumer_body = hostile.admin("POST", "/api/consumers", raw=big_json)
    camera_status, _ = hostile.admin("PUT", "/api/cameras/big", raw=big_json)
    token_status, _ = hostile.admin("POST", "/api/tokens", raw=big_json)
    csv_body = b"id,name,rtsp_url,owner_category,owner_name\r\n" + b"x" * (9 * 1024 * 1024)
    import_status, import_body = hostile.admin(
        "POST", "/api/cameras/import", raw=csv_body, headers={"Content-Type": "text/csv"}
    )

    assert consumer_status == 413, consumer_body
    assert str(64 * 1024) in consumer_body["reason"]
    assert camera_status == 413
    assert token_status == 413
    assert import_status == 413, import_body
    assert import_body["error"] == "body_too_large"


def test_methods_and_content_types_are_checked(hostile):
    wrong_method, method_body = hostile.admin("POST", "/live/cam.flv", raw=b"")
    form, form_body = hostile.admin(
        "POST", "/api/consumers", raw=b"name=x", headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    camera_text, _ = hostile.admin("PUT", "/api/cameras/cam", raw=b"{}", headers={"Content-Type": "text/plain"})
    import_json, import_body = hostile.admin(
        "POST", "/api/cameras/import", raw=b"{}", headers={"Content-Type": "application/json"}
    )
    not_json, not_json_body = hostile.admin("POST", "/api/tokens", raw=b"{not json")

    assert wrong_method == 405
    assert method_body["error"] == "method_not_allowed"
    bearer = {"Authorization": f"Bearer {hostile.admin_token}"}
    _, wrong_method_headers, _ = http_get(f"{hostile.base}/live/cam.flv", method="POST", headers=bearer)
    assert "GET" in wrong_method_headers["Allow"]
    assert form == 415
    assert form_body["error"] == "unsupported_media_type"
    assert camera_text == 415
    assert import_json == 415
    assert "text/csv" in import_body["reason"]
    assert not_json == 400
    assert not_json_body["error"] == "invalid_json"


def test_camera_password_never_leaves_the_process(gst, tmp_path):
    """A literal password stays out of responses, logs and the audit log; a ${VAR} reference works."""
    literal = gst.url("/secure", "viewer:s3cret")
    reference = gst.url("/secure", "viewer:${SECURE_CAMERA_PASSWORD}")
    instance = Pantau(
        data_dir=tmp_path / "data",
        cameras=[camera_entry("by-reference", reference, mode="always")],
        auth=True,
        env={"SECURE_CAMERA_PASSWORD": "s3cret"},
    ).start()
    try:
        put_status, put_body = instance.admin(
            "PUT", "/api/cameras/literal", camera_entry("literal", literal, mode="always")
        )
        key = create_consumer(instance, "viewer", {})
        instance.wait_state("literal", "live")
        instance.wait_state("by-reference", "live")
        responses = [
            instance.admin("GET", "/api/cameras")[1],
            instance.admin("GET", "/api/cameras/literal")[1],
            instance.request("GET", "/api/cameras", key=key)[1],
            instance.admin("GET", "/api/compliance")[1],
            instance.admin("GET", "/api/audit")[1],
        ]
        by_reference = instance.camera("by-reference")
    finally:
        instance.stop()

    assert put_status == 201
    assert "s3cret" not in json.dumps(put_body)
    assert put_body["url"] == gst.url("/secure", "viewer:***")
    for response in responses:
        assert "s3cret" not in json.dumps(response)
    assert by_reference["url"] == reference
    assert "s3cret" not in instance.log_text()
    audit_text = "".join(path.read_text() for path in (tmp_path / "data" / "audit").glob("audit-*.jsonl"))
    assert "s3cret" not in audit_text
