from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import GstRtspServer, Pantau

SHARED_MOUNTS = {"/h264": "h264", "/h265": "h265", "/aac": "aac", "/bframes": "bframes", "/d1": "d1", "/secure": "h264"}
SECURE_CREDENTIALS = "viewer:s3cret"


@pytest.fixture(scope="session")
def gst() -> Iterator[GstRtspServer]:
    """One GStreamer RTSP server for tests that only read from it."""
    server = GstRtspServer(SHARED_MOUNTS, auth=SECURE_CREDENTIALS).start()
    yield server
    server.stop()


@pytest.fixture
def own_gst() -> Iterator[list[GstRtspServer]]:
    """GStreamer servers private to one test (for connection counts and restarts)."""
    servers: list[GstRtspServer] = []
    yield servers
    for server in servers:
        server.stop()


@pytest.fixture
def pantau(tmp_path: Path) -> Iterator[list[Pantau]]:
    """Pantau processes started by the test; all are stopped afterwards."""
    started: list[Pantau] = []
    yield started
    for instance in started:
        instance.stop()


def start_pantau(registry: list[Pantau], data_dir: Path, cameras: list[dict] | None, **env: str) -> Pantau:
    instance = Pantau(data_dir=data_dir, cameras=cameras, env=env)
    registry.append(instance)
    return instance.start()
