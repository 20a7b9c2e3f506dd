"""Frames and stream descriptions shared by ingest and every output.

Timestamps are in 90 kHz ticks on the camera's output timeline, which stays
monotonic across reconnects and camera clock jumps (see ``relay.timeline``).
"""

from __future__ import annotations

from dataclasses import dataclass

from proto import h264, h265
from proto.aac import AudioConfig

TIMEBASE = 90000  # ticks per second of every Frame timestamp

VIDEO_CODECS_RELAYED = ("h264", "h265")


class Frame:
    """One access unit (video) or one audio frame, immutable once built.

    ``data`` of a video frame is an ISO 14496-15 sample: NAL units each
    preceded by a 4-byte big-endian length, as FLV and MP4 carry them. An
    audio frame holds one raw AAC frame without ADTS header.
    """

    __slots__ = ("video", "dts", "pts", "key", "data", "wallclock")

    def __init__(
        self, video: bool, dts: int, pts: int, key: bool, data: bytes, wallclock: float
    ) -> None:
        self.video = video
        self.dts = dts
        self.pts = pts
        self.key = key
        self.data = data
        self.wallclock = wallclock  # time.time() when the frame was complete

    def __repr__(self) -> str:
        kind = "video" if self.video else "audio"
        return f"Frame({kind}, dts={self.dts}, pts={self.pts}, key={self.key}, {len(self.data)} B)"


@dataclass(frozen=True, slots=True)
class VideoInfo:
    """The video track as the parameter sets describe it."""

    codec: str  # "h264", "h265", or a non-relayed codec such as "mjpeg"
    width: int
    height: int
    profile: str | None = None
    level: float | None = None
    codec_string: str | None = None
    decoder_config: bytes | None = None  # avcC or hvcC record
    sps: bytes | None = None
    pps: tuple[bytes, ...] = ()
    vps: bytes | None = None
    coded_width: int | None = None
    coded_height: int | None = None
    sps_fps: float | None = None

    @property
    def relayed(self) -> bool:
        return self.codec in VIDEO_CODECS_RELAYED


@dataclass(frozen=True, slots=True)
class AudioInfo:
    codec: str  # "aac", "pcma", "pcmu", "l16", ...
    sample_rate: int
    channels: int
    config: AudioConfig | None = None
    specific_config: bytes | None = None  # AAC AudioSpecificConfig

    @property
    def relayed(self) -> bool:
        return self.codec == "aac" and self.specific_config is not None


def h264_video_info(sps: bytes, pps_list: list[bytes]) -> VideoInfo:
    """Describe an H.264 track from its parameter sets (raises BitstreamError)."""
    info = h264.parse_sps(sps)
    return VideoInfo(
        codec="h264",
        width=info.width,
        height=info.height,
        profile=info.profile_name,
        level=info.level,
        codec_string=info.codec_string,
        decoder_config=h264.avc_decoder_config(sps, pps_list, info),
        sps=sps,
        pps=tuple(pps_list),
        coded_width=info.coded_width,
        coded_height=info.coded_height,
        sps_fps=info.fps,
    )


def h265_video_info(vps: bytes, sps: bytes, pps: bytes) -> VideoInfo:
    """Describe an H.265 track from its parameter sets (raises BitstreamError)."""
    info = h265.parse_sps(sps)
    return VideoInfo(
        codec="h265",
        width=info.width,
        height=info.height,
        profile=info.profile_name,
        level=info.level,
        codec_string=info.codec_string,
        decoder_config=h265.hevc_decoder_config(vps, sps, pps, info),
        sps=sps,
        pps=(pps,),
        vps=vps,
        coded_width=info.coded_width,
        coded_height=info.coded_height,
        sps_fps=info.fps,
    )


def reorder_depth(video: VideoInfo) -> int | None:
    """Return how many frames the encoder may reorder, or None when the SPS does not say."""
    if video.sps is None:
        return None
    try:
        if video.codec == "h264":
            info = h264.parse_sps(video.sps)
            if info.profile_idc == 66:
                return 0  # Baseline has no B-slices
            return info.max_num_reorder_frames
        if video.codec == "h265":
            return h265.parse_sps(video.sps).max_num_reorder_pics
    except ValueError:
        return None
    return None
