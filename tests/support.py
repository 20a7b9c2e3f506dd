"""Real servers and real clients for the tests: GStreamer RTSP, Pantau itself, PyAV decoding."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import yaml

REPO = Path(__file__).resolve().parent.parent
MEDIA = REPO / "loadtest" / "media"
SYSTEM_PYTHON = "/usr/bin/python3"

CLIPS = {
    "h264": "street-4mp-h264.mp4",
    "h265": "street-4mp-h265.mp4",
    "aac": "street-1080p-h264-aac.mp4",
    "bframes": "street-1440p-h264-bframes.mp4",
    "d1": "street-d1-h264.mp4",
}
CLIP_SIZES = {
    "h264": (2688, 1520),
    "h265": (2688, 1520),
    "aac": (1920, 1080),
    "bframes": (2560, 1440),
    "d1": (768, 576),
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def looped_clip(name: str, loops: int = 15) -> Path:
    """Return the clip repeated ``loops`` times with continuous timestamps (cached in /tmp)."""
    source = MEDIA / CLIPS[name]
    cache = Path(os.environ.get("PANTAU_TEST_CACHE", "/tmp/pantau-test-media"))
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / f"{source.stem}-x{loops}-{int(source.stat().st_mtime)}.mp4"
    if not target.exists():
        partial = target.with_suffix(".partial.mp4")
        subprocess.run(
            ["ffmpeg", "-v", "error", "-y", "-stream_loop", str(loops - 1), "-i", str(source),
             "-c", "copy", "-movflags", "+faststart", str(partial)],
            check=True,
        )
        partial.rename(target)
    return target


def terminate(process: subprocess.Popen[str]) -> None:
    """Stop a server process: SIGTERM, then SIGKILL after 5 s."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def follow_json_lines(process: subprocess.Popen[str], on_event: Callable[[dict[str, Any]], None]) -> None:
    """Call ``on_event`` from a daemon thread for every JSON line the process prints; other lines are skipped."""

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            on_event(event)

    threading.Thread(target=read, daemon=True).start()


class GstRtspServer:
    """GStreamer's gst-rtsp-server in a subprocess of Debian's python3.

    ``connections`` counts TCP connections the server accepted, read from
    the server's own event lines.
    """

    def __init__(self, mounts: dict[str, str], auth: str | None = None, port: int | None = None) -> None:
        self.mounts = mounts  # path -> clip name
        self.auth = auth
        self.port = port or free_port()
        self.process: subprocess.Popen[str] | None = None
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def start(self) -> GstRtspServer:
        command = [SYSTEM_PYTHON, str(REPO / "tests" / "gst_rtsp_server.py"), "--port", str(self.port)]
        for path, clip in self.mounts.items():
            command += ["--mount", f"{path}={looped_clip(clip)}"]
        if self.auth:
            command += ["--auth", self.auth]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        ready = threading.Event()

        def on_event(event: dict[str, Any]) -> None:
            with self._lock:
                self.events.append(event)
            if event.get("event") == "ready":
                ready.set()

        follow_json_lines(self.process, on_event)
        if not ready.wait(15):
            self.stop()
            raise RuntimeError("gst-rtsp-server did not start within 15 s")
        return self

    def url(self, path: str, credentials: str | None = None) -> str:
        userinfo = f"{credentials}@" if credentials else ""
        return f"rtsp://{userinfo}127.0.0.1:{self.port}{path}"

    @property
    def connections(self) -> int:
        with self._lock:
            return sum(1 for event in self.events if event.get("event") == "client_connected")

    @property
    def open_connections(self) -> int:
        with self._lock:
            opened = sum(1 for event in self.events if event.get("event") == "client_connected")
            closed = sum(1 for event in self.events if event.get("event") == "client_closed")
        return opened - closed

    def stop(self) -> None:
        if self.process is not None:
            terminate(self.process)
        self.process = None


