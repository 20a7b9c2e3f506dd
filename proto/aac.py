"""AAC AudioSpecificConfig and ADTS headers (ISO 14496-3)."""

from __future__ import annotations

from dataclasses import dataclass

from proto.bits import BitReader, BitstreamError

SAMPLE_RATES = (
    96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
)


@dataclass(frozen=True, slots=True)
class AudioConfig:
    object_type: int
    sample_rate: int
    channels: int
    frame_length: int

    @property
    def codec_string(self) -> str:
        return f"mp4a.40.{self.object_type}"


def parse_audio_specific_config(config: bytes) -> AudioConfig:
    """Parse an AudioSpecificConfig, e.g. from the ``config=`` fmtp parameter."""
    reader = BitReader(config)
    object_type = reader.u(5)
    if object_type == 31:
        object_type = 32 + reader.u(6)
    rate_index = reader.u(4)
    if rate_index == 15:
        sample_rate = reader.u(24)
    elif rate_index < len(SAMPLE_RATES):
        sample_rate = SAMPLE_RATES[rate_index]
    else:
        raise BitstreamError(f"reserved sampling frequency index {rate_index}")
    channels = reader.u(4)
    frame_length = 1024
    if object_type in (1, 2, 3, 4, 6, 7) and reader.bits_left >= 1 and reader.flag():
        frame_length = 960  # frameLengthFlag of GASpecificConfig
    if sample_rate <= 0:
        raise BitstreamError("sample rate 0")
    return AudioConfig(object_type, sample_rate, channels, frame_length)


def build_audio_specific_config(object_type: int, sample_rate: int, channels: int) -> bytes:
    """Build a 2-byte AudioSpecificConfig for a standard sample rate."""
    rate_index = SAMPLE_RATES.index(sample_rate)
    value = (object_type << 11) | (rate_index << 7) | (channels << 3)
    return value.to_bytes(2, "big")


def adts_header_length(frame: bytes) -> int:
    """Return the ADTS header length when ``frame`` starts with one, else 0."""
    if len(frame) >= 7 and frame[0] == 0xFF and (frame[1] & 0xF6) == 0xF0:
        return 7 if frame[1] & 0x01 else 9
    return 0


def adts_header(config: AudioConfig, payload_length: int) -> bytes:
    """Build a 7-byte ADTS header for one raw AAC frame (used for MPEG-TS)."""
    rate_index = SAMPLE_RATES.index(config.sample_rate) if config.sample_rate in SAMPLE_RATES else 4
    length = payload_length + 7
    profile = (config.object_type - 1) & 3
    return bytes(
        (
            0xFF,
            0xF1,
            (profile << 6) | (rate_index << 2) | ((config.channels >> 2) & 1),
            ((config.channels & 3) << 6) | (length >> 11),
            (length >> 3) & 0xFF,
            ((length & 7) << 5) | 0x1F,
            0xFC,
        )
    )
