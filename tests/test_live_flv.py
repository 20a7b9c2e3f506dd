"""HTTP-FLV from real cameras (GStreamer's RTSP server) decoded by a real decoder (FFmpeg in PyAV)."""

from __future__ import annotations

import concurrent.futures
import math

import pytest

from tests.conftest import start_pantau
from tests.support import CLIP_SIZES, camera_entry, decode_stream, flv_first_keyframe

CLIPS = ["h264", "h265", "aac", "bframes"]


@pytest.mark.parametrize("clip", CLIPS)
def test_flv_decodes_clip(clip, gst, pantau, tmp_path):
    instance = start_pantau(pantau, tmp_path, [camera_entry("cam", gst.url(f"/{clip}"))])

    decoded = decode_stream(f"{instance.base}/live/cam.flv", frames=30)

    assert (decoded.width, decoded.height) == CLIP_SIZES[clip]
    assert decoded.codec == ("hevc" if clip == "h265" else "h264")
    assert decoded.video_frames >= 30
    assert not any(math.isnan(t) for t in decoded.video_times)
    assert all(b > a for a, b in zip(decoded.video_times, decoded.video_times[1:], strict=False)), decoded.video_times
    # 30 frames at 15 fps span about two seconds of presentation time.
    assert 1.5 < decoded.video_times[-1] - decoded.video_times[0] < 2.5
    if clip == "aac":
        assert decoded.audio_frames > 0
    print(f"{clip}: first byte {decoded.first_byte_seconds:.3f} s, first frame {decoded.first_frame_seconds:.3f} s")


def test_keyframe_arrives_quickly_for_new_client(gst, pantau, tmp_path):
    instance = start_pantau(pantau, tmp_path, [camera_entry("cam", gst.url("/h264"))])

    cold = flv_first_keyframe(instance.base, "/live/cam.flv")
    warm = flv_first_keyframe(instance.base, "/live/cam.flv")

    assert cold.status == 200
    assert warm.status == 200
    print(
        f"cold camera: first byte {cold.first_byte_seconds * 1000:.0f} ms, "
        f"first keyframe {cold.first_keyframe_seconds * 1000:.0f} ms; "
        f"warm camera: first byte {warm.first_byte_seconds * 1000:.0f} ms, "
        f"first keyframe {warm.first_keyframe_seconds * 1000:.0f} ms"
    )
    # The warm client gets the GOP cache, which starts with a keyframe, at once.
    decoded = decode_stream(f"{instance.base}/live/cam.flv", frames=1)
    assert decoded.video_frames == 1


def test_five_clients_share_one_upstream(own_gst, pantau, tmp_path):
    from tests.support import GstRtspServer

    server = GstRtspServer({"/cam": "h264"}).start()
    own_gst.append(server)
    instance = start_pantau(pantau, tmp_path, [camera_entry("cam", server.url("/cam"))])

    with concurrent.futures.ThreadPoolExecutor(5) as pool:
        results = list(pool.map(lambda _: decode_stream(f"{instance.base}/live/cam.flv", frames=45), range(5)))

    assert all(result.video_frames >= 45 for result in results)
    assert server.connections == 1
    view = instance.camera("cam")
    assert view["reconnects"] == 0


def test_udp_transport_delivers_video_and_audio(gst, pantau, tmp_path):
    instance = start_pantau(pantau, tmp_path, [camera_entry("cam", gst.url("/aac"), transport="udp")])

    decoded = decode_stream(f"{instance.base}/live/cam.flv", frames=45)

    assert (decoded.width, decoded.height) == (1920, 1080)
    assert decoded.video_frames >= 45
    assert decoded.audio_frames > 0
    assert instance.camera("cam")["transport"] == "udp"


def test_http10_client_gets_plain_body(gst, pantau, tmp_path):
    import socket

    from proto.flv import FlvReader

    instance = start_pantau(pantau, tmp_path, [camera_entry("cam", gst.url("/d1"))])
    with socket.create_connection(("127.0.0.1", instance.port), timeout=20) as sock:
        sock.sendall(b"GET /live/cam.flv HTTP/1.0\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(65536)
        head, _, body = data.partition(b"\r\n\r\n")
        reader = FlvReader()
        tags = reader.feed(body)
        while sum(tag.is_video_frame for tag in tags) < 20:
            tags += reader.feed(sock.recv(65536))

    assert head.startswith(b"HTTP/1.0 200") or head.startswith(b"HTTP/1.1 200")
    assert b"chunked" not in head.lower()
    assert tags[0].tag_type == 18  # onMetaData
    assert any(tag.is_video_keyframe for tag in tags)
