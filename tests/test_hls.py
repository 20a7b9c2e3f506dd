"""HLS from real cameras (GStreamer's RTSP server), read by ffprobe, PyAV and polling players."""

from __future__ import annotations

import hashlib
import io
import math
import threading
import time
from pathlib import Path

import av
import pytest

from proto.hls import parse_media_playlist, rounded_duration
from tests.conftest import start_pantau
from tests.support import (
    CLIP_SIZES,
    GstRtspServer,
    camera_entry,
    ffprobe_frames,
    http_get,
)
from tests.test_lifecycle import wait_until


class PollingPlayer:
    """Fetch a live playlist and every new segment, the way an HLS player does."""

    def __init__(self, playlist_url: str, interval: float = 0.5) -> None:
        self.playlist_url = playlist_url
        self.base = playlist_url.rsplit("/", 1)[0] + "/"
        self.interval = interval
        self.segments: dict[int, bytes] = {}
        self.inits: dict[str, bytes] = {}
        self.playlists: list[dict] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> PollingPlayer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        while not self._stop.is_set():
            status, _, body = http_get(self.playlist_url)
            if status == 200:
                playlist = parse_media_playlist(body.decode())
                self.playlists.append(playlist)
                for segment in playlist["segments"]:
                    if segment["map"] and segment["map"] not in self.inits:
                        init_status, _, init = http_get(self.base + segment["map"])
                        if init_status == 200:
                            self.inits[segment["map"]] = init
                    if segment["sequence"] not in self.segments:
                        seg_status, _, data = http_get(self.base + segment["uri"])
                        if seg_status == 200:
                            self.segments[segment["sequence"]] = data
                        else:
                            self.errors.append(f"segment {segment['uri']}: HTTP {seg_status}")
            else:
                self.errors.append(f"playlist: HTTP {status} {body[:200]!r}")
            self._stop.wait(self.interval)


def write_vod_copy(player: PollingPlayer, playlist: dict, directory: Path) -> Path:
    """Write the segments of ``playlist`` as a local VOD playlist (with EXT-X-ENDLIST) for ffprobe."""
    directory.mkdir(parents=True, exist_ok=True)
    lines = ["#EXTM3U", "#EXT-X-VERSION:6", f"#EXT-X-TARGETDURATION:{playlist['target_duration']}",
             f"#EXT-X-MEDIA-SEQUENCE:{playlist['media_sequence']}", "#EXT-X-PLAYLIST-TYPE:VOD"]
    current_map = None
    for segment in playlist["segments"]:
        if segment["discontinuity"]:
            lines.append("#EXT-X-DISCONTINUITY")
        if segment["map"] and segment["map"] != current_map:
            (directory / segment["map"]).write_bytes(player.inits[segment["map"]])
            lines.append(f'#EXT-X-MAP:URI="{segment["map"]}"')
            current_map = segment["map"]
        (directory / segment["uri"]).write_bytes(player.segments[segment["sequence"]])
        lines += [f"#EXTINF:{segment['duration']:.3f},", segment["uri"]]
    lines.append("#EXT-X-ENDLIST")
    path = directory / "vod.m3u8"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("clip", ["h264", "h265"])
def test_hls_fmp4_decodes_in_ffprobe(clip, gst, pantau, tmp_path):
    instance = start_pantau(pantau, tmp_path, [camera_entry("cam", gst.url(f"/{clip}"))])

    probed = ffprobe_frames(f"{instance.base}/live/cam/index.m3u8", packets=45)

    assert (probed.width, probed.height) == CLIP_SIZES[clip]
    assert probed.codec == ("hevc" if clip == "h265" else "h264")
    assert probed.frames >= 30
    assert not any(math.isnan(value) for value in probed.frame_times)
    assert all(b > a for a, b in zip(probed.frame_times, probed.frame_times[1:], strict=False))


