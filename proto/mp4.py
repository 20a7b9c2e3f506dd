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


# --- reading fragments and init segments -----------------------------------------------

_TFHD_BASE_DATA_OFFSET = 0x000001
_TFHD_SAMPLE_DESCRIPTION_INDEX = 0x000002
_TFHD_DEFAULT_DURATION = 0x000008
_TFHD_DEFAULT_SIZE = 0x000010
_TFHD_DEFAULT_FLAGS = 0x000020
_RUN_DATA_OFFSET = 0x000001
_RUN_FIRST_SAMPLE_FLAGS = 0x000004
_RUN_DURATION = 0x000100
_RUN_SIZE = 0x000200
_RUN_SAMPLE_FLAGS = 0x000400
_RUN_COMPOSITION_OFFSET = 0x000800
_SAMPLE_IS_NON_SYNC = 0x00010000


class Mp4FormatError(ValueError):
    """The bytes are not the MP4 structure the reader expects."""


def child(data: bytes | memoryview, start: int, end: int, kind: bytes) -> tuple[int, int] | None:
    """Return (payload start, box end) of the first ``kind`` box in ``data[start:end]``."""
    for found, payload, box_end in iter_boxes(data, start, end):
        if found == kind:
            return payload, box_end
    return None


def parse_movie_fragment(data: bytes | memoryview, with_data: bool = True) -> tuple[int, list[TrackFragment]]:
    """Parse one moof box followed by its mdat into (sequence number, track fragments).

    ``data`` starts at the moof box. With ``with_data`` each returned
    fragment carries its samples' bytes in ``data``, so it can be written
    again with :func:`movie_fragment`, and :class:`Mp4FormatError` is raised
    when a sample lies outside ``data``. Without it, ``data`` may end with
    the moof box and only the sample table is read.
    """
    found = child(data, 0, len(data), b"moof")
    if found is None or found[0] != 8:
        raise Mp4FormatError("the data does not start with a moof box")
    moof_payload, moof_end = found
    sequence = 0
    fragments: list[TrackFragment] = []
    next_data = 0  # the first traf's data base is the moof's first byte
    for kind, payload, end in iter_boxes(data, moof_payload, moof_end):
        if kind == b"mfhd":
            (sequence,) = struct.unpack_from(">I", data, payload + 4)
        elif kind == b"traf":
            fragment, next_data = _parse_traf(data, payload, end, next_data, with_data)
            fragments.append(fragment)
    return sequence, fragments


def _parse_traf(
    data: bytes | memoryview, start: int, end: int, next_data: int, with_data: bool
) -> tuple[TrackFragment, int]:
    tfhd = child(data, start, end, b"tfhd")
    if tfhd is None:
        raise Mp4FormatError("traf without tfhd")
    (version_flags, track_id) = struct.unpack_from(">II", data, tfhd[0])
    flags = version_flags & 0xFFFFFF
    pos = tfhd[0] + 8
    base = 0  # moof start, because parsing starts there
    if flags & _TFHD_BASE_DATA_OFFSET:
        (base,) = struct.unpack_from(">Q", data, pos)
        pos += 8
    elif not flags & _TFHD_DEFAULT_BASE_IS_MOOF:
        base = next_data
    if flags & _TFHD_SAMPLE_DESCRIPTION_INDEX:
        pos += 4
    default_duration = default_size = default_flags = 0
    if flags & _TFHD_DEFAULT_DURATION:
        (default_duration,) = struct.unpack_from(">I", data, pos)
        pos += 4
    if flags & _TFHD_DEFAULT_SIZE:
        (default_size,) = struct.unpack_from(">I", data, pos)
        pos += 4
    if flags & _TFHD_DEFAULT_FLAGS:
        (default_flags,) = struct.unpack_from(">I", data, pos)

    base_decode_time = 0
    tfdt = child(data, start, end, b"tfdt")
    if tfdt is not None:
        version = data[tfdt[0]]
        if version == 1:
            (base_decode_time,) = struct.unpack_from(">Q", data, tfdt[0] + 4)
        else:
            (base_decode_time,) = struct.unpack_from(">I", data, tfdt[0] + 4)

    fragment = TrackFragment(track_id, base_decode_time)
    offset = base
    for kind, payload, _ in iter_boxes(data, start, end):
        if kind != b"trun":
            continue
        version_flags, count = struct.unpack_from(">II", data, payload)
        version = version_flags >> 24
        run_flags = version_flags & 0xFFFFFF
        pos = payload + 8
        if run_flags & _RUN_DATA_OFFSET:
            (data_offset,) = struct.unpack_from(">i", data, pos)
            offset = base + data_offset
            pos += 4
        first_flags = None
        if run_flags & _RUN_FIRST_SAMPLE_FLAGS:
            (first_flags,) = struct.unpack_from(">I", data, pos)
            pos += 4
        for index in range(count):
            duration, size, sample_flags, composition = default_duration, default_size, default_flags, 0
            if run_flags & _RUN_DURATION:
                (duration,) = struct.unpack_from(">I", data, pos)
                pos += 4
            if run_flags & _RUN_SIZE:
                (size,) = struct.unpack_from(">I", data, pos)
                pos += 4
            if run_flags & _RUN_SAMPLE_FLAGS:
                (sample_flags,) = struct.unpack_from(">I", data, pos)
                pos += 4
            elif index == 0 and first_flags is not None:
                sample_flags = first_flags
            if run_flags & _RUN_COMPOSITION_OFFSET:
                (composition,) = struct.unpack_from(">i" if version else ">I", data, pos)
                pos += 4
            key = not sample_flags & _SAMPLE_IS_NON_SYNC
            fragment.samples.append(Sample(duration, size, key, composition))
            if with_data:
                if offset + size > len(data):
                    raise Mp4FormatError(f"a sample of track {track_id} ends beyond the fragment")
                fragment.data.append(bytes(data[offset : offset + size]))
            offset += size
    return fragment, offset


