"""Fragmented MP4 (ISO 14496-12, CMAF) boxes: init segments and movie fragments.

The output is deterministic: no box carries a creation or modification
time, so the same frames always give the same bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass, field

# trun sample flags: a sync sample depends on nothing; others depend on
# earlier samples and are not sync samples.
SAMPLE_FLAGS_SYNC = 0x02000000
SAMPLE_FLAGS_NON_SYNC = 0x01010000

_MATRIX = struct.pack(">9I", 0x00010000, 0, 0, 0, 0x00010000, 0, 0, 0, 0x40000000)


def box(kind: bytes, *payload: bytes) -> bytes:
    body = b"".join(payload)
    return struct.pack(">I", 8 + len(body)) + kind + body


def full_box(kind: bytes, version: int, flags: int, *payload: bytes) -> bytes:
    return box(kind, struct.pack(">I", (version << 24) | flags), *payload)


@dataclass(frozen=True, slots=True)
class TrackConfig:
    """One track of an init segment."""

    track_id: int
    kind: str  # "video" or "audio"
    codec: str  # "h264", "h265" or "aac"
    timescale: int
    decoder_config: bytes  # avcC/hvcC record, or the AAC AudioSpecificConfig
    width: int = 0
    height: int = 0
    sample_rate: int = 0
    channels: int = 0


@dataclass(slots=True)
class Sample:
    duration: int
    size: int
    key: bool
    composition_offset: int = 0


@dataclass(slots=True)
class TrackFragment:
    """The samples of one track in one movie fragment."""

    track_id: int
    base_decode_time: int
    samples: list[Sample] = field(default_factory=list)
    data: list[bytes] = field(default_factory=list)


# --- init segment -------------------------------------------------------------------


def _esds(config: TrackConfig) -> bytes:
    def descriptor(tag: int, body: bytes) -> bytes:
        # Sizes written in the 4-byte expandable form, as most muxers do.
        size = len(body)
        length = bytes((0x80 | (size >> 21) & 0x7F, 0x80 | (size >> 14) & 0x7F, 0x80 | (size >> 7) & 0x7F, size & 0x7F))
        return bytes((tag,)) + length + body

    specific = descriptor(0x05, config.decoder_config)
    decoder = descriptor(0x04, bytes((0x40, 0x15)) + b"\x00\x00\x00" + struct.pack(">II", 0, 0) + specific)
    sl_config = descriptor(0x06, b"\x02")
    es = descriptor(0x03, struct.pack(">HB", config.track_id, 0) + decoder + sl_config)
    return full_box(b"esds", 0, 0, es)


def _sample_entry(config: TrackConfig) -> bytes:
    if config.kind == "video":
        fourcc = b"avc1" if config.codec == "h264" else b"hvc1"
        record_box = box(b"avcC" if config.codec == "h264" else b"hvcC", config.decoder_config)
        return box(
            fourcc,
            b"\x00" * 6,
            struct.pack(">H", 1),  # data_reference_index
            b"\x00" * 16,
            struct.pack(">HH", config.width, config.height),
            struct.pack(">II", 0x00480000, 0x00480000),  # 72 dpi
            b"\x00" * 4,
            struct.pack(">H", 1),  # frame_count
            b"\x00" * 32,  # compressorname
            struct.pack(">Hh", 0x0018, -1),
            record_box,
        )
    return box(
        b"mp4a",
        b"\x00" * 6,
        struct.pack(">H", 1),
        b"\x00" * 8,
        struct.pack(">HHHH", config.channels or 1, 16, 0, 0),
        struct.pack(">I", (config.sample_rate & 0xFFFF) << 16),
        _esds(config),
    )


def _trak(config: TrackConfig) -> bytes:
    video = config.kind == "video"
    tkhd = full_box(
        b"tkhd",
        0,
        3,  # enabled, in movie
        struct.pack(">IIIII", 0, 0, config.track_id, 0, 0),
        b"\x00" * 8,
        struct.pack(">hhHH", 0, 0, 0 if video else 0x0100, 0),
        _MATRIX,
        struct.pack(">II", config.width << 16 if video else 0, config.height << 16 if video else 0),
    )
    mdhd = full_box(b"mdhd", 0, 0, struct.pack(">IIII", 0, 0, config.timescale, 0), struct.pack(">HH", 0x55C4, 0))
    handler = b"vide" if video else b"soun"
    name = b"Pantau video\x00" if video else b"Pantau audio\x00"
    hdlr = full_box(b"hdlr", 0, 0, b"\x00\x00\x00\x00", handler, b"\x00" * 12, name)
    media_header = full_box(b"vmhd", 0, 1, b"\x00" * 8) if video else full_box(b"smhd", 0, 0, b"\x00" * 4)
    dinf = box(b"dinf", full_box(b"dref", 0, 0, struct.pack(">I", 1), full_box(b"url ", 0, 1)))
    stbl = box(
        b"stbl",
        full_box(b"stsd", 0, 0, struct.pack(">I", 1), _sample_entry(config)),
        full_box(b"stts", 0, 0, struct.pack(">I", 0)),
        full_box(b"stsc", 0, 0, struct.pack(">I", 0)),
        full_box(b"stsz", 0, 0, struct.pack(">II", 0, 0)),
        full_box(b"stco", 0, 0, struct.pack(">I", 0)),
    )
    minf = box(b"minf", media_header, dinf, stbl)
    return box(b"trak", tkhd, box(b"mdia", mdhd, hdlr, minf))


def init_segment(tracks: Iterable[TrackConfig]) -> bytes:
    """Build ftyp and moov for fragmented MP4, with every duration 0 (unknown)."""
    tracks = list(tracks)
    ftyp = box(b"ftyp", b"iso6", struct.pack(">I", 0), b"iso6", b"cmfc", b"isom", b"mp41")
    mvhd = full_box(
        b"mvhd",
        0,
        0,
        struct.pack(">IIII", 0, 0, 1000, 0),
        struct.pack(">IH", 0x00010000, 0x0100),
        b"\x00" * 10,
        _MATRIX,
        b"\x00" * 24,
        struct.pack(">I", max(track.track_id for track in tracks) + 1),
    )
    trex = [full_box(b"trex", 0, 0, struct.pack(">IIIII", track.track_id, 1, 0, 0, 0)) for track in tracks]
    moov = box(b"moov", mvhd, *(_trak(track) for track in tracks), box(b"mvex", *trex))
    return ftyp + moov


# --- fragments ----------------------------------------------------------------------

_TRUN_FLAGS = 0x000001 | 0x000100 | 0x000200 | 0x000400 | 0x000800
_TFHD_DEFAULT_BASE_IS_MOOF = 0x020000
_SAMPLE = struct.Struct(">IIIi")


def _traf(fragment: TrackFragment, data_offset: int) -> bytes:
    tfhd = full_box(b"tfhd", 0, _TFHD_DEFAULT_BASE_IS_MOOF, struct.pack(">I", fragment.track_id))
    tfdt = full_box(b"tfdt", 1, 0, struct.pack(">Q", fragment.base_decode_time))
    entries = b"".join(
        _SAMPLE.pack(
            sample.duration,
            sample.size,
            SAMPLE_FLAGS_SYNC if sample.key else SAMPLE_FLAGS_NON_SYNC,
            sample.composition_offset,
        )
        for sample in fragment.samples
    )
    # Version 1 makes composition offsets signed.
    trun = full_box(b"trun", 1, _TRUN_FLAGS, struct.pack(">Ii", len(fragment.samples), data_offset), entries)
    return box(b"traf", tfhd, tfdt, trun)


def movie_fragment(sequence: int, fragments: list[TrackFragment]) -> bytes:
    """Build moof and mdat for the given tracks' samples, in that order in mdat."""
    fragments = [fragment for fragment in fragments if fragment.samples]
    # The moof size does not depend on the offsets, so build once to measure.
    sizes = [sum(sample.size for sample in fragment.samples) for fragment in fragments]
    mfhd = full_box(b"mfhd", 0, 0, struct.pack(">I", sequence))
    placeholder = box(b"moof", mfhd, *(_traf(fragment, 0) for fragment in fragments))
    offset = len(placeholder) + 8
    trafs = []
    for fragment, size in zip(fragments, sizes, strict=True):
        trafs.append(_traf(fragment, offset))
        offset += size
    moof = box(b"moof", mfhd, *trafs)
    mdat_size = 8 + sum(sizes)
    return b"".join([moof, struct.pack(">I", mdat_size), b"mdat", *(part for fragment in fragments for part in fragment.data)])


# --- reading ------------------------------------------------------------------------


def iter_boxes(data: bytes | memoryview, start: int = 0, end: int | None = None) -> Iterable[tuple[bytes, int, int]]:
    """Yield (type, payload start, box end) for the boxes in ``data[start:end]``.

    Stops at a truncated box, so a file cut by a crash yields its complete boxes.
    """
    end = len(data) if end is None else end
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, pos)
        header = 8
        if size == 1:
            if pos + 16 > end:
                return
            (size,) = struct.unpack_from(">Q", data, pos + 8)
            header = 16
        elif size == 0:
            size = end - pos
        if size < header or pos + size > end:
            return
        yield bytes(kind), pos + header, pos + size
        pos += size
