"""Fragmented MP4 from clip frames decodes in FFmpeg with the clip's size and frame count."""

from __future__ import annotations

import io

import av
import pytest

from loadtest.clip import load_clip
from proto.aac import parse_audio_specific_config
from relay.fmp4 import Fmp4Muxer
from relay.media import TIMEBASE, AudioInfo, Frame, VideoInfo, h264_video_info, h265_video_info
from tests.support import CLIP_SIZES, CLIPS, MEDIA


def clip_frames(path: str) -> list[Frame]:
    """Read a clip's packets as relay frames, starting one second into the timeline."""
    frames = []
    with av.open(path) as container:
        video = container.streams.video[0]
        audio = container.streams.audio[0] if container.streams.audio else None
        for packet in container.demux():
            if packet.size == 0 or packet.pts is None:
                continue
            if packet.stream is video:
                dts = TIMEBASE + int(packet.dts * video.time_base * TIMEBASE)
                pts = TIMEBASE + int(packet.pts * video.time_base * TIMEBASE)
                frames.append(Frame(True, dts, pts, bool(packet.is_keyframe), bytes(packet), 0.0))
            elif audio is not None and packet.pts >= 0:
                ticks = TIMEBASE + int(packet.pts * audio.time_base * TIMEBASE)
                frames.append(Frame(False, ticks, ticks, True, bytes(packet), 0.0))
    return frames


def clip_stream_info(name: str) -> tuple[VideoInfo, AudioInfo | None]:
    """Describe a clip's tracks as ingest does, from its parameter sets and AudioSpecificConfig."""
    clip = load_clip(MEDIA / CLIPS[name])
    sets = clip.parameter_sets
    video = h264_video_info(sets[0], sets[1:]) if clip.codec == "h264" else h265_video_info(*sets)
    audio = None
    if clip.audio_config:
        config = parse_audio_specific_config(clip.audio_config)
        audio = AudioInfo("aac", config.sample_rate, config.channels, config, clip.audio_config)
    return video, audio


@pytest.mark.parametrize("name", ["h264", "h265", "aac", "bframes"])
def test_fragmented_mp4_decodes(name):
    path = str(MEDIA / CLIPS[name])
    video, audio = clip_stream_info(name)
    muxer = Fmp4Muxer(video, audio)
    data = bytearray(muxer.init_segment())
    frames = clip_frames(path)
    for frame in frames:
        if frame.video and frame.key and muxer.pending_video:
            data += muxer.cut(frame.dts)
        muxer.add(frame)
    data += muxer.cut()

    with av.open(io.BytesIO(bytes(data))) as container:
        times = [frame.time for frame in container.decode(video=0)]
        stream = container.streams.video[0]
        size = (stream.codec_context.width, stream.codec_context.height)
        kinds = [stream.type for stream in container.streams]

    assert size == CLIP_SIZES[name]
    assert len(times) == sum(1 for frame in frames if frame.video)
    assert all(b > a for a, b in zip(times, times[1:], strict=False))
    assert kinds == (["video", "audio"] if name == "aac" else ["video"])
