"""Upstream lifecycle: on-demand idle close, reconnects, slow clients and shutdown."""

from __future__ import annotations

import signal
import socket
import threading
import time

from tests.conftest import start_pantau
from tests.support import GstRtspServer, camera_entry, decode_stream


def wait_until(predicate, timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def test_on_demand_closes_after_idle_and_always_stays(own_gst, pantau, tmp_path):
    server = GstRtspServer({"/a": "d1", "/b": "d1"}).start()
    own_gst.append(server)
    cameras = [
        camera_entry("ondemand", server.url("/a"), mode="on_demand"),
        camera_entry("always", server.url("/b"), mode="always"),
    ]
    instance = start_pantau(pantau, tmp_path, cameras, PANTAU_IDLE_CLOSE_SECONDS="2")
    instance.wait_state("always", "live")
    assert instance.camera("ondemand")["state"] == "idle"

    decode_stream(f"{instance.base}/live/ondemand.flv", frames=10)
    assert server.open_connections == 2
    left = time.monotonic()

    assert wait_until(lambda: server.open_connections == 1, timeout=8)
    closed_after = time.monotonic() - left
    assert closed_after >= 1.5, closed_after
    assert instance.camera("ondemand")["state"] == "idle"
    assert instance.camera("always")["state"] == "live"
    time.sleep(3)
    assert server.open_connections == 1
    assert any(event["camera_id"] == "ondemand" for event in instance.log_events("camera_idle_close"))


def test_reconnects_after_server_restart(own_gst, pantau, tmp_path):
    server = GstRtspServer({"/cam": "h264"}).start()
    own_gst.append(server)
    instance = start_pantau(pantau, tmp_path, [camera_entry("cam", server.url("/cam"), mode="always")])
    instance.wait_state("cam", "live")
    decode_stream(f"{instance.base}/live/cam.flv", frames=10)

    server.stop()
    instance.wait_state("cam", {"retrying", "connecting"}, timeout=15)
    time.sleep(3)
    restarted = GstRtspServer({"/cam": "h264"}, port=server.port).start()
    own_gst.append(restarted)

    view = instance.wait_state("cam", "live", timeout=30)
    decoded = decode_stream(f"{instance.base}/live/cam.flv", frames=15)

    assert (decoded.width, decoded.height) == (2688, 1520)
    assert view["reconnects"] >= 1
    retries = instance.log_events("camera_retry")
    assert retries, "no camera_retry logged"
    assert all("delay_seconds" in event for event in retries)
    errors = {event["error"] for event in instance.log_events("camera_error")}
    assert errors & {"connection_closed", "read_timeout", "connection_refused"}


def test_client_stays_attached_through_short_outage(own_gst, pantau, tmp_path):
    server = GstRtspServer({"/cam": "d1"}).start()
    own_gst.append(server)
    instance = start_pantau(
        pantau, tmp_path, [camera_entry("cam", server.url("/cam"), mode="always")], PANTAU_OUTAGE_HOLD_SECONDS="30"
    )
    instance.wait_state("cam", "live")
    results: dict[str, object] = {}

    def watch() -> None:
        try:
            results["decoded"] = decode_stream(f"{instance.base}/live/cam.flv", frames=150, timeout=60)
        except Exception as exc:  # reported by the assert below
            results["error"] = exc

    watcher = threading.Thread(target=watch)
    watcher.start()
    time.sleep(3)
    server.stop()
    time.sleep(2)
    own_gst.append(GstRtspServer({"/cam": "d1"}, port=server.port).start())
    watcher.join(60)

    assert "error" not in results, results.get("error")
    decoded = results["decoded"]
    assert decoded.video_frames >= 150
    assert all(b > a for a, b in zip(decoded.video_times, decoded.video_times[1:], strict=False))


def test_slow_client_is_dropped_without_hurting_others(gst, pantau, tmp_path):
    instance = start_pantau(
        pantau,
        tmp_path,
        [camera_entry("cam", gst.url("/h264"), mode="always")],
        PANTAU_CLIENT_BUFFER_BYTES="262144",
        PANTAU_SLOW_CLIENT_SECONDS="3",
    )
    instance.wait_state("cam", "live")
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.connect(("127.0.0.1", instance.port))
    stalled.sendall(b"GET /live/cam.flv HTTP/1.1\r\nHost: x\r\n\r\n")

    decoded = decode_stream(f"{instance.base}/live/cam.flv", frames=120, timeout=30)

    assert decoded.video_frames >= 120
    assert wait_until(lambda: instance.log_events("client_too_slow"), timeout=10)
    assert instance.log_events("client_skipping")
    stalled.close()


def test_sigterm_exits_cleanly_with_clients(gst, pantau, tmp_path):
    instance = start_pantau(pantau, tmp_path, [camera_entry("cam", gst.url("/h264"), mode="always")])
    instance.wait_state("cam", "live")
    viewer = threading.Thread(target=lambda: decode_stream(f"{instance.base}/live/cam.flv", frames=10_000, timeout=30))
    viewer.start()
    time.sleep(2)

    started = time.monotonic()
    instance.process.send_signal(signal.SIGTERM)
    code = instance.process.wait(10)
    elapsed = time.monotonic() - started
    viewer.join(10)

    assert code == 0
    assert elapsed < 5, elapsed
    assert instance.log_events("shutdown_complete")
