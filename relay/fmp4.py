"""Frames to fragmented MP4: one init segment, then movie fragments on demand.

Shared by HLS (CMAF segments) and the recorder (fragmented MP4 files).
Video uses the 90 kHz timeline of :class:`relay.media.Frame` directly.
Audio uses its sample rate as timescale; each AAC frame lasts exactly its
frame length in samples, and the first frame of a fragment is placed at its
own timestamp, so rounding never accumulates.
"""

from __future__ import annotations

from proto import mp4
from relay.media import TIMEBASE, AudioInfo, Frame, VideoInfo

VIDEO_TRACK_ID = 1
AUDIO_TRACK_ID = 2


class Fmp4Muxer:
    """Collect frames and cut them into movie fragments.

    The caller decides where fragments end (``cut``); a fragment ends before
    the frame whose timestamp gives the last video sample its duration.
    """

    def __init__(self, video: VideoInfo, audio: AudioInfo | None) -> None:
        if not video.relayed or video.decoder_config is None:
            raise ValueError(f"{video.codec} video cannot be muxed into MP4")
        self.video = video
        self.audio = audio if audio is not None and audio.relayed else None
        self.sequence = 0
        self._video_frames: list[Frame] = []
        self._audio_frames: list[Frame] = []
        self._last_video_duration = TIMEBASE // 15

    def init_segment(self) -> bytes:
        tracks = [
            mp4.TrackConfig(
                track_id=VIDEO_TRACK_ID,
                kind="video",
                codec=self.video.codec,
                timescale=TIMEBASE,
                decoder_config=self.video.decoder_config or b"",
                width=self.video.width,
                height=self.video.height,
            )
        ]
        if self.audio is not None and self.audio.specific_config is not None:
            tracks.append(
                mp4.TrackConfig(
                    track_id=AUDIO_TRACK_ID,
                    kind="audio",
                    codec="aac",
                    timescale=self.audio.sample_rate,
                    decoder_config=self.audio.specific_config,
                    sample_rate=self.audio.sample_rate,
                    channels=self.audio.channels,
                )
            )
        return mp4.init_segment(tracks)

    @property
    def codecs(self) -> str:
        """The CODECS attribute of an HLS playlist for these tracks."""
        names = [self.video.codec_string or ""]
        if self.audio is not None and self.audio.config is not None:
            names.append(self.audio.config.codec_string)
        return ",".join(name for name in names if name)

    def add(self, frame: Frame) -> None:
        if frame.video:
            self._video_frames.append(frame)
        elif self.audio is not None:
            self._audio_frames.append(frame)

    @property
    def pending_video(self) -> list[Frame]:
        return self._video_frames

    def cut(self, next_video_dts: int | None = None) -> bytes | None:
        """Return a movie fragment with every pending frame, or None when there is none.

        ``next_video_dts`` is the decode time of the frame after the last one,
        which gives the last video sample its duration; without it the
        previous sample's duration is repeated.
        """
        if not self._video_frames and not self._audio_frames:
            return None
        fragments = []
        if self._video_frames:
            fragments.append(self._video_fragment(next_video_dts))
        if self._audio_frames:
            fragments.append(self._audio_fragment())
        self._video_frames = []
        self._audio_frames = []
        self.sequence += 1
        return mp4.movie_fragment(self.sequence, fragments)

    def _video_fragment(self, next_video_dts: int | None) -> mp4.TrackFragment:
        frames = self._video_frames
        fragment = mp4.TrackFragment(VIDEO_TRACK_ID, frames[0].dts)
        for index, frame in enumerate(frames):
            if index + 1 < len(frames):
                duration = frames[index + 1].dts - frame.dts
            elif next_video_dts is not None and next_video_dts > frame.dts:
                duration = next_video_dts - frame.dts
            else:
                duration = self._last_video_duration
            duration = max(1, duration)
            self._last_video_duration = duration
            fragment.samples.append(mp4.Sample(duration, len(frame.data), frame.key, frame.pts - frame.dts))
            fragment.data.append(frame.data)
        return fragment

    def _audio_fragment(self) -> mp4.TrackFragment:
        assert self.audio is not None
        rate = self.audio.sample_rate
        frame_length = self.audio.config.frame_length if self.audio.config else 1024
        frames = self._audio_frames
        fragment = mp4.TrackFragment(AUDIO_TRACK_ID, frames[0].dts * rate // TIMEBASE)
        for frame in frames:
            fragment.samples.append(mp4.Sample(frame_length, len(frame.data), True))
            fragment.data.append(frame.data)
        return fragment
