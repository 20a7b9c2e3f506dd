"""The latency tool: simulator frames carry their send time through Pantau to FLV and HLS clients."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.support import REPO


def test_latency_tool_reads_send_times():
    result = subprocess.run(
        [sys.executable, "-m", "loadtest.latency", "--seconds", "8"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = {line.split(":", 1)[0].strip(): line for line in result.stdout.splitlines() if ":" in line}
    print(result.stdout)

    def median_and_count(label: str) -> tuple[float, int]:
        match = re.search(r"median\s+(\d+) ms.*\((\d+) frames\)", lines[label])
        assert match, lines[label]
        return float(match.group(1)), int(match.group(2))

    flv_median, flv_frames = median_and_count("FLV client, frame received")
    oldest, segments = median_and_count("HLS client, oldest frame of a new segment")
    newest, _ = median_and_count("HLS client, newest frame of a new segment")
    # 5 s after the joining burst at 15 fps, and at least one 2 s segment.
    assert flv_frames >= 60
    assert segments >= 1
    assert flv_median < 1000
    # A segment is published when the keyframe after it arrives: its first frame waited about 2 s.
    assert 1500 < oldest < 4000
    assert newest < oldest
