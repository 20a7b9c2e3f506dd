"""HLS media playlists (RFC 8216) for live sliding windows."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime


@dataclass(frozen=True, slots=True)
class PlaylistEntry:
    """One media segment as a playlist lists it."""

    uri: str
    duration_seconds: float
    discontinuity: bool = False
    map_uri: str | None = None  # the EXT-X-MAP in force for this segment (fMP4 only)
    program_date_time: float | None = None  # Unix time of the segment's first frame


def rounded_duration(seconds: float) -> int:
    """Round a segment duration to the nearest integer, halves up, as EXT-X-TARGETDURATION compares it."""
    return int(seconds + 0.5)


def format_date_time(unix_seconds: float) -> str:
    """Format a Unix time as EXT-X-PROGRAM-DATE-TIME expects: ISO 8601 UTC with milliseconds."""
    moment = datetime.fromtimestamp(unix_seconds, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def media_playlist(
    entries: list[PlaylistEntry],
    *,
    target_duration: int,
    media_sequence: int,
    discontinuity_sequence: int,
    independent_segments: bool,
) -> str:
    """Render a live media playlist (no EXT-X-ENDLIST) listing ``entries`` in order.

    Raises ValueError when a segment is longer than ``target_duration``
    allows, because players size their buffers and reload timers on it.
    """
    uses_map = any(entry.map_uri for entry in entries)
    # EXT-X-MAP in a playlist without I-frames needs version 6; float EXTINF needs 3.
    version = 6 if uses_map else 3
    lines = [
        "#EXTM3U",
        f"#EXT-X-VERSION:{version}",
        f"#EXT-X-TARGETDURATION:{target_duration}",
        f"#EXT-X-MEDIA-SEQUENCE:{media_sequence}",
        f"#EXT-X-DISCONTINUITY-SEQUENCE:{discontinuity_sequence}",
    ]
    if independent_segments:
        lines.append("#EXT-X-INDEPENDENT-SEGMENTS")
    current_map: str | None = None
    for index, entry in enumerate(entries):
        if rounded_duration(entry.duration_seconds) > target_duration:
            raise ValueError(
                f"segment {entry.uri} lasts {entry.duration_seconds:.3f} s, "
                f"longer than the target duration {target_duration} s"
            )
        if entry.discontinuity and index > 0:
            lines.append("#EXT-X-DISCONTINUITY")
        if entry.map_uri is not None and entry.map_uri != current_map:
            lines.append(f'#EXT-X-MAP:URI="{entry.map_uri}"')
            current_map = entry.map_uri
        if entry.program_date_time is not None:
            lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{format_date_time(entry.program_date_time)}")
        lines.append(f"#EXTINF:{entry.duration_seconds:.3f},")
        lines.append(entry.uri)
    return "\n".join(lines) + "\n"


def parse_media_playlist(text: str) -> dict[str, object]:
    """Parse the tags and segments of a media playlist (for tests and the latency tool).

    Returns ``target_duration``, ``media_sequence``, ``discontinuity_sequence``
    and ``segments``: dicts with ``uri``, ``duration``, ``discontinuity``,
    ``map`` and ``sequence``.
    """
    result: dict[str, object] = {"target_duration": None, "media_sequence": 0, "discontinuity_sequence": 0}
    segments: list[dict[str, object]] = []
    pending: dict[str, object] = {}
    current_map = None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines or lines[0] != "#EXTM3U":
        raise ValueError("not an M3U8 playlist: the first line is not #EXTM3U")
    for line in lines[1:]:
        if line.startswith("#EXT-X-TARGETDURATION:"):
            result["target_duration"] = int(line.split(":", 1)[1])
        elif line.startswith("#EXT-X-MEDIA-SEQUENCE:"):
            result["media_sequence"] = int(line.split(":", 1)[1])
        elif line.startswith("#EXT-X-DISCONTINUITY-SEQUENCE:"):
            result["discontinuity_sequence"] = int(line.split(":", 1)[1])
        elif line == "#EXT-X-DISCONTINUITY":
            pending["discontinuity"] = True
        elif line.startswith("#EXT-X-MAP:"):
            current_map = line.split('URI="', 1)[1].split('"', 1)[0]
        elif line.startswith("#EXT-X-PROGRAM-DATE-TIME:"):
            pending["program_date_time"] = line.split(":", 1)[1]
        elif line.startswith("#EXTINF:"):
            pending["duration"] = float(line.split(":", 1)[1].split(",", 1)[0])
        elif not line.startswith("#"):
            sequence = int(result["media_sequence"]) + len(segments)  # type: ignore[call-overload]
            segments.append(
                {
                    "uri": line,
                    "duration": pending.get("duration"),
                    "discontinuity": bool(pending.get("discontinuity")),
                    "program_date_time": pending.get("program_date_time"),
                    "map": current_map,
                    "sequence": sequence,
                }
            )
            pending = {}
    result["segments"] = segments
    return result
