"""The bundled load test at a tiny scale: it passes on a healthy run and fails on an extra upstream."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.support import REPO


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
