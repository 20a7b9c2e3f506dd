"""Playback of recordings: HLS VOD playlists over segment files, and MP4 export.

Both read the segment files as written, located by their fragment table
(:func:`recorder.segment.scan_segment`), so nothing is decoded or re-encoded.

Playlist: each segment file is its own EXT-X-MAP (its header as a byte
range) and is split into HLS segments at keyframe fragments, about
``VOD_PART_SECONDS`` each, also as byte ranges. ``EXT-X-DISCONTINUITY``
marks every place where the media timeline does not continue: a gap in the
recording or a change of stream parameters.

Export: one fragmented MP4 that starts at the keyframe at or before the
range start and ends before the first video sample at or after its end.
The init segment is copied from the first segment file, fragments are
rewritten sample by sample with decode times that start at 0, and a gap
stays a gap in the clip's timeline. No box carries a wall-clock or
creation time, so the same files and range give the same bytes.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from proto import mp4
from recorder.index import SegmentRow
from recorder.segment import FragmentEntry, SegmentScan, read_range
from relay.media import TIMEBASE

VOD_PART_SECONDS = 4.0


def iso(value: float | None) -> str | None:
    if value is None:
        return None
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass(slots=True)
class ScannedSegment:
    row: SegmentRow
    scan: SegmentScan

    def utc_at(self, dts: int) -> float:
        """Return the UTC of a decode time in this segment."""
        first = self.scan.first_dts or 0
        return self.row.start_utc + (dts - first) / TIMEBASE

    @property
    def end_utc(self) -> float:
        return self.row.start_utc + self.scan.duration_seconds

    def continues(self, previous: ScannedSegment) -> bool:
        """True when this segment's media timeline continues ``previous`` without a gap."""
        return (
            previous.scan.end_dts == self.scan.first_dts
            and previous.row.camera_id == self.row.camera_id
            and previous.scan.tracks == self.scan.tracks
        )


# --- HLS VOD ------------------------------------------------------------------------


@dataclass(slots=True)
class _Part:
    offset: int
    size: int
    duration: float
    start_utc: float


def _parts(segment: ScannedSegment) -> list[_Part]:
    """Split a segment into HLS segments that start at keyframe fragments."""
    parts: list[_Part] = []
    groups: list[list[FragmentEntry]] = []
    for fragment in segment.scan.fragments:
        if not groups or (fragment.starts_with_key and _ticks(groups[-1]) >= VOD_PART_SECONDS * TIMEBASE):
            groups.append([fragment])
        else:
            groups[-1].append(fragment)
    for number, group in enumerate(groups):
        start = group[0].offset
        end = groups[number + 1][0].offset if number + 1 < len(groups) else segment.scan.complete_size
        parts.append(_Part(start, end - start, _ticks(group) / TIMEBASE, segment.utc_at(group[0].video_dts)))
    return parts


def _ticks(group: list[FragmentEntry]) -> int:
    return sum(fragment.video_duration for fragment in group)


def build_playlist(segments: list[ScannedSegment], start: float, end: float, uri: str) -> str:
    """Build an HLS VOD playlist of the parts of ``segments`` that overlap [start, end).

    ``uri`` is a format string with ``{id}`` for a segment file's URI.
    """
    lines: list[str] = []
    longest = 1.0
    previous: ScannedSegment | None = None
    for segment in segments:
        parts = [
            part
            for part in _parts(segment)
            if part.start_utc < end and part.start_utc + part.duration > start
        ]
        if not parts:
            continue
        if previous is not None and not segment.continues(previous):
            lines.append("#EXT-X-DISCONTINUITY")
        file_uri = uri.format(id=segment.row.id)
        lines.append(f'#EXT-X-MAP:URI="{file_uri}",BYTERANGE="{segment.scan.header_size}@0"')
        lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{iso(parts[0].start_utc)}")
        for part in parts:
            longest = max(longest, part.duration)
            lines.append(f"#EXTINF:{part.duration:.5f},")
            lines.append(f"#EXT-X-BYTERANGE:{part.size}@{part.offset}")
            lines.append(file_uri)
        previous = segment
    head = [
        "#EXTM3U",
        "#EXT-X-VERSION:7",
        f"#EXT-X-TARGETDURATION:{math.ceil(longest)}",
        "#EXT-X-PLAYLIST-TYPE:VOD",
        "#EXT-X-MEDIA-SEQUENCE:0",
        "#EXT-X-INDEPENDENT-SEGMENTS",
    ]
    return "\n".join([*head, *lines, "#EXT-X-ENDLIST", ""])


# --- export -------------------------------------------------------------------------


@dataclass
class ExportResult:
    """Totals of an export, complete once its last byte was produced."""

    bytes: int = 0
    sha256: str | None = None
    clip_start_utc: float | None = None
    clip_end_utc: float | None = None
    segments: list[SegmentRow] = field(default_factory=list)
    stopped_at_change: float | None = None  # UTC where stream parameters changed and the clip ends


def _init_bytes(path: Path, scan: SegmentScan) -> bytes:
    """Return the ftyp and moov boxes of a segment file, without Pantau's metadata box."""
    header = read_range(path, 0, scan.header_size)
    return b"".join(
        header[start - 8 : end] for kind, start, end in mp4.iter_boxes(header) if kind in (b"ftyp", b"moov")
    )


