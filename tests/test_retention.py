"""Retention by age, quota and free space, evidence holds, index rebuild and the API's range checks.

The segments are real MP4 files in Pantau's segment format, built from the
D1 test clip and dated in the past, so no test has to wait for days.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from loadtest.clip import load_clip
from recorder.segment import GapBefore, SegmentMeta, header_bytes, segment_relpath
from relay.fmp4 import Fmp4Muxer
from relay.media import TIMEBASE, h264_video_info
from tests.conftest import start_pantau
from tests.recording_support import iso, parse_iso, recordings, tmpfs_recordings, wait_until
from tests.support import CLIPS, MEDIA, Pantau, camera_entry
from tests.test_fmp4 import clip_frames

DAY = 86400.0
UNREACHABLE = "rtsp://127.0.0.1:9/none"  # the discard port, where no RTSP server listens


def write_segment(
    recordings_dir: Path, camera_id: str, start_utc: float, gap_before: GapBefore | None = None
) -> tuple[str, int]:
    """Write a 2 s segment of the D1 clip starting at ``start_utc``; return its path and size."""
    path = str(MEDIA / CLIPS["d1"])
    sets = load_clip(path).parameter_sets
    muxer = Fmp4Muxer(h264_video_info(sets[0], sets[1:]), None)
    meta = SegmentMeta(
        camera_id=camera_id, start_utc=start_utc, clock_source="receive", gap_before=gap_before
    )
    data = bytearray(header_bytes(muxer.init_segment(), meta))
    frames = [frame for frame in clip_frames(path) if frame.video]
    first = frames[0].dts
    for frame in frames:
        if frame.dts - first >= 2 * TIMEBASE:
            data += muxer.cut(frame.dts)
            break
        if frame.key and muxer.pending_video:
            data += muxer.cut(frame.dts)
        muxer.add(frame)
    relpath = segment_relpath(camera_id, start_utc)
    target = recordings_dir / relpath
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(bytes(data))
    return relpath, len(data)


def run_once(pantau: list[Pantau], data_dir: Path, cameras: list[dict], **env: str) -> Pantau:
    """Start Pantau, wait for its first retention run, and return it still running."""
    env.setdefault("PANTAU_EXPORT_MAX_SECONDS", str(int(60 * DAY)))
    env.setdefault("PANTAU_MIN_FREE_BYTES", "0")  # the 16 MB disk is far below the default floor
    instance = start_pantau(pantau, data_dir, cameras, **env)
    assert wait_until(lambda: instance.log_events("retention_run"), timeout=15), instance.log_text()
    return instance


def test_retention_age_quota_free_space_and_holds(pantau, tmp_path):
    data_dir = tmp_path / "data"
    with tmpfs_recordings(data_dir, "16m") as recordings_dir:
        now = time.time()
        plan = {
            "a1": ("a", now - 40 * DAY, None),
            "a2": ("a", now - 35 * DAY, None),
            "a3": ("a", now - 20 * DAY, None),
            "a4": ("a", now - 2 * 3600, None),
            "b1": ("b", now - 10 * DAY, None),
            "b2": ("b", now - 8 * DAY, GapBefore(now - 10 * DAY + 2, "camera_offline")),
            "b3": ("b", now - 3 * DAY, None),
            "b4": ("b", now - 3600, GapBefore(now - 3 * DAY + 2, "rtsp_timeout")),
        }
        files = {name: write_segment(recordings_dir, *spec) for name, spec in plan.items()}

        def remaining() -> set[str]:
            return {name for name, (relpath, _) in files.items() if (recordings_dir / relpath).exists()}

        keep_all = [
            camera_entry("a", UNREACHABLE, mode="always", record=True),
            camera_entry("b", UNREACHABLE, mode="always", record=True),
        ]
        # Phase 1: no index yet, so it is rebuilt from the files; nothing is old enough to go.
        instance = run_once(pantau, data_dir, keep_all, PANTAU_RETENTION_DAYS="3650")
        listing = recordings(instance, "a", now - 41 * DAY, now)
        assert [item["path"] for item in listing["items"]] == [files[n][0] for n in ("a1", "a2", "a3", "a4")]
        assert [item["bytes"] for item in listing["items"]] == [files[n][1] for n in ("a1", "a2", "a3", "a4")]
        assert all(abs(item["duration_seconds"] - 2.0) < 0.01 for item in listing["items"])
        gaps_b = recordings(instance, "b", now - 41 * DAY, now)["gaps"]
        # The files' gaps come back, and the time since the last file is a stop of the service.
        assert [gap["cause"] for gap in gaps_b] == ["camera_offline", "rtsp_timeout", "service_stopped"]
        assert abs(parse_iso(gaps_b[2]["start"]) - (plan["b4"][1] + 2.0)) < 0.01
        assert gaps_b[2]["ongoing"] is True

        held_start = plan["a2"][1] + 0.5
        status, hold = instance.request(
            "POST",
            "/api/recordings/a/holds",
            {"start": iso(held_start), "end": iso(held_start + 1), "reason": "Laporan polisi 12/2024"},
        )
        assert status == 201, hold
        status, holds = instance.request("GET", "/api/recordings/a/holds")
        assert [item["id"] for item in holds["items"]] == [hold["id"]]
        held = recordings(instance, "a", now - 41 * DAY, now)["items"]
        assert [item["held"] for item in held] == [False, True, False, False]
        assert instance.log_events("hold_created")[0]["hold_id"] == hold["id"]
        instance.stop()

        # Phase 2: 30 days for camera a, its own 7 days for camera b; the hold keeps a2.
        by_days = [keep_all[0], {**keep_all[1], "retention_days": 7}]
        instance = run_once(pantau, data_dir, by_days, PANTAU_RETENTION_DAYS="30")
        assert remaining() == {"a2", "a3", "a4", "b3", "b4"}
        run = instance.log_events("retention_run")[0]
        assert run["deleted_by_age"] == 3
        assert run["deleted_bytes"] == sum(files[name][1] for name in ("a1", "b1", "b2"))
        by_camera = run["deleted_by_camera"]
        assert {camera: counts["segments"] for camera, counts in by_camera.items()} == {"a": 1, "b": 2}
        assert by_camera["b"]["bytes"] == files["b1"][1] + files["b2"][1]
        assert abs(parse_iso(by_camera["b"]["deleted_through"]) - (plan["b2"][1] + 2.0)) < 0.01
        listing_b = recordings(instance, "b", now - 41 * DAY, now)
        assert [item["path"] for item in listing_b["items"]] == [files["b3"][0], files["b4"][0]]
        # The gap before b2 described deleted video, so it went. The one before b4 stays,
        # and the stop after phase 1 is a gap that lasts until the camera records again.
        assert [gap["cause"] for gap in listing_b["gaps"]] == ["rtsp_timeout", "service_stopped"]
        assert listing_b["gaps"][1]["ongoing"] is True
        instance.stop()

        # Phase 3: a quota one byte below the total removes the oldest segment that is not held.
        total = sum(files[name][1] for name in remaining())
        instance = run_once(
            pantau, data_dir, by_days, PANTAU_RETENTION_DAYS="30", PANTAU_RETENTION_MAX_BYTES=str(total - 1)
        )
        assert remaining() == {"a2", "a4", "b3", "b4"}
        assert instance.log_events("retention_run")[0]["deleted_by_quota"] == 1
        status, _ = instance.request("DELETE", f"/api/recordings/a/holds/{hold['id']}")
        assert status == 204
        assert instance.request("GET", "/api/recordings/a/holds")[1]["items"] == []
        assert instance.log_events("hold_released")
        instance.stop()

        # Phase 4: one byte short of the free-space floor. Age alone would keep everything, and
        # a2, no longer held, is the oldest.
        stats = os.statvfs(recordings_dir)
        floor = stats.f_bavail * stats.f_frsize + 1
        instance = run_once(
            pantau, data_dir, by_days, PANTAU_RETENTION_DAYS="3650", PANTAU_MIN_FREE_BYTES=str(floor)
        )
        assert remaining() == {"a4", "b3", "b4"}
        assert instance.log_events("retention_run")[0]["deleted_for_free_space"] == 1
        instance.stop()


def test_recording_api_rejects_bad_input(pantau, tmp_path):
    cameras = [camera_entry("cam", UNREACHABLE, mode="always", record=True)]
    instance = start_pantau(pantau, tmp_path / "data", cameras)
    now = time.time()

    def get(path: str) -> tuple[int, dict]:
        return instance.request("GET", path)

    cases = [
        (f"start={iso(now)}&end={iso(now - 60)}", "end"),
        (f"start={iso(now - 2 * DAY)}&end={iso(now)}", "end"),
        (f"start=yesterday&end={iso(now)}", "start"),
        (f"start=2024-05-01T08:00:00&end={iso(now)}", "start"),
        (f"start={iso(now - 60)}", "end"),
    ]
    for path in (
        "/api/recordings/cam",
        "/vod/cam/index.m3u8",
        "/api/recordings/cam/export",
        "/api/recordings/cam/export.json",
    ):
        for query, field in cases:
            status, body = get(f"{path}?{query}")
            assert status == 400, (path, query, body)
            assert body["error"] == "invalid_range", (path, query, body)
            assert body["field"] == field, (path, query, body)
    # An offset other than Z is allowed; a '+' that arrives as a space is read as '+'.
    status, body = get("/api/recordings/cam?start=2024-05-01T16:00:00+08:00&end=2024-05-01T17:00:00%2B08:00")
    assert status == 200, body
    assert body["start"] == "2024-05-01T08:00:00.000Z", body

    status, body = get(f"/api/recordings/nope?start={iso(now - 60)}&end={iso(now)}")
    assert status == 404
    assert body["error"] == "camera_not_found"
    empty = "start=2001-01-01T00:00:00Z&end=2001-01-01T01:00:00Z"
    status, body = get(f"/api/recordings/cam?{empty}")
    assert status == 200
    assert body["items"] == []
    assert body["gaps"] == []
    status, body = get(f"/api/recordings/cam/export.json?{empty}")
    assert status == 200
    assert body["segments"] == []
    assert body["sha256"] is None
    status, body = get(f"/api/recordings/cam/export?{empty}")
    assert status == 404
    assert body["error"] == "no_recording"
    status, body = get(f"/vod/cam/index.m3u8?{empty}")
    assert status == 404
    assert body["error"] == "no_recording"

    status, body = instance.request(
        "POST", "/api/recordings/cam/holds", {"start": iso(now), "end": iso(now - 5), "reason": "x"}
    )
    assert status == 400
    assert body["field"] == "end"
    status, body = instance.request(
        "POST", "/api/recordings/cam/holds", {"start": iso(now - 5), "end": iso(now)}
    )
    assert status == 400, body
    assert body["field"] == "reason", body
    status, body = instance.request("DELETE", "/api/recordings/cam/holds/99")
    assert status == 404

    entry = camera_entry("ondemand", UNREACHABLE, mode="on_demand", record=True)
    status, body = instance.request("PUT", "/api/cameras/ondemand", entry)
    assert status == 400, body
    assert body["field"] == "record", body


@pytest.mark.parametrize("retention_days", [0, 3651, "x"])
def test_camera_retention_days_bounds(retention_days):
    from relay.cameras import EntryInvalid, parse_entry

    with pytest.raises(EntryInvalid) as caught:
        parse_entry(camera_entry("cam", UNREACHABLE, mode="always", retention_days=retention_days))
    assert caught.value.error.field == "retention_days"