@dataclass
class Pantau:
    """Pantau started as its own process, the way an operator runs it.

    Access control is off unless ``auth`` is True, so that tests of other
    features need no credentials. With ``auth`` the service gets
    ``admin_token`` as PANTAU_ADMIN_TOKEN, and ``admin()`` sends it.
    """

    data_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    cameras: list[dict[str, Any]] | None = None
    command: str = "serve"
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    auth: bool = False
    admin_token: str = field(default_factory=lambda: secrets.token_urlsafe(24))

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, wait: bool = True) -> Pantau:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.cameras is not None:
            (self.data_dir / "cameras.yaml").write_text(yaml.safe_dump(self.cameras, sort_keys=False))
        env = dict(os.environ)
        env.update(
            {
                "PANTAU_HTTP_HOST": "127.0.0.1",
                "PANTAU_HTTP_PORT": str(self.port),
                "PANTAU_DATA_DIR": str(self.data_dir),
                "PANTAU_LOG_FORMAT": "json",
                "PANTAU_LOG_LEVEL": "debug",
                # Start-up probes would connect on_demand cameras that a test expects idle,
                # and add upstream connections to its counts; probe tests turn them on.
                "PANTAU_PROBE_INTERVAL_HOURS": "0",
                "PANTAU_AUTH": "on" if self.auth else "off",
            }
        )
        if self.auth:
            env["PANTAU_ADMIN_TOKEN"] = self.admin_token
        env.update(self.env)
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}-pantau-{self.port}.log"
        log_file = open(self.log_path, "wb")  # noqa: SIM115 - closed with the process
        self.process = subprocess.Popen(
            [sys.executable, "-m", "relay", self.command], stdout=log_file, stderr=log_file, env=env, cwd=REPO
        )
        log_file.close()
        if wait:
            self.wait_healthy()
        return self

    def wait_healthy(self, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"pantau exited with {self.process.returncode}:\n{self.log_text()}")
            try:
                status, _ = self.request("GET", "/healthz")
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"pantau not healthy within {timeout} s:\n{self.log_text()}")

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
        key: str | None = None,
    ) -> tuple[int, Any]:
        """Send a request, with ``key`` as Authorization: Bearer when given; return status and decoded body."""
        data = raw
        if data is None and body is not None:
            data = json.dumps(body).encode()
        headers = dict(headers or {})
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        request = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        if data is not None and "Content-Type" not in (headers or {}):
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                payload = response.read()
                status = response.status
        except urllib.error.HTTPError as exc:
            payload = exc.read()
            status = exc.code
        try:
            return status, json.loads(payload) if payload else None
        except json.JSONDecodeError:
            return status, payload

    def admin(self, method: str, path: str, body: Any = None, **options: Any) -> tuple[int, Any]:
        """Send a request as the admin (with the admin token when access control is on)."""
        return self.request(method, path, body, key=self.admin_token if self.auth else None, **options)

    def camera(self, camera_id: str) -> dict[str, Any]:
        status, body = self.admin("GET", f"/api/cameras/{camera_id}")
        assert status == 200, body
        return body

    def wait_state(self, camera_id: str, states: set[str] | str, timeout: float = 20) -> dict[str, Any]:
        wanted = {states} if isinstance(states, str) else states
        deadline = time.monotonic() + timeout
        view: dict[str, Any] = {}
        while time.monotonic() < deadline:
            view = self.camera(camera_id)
            if view["state"] in wanted:
                return view
            time.sleep(0.2)
        raise AssertionError(f"camera {camera_id} not in {wanted} after {timeout} s: {view}")

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def log_events(self, event: str | None = None) -> list[dict[str, Any]]:
        events = []
        for line in self.log_text().splitlines():
            try:
                item = json.loads(line)
            except json.JSONDecodeError:
                continue
            if event is None or item.get("event") == event:
                events.append(item)
        return events

    def stop(self, timeout: float = 10) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        code = self.process.returncode
        self.process = None
        return code


def camera_entry(camera_id: str, url: str, **extra: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "id": camera_id,
        "name": f"Test camera {camera_id}",
        "url": url,
        "owner": {"category": "pemkab", "name": "Diskominfo Badung"},
        "location": {"kecamatan": "Kuta", "desa": "Legian", "lat": -8.704, "lon": 115.173},
        "mode": "on_demand",
    }
    entry.update(extra)
    return entry


