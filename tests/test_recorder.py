"""Recording from GStreamer's RTSP server: segments, crash recovery, gaps, playback and export."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import threading
import time
import urllib.request
from typing import Self

import pytest

from loadtest.clip import load_clip
from loadtest.simulator import Faults, SimulatorServer
from recorder.playback import VOD_PART_SECONDS
from tests.conftest import start_pantau
from tests.recording_support import (
    complete_segments,
    ffprobe,
    iso,
    parse_iso,
    recordings,
    segment_files,
    tmpfs_recordings,
    wait_until,
)
from tests.support import CLIP_SIZES, CLIPS, MEDIA, GstRtspServer, camera_entry, decode_stream

GOP_SECONDS = 2.0  # every test clip has a keyframe every 2 s


def test_segments_cut_near_target_and_decode(gst, pantau, tmp_path):
    data_dir = tmp_path / "data"
    cameras = [
        camera_entry("h264", gst.url("/h264"), mode="always", record=True),
        camera_entry("h265", gst.url("/h265"), mode="always", record=True),
    ]
    instance = start_pantau(pantau, data_dir, cameras, PANTAU_SEGMENT_SECONDS="5")
    for camera_id in ("h264", "h265"):
        assert wait_until(
            lambda camera_id=camera_id: len(complete_segments(instance, camera_id)) >= 3, timeout=40
        )
    assert instance.camera("h264")["readers"]["record"] == 1
    listed = {camera_id: recordings(instance, camera_id)["items"] for camera_id in ("h264", "h265")}
    files = segment_files(data_dir)

    indexed = {item["path"]: item for items in listed.values() for item in items}
    assert set(indexed) == set(files)
    for path, item in indexed.items():
        if item["status"] == "complete":
            assert item["bytes"] == files[path], item
    assert instance.stop() == 0

    for camera_id, codec in (("h264", "h264"), ("h265", "hevc")):
        complete = [item for item in listed[camera_id] if item["status"] == "complete"]
        assert len(complete) >= 3, listed[camera_id]
        starts = [parse_iso(item["start"]) for item in complete]
        assert starts == sorted(starts)
        for item in complete:
            # Cut at the first keyframe after 5 s: within one GOP of the target.
            assert 5.0 <= item["duration_seconds"] <= 5.0 + GOP_SECONDS + 0.1, item
            assert (item["codec"], item["width"], item["height"]) == (camera_id, *CLIP_SIZES[camera_id])
        for item in listed[camera_id]:
            probe = ffprobe(data_dir / "recordings" / item["path"])
            assert probe["codec"] == codec
            assert (probe["width"], probe["height"]) == CLIP_SIZES[camera_id]
            if item["status"] == "complete":
                # 15 fps clips: every frame of the segment decodes.
                assert abs(probe["frames"] - item["duration_seconds"] * 15) <= 1, (item, probe)
        for earlier, later in itertools.pairwise(complete):
            assert abs(parse_iso(later["start"]) - parse_iso(earlier["end"])) < 0.01


def test_kill_during_segment_then_restart(own_gst, pantau, tmp_path):
    server = GstRtspServer({"/cam": "d1"}).start()
    own_gst.append(server)
    data_dir = tmp_path / "data"
    cameras = [camera_entry("cam", server.url("/cam"), mode="always", record=True)]
    instance = start_pantau(pantau, data_dir, cameras, PANTAU_SEGMENT_SECONDS="4")
    assert wait_until(lambda: complete_segments(instance, "cam"), timeout=30)
    time.sleep(2.5)  # well into the next segment, past a few fragments
    open_segment = next(
        item for item in recordings(instance, "cam")["items"] if item["status"] == "recording"
    )
    instance.process.kill()
    instance.process.wait(5)
    killed_at = time.time()
    time.sleep(3)

    restarted = start_pantau(pantau, data_dir, cameras, PANTAU_SEGMENT_SECONDS="4")
    restarted_at = time.time()
    after = wait_until(
        lambda: [i for i in recordings(restarted, "cam")["items"] if parse_iso(i["start"]) > killed_at],
        timeout=30,
    )
    assert after, "recording did not resume after the restart"
    listing = recordings(restarted, "cam")
    restarted.stop()

    crashed = next(item for item in listing["items"] if item["path"] == open_segment["path"])
    assert crashed["status"] == "complete"
    crashed_end = parse_iso(crashed["end"])
    # Fragments are cut at least every second, so at most about a second was lost.
    assert killed_at - 2.5 <= crashed_end <= killed_at + 0.5, (crashed, killed_at)
    probe = ffprobe(data_dir / "recordings" / crashed["path"])
    assert abs(probe["frames"] - crashed["duration_seconds"] * 12) <= 1, (crashed, probe)
    assert crashed["bytes"] == (data_dir / "recordings" / crashed["path"]).stat().st_size

    stopped = [gap for gap in listing["gaps"] if gap["cause"] == "service_stopped"]
    assert len(stopped) == 1, listing["gaps"]
    gap = stopped[0]
    assert abs(parse_iso(gap["start"]) - crashed_end) < 0.01
    assert abs(parse_iso(gap["end"]) - parse_iso(after[0]["start"])) < 0.01
    assert parse_iso(gap["start"]) <= killed_at
    assert parse_iso(gap["end"]) >= restarted_at - 1
    for item in listing["items"]:
        assert ffprobe(data_dir / "recordings" / item["path"])["frames"] > 0


def test_outage_gap_then_vod_and_export(own_gst, pantau, tmp_path):
    server = GstRtspServer({"/cam": "d1"}).start()
    own_gst.append(server)
    data_dir = tmp_path / "data"
    cameras = [camera_entry("cam", server.url("/cam"), mode="always", record=True)]
    instance = start_pantau(
        pantau, data_dir, cameras, PANTAU_SEGMENT_SECONDS="3", PANTAU_RETRY_MAX_SECONDS="1"
    )
    assert wait_until(lambda: len(complete_segments(instance, "cam")) >= 2, timeout=30)
    server.stop()
    stopped_at = time.time()
    time.sleep(10)
    own_gst.append(GstRtspServer({"/cam": "d1"}, port=server.port).start())
    resumed = wait_until(
        lambda: [i for i in complete_segments(instance, "cam") if parse_iso(i["start"]) > stopped_at],
        timeout=30,
    )
    assert resumed, "recording did not resume after the camera came back"

    listing = recordings(instance, "cam")
    gaps = [gap for gap in listing["gaps"] if gap["cause"] == "camera_offline"]
    assert len(gaps) == 1, listing["gaps"]
    gap = gaps[0]
    assert 9.0 <= gap["duration_seconds"] <= 15.0, gap
    assert abs(parse_iso(gap["start"]) - stopped_at) < 2.0
    before = [i for i in listing["items"] if parse_iso(i["end"]) <= parse_iso(gap["start"]) + 0.01]
    after = [i for i in listing["items"] if parse_iso(i["start"]) >= parse_iso(gap["end"]) - 0.01]
    assert abs(parse_iso(before[-1]["end"]) - parse_iso(gap["start"])) < 0.01
    assert abs(parse_iso(after[0]["start"]) - parse_iso(gap["end"])) < 0.01

    # A range from inside a segment before the gap to inside the first one after it.
    anchor = next(item for item in reversed(before) if item["duration_seconds"] >= 2.5)
    start = parse_iso(anchor["end"]) - 1.5
    end = parse_iso(after[0]["start"]) + 2.0
    used = [i for i in listing["items"] if parse_iso(i["start"]) < end and parse_iso(i["end"]) > start]
    query = f"start={iso(start)}&end={iso(end)}"
    status, playlist = instance.request("GET", f"/vod/cam/index.m3u8?{query}")
    assert status == 200
    text = playlist.decode()
    assert text.count("#EXT-X-DISCONTINUITY") == 1, text
    assert text.count("#EXT-X-MAP") == len(used), text
    vod = ffprobe(f"{instance.base}/vod/cam/index.m3u8?{query}")
    assert (vod["width"], vod["height"]) == CLIP_SIZES["d1"]
    recorded_seconds = sum(min(end, parse_iso(i["end"])) - max(start, parse_iso(i["start"])) for i in used)
    # HLS segments are whole keyframe groups, so up to one more on each side.
    extra = 2 * (VOD_PART_SECONDS + GOP_SECONDS)
    assert recorded_seconds * 12 - 2 <= vod["frames"] <= (recorded_seconds + extra) * 12, vod

    export = urllib.request.urlopen(f"{instance.base}/api/recordings/cam/export?{query}", timeout=60).read()
    again = urllib.request.urlopen(f"{instance.base}/api/recordings/cam/export?{query}", timeout=60).read()
    status, manifest = instance.request("GET", f"/api/recordings/cam/export.json?{query}")
    assert status == 200, manifest
    assert export == again
    assert manifest["sha256"] == hashlib.sha256(export).hexdigest()
    assert manifest["bytes"] == len(export)
    assert len(used) >= 2
    assert [segment["path"] for segment in manifest["segments"]] == [item["path"] for item in used]
    assert manifest["fully_recorded"] is False
    assert [gap["cause"] for gap in manifest["gaps"]] == ["camera_offline"]
    assert manifest["owner"] == {"category": "pemkab", "name": "Diskominfo Badung"}
    exported = tmp_path / "export.mp4"
    exported.write_bytes(export)
    clip = ffprobe(exported)
    assert (clip["width"], clip["height"]) == CLIP_SIZES["d1"]
    # The clip starts at the keyframe at or before start and keeps the gap as time.
    clip_start = parse_iso(manifest["clip_start"])
    assert start - GOP_SECONDS - 0.01 <= clip_start <= start
    expected_seconds = sum(
        min(end, parse_iso(i["end"])) - max(clip_start, parse_iso(i["start"])) for i in used
    )
    assert abs(clip["frames"] - expected_seconds * 12) <= len(used) + 1, (clip, expected_seconds)
    assert clip["duration"] >= (end - clip_start) - 1.0, clip
    exports = instance.log_events("export_completed")
    assert exports[-1]["sha256"] == manifest["sha256"]


@pytest.fixture
def small_disk(tmp_path):
    """A 12 MB tmpfs mounted as the recordings directory."""
    with tmpfs_recordings(tmp_path / "data", "12m") as mountpoint:
        yield mountpoint


def test_full_disk_keeps_live_and_records_gap(gst, pantau, tmp_path, small_disk):
    data_dir = tmp_path / "data"
    cameras = [camera_entry("cam", gst.url("/d1"), mode="always", record=True)]
    instance = start_pantau(pantau, data_dir, cameras, PANTAU_SEGMENT_SECONDS="2", PANTAU_MIN_FREE_BYTES="0")
    assert wait_until(lambda: complete_segments(instance, "cam"), timeout=30)

    watched: dict[str, object] = {}

    def watch() -> None:
        try:
            watched["decoded"] = decode_stream(f"{instance.base}/live/cam.flv", frames=12 * 16, timeout=40)
        except Exception as exc:  # noqa: BLE001 - reported by the assert below
            watched["error"] = exc

    viewer = threading.Thread(target=watch)
    viewer.start()
    filler = small_disk / "filler.bin"
    with open(filler, "wb") as handle:
        try:
            while True:
                handle.write(b"\0" * 65536)
                handle.flush()
        except OSError:
            pass
    full_at = time.time()
    assert wait_until(lambda: instance.log_events("recording_write_failed"), timeout=15)
    time.sleep(3)
    filler.unlink()
    freed_at = time.time()
    resumed = wait_until(
        lambda: [i for i in complete_segments(instance, "cam") if parse_iso(i["start"]) > full_at], timeout=30
    )
    viewer.join(60)

    assert "error" not in watched, watched.get("error")
    decoded = watched["decoded"]
    assert decoded.video_frames >= 12 * 16
    assert all(b > a for a, b in zip(decoded.video_times, decoded.video_times[1:], strict=False))
    assert resumed, "recording did not resume when space returned"
    listing = recordings(instance, "cam")
    gaps = [gap for gap in listing["gaps"] if gap["cause"] == "disk_full"]
    assert len(gaps) == 1, listing["gaps"]
    assert parse_iso(gaps[0]["start"]) <= freed_at
    assert not gaps[0]["ongoing"]
    assert abs(parse_iso(gaps[0]["end"]) - parse_iso(resumed[0]["start"])) < 0.01
    # No partial rows: every indexed segment is a playable file of the indexed size.
    files = segment_files(data_dir)
    for item in listing["items"]:
        if item["status"] == "complete":
            assert files[item["path"]] == item["bytes"], item
            assert ffprobe(data_dir / "recordings" / item["path"])["frames"] > 0
    assert instance.stop() == 0


class SimulatorThread:
    """The project's camera simulator on its own event loop, with injected faults."""

    def __init__(self, clip: str, faults: Faults) -> None:
        self.server = SimulatorServer(
            {"/cam": load_clip(str(MEDIA / CLIPS[clip]))}, faults=lambda _path: faults
        )
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> Self:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)
        return self

    def __exit__(self, *_exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.server.close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def test_timestamp_jump_records_gap(pantau, tmp_path):
    faults = Faults(timestamp_jump_seconds=3600.0, jump_after_seconds=5.0)
    with SimulatorThread("d1", faults) as simulator:
        cameras = [camera_entry("cam", simulator.server.url("/cam"), mode="always", record=True)]
        instance = start_pantau(pantau, tmp_path / "data", cameras, PANTAU_SEGMENT_SECONDS="3")
        gaps = wait_until(
            lambda: [
                g for g in recordings(instance, "cam")["gaps"] if g["cause"] == "timestamp_jump" and g["end"]
            ],
            timeout=30,
        )
        assert gaps, recordings(instance, "cam")
        resumed = wait_until(
            lambda: [i for i in complete_segments(instance, "cam") if i["start"] >= gaps[0]["end"]],
            timeout=15,
        )
        listing = recordings(instance, "cam")

    assert len(gaps) == 1
    # Recording restarts at the first keyframe after the jump: within one GOP.
    assert gaps[0]["duration_seconds"] <= GOP_SECONDS + 0.5, gaps[0]
    assert resumed, listing
    assert instance.log_events("timestamp_corrected")
    for item in listing["items"]:
        if item["status"] == "complete":
            probe = ffprobe(tmp_path / "data" / "recordings" / item["path"])
            assert abs(probe["frames"] - item["duration_seconds"] * 12) <= 1, (item, probe)