def export_chunks(
    segments: list[ScannedSegment], recordings_dir: Path, start: float, end: float, result: ExportResult
) -> Iterator[bytes]:
    """Yield the export's bytes: the init segment, then one fragment at a time.

    ``result`` is filled in as the export proceeds; its SHA-256 is set after
    the last chunk.
    """
    digest = hashlib.sha256()
    plan = _plan(segments, start)
    if plan is None:
        return
    first_segment, first_index = plan
    init = _init_bytes(recordings_dir / first_segment.row.path, first_segment.scan)
    digest.update(init)
    result.bytes += len(init)
    yield init

    sequence = 0
    video_id = first_segment.scan.video.track_id if first_segment.scan.video else 1
    rates = {track.track_id: track.timescale for track in first_segment.scan.tracks}
    origin_dts = first_segment.scan.fragments[first_index].video_dts
    origin_utc = first_segment.utc_at(origin_dts)
    result.clip_start_utc = origin_utc
    shift = -origin_dts
    out_end = 0  # end of the clip's video timeline so far
    previous: ScannedSegment | None = None
    started = False
    for segment in segments:
        if not started:
            if segment is not first_segment:
                continue
            started = True
            fragments = segment.scan.fragments[first_index:]
        else:
            fragments = segment.scan.fragments
            if segment.scan.tracks != first_segment.scan.tracks:
                # NOTE: a clip has one set of stream parameters, so it ends where the camera's change.
                result.stopped_at_change = segment.row.start_utc
                break
            if previous is not None and segment.continues(previous):
                pass  # the source timeline continues, and so does the clip's
            else:
                wall = round((segment.row.start_utc - origin_utc) * TIMEBASE)
                shift = max(out_end, wall) - (segment.scan.first_dts or 0)
        if not fragments or segment.utc_at(fragments[0].video_dts) >= end:
            break
        result.segments.append(segment.row)
        path = recordings_dir / segment.row.path
        finished = False
        for entry in fragments:
            data = read_range(path, entry.offset, entry.size)
            _, track_fragments = mp4.parse_movie_fragment(data)
            out: list[mp4.TrackFragment] = []
            for fragment in track_fragments:
                rate = rates.get(fragment.track_id, TIMEBASE)
                track_shift = shift if fragment.track_id == video_id else shift * rate // TIMEBASE
                kept, finished_track = _trim(fragment, track_shift, segment, end, rate)
                if fragment.track_id == video_id:
                    finished = finished or finished_track
                    if kept.samples:
                        out_end = kept.base_decode_time + sum(sample.duration for sample in kept.samples)
                        result.clip_end_utc = origin_utc + out_end / TIMEBASE
                if kept.samples:
                    out.append(kept)
            if out:
                sequence += 1
                chunk = mp4.movie_fragment(sequence, out)
                digest.update(chunk)
                result.bytes += len(chunk)
                yield chunk
            if finished:
                break
        previous = segment
        if finished:
            break
    result.sha256 = digest.hexdigest()


def _plan(segments: list[ScannedSegment], start: float) -> tuple[ScannedSegment, int] | None:
    """Find the segment and fragment of the keyframe at or before ``start`` (or the first one after it)."""
    for segment in segments:
        fragments = segment.scan.fragments
        if not fragments:
            continue
        if segment.end_utc <= start:
            continue
        chosen = 0
        first_pts = fragments[0].first_pts
        for number, fragment in enumerate(fragments):
            if not fragment.starts_with_key:
                continue
            if segment.row.start_utc + (fragment.first_pts - first_pts) / TIMEBASE <= start:
                chosen = number
            else:
                break
        return segment, chosen
    return None


def _trim(
    fragment: mp4.TrackFragment,
    shift: int,
    segment: ScannedSegment,
    end: float,
    rate: int,
) -> tuple[mp4.TrackFragment, bool]:
    """Shift a track fragment onto the clip timeline and drop samples outside it.

    Returns the kept samples and True when a sample at or after ``end`` was met.
    """
    kept = mp4.TrackFragment(fragment.track_id, 0)
    decode_time = fragment.base_decode_time
    first_kept: int | None = None
    reached_end = False
    first_dts = segment.scan.first_dts or 0
    for sample, data in zip(fragment.samples, fragment.data, strict=True):
        out_time = decode_time + shift
        utc = segment.row.start_utc + (decode_time * TIMEBASE / rate - first_dts) / TIMEBASE
        decode_time += sample.duration
        if utc >= end:
            reached_end = True
            break
        if out_time < 0:
            continue  # audio from before the clip's first keyframe
        if first_kept is None:
            first_kept = out_time
        kept.samples.append(sample)
        kept.data.append(data)
    kept.base_decode_time = first_kept or 0
    return kept, reached_end


def export_digest(
    segments: list[ScannedSegment], recordings_dir: Path, start: float, end: float
) -> ExportResult:
    """Build the export without sending it, for its manifest."""
    result = ExportResult()
    for _ in export_chunks(segments, recordings_dir, start, end, result):
        pass
    return result
