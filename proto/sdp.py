"""A tolerant SDP reader (RFC 4566) for the session descriptions cameras send.

Cameras omit ``v=``, ``o=``, ``s=`` and ``t=`` lines, truncate them, put them
in any order, repeat session lines inside media sections, use TABs and
trailing spaces, and invent media types. Only what a receiver needs is
read: media sections, payload types, rtpmap, fmtp, control and direction.
Nothing in a session-level line can make parsing fail.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Static payload types (RFC 3551) used when a media section has no rtpmap.
STATIC_PAYLOAD_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("PCMU", 8000, 1),
    3: ("GSM", 8000, 1),
    8: ("PCMA", 8000, 1),
    9: ("G722", 8000, 1),
    10: ("L16", 44100, 2),
    11: ("L16", 44100, 1),
    14: ("MPA", 90000, 1),
    26: ("JPEG", 90000, 1),
    32: ("MPV", 90000, 1),
    33: ("MP2T", 90000, 1),
    34: ("H263", 90000, 1),
}


@dataclass(slots=True)
class RtpMap:
    encoding: str  # upper case, e.g. "H264", "MPEG4-GENERIC"
    clock_rate: int
    channels: int


@dataclass(slots=True)
class Media:
    """One ``m=`` section."""

    kind: str  # "video", "audio", "application", "text" or anything a camera invents
    port: int
    protocol: str
    formats: list[str]
    rtpmaps: dict[int, RtpMap] = field(default_factory=dict)
    fmtps: dict[int, dict[str, str]] = field(default_factory=dict)
    control: str | None = None
    direction: str | None = None  # sendonly, recvonly, sendrecv, inactive
    framerate: float | None = None
    dimensions: tuple[int, int] | None = None
    attributes: list[tuple[str, str]] = field(default_factory=list)

    @property
    def payload_types(self) -> list[int]:
        return [int(fmt) for fmt in self.formats if fmt.isdigit() and int(fmt) < 128]

    def rtpmap_for(self, payload_type: int) -> RtpMap | None:
        """Return the rtpmap of a payload type, falling back to the static table.

        A section with one format and one rtpmap of another number (``m=video
        0 RTP/AVP 96`` with ``a=rtpmap:97 H264/90000``) gets that rtpmap: the
        camera numbered one of the lines wrongly.
        """
        if payload_type in self.rtpmaps:
            return self.rtpmaps[payload_type]
        if len(self.rtpmaps) == 1 and len(self.payload_types) == 1 and payload_type >= 96:
            return next(iter(self.rtpmaps.values()))
        static = STATIC_PAYLOAD_TYPES.get(payload_type)
        return RtpMap(*static) if static else None

    def fmtp_for(self, payload_type: int) -> dict[str, str]:
        if payload_type in self.fmtps:
            return self.fmtps[payload_type]
        if len(self.fmtps) == 1 and len(self.payload_types) == 1:
            # An fmtp whose number disagrees with the only format still belongs to it.
            return next(iter(self.fmtps.values()))
        return {}


@dataclass(slots=True)
class SessionDescription:
    media: list[Media]
    control: str | None = None
    origin_user: str | None = None
    tool: str | None = None


def parse_rtpmap(value: str) -> tuple[int, RtpMap] | None:
    """Parse ``96 H264/90000`` or ``97 MPEG4-GENERIC/16000/2``; extra fields are ignored."""
    parts = value.split(None, 1)
    if len(parts) != 2:
        return None
    try:
        payload_type = int(parts[0])
    except ValueError:
        return None
    fields = [item.strip() for item in parts[1].strip().split("/")]
    encoding = fields[0].upper()
    try:
        clock_rate = int(fields[1]) if len(fields) > 1 and fields[1] else 90000
    except ValueError:
        clock_rate = 90000
    channels = 1
    if len(fields) > 2:
        try:
            channels = int(fields[2]) or 1
        except ValueError:
            channels = 1
    return payload_type, RtpMap(encoding, clock_rate, channels)


def parse_fmtp(value: str) -> tuple[int, dict[str, str]] | None:
    """Parse ``96 key=value; key2=value2`` into lower-case keys; an empty list is valid."""
    parts = value.split(None, 1)
    if not parts:
        return None
    try:
        payload_type = int(parts[0])
    except ValueError:
        return None
    params: dict[str, str] = {}
    if len(parts) > 1:
        for item in parts[1].split(";"):
            key, sep, raw = item.strip().partition("=")
            if key.strip():
                params[key.strip().lower()] = raw.strip() if sep else ""
    return payload_type, params


def _parse_dimensions(value: str) -> tuple[int, int] | None:
    for sep in (",", "x", "X"):
        if sep in value:
            left, _, right = value.partition(sep)
            try:
                return int(left.strip()), int(right.strip())
            except ValueError:
                return None
    return None


def _apply_media_attribute(media: Media, name: str, value: str) -> None:
    media.attributes.append((name, value))
    if name == "rtpmap":
        parsed = parse_rtpmap(value)
        # The first rtpmap of a payload type wins when a camera repeats it.
        if parsed and parsed[0] not in media.rtpmaps:
            media.rtpmaps[parsed[0]] = parsed[1]
    elif name == "fmtp":
        fmtp = parse_fmtp(value)
        if fmtp:
            media.fmtps.setdefault(fmtp[0], {}).update(fmtp[1])
    elif name == "control":
        if media.control is None:
            media.control = value.strip()
    elif name in ("sendonly", "recvonly", "sendrecv", "inactive"):
        media.direction = name
    elif name == "framerate":
        try:
            media.framerate = float(value.strip().rstrip("Ss"))
        except ValueError:
            pass
    elif name in ("x-dimensions", "cliprect"):
        media.dimensions = _parse_dimensions(value) if name == "x-dimensions" else media.dimensions


def parse_sdp(text: str | bytes) -> SessionDescription:
    """Parse a session description; unknown and malformed lines are skipped."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    session = SessionDescription(media=[])
    current: Media | None = None
    for raw_line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        line = raw_line.strip()
        if len(line) < 2:
            continue
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or len(key) != 1:
            continue
        value = value.strip()
        if key == "m":
            parts = value.split()
            if len(parts) < 3:
                current = None
                continue
            try:
                port = int(parts[1].split("/")[0])
            except ValueError:
                port = 0
            current = Media(kind=parts[0].lower(), port=port, protocol=parts[2], formats=parts[3:])
            session.media.append(current)
        elif key == "a":
            name, _, attr_value = value.partition(":")
            name = name.strip().lower()
            if current is not None:
                _apply_media_attribute(current, name, attr_value)
            elif name == "control":
                session.control = attr_value.strip()
            elif name == "tool":
                session.tool = attr_value.strip()
        elif key == "o" and current is None:
            session.origin_user = value.split()[0] if value.split() else None
        # c=, b=, s=, i=, t= and the rest carry nothing a receiver needs.
    return session


def direction_is_backchannel(session: SessionDescription, media: Media) -> bool:
    """Return True when a media section is an ONVIF back-channel (client to camera).

    ONVIF marks ordinary media ``recvonly`` and the back-channel ``sendonly``,
    but some cameras mark every media ``sendonly`` from their own point of
    view. So a section counts as a back-channel only when the description
    holds both directions and this one is ``sendonly``.
    """
    directions = {item.direction for item in session.media if item.kind in ("audio", "video")}
    both = "sendonly" in directions and "recvonly" in directions
    return both and media.direction == "sendonly"