def test_hls_mpegts_decodes_h264_in_ffprobe(gst, pantau, tmp_path):
    instance = start_pantau(pantau, tmp_path, [camera_entry("cam", gst.url("/h264"))])

    status, _, body = http_get(f"{instance.base}/live/cam/ts/index.m3u8")
    playlist = parse_media_playlist(body.decode())
    probed = ffprobe_frames(f"{instance.base}/live/cam/ts/index.m3u8", packets=45)

    assert status == 200
    assert playlist["segments"][0]["uri"].endswith(".ts")
    assert playlist["segments"][0]["map"] is None
    segment_status, segment_headers, _ = http_get(f"{instance.base}/live/cam/ts/{playlist['segments'][0]['uri']}")
    assert segment_status == 200
    assert segment_headers["Content-Type"] == "video/mp2t"
    assert (probed.width, probed.height) == (2688, 1520)
    assert probed.codec == "h264"
    assert probed.frames >= 30
    assert all(b > a for a, b in zip(probed.frame_times, probed.frame_times[1:], strict=False))


def test_hls_mpegts_rejects_h265(gst, pantau, tmp_path):
    instance = start_pantau(pantau, tmp_path, [camera_entry("cam", gst.url("/h265"), mode="always")])
    instance.wait_state("cam", "live")

    status, _, body = http_get(f"{instance.base}/live/cam/ts/index.m3u8")

    assert status == 406
    assert b"unsupported_codec" in body
    assert b"index.m3u8" in body  # points to the fMP4 playlist


def test_hls_headers_segments_and_errors(gst, pantau, tmp_path):
    # The B-frame clip has a 3.33 s GOP, longer than the 2 s target.
    instance = start_pantau(pantau, tmp_path, [camera_entry("cam", gst.url("/bframes"))])
    base = f"{instance.base}/live/cam/"

    status, headers, body = http_get(base + "index.m3u8")
    assert status == 200
    time.sleep(8)
    status, headers, body = http_get(base + "index.m3u8")
    playlist = parse_media_playlist(body.decode())

    assert status == 200
    assert headers["Content-Type"] == "application/vnd.apple.mpegurl"
    assert headers["Cache-Control"] == "max-age=1"
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert len(playlist["segments"]) >= 2
    for segment in playlist["segments"]:
        assert rounded_duration(segment["duration"]) <= playlist["target_duration"], playlist
        assert 3.0 < segment["duration"] < 3.7, segment
    first = playlist["segments"][0]
    init_status, init_headers, init = http_get(base + first["map"])
    segment_status, segment_headers, data = http_get(base + first["uri"])
    assert init_status == 200
    assert init_headers["Content-Type"] == "video/mp4"
    assert segment_status == 200
    assert segment_headers["Content-Type"] == "video/iso.segment"
    assert "max-age=86400" in segment_headers["Cache-Control"]
    assert segment_headers["Access-Control-Allow-Origin"] == "*"

    with av.open(io.BytesIO(init + data)) as container:
        frames = list(container.decode(video=0))
    assert frames[0].key_frame
    assert (frames[0].width, frames[0].height) == (2560, 1440)
    # 3.33 s at 15 fps
    assert 48 <= len(frames) <= 52, len(frames)

    missing_status, missing_headers, missing = http_get(base + "seg-1.m4s")
    assert missing_status == 404
    assert b"segment_not_found" in missing
    # A player on another origin must be able to read the 404 that directs it to reload.
    assert missing_headers["Access-Control-Allow-Origin"] == "*"
    assert http_get(base + "init-0000000000000000.mp4")[0] == 404
    unknown_status, unknown_headers, _ = http_get(f"{instance.base}/live/nosuchcam/index.m3u8")
    assert unknown_status == 404
    assert unknown_headers["Access-Control-Allow-Origin"] == "*"
    preflight_status, preflight_headers, _ = http_get(base + "index.m3u8", method="OPTIONS")
    assert preflight_status == 204
    vod_preflight_status, _, _ = http_get(f"{instance.base}/vod/cam/index.m3u8", method="OPTIONS")
    assert vod_preflight_status == 204
    assert "Authorization" in preflight_headers["Access-Control-Allow-Headers"]


