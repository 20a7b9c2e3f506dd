"""The HLS segmenter fed with the frames of real clips, its output decoded by FFmpeg (PyAV)."""

from __future__ import annotations

import io

import av
import pytest

from proto.hls import parse_media_playlist, rounded_duration
from relay.camera import Camera
from relay.cameras import CameraConfig, Owner
from relay.hls import HlsStream
from relay.media import TIMEBASE, Frame
from relay.settings import Settings
from tests.support import CLIP_SIZES, CLIPS, MEDIA
from tests.test_fmp4 import clip_frames, clip_stream_info


def make_stream(fmt: str, **settings) -> HlsStream:
    config = CameraConfig(id="cam", name="Cam", url="rtsp://127.0.0.1/cam", owner=Owner("pemkab", "Diskominfo"))
    camera = Camera(config, Settings(**settings))
    return HlsStream(camera, fmt, 100, lambda stream: None)


def shifted(frame: Frame, ticks: int) -> Frame:
    return Frame(frame.video, frame.dts + ticks, frame.pts + ticks, frame.key, frame.data, frame.wallclock)


def decode_segments(stream: HlsStream) -> list[av.VideoFrame]:
    data = bytearray()
    if stream.fmt == "fmp4":
        data += stream.init_segment(stream.segments[0].init_name)
    for segment in stream.segments:
        data += segment.data
    with av.open(io.BytesIO(bytes(data)), format="mp4" if stream.fmt == "fmp4" else "mpegts") as container:
        return list(container.decode(video=0))


async def test_segments_follow_long_gop_and_keep_target_true():
    stream = make_stream("fmp4", hls_window=30)
    video, audio = clip_stream_info("bframes")
    frames = clip_frames(str(MEDIA / CLIPS["bframes"]))
    stream.on_stream_info(video, audio)
    for frame in frames:
        stream.on_frame(frame)

    playlist = parse_media_playlist(stream.playlist().decode())
    decoded = decode_segments(stream)

    # A 3.33 s GOP with a 2 s target: one GOP per segment, announced as 3 s.
    assert playlist["target_duration"] == 3
    assert len(playlist["segments"]) >= 2
    for segment in playlist["segments"]:
        assert rounded_duration(segment["duration"]) <= 3
        assert abs(segment["duration"] - 10 / 3) < 0.01
    assert all(segment.independent for segment in stream.segments)
    assert decoded[0].key_frame
    assert (decoded[0].width, decoded[0].height) == CLIP_SIZES["bframes"]
    gop_frames = 50
    assert len(decoded) == gop_frames * len(stream.segments)
    stream.stop("test")


async def test_outage_adds_discontinuity_and_sequence_moves_on():
    stream = make_stream("fmp4", hls_window=3)
    video, audio = clip_stream_info("h264")
    frames = [frame for frame in clip_frames(str(MEDIA / CLIPS["h264"])) if frame.video]
    stream.on_stream_info(video, audio)
    before = [frame for frame in frames if frame.dts < frames[0].dts + 6 * TIMEBASE]
    for frame in before:
        stream.on_frame(frame)
    stream.on_stream_end("connection closed")
    segments_before = len(stream.segments)
    gap = before[-1].dts - frames[0].dts + 5 * TIMEBASE
    for frame in frames[: 6 * 15]:
        stream.on_frame(shifted(frame, gap))

    text = stream.playlist().decode()
    playlist = parse_media_playlist(text)
    marked = [segment for segment in playlist["segments"] if segment["discontinuity"]]

    assert segments_before == 3  # 6 s of 2 s GOPs, the last one cut by the outage
    assert len(marked) == 1
    assert marked[0]["sequence"] == 103
    assert playlist["discontinuity_sequence"] == 0
    assert playlist["media_sequence"] == 102

    # The marked segment slides out of the window: the count moves to the header.
    for frame in frames[6 * 15 : 12 * 15]:
        stream.on_frame(shifted(frame, gap))
    later = parse_media_playlist(stream.playlist().decode())
    assert later["media_sequence"] > playlist["media_sequence"]
    assert later["discontinuity_sequence"] == 1
    assert not any(segment["discontinuity"] for segment in later["segments"])
    stream.stop("test")


@pytest.mark.parametrize("name", ["h264", "aac"])
async def test_mpegts_segments_decode(name):
    stream = make_stream("ts", hls_window=30)
    video, audio = clip_stream_info(name)
    frames = clip_frames(str(MEDIA / CLIPS[name]))
    stream.on_stream_info(video, audio)
    for frame in frames:
        stream.on_frame(frame)
    stream.on_stream_end("end of clip")

    decoded = decode_segments(stream)
    data = b"".join(segment.data for segment in stream.segments)
    with av.open(io.BytesIO(data), format="mpegts") as container:
        kinds = [stream.type for stream in container.streams]
        audio_frames = len(list(container.decode(audio=0))) if "audio" in kinds else 0

    assert all(len(segment.data) % 188 == 0 for segment in stream.segments)
    assert (decoded[0].width, decoded[0].height) == CLIP_SIZES[name]
    assert len(decoded) == sum(1 for frame in frames if frame.video)
    times = [frame.time for frame in decoded]
    assert all(b > a for a, b in zip(times, times[1:], strict=False))
    if name == "aac":
        assert kinds == ["video", "audio"]
        assert audio_frames > 0
    else:
        assert kinds == ["video"]
    stream.stop("test")


async def test_mpegts_refuses_h265():
    stream = make_stream("ts")
    video, audio = clip_stream_info("h265")
    stream.on_stream_info(video, audio)
    for frame in clip_frames(str(MEDIA / CLIPS["h265"]))[:100]:
        stream.on_frame(frame)

    assert not stream.segments
    stream.stop("test")
