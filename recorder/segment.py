"""Segment files: where they live, what their header carries, and how to read them back.

A segment file is a fragmented MP4: ftyp and moov, one ``uuid`` box with
Pantau's metadata as JSON (camera, UTC start of the first frame, clock
source and skew, and the gap that ended when the segment began), then
moof/mdat pairs. Players skip the ``uuid`` box. Because each fragment is
complete on its own, a file cut short by a crash plays up to its last
complete fragment, and :func:`scan_segment` finds where that is.

Layout: ``recordings/{camera_id}/{YYYY}/{MM}/{DD}/{YYYYMMDD}T{HHMMSS}.{mmm}Z.mp4``
with the segment's UTC start in the directory and file names.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from proto import mp4
from relay.media import TIMEBASE

# Fixed UUID of Pantau's metadata box (random, generated once for this format).
METADATA_UUID = bytes.fromhex("5a1d0c3e8b6f4e2a9d7c41b0e6f3a852")
SEGMENT_NAME = re.compile(r"^(\d{8})T(\d{6})\.(\d{3})Z(?:-\d+)?\.mp4$")
# Reads of the top-level boxes of a segment file never need more than this at once.
MAX_MOOF_BYTES = 16 * 1024 * 1024


class GapBefore(msgspec.Struct, frozen=True):
    """The interval without recording that ended where the segment begins."""

    start_utc: float
    cause: str


class SegmentMeta(msgspec.Struct, frozen=True, kw_only=True):
    """The metadata box of a segment file."""

    camera_id: str
    start_utc: float  # Unix time of the first frame's presentation
    clock_source: str  # "rtcp" (camera sender reports) or "receive" (arrival time)
    clock_skew_seconds: float | None = None  # camera clock minus receive time, when measured
    gap_before: GapBefore | None = None


def segment_relpath(camera_id: str, start_utc: float, suffix: str = "") -> str:
    """Return the path of a segment below the recordings directory."""
    moment = datetime.fromtimestamp(start_utc, UTC)
    millis = int((start_utc - int(start_utc)) * 1000) if start_utc >= 0 else 0
    name = moment.strftime("%Y%m%dT%H%M%S") + f".{millis:03d}Z{suffix}.mp4"
    return f"{camera_id}/{moment:%Y}/{moment:%m}/{moment:%d}/{name}"


def start_from_name(name: str) -> float | None:
    """Return the UTC start written in a segment file name, or None for another name."""
    match = SEGMENT_NAME.match(name)
    if match is None:
        return None
    moment = datetime.strptime(match.group(1) + match.group(2), "%Y%m%d%H%M%S").replace(tzinfo=UTC)
    return moment.timestamp() + int(match.group(3)) / 1000


def header_bytes(init: bytes, meta: SegmentMeta) -> bytes:
    return init + mp4.uuid_box(METADATA_UUID, msgspec.json.encode(meta))


@dataclass(slots=True)
class FragmentEntry:
    """One moof/mdat pair of a segment file, located without reading its samples."""

    offset: int
    size: int  # moof plus mdat
    video_dts: int  # decode time of the first video sample (90 kHz)
    video_duration: int  # sum of the video sample durations
    video_samples: int
    starts_with_key: bool
    first_pts: int  # presentation time of the first video sample


@dataclass(slots=True)
class SegmentScan:
    """What a segment file holds: its header, tracks and complete fragments."""

    header_size: int  # ftyp, moov and the metadata box: the HLS init section
    tracks: list[mp4.TrackConfig]
    meta: SegmentMeta | None
    fragments: list[FragmentEntry] = field(default_factory=list)
    complete_size: int = 0  # end of the last complete fragment
    file_size: int = 0

    @property
    def video(self) -> mp4.TrackConfig | None:
        return next((track for track in self.tracks if track.kind == "video"), None)

    @property
    def has_audio(self) -> bool:
        return any(track.kind == "audio" for track in self.tracks)

    @property
    def first_dts(self) -> int | None:
        return self.fragments[0].video_dts if self.fragments else None

    @property
    def end_dts(self) -> int | None:
        if not self.fragments:
            return None
        last = self.fragments[-1]
        return last.video_dts + last.video_duration

    @property
    def duration_seconds(self) -> float:
        if not self.fragments:
            return 0.0
        return (self.end_dts - self.first_dts) / TIMEBASE  # type: ignore[operator]


class SegmentFileError(Exception):
    """A file is not a readable segment (no complete header)."""


def scan_segment(path: Path | str) -> SegmentScan:
    """Read a segment file's header and locate its complete fragments.

    Only box headers and moof boxes are read; mdat payloads are skipped.
    Raises :class:`SegmentFileError` when the header is incomplete and
    OSError when the file cannot be read.
    """
    with open(path, "rb") as handle:
        file_size = os.fstat(handle.fileno()).st_size
        head = handle.read(min(file_size, 1 << 20))
        header_end = 0
        meta = None
        tracks: list[mp4.TrackConfig] | None = None
        for kind, payload, end in mp4.iter_boxes(head):
            if kind == b"moov":
                tracks = mp4.parse_init_segment(head[:end])
            elif kind == b"uuid" and head[payload : payload + 16] == METADATA_UUID:
                try:
                    meta = msgspec.json.decode(head[payload + 16 : end], type=SegmentMeta)
                except msgspec.DecodeError:
                    meta = None
            elif kind == b"moof":
                break
            header_end = end
        if tracks is None:
            raise SegmentFileError(f"{path} has no complete moov box")
        video_track = next((track.track_id for track in tracks if track.kind == "video"), None)
        scan = SegmentScan(header_end, tracks, meta, file_size=file_size, complete_size=header_end)

        position = header_end
        while position + 8 <= file_size:
            handle.seek(position)
            moof_header = handle.read(8)
            moof_size = int.from_bytes(moof_header[:4], "big")
            if moof_header[4:8] != b"moof" or moof_size < 16 or moof_size > MAX_MOOF_BYTES:
                break
            moof = moof_header + handle.read(moof_size - 8)
            mdat_header = handle.read(8)
            if len(moof) < moof_size or len(mdat_header) < 8 or mdat_header[4:8] != b"mdat":
                break
            mdat_size = int.from_bytes(mdat_header[:4], "big")
            end = position + moof_size + mdat_size
            if mdat_size < 8 or end > file_size:
                break
            try:
                _, track_fragments = mp4.parse_movie_fragment(moof, with_data=False)
            except (mp4.Mp4FormatError, IndexError, ValueError):
                break
            video = next((item for item in track_fragments if item.track_id == video_track), None)
            if video is not None and video.samples:
                first = video.samples[0]
                entry = FragmentEntry(
                    offset=position,
                    size=end - position,
                    video_dts=video.base_decode_time,
                    video_duration=sum(sample.duration for sample in video.samples),
                    video_samples=len(video.samples),
                    starts_with_key=first.key,
                    first_pts=video.base_decode_time + first.composition_offset,
                )
                scan.fragments.append(entry)
            position = end
            scan.complete_size = end
    return scan


def read_range(path: Path | str, offset: int, size: int) -> bytes:
    with open(path, "rb") as handle:
        handle.seek(offset)
        return handle.read(size)
