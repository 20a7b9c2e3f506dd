"""Measure the live latency of HTTP-FLV and HLS with frames that carry their own send time.

The camera simulator puts an SEI with the Unix time of sending into every
frame (``python -m loadtest.simulator --send-time-sei``). This tool starts
the simulator and ``pantau serve`` on loopback, with default settings except
``PANTAU_AUTH=off`` and one ``always`` camera. It reads the SEI back from
what a client receives and prints, per delivery format, the time from
sending a frame to the client holding its bytes:

- FLV: each frame as its tag arrives (the cached GOP sent on joining is skipped);
- HLS (fMP4): each frame when its segment has been downloaded, polling the
  playlist every 100 ms, for the first (oldest) and last (newest) frame of each
  segment and for all frames.

With ``--browser`` it also plays both formats in Debian's headless Chromium
with the status page's players at their default settings and samples what a
viewer sees: for hls.js, the wall-clock time minus ``hls.playingDate`` (the
segment's EXT-X-PROGRAM-DATE-TIME, set when the frame reached Pantau); for
mpegts.js, the FLV delivery latency plus the media buffered ahead of the
playback position.

Run ``python -m loadtest.latency --help`` for the options.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from loadtest.simulator import DEMO_CLIP, SEND_TIME_DIGITS, SEND_TIME_UUID
from proto.hls import parse_media_playlist

SEND_TIME = re.compile(re.escape(SEND_TIME_UUID) + rb"(\d{%d})" % SEND_TIME_DIGITS)
JOIN_SKIP_SECONDS = 3.0
CAMERA_ID = "latency"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def send_times(data: bytes) -> list[float]:
    """Return the send times (Unix seconds) of every SEI in ``data``, in order."""
    return [int(match.group(1)) / 1_000_000 for match in SEND_TIME.finditer(data)]


def summary(values_ms: list[float], unit: str = "frames") -> str:
    if not values_ms:
        return "no samples"
    ordered = sorted(values_ms)
    p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
    return (
        f"median {statistics.median(ordered):7.0f} ms   p95 {p95:7.0f} ms   "
        f"max {ordered[-1]:7.0f} ms   ({len(ordered)} {unit})"
    )


def measure_flv(base: str, seconds: float) -> list[float]:
    """Return per-frame latencies in ms of an FLV client, after the joining burst."""
    connection = http.client.HTTPConnection("127.0.0.1", int(base.rsplit(":", 1)[1]), timeout=30)
    connection.request("GET", f"/live/{CAMERA_ID}.flv")
    response = connection.getresponse()
    if response.status != 200:
        raise SystemExit(f"FLV request failed: HTTP {response.status} {response.read()[:200]!r}")
    started = time.time()
    latencies: list[float] = []
    carry = b""
    try:
        while time.time() - started < seconds:
            chunk = response.read1(65536)
            if not chunk:
                break
            now = time.time()
            data = carry + chunk
            # Keep the tail that could hold the start of an SEI cut by the chunk boundary.
            matches = list(SEND_TIME.finditer(data))
            end = matches[-1].end() if matches else 0
            carry = data[max(end, len(data) - len(SEND_TIME_UUID) - SEND_TIME_DIGITS) :]
            if now - started < JOIN_SKIP_SECONDS:
                continue
            latencies += [(now - int(match.group(1)) / 1_000_000) * 1000 for match in matches]
    finally:
        connection.close()
    return latencies


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read()


def measure_hls(base: str, seconds: float) -> dict[str, list[float]]:
    """Return latencies in ms of frames when their fMP4 segment has been downloaded."""
    playlist_url = f"{base}/live/{CAMERA_ID}/index.m3u8"
    seen: set[int] = set()
    oldest: list[float] = []
    newest: list[float] = []
    every: list[float] = []
    started = time.time()
    first = True
    while time.time() - started < seconds:
        playlist = parse_media_playlist(fetch(playlist_url).decode())
        for segment in playlist["segments"]:
            sequence = segment["sequence"]
            if sequence in seen:
                continue
            seen.add(sequence)
            if first:
                continue  # already listed when we joined: not live
            data = fetch(f"{base}/live/{CAMERA_ID}/{segment['uri']}")
            now = time.time()
            times = send_times(data)
            if times:
                oldest.append((now - times[0]) * 1000)
                newest.append((now - times[-1]) * 1000)
                every += [(now - sent) * 1000 for sent in times]
        first = False
        time.sleep(0.1)
    return {"oldest": oldest, "newest": newest, "every": every}


BROWSER_SCRIPT = """
async ([kind, seconds, base]) => {
  const video = document.createElement("video");
  video.muted = true;
  document.body.append(video);
  const samples = [];
  let player;
  if (kind === "hls") {
    player = new Hls();
    player.loadSource(base + "/live/latency/index.m3u8");
    player.attachMedia(video);
  } else {
    player = mpegts.createPlayer({type: "flv", isLive: true, url: base + "/live/latency.flv"},
                                 {enableStashBuffer: false, liveBufferLatencyChasing: true});
    player.attachMediaElement(video);
    player.load();
  }
  await video.play().catch(() => {});
  const started = Date.now();
  while (Date.now() - started < seconds * 1000) {
    await new Promise((resolve) => setTimeout(resolve, 500));
    if (Date.now() - started < 10000 || video.currentTime <= 0) continue;
    if (kind === "hls" && player.playingDate) samples.push(Date.now() - player.playingDate.getTime());
    if (kind === "flv" && video.buffered.length) {
      samples.push((video.buffered.end(video.buffered.length - 1) - video.currentTime) * 1000);
    }
  }
  return samples;
}
"""


def measure_browser(base: str, seconds: float, kind: str) -> list[float]:
    from playwright.sync_api import sync_playwright

    args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"]
    with tempfile.TemporaryDirectory() as profile, sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path="/usr/bin/chromium", headless=True, args=args
        )
        try:
            page = context.pages[0] if context.pages else context.new_page()
            page.goto(base + "/")
            page.wait_for_function("typeof Hls !== 'undefined' && typeof mpegts !== 'undefined'")
            return page.evaluate(BROWSER_SCRIPT, [kind, seconds + 10, base])
        finally:
            context.close()


def start_services(workdir: Path, clip: str) -> tuple[subprocess.Popen[bytes], subprocess.Popen[bytes], str]:
    rtsp_port = free_port()
    http_port = free_port()

    log = open(workdir / "services.log", "wb")  # noqa: SIM115 - inherited by the children
    simulator = subprocess.Popen(
        [sys.executable, "-m", "loadtest.simulator", "--send-time-sei", "--clip", clip, "--port", str(rtsp_port)],
        stdout=log,
        stderr=log,
    )
    cameras = [{
        "id": CAMERA_ID,
        "name": "Latency probe",
        "url": f"rtsp://127.0.0.1:{rtsp_port}/{CAMERA_ID}",
        "owner": {"category": "pemkab", "name": "Diskominfo Badung"},
        "mode": "always",
    }]
    (workdir / "cameras.yaml").write_text(json.dumps(cameras))

    # Access control is off: the measurement runs on loopback, and only connection set-up would differ.
    env = dict(os.environ, PANTAU_HTTP_HOST="127.0.0.1", PANTAU_HTTP_PORT=str(http_port),
               PANTAU_DATA_DIR=str(workdir), PANTAU_AUTH="off")
    pantau = subprocess.Popen([sys.executable, "-m", "relay", "serve"], stdout=log, stderr=log, env=env)
    base = f"http://127.0.0.1:{http_port}"

    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            view = json.loads(fetch(f"{base}/api/cameras/{CAMERA_ID}"))
            if view["state"] == "live":
                return simulator, pantau, base
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"the camera did not go live within 30 s; see {workdir / 'services.log'}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest.latency", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30, help="measuring time per format (default 30)")
    parser.add_argument("--clip", default=str(DEMO_CLIP), help="H.264 or H.265 MP4 clip (default: the demo clip)")
    parser.add_argument("--browser", action="store_true", help="also measure in headless Chromium with hls.js and mpegts.js")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="pantau-latency-") as directory:
        simulator, pantau, base = start_services(Path(directory), args.clip)
        try:
            flv = measure_flv(base, args.seconds)
            hls = measure_hls(base, args.seconds)
            print(f"clip {Path(args.clip).name}, Pantau default settings, {args.seconds:g} s per format")
            print(f"FLV client, frame received:                    {summary(flv)}")
            print(f"HLS client, oldest frame of a new segment:     {summary(hls['oldest'])}")
            print(f"HLS client, newest frame of a new segment:     {summary(hls['newest'])}")
            print(f"HLS client, every frame:                       {summary(hls['every'])}")
            if args.browser:
                print(f"hls.js viewer (now - playingDate):             {summary(measure_browser(base, args.seconds, 'hls'), 'samples')}")
                buffered = measure_browser(base, args.seconds, "flv")
                print(f"mpegts.js buffered ahead of playback:          {summary(buffered, 'samples')}")
        finally:
            for process in (pantau, simulator):
                process.terminate()
                process.wait(10)


if __name__ == "__main__":
    main()
