"""Broken cameras get a clear state and error while the healthy camera keeps serving."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from tests.conftest import start_pantau
from tests.support import camera_entry, decode_stream, free_port


class TcpServer:
    """A loopback TCP server that accepts and then either stays silent or sends garbage."""

    def __init__(self, reply: bytes | None) -> None:
        self.reply = reply
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.connections: list[socket.socket] = []
        self._stop = False
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self._stop:
            try:
                connection, _ = self.sock.accept()
            except OSError:
                return
            self.connections.append(connection)
            if self.reply is not None:
                try:
                    connection.recv(4096)
                    connection.sendall(self.reply)
                except OSError:
                    pass

    def close(self) -> None:
        self._stop = True
        self.sock.close()
        for connection in self.connections:
            connection.close()


@pytest.fixture
def tcp_servers() -> Iterator[list[TcpServer]]:
    servers: list[TcpServer] = []
    yield servers
    for server in servers:
        server.close()


def test_broken_cameras_report_reason(gst, pantau, tmp_path, tcp_servers):
    silent = TcpServer(None)
    garbage = TcpServer(b"HELLO THIS IS NOT RTSP\r\n\r\n" + bytes(range(256)) * 4)
    tcp_servers += [silent, garbage]
    closed_port = free_port()
    cameras = [
        camera_entry("good", gst.url("/h264")),
        camera_entry("refused", f"rtsp://127.0.0.1:{closed_port}/stream"),
        camera_entry("wrong-path", gst.url("/no-such-stream")),
        camera_entry("wrong-password", gst.url("/secure", "viewer:wrong")),
        camera_entry("no-password", gst.url("/secure")),
        camera_entry("silent", f"rtsp://127.0.0.1:{silent.port}/stream"),
        camera_entry("garbage", f"rtsp://127.0.0.1:{garbage.port}/stream"),
        {"id": "malformed", "name": "no url or owner"},
    ]
    instance = start_pantau(
        pantau, tmp_path, cameras, PANTAU_CONNECT_TIMEOUT_SECONDS="3", PANTAU_READ_TIMEOUT_SECONDS="3"
    )
    expected = {
        "refused": "connection_refused",
        "wrong-path": "not_found",
        "wrong-password": "unauthorized",
        "no-password": "unauthorized",
        "silent": "response_timeout",
        "garbage": "protocol_error",
    }

    for camera_id, code in expected.items():
        started = time.monotonic()
        status, error = instance.request("GET", f"/live/{camera_id}.flv")
        elapsed = time.monotonic() - started
        assert status == 503, (camera_id, error)
        assert error["error"] == code, (camera_id, error)
        assert error["reason"], camera_id
        # Within the connect timeout plus one read timeout for a silent server.
        assert elapsed < 7.5, (camera_id, elapsed)
        view = instance.camera(camera_id)
        assert view["last_error"]["code"] == code
        assert view["state"] in ("retrying", "connecting")

    status, listing = instance.request("GET", "/api/cameras")
    assert status == 200
    assert any(item["camera_id"] == "malformed" for item in listing["rejected"])
    decoded = decode_stream(f"{instance.base}/live/good.flv", frames=10)
    assert (decoded.width, decoded.height) == (2688, 1520)
    assert "wrong" not in " ".join(
        str(event.get("url", "")) for event in instance.log_events("camera_connecting")
    ).replace("viewer:***", "")


def test_unknown_camera_gets_json_404(pantau, tmp_path):
    instance = start_pantau(pantau, tmp_path, [])

    status, error = instance.request("GET", "/live/nope.flv")
    route_status, route_error = instance.request("GET", "/no/such/route")

    assert status == 404
    assert error["error"] == "camera_not_found"
    assert route_status == 404
    assert route_error["error"] == "not_found"


def test_retries_back_off(pantau, tmp_path):
    closed_port = free_port()
    instance = start_pantau(
        pantau, tmp_path, [camera_entry("down", f"rtsp://127.0.0.1:{closed_port}/x", mode="always")]
    )

    time.sleep(8)

    delays = [event["delay_seconds"] for event in instance.log_events("camera_retry")]
    assert len(delays) >= 3, delays
    # 1 s doubling, with +-20 % jitter.
    assert 0.7 <= delays[0] <= 1.3
    assert 1.5 <= delays[1] <= 2.5
    assert 3.1 <= delays[2] <= 4.9
