"""Helpers for the recorder tests: time ranges, the recordings API, ffprobe and tmpfs mounts."""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.support import Pantau


def iso(value: float) -> str:
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_iso(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(interval)
    return predicate()


def recordings(
    instance: Pantau, camera_id: str, start: float | None = None, end: float | None = None
) -> dict:
    """Return the listing of a camera's recordings, by default over the last hour and the next minute."""
    now = time.time()
    start = now - 3600 if start is None else start
    end = now + 60 if end is None else end
    status, body = instance.admin("GET", f"/api/recordings/{camera_id}?start={iso(start)}&end={iso(end)}")
    assert status == 200, body
    return body


def complete_segments(instance: Pantau, camera_id: str) -> list[dict]:
    return [item for item in recordings(instance, camera_id)["items"] if item["status"] == "complete"]


def ffprobe(target: str | Path) -> dict[str, Any]:
    """Decode every frame of a file or URL with ffprobe; return its video stream and format."""
    result = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-count_frames",
            "-show_entries",
            "stream=codec_type,codec_name,width,height,nb_read_frames:format=duration",
            "-of",
            "json",
            str(target),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, f"ffprobe failed on {target}: {result.stderr}"
    data = json.loads(result.stdout)
    video = next(stream for stream in data["streams"] if stream["codec_type"] == "video")
    return {
        "codec": video["codec_name"],
        "width": video["width"],
        "height": video["height"],
        "frames": int(video.get("nb_read_frames", 0)),
        "duration": float(data["format"].get("duration", "nan")),
        "streams": [stream["codec_type"] for stream in data["streams"]],
        "errors": result.stderr.strip(),
    }


def segment_files(data_dir: Path) -> dict[str, int]:
    """Return path (below recordings/) and size of every segment file on disk."""
    root = data_dir / "recordings"
    return {path.relative_to(root).as_posix(): path.stat().st_size for path in root.rglob("*.mp4")}


@contextlib.contextmanager
def tmpfs_recordings(data_dir: Path, size: str) -> Iterator[Path]:
    """Mount a tmpfs of ``size`` as the recordings directory; skip the test where mounting is not allowed."""
    mountpoint = data_dir / "recordings"
    mountpoint.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mountpoint)],
        check=False,
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (the tests run as root in CI): {mounted.stderr.strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)