@dataclass
class Decoded:
    width: int
    height: int
    codec: str
    video_frames: int
    video_times: list[float]
    audio_frames: int
    first_frame_seconds: float
    first_byte_seconds: float


def decode_stream(
    url: str, frames: int = 30, timeout: float = 30, fmt: str | None = None, analyze_seconds: float | None = None
) -> Decoded:
    """Decode ``frames`` video frames from a live URL with PyAV (FFmpeg) and describe them.

    ``analyze_seconds`` limits how much stream time FFmpeg reads to find the
    streams. Its default of 5 s makes a live FLV wait up to 5 s before the first frame.
    """
    started = time.monotonic()
    options = {"rw_timeout": str(int(timeout * 1_000_000))}
    if analyze_seconds is not None:
        options["analyzeduration"] = str(int(analyze_seconds * 1_000_000))
    container = av.open(url, format=fmt, options=options, timeout=timeout)
    first_byte = time.monotonic() - started
    try:
        video = container.streams.video[0]
        streams = [video] + list(container.streams.audio[:1])
        times: list[float] = []
        audio_frames = 0
        first_frame = 0.0
        deadline = time.monotonic() + timeout
        for packet in container.demux(streams):
            if time.monotonic() > deadline:
                break
            if packet.stream.type == "audio":
                audio_frames += len(packet.decode())
                continue
            for frame in packet.decode():
                if not times:
                    first_frame = time.monotonic() - started
                    width, height = frame.width, frame.height
                times.append(float(frame.time) if frame.time is not None else float("nan"))
            if len(times) >= frames:
                break
        codec = video.codec_context.name
    finally:
        container.close()
    if not times:
        raise AssertionError(f"no video frame decoded from {url}")
    return Decoded(width, height, codec, len(times), times, audio_frames, first_frame, first_byte)


@dataclass
class FlvTiming:
    first_byte_seconds: float
    first_keyframe_seconds: float
    status: int


def flv_first_keyframe(base: str, path: str, timeout: float = 30) -> FlvTiming:
    """Time the first body byte and the first complete video keyframe tag of an FLV response."""
    import http.client
    from urllib.parse import urlsplit

    from proto.flv import FlvReader

    parts = urlsplit(base)
    started = time.monotonic()
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        if response.status != 200:
            return FlvTiming(float("nan"), float("nan"), response.status)
        reader = FlvReader()
        first_byte = None
        deadline = started + timeout
        while time.monotonic() < deadline:
            data = response.read1(65536)
            if not data:
                break
            if first_byte is None:
                first_byte = time.monotonic() - started
            for tag in reader.feed(data):
                if tag.is_video_keyframe:
                    return FlvTiming(first_byte, time.monotonic() - started, 200)
        raise AssertionError(f"no keyframe from {base}{path} within {timeout} s")
    finally:
        connection.close()


@dataclass
class Probed:
    codec: str
    width: int
    height: int
    frame_times: list[float]

    @property
    def frames(self) -> int:
        return len(self.frame_times)


def ffprobe_frames(source: str, packets: int | None = 45, timeout: float = 90, options: tuple[str, ...] = ()) -> Probed:
    """Decode the first video stream of ``source`` with ffprobe and return its frames.

    ``packets`` bounds how much of a live source is read; None reads to the end.
    """
    command = ["ffprobe", "-v", "error", *options, "-select_streams", "v:0",
               "-show_entries", "stream=codec_name,width,height:frame=pts_time,best_effort_timestamp_time",
               "-of", "json"]
    if packets is not None:
        command += ["-read_intervals", f"%+#{packets}"]
    command.append(source)
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"ffprobe failed on {source}: {result.stderr[-2000:]}"
    report = json.loads(result.stdout)
    stream = report["streams"][0]
    times = []
    for frame in report.get("frames", []):
        value = frame.get("pts_time", frame.get("best_effort_timestamp_time"))
        times.append(float(value) if value is not None else float("nan"))
    return Probed(stream["codec_name"], stream["width"], stream["height"], times)


def http_get(
    url: str, timeout: float = 30, method: str = "GET", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """Fetch ``url`` and return status, headers and body, also for 4xx and 5xx answers."""
    request = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()
