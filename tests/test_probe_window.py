"""The probe's measuring window on frame sequences whose true values are known exactly."""

from __future__ import annotations

import asyncio

import pytest

from relay.media import TIMEBASE, AudioInfo, Frame, VideoInfo
from relay.probe import ProbeError, ProbeSink

VIDEO = VideoInfo(codec="h264", width=2688, height=1520, profile="Main", level=5.0)
SUB_STREAM = VideoInfo(codec="h264", width=640, height=360, profile="Main", level=3.0)


def frames(count: int, fps: int, gop: int, size: int = 1000, start: int = 0, reorder: bool = False) -> list[Frame]:
    """Video frames at ``fps`` with a keyframe every ``gop`` frames; with ``reorder``, B-frame-like PTS."""
    step = TIMEBASE // fps
    out = []
    for index in range(start, start + count):
        pts = index * step
        if reorder and index % gop and index % 3 == 1:
            pts += 2 * step  # shown after the next frame, as a P-frame before its B-frames
        elif reorder and index % gop and index % 3 == 2:
            pts -= step
        out.append(Frame(True, index * step, pts, index % gop == 0, bytes(size * (3 if index % gop == 0 else 1)), 0.0))
    return out


def run_sink(window: float, video: VideoInfo, stream: list[Frame], audio: AudioInfo | None = None):
    results = []
    sink = ProbeSink("cam", window, lambda camera_id, facts: results.append(facts))
    sink.on_stream_info(video, audio)
    for frame in stream:
        sink.on_frame(frame)
    return sink, results


async def test_window_covers_whole_gops():
    _, results = run_sink(4, VIDEO, frames(200, fps=15, gop=30))

    facts = results[0]
    assert facts.window_seconds == 4.0  # keyframes at 0, 2 and 4 s
    assert facts.fps == 15.0
    assert (facts.gop_frames, facts.gop_seconds) == (30, 2.0)
    # Two GOPs of one 3000-byte keyframe and 29 frames of 1000 bytes, over 4 s.
    assert facts.video_bitrate_bps == 2 * (3000 + 29 * 1000) * 8 // 4
    assert facts.b_frames is False
    assert len(results) == 1


async def test_window_reports_longest_gop():
    stream = frames(30, fps=10, gop=30) + frames(40, fps=10, gop=10, start=30)

    _, results = run_sink(5, VIDEO, stream)

    assert results[0].gop_frames == 30


async def test_reordered_frames_mean_b_frames():
    _, results = run_sink(2, VIDEO, frames(100, fps=15, gop=30, reorder=True))

    assert results[0].b_frames is True


async def test_no_second_keyframe_leaves_gop_unknown():
    sink, results = run_sink(2, VIDEO, frames(60, fps=15, gop=1000))
    assert results == []

    sink.on_stream_end("camera closed the connection")

    facts = results[0]
    assert facts.gop_frames is None
    assert facts.fps == 15.0
    assert "no second keyframe" in facts.notes[0]


async def test_stream_end_shortens_window():
    sink, results = run_sink(10, VIDEO, frames(95, fps=15, gop=30))

    sink.on_stream_end("read timeout")

    facts = results[0]
    assert facts.window_seconds == 6.0
    assert facts.gop_frames == 30
    assert "window shortened to 6.0 s" in facts.notes[0]


async def test_parameter_change_restarts_window():
    sink, results = run_sink(4, VIDEO, frames(40, fps=15, gop=30))
    assert results == []

    sink.on_stream_info(SUB_STREAM, None)
    for frame in frames(70, fps=15, gop=30, start=60):
        sink.on_frame(frame)

    assert [(facts.width, facts.height) for facts in results] == [(640, 360)]


async def test_request_waits_for_next_window():
    sink, results = run_sink(2, VIDEO, frames(70, fps=15, gop=30))
    assert len(results) == 1

    future = sink.request()
    for frame in frames(70, fps=15, gop=30, start=90):
        sink.on_frame(frame)

    facts = await asyncio.wait_for(future, 1)
    assert facts.fps == 15.0
    assert len(results) == 2


async def test_single_frame_fails_request():
    sink = ProbeSink("cam", 2, lambda camera_id, facts: None)
    sink.on_stream_info(VIDEO, None)
    future = sink.request()

    sink.on_frame(frames(1, fps=15, gop=30)[0])
    sink.on_stream_end("camera closed the connection")

    with pytest.raises(ProbeError) as caught:
        await asyncio.wait_for(future, 1)
    assert caught.value.code == "probe_too_short"


async def test_audio_bitrate_over_window():
    audio = AudioInfo(codec="aac", sample_rate=16000, channels=1, specific_config=b"\x14\x08")
    stream = []
    for frame in frames(70, fps=15, gop=30):
        stream.append(frame)
        stream.append(Frame(False, frame.dts, frame.pts, True, bytes(40), 0.0))

    _, results = run_sink(4, VIDEO, stream, audio)

    facts = results[0]
    assert facts.audio_codec == "aac"
    assert facts.audio_sample_rate == 16000
    # 60 audio frames of 40 bytes arrived inside the 4 s window.
    assert facts.audio_bitrate_bps == 60 * 40 * 8 // 4