def test_ten_hls_players_share_one_upstream_and_muxer(own_gst, pantau, tmp_path):
    server = GstRtspServer({"/cam": "h264"}).start()
    own_gst.append(server)
    instance = start_pantau(pantau, tmp_path, [camera_entry("cam", server.url("/cam"))])
    url = f"{instance.base}/live/cam/index.m3u8"

    players = [PollingPlayer(url).start() for _ in range(10)]
    time.sleep(10)
    view = instance.camera("cam")
    for player in players:
        player.stop()

    assert server.connections == 1
    assert view["readers"]["hls"] == 1
    assert len([event for event in instance.log_events("hls_started") if event["camera_id"] == "cam"]) == 1
    common = set.intersection(*(set(player.segments) for player in players))
    assert len(common) >= 3
    for sequence in common:
        digests = {hashlib.sha256(player.segments[sequence]).hexdigest() for player in players}
        assert len(digests) == 1, f"players got different bytes for segment {sequence}"
    assert all(not player.errors for player in players), [player.errors for player in players]


def test_hls_and_on_demand_upstream_stop_after_idle(own_gst, pantau, tmp_path):
    server = GstRtspServer({"/cam": "d1"}).start()
    own_gst.append(server)
    instance = start_pantau(
        pantau, tmp_path, [camera_entry("cam", server.url("/cam"), mode="on_demand")], PANTAU_IDLE_CLOSE_SECONDS="2"
    )
    url = f"{instance.base}/live/cam/index.m3u8"

    # Requests keep the output running well past the idle time.
    player = PollingPlayer(url).start()
    time.sleep(6)
    player.stop()
    assert instance.camera("cam")["readers"]["hls"] == 1
    assert server.open_connections == 1
    stopped_requests_at = time.monotonic()
    last_segment = max(player.segments)

    assert wait_until(lambda: instance.log_events("hls_stopped"), timeout=10)
    stop_delay = time.monotonic() - stopped_requests_at
    assert wait_until(lambda: server.open_connections == 0, timeout=10)
    view = instance.camera("cam")

    assert stop_delay >= 1.5, stop_delay
    assert [event["reason"] for event in instance.log_events("hls_stopped")] == ["idle"]
    assert len(instance.log_events("hls_started")) == 1
    assert view["readers"]["hls"] == 0
    assert view["state"] == "idle"
    assert http_get(f"{instance.base}/live/cam/seg-{last_segment}.m4s")[0] == 404

    # A new player starts it again, with media sequence numbers that continue upwards.
    status, _, body = http_get(url)
    assert status == 200
    assert parse_media_playlist(body.decode())["media_sequence"] > last_segment


def test_hls_discontinuity_after_rtsp_server_restart(own_gst, pantau, tmp_path):
    server = GstRtspServer({"/cam": "d1"}).start()
    own_gst.append(server)
    instance = start_pantau(
        pantau, tmp_path, [camera_entry("cam", server.url("/cam"), mode="always")], PANTAU_HLS_WINDOW="10"
    )
    instance.wait_state("cam", "live")
    player = PollingPlayer(f"{instance.base}/live/cam/index.m3u8").start()
    time.sleep(7)

    server.stop()
    instance.wait_state("cam", {"retrying", "connecting"}, timeout=15)
    time.sleep(2)
    own_gst.append(GstRtspServer({"/cam": "d1"}, port=server.port).start())

    def resumed_with_two_segments() -> bool:
        if not player.playlists:
            return False
        segments = player.playlists[-1]["segments"]
        marks = [index for index, segment in enumerate(segments) if segment["discontinuity"]]
        return bool(marks) and marks[0] >= 1 and len(segments) - marks[0] >= 2
    assert wait_until(resumed_with_two_segments, timeout=40), player.playlists[-1:]
    time.sleep(1)
    player.stop()

    sequences = [playlist["media_sequence"] for playlist in player.playlists]
    assert sequences == sorted(sequences), "media sequence went backwards"
    playlist = player.playlists[-1]
    marks = [segment for segment in playlist["segments"] if segment["discontinuity"]]
    assert len(marks) == 1
    vod = write_vod_copy(player, playlist, tmp_path / "vod")
    probed = ffprobe_frames(str(vod), packets=None)
    listed_seconds = sum(segment["duration"] for segment in playlist["segments"])
    # The D1 clip runs at 12 fps; every listed segment decodes, before and after the gap.
    assert probed.frames >= int(listed_seconds * 12 * 0.95), (probed.frames, listed_seconds)
    assert (probed.width, probed.height) == (768, 576)