def parse_init_segment(data: bytes | memoryview) -> list[TrackConfig]:
    """Read the tracks of an init segment (ftyp and moov) back into :class:`TrackConfig`.

    The AAC AudioSpecificConfig is not read back; ``decoder_config`` of an
    audio track is empty.
    """
    moov = child(data, 0, len(data), b"moov")
    if moov is None:
        raise Mp4FormatError("no moov box")
    tracks = []
    for kind, payload, end in iter_boxes(data, *moov):
        if kind == b"trak":
            tracks.append(_parse_trak(data, payload, end))
    return tracks


def _path(data: bytes | memoryview, start: int, end: int, *kinds: bytes) -> tuple[int, int]:
    for kind in kinds:
        found = child(data, start, end, kind)
        if found is None:
            raise Mp4FormatError(f"no {kind.decode()} box")
        start, end = found
    return start, end


def _parse_trak(data: bytes | memoryview, start: int, end: int) -> TrackConfig:
    tkhd, _ = _path(data, start, end, b"tkhd")
    version = data[tkhd]
    (track_id,) = struct.unpack_from(">I", data, tkhd + (20 if version == 1 else 12))
    mdia = _path(data, start, end, b"mdia")
    mdhd, _ = _path(data, *mdia, b"mdhd")
    version = data[mdhd]
    (timescale,) = struct.unpack_from(">I", data, mdhd + (20 if version == 1 else 12))
    hdlr, _ = _path(data, *mdia, b"hdlr")
    handler = bytes(data[hdlr + 8 : hdlr + 12])
    stsd, stsd_end = _path(data, *mdia, b"minf", b"stbl", b"stsd")
    entries = list(iter_boxes(data, stsd + 8, stsd_end))
    if not entries:
        raise Mp4FormatError(f"track {track_id} has no sample entry")
    fourcc, entry, entry_end = entries[0]
    if handler == b"vide":
        width, height = struct.unpack_from(">HH", data, entry + 24)
        codec = {b"avc1": "h264", b"avc3": "h264", b"hvc1": "h265", b"hev1": "h265"}.get(fourcc)
        if codec is None:
            raise Mp4FormatError(f"unsupported video sample entry {fourcc!r}")
        record = child(data, entry + 78, entry_end, b"avcC" if codec == "h264" else b"hvcC")
        config = bytes(data[record[0] : record[1]]) if record else b""
        return TrackConfig(track_id, "video", codec, timescale, config, width=width, height=height)
    if handler == b"soun":
        channels = struct.unpack_from(">H", data, entry + 16)[0]
        sample_rate = struct.unpack_from(">I", data, entry + 24)[0] >> 16
        codec = "aac" if fourcc == b"mp4a" else fourcc.decode("latin-1").strip()
        return TrackConfig(track_id, "audio", codec, timescale, b"", sample_rate=sample_rate, channels=channels)
    raise Mp4FormatError(f"track {track_id} has handler {handler!r}, not video or audio")


def uuid_box(uuid: bytes, payload: bytes) -> bytes:
    """Build a ``uuid`` box, the standard container for vendor data that players skip."""
    if len(uuid) != 16:
        raise ValueError("a uuid box needs a 16-byte UUID")
    return box(b"uuid", uuid, payload)
