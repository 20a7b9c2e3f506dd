"""The bundled load test at a tiny scale, and its HLS viewer joining at the live edge."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import aiohttp

from loadtest.swarm import ViewerResult, watch_hls
from proto.hls import parse_media_playlist
from tests.conftest import start_pantau
from tests.support import REPO, camera_entry, http_get
from tests.test_lifecycle import wait_until


def run_loadtest(tmp_path, *extra: str) -> tuple[int, dict, str]:
    report_path = tmp_path / "report.json"
    result = subprocess.run(
        [
            sys.executable, "-m", "loadtest", "--cameras", "3", "--viewers-per-camera", "2",
            "--duration", "10", "--warmup", "4", "--flap-share", "0.3", "--flap-up-seconds", "6",
            "--flap-down-seconds", "2", "--json", str(report_path), *extra,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=110,
    )
    report = json.loads(report_path.read_text())
    return result.returncode, report, result.stdout


def test_loadtest_passes_with_flapping_camera(tmp_path):
    code, report, output = run_loadtest(tmp_path)

    assert code == 0, output
    assert report["ok"] is True
    assert report["cameras"] == 3
    assert report["cameras_live"] >= 2
    assert report["upstream_connections"] <= 3
    assert report["upstream_reconnects"] >= 1  # camera 0 flapped
    assert report["viewers"] == 6
    assert report["viewers_stalled"] == 0
    assert report["first_keyframe_warm"]["n"] >= 3
    assert report["cpu_percent_of_core"] > 0
    assert report["rss_per_camera_bytes"] is not None
    assert report["ingest_mbps"] > 5
    assert "PASS  one upstream per camera" in output


def test_loadtest_fails_on_extra_upstream(tmp_path):
    code, report, output = run_loadtest(tmp_path, "--inject-extra-upstream")

    assert code == 1
    assert report["ok"] is False
    upstream = next(check for check in report["checks"] if check["name"] == "one upstream per camera")
    assert upstream["ok"] is False
    assert "FAIL  one upstream per camera" in output



def test_swarm_hls_viewer_starts_at_live_edge(gst, pantau, tmp_path):
    # A viewer that joins a playlist already listing several segments must not go back for
    # the older ones after the live one, or it counts false timestamp regressions.
    instance = start_pantau(pantau, tmp_path, [camera_entry("cam", gst.url("/h264"), mode="always")])
    playlist_url = f"{instance.base}/live/cam/index.m3u8"

    def listed_segments() -> int:
        status, _, body = http_get(playlist_url)
        return len(parse_media_playlist(body.decode())["segments"]) if status == 200 else 0

    assert wait_until(lambda: listed_segments() >= 3, timeout=30)

    async def watch() -> ViewerResult:
        result = ViewerResult(camera_id="cam", kind="hls", cold=False, flapping=False)
        async with aiohttp.ClientSession() as session:
            return await watch_hls(session, instance.base, result, time.monotonic() + 5, {})

    result = asyncio.run(watch())

    assert result.error is None
    assert result.first_keyframe_seconds is not None
    assert result.keyframes >= 2
    assert result.timestamp_regressions == 0
