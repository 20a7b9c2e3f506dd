"""RTSP 1.0 messages (RFC 2326) as cameras really send them.

Header names are matched case-insensitively (``Cseq``, ``Content-length``),
every value is trimmed, and a header may repeat (two ``WWW-Authenticate``).
"""

from __future__ import annotations

import hashlib
import os
import re
from base64 import b64encode
from dataclasses import dataclass, field
from urllib.parse import quote, unquote, urlsplit, urlunsplit


class RtspProtocolError(ValueError):
    """The server sent something that is not RTSP."""


@dataclass(slots=True)
class Headers:
    """Ordered, case-insensitive, multi-valued RTSP headers."""

    items: list[tuple[str, str]] = field(default_factory=list)

    def get(self, name: str, default: str | None = None) -> str | None:
        lower = name.lower()
        for key, value in self.items:
            if key.lower() == lower:
                return value
        return default

    def get_all(self, name: str) -> list[str]:
        lower = name.lower()
        return [value for key, value in self.items if key.lower() == lower]

    def add(self, name: str, value: str) -> None:
        self.items.append((name, value))


@dataclass(slots=True)
class Response:
    status: int
    reason: str
    headers: Headers
    body: bytes = b""

    @property
    def cseq(self) -> int | None:
        value = self.headers.get("CSeq")
        if value is None:
            return None
        try:
            return int(value.strip())
        except ValueError:
            return None


@dataclass(slots=True)
class Request:
    method: str
    url: str
    headers: Headers
    body: bytes = b""


def find_header_end(buf: bytes | bytearray, start: int) -> tuple[int, int]:
    """Return (end of headers, length of the blank-line separator) or (-1, 0).

    Some embedded servers end lines with a bare LF, so ``\\n\\n`` is accepted
    beside ``\\r\\n\\r\\n``; the earlier of the two wins.
    """
    crlf = buf.find(b"\r\n\r\n", start)
    lf = buf.find(b"\n\n", start)
    if crlf < 0 and lf < 0:
        return -1, 0
    if lf < 0 or (0 <= crlf < lf):
        return crlf, 4
    return lf, 2


def parse_head(head: bytes) -> tuple[str, Headers]:
    """Split a message head into its first line and headers."""
    text = head.decode("utf-8", errors="replace")
    lines = [line.rstrip("\r") for line in text.split("\n")]
    first = lines[0].strip()
    headers = Headers()
    for line in lines[1:]:
        if not line.strip():
            continue
        if line[0] in " \t" and headers.items:
            # Obsolete line folding: the value continues on this line.
            name, value = headers.items[-1]
            headers.items[-1] = (name, f"{value} {line.strip()}")
            continue
        name, sep, value = line.partition(":")
        if not sep:
            continue
        headers.add(name.strip(), value.strip())
    return first, headers


def pop_client_message(buf: bytearray) -> tuple[int, None] | tuple[None, tuple[str, Headers, bytes]] | None:
    """Remove the next complete message a client sent to a server from ``buf``.

    Returns ``(channel, None)`` for an interleaved ``$`` frame (the client's
    RTCP), ``(None, (first line, headers, body))`` for a request, and None
    while the message is incomplete.
    """
    if not buf:
        return None
    if buf[0] == 0x24:
        if len(buf) < 4:
            return None
        length = (buf[2] << 8) | buf[3]
        if len(buf) < 4 + length:
            return None
        channel = buf[1]
        del buf[: 4 + length]
        return channel, None
    end, separator = find_header_end(buf, 0)
    if end < 0:
        return None
    first_line, headers = parse_head(bytes(buf[:end]))
    length = content_length(headers)
    if len(buf) < end + separator + length:
        return None
    body = bytes(buf[end + separator : end + separator + length])
    del buf[: end + separator + length]
    return None, (first_line, headers, body)


def parse_status_line(line: str) -> tuple[int, str]:
    parts = line.split(None, 2)
    if len(parts) < 2 or not parts[0].upper().startswith("RTSP/"):
        raise RtspProtocolError(f"not an RTSP status line: {line[:60]!r}")
    try:
        status = int(parts[1])
    except ValueError as exc:
        raise RtspProtocolError(f"invalid RTSP status code: {line[:60]!r}") from exc
    return status, parts[2] if len(parts) > 2 else ""


def content_length(headers: Headers) -> int:
    value = headers.get("Content-Length")
    if value is None:
        return 0
    try:
        length = int(value.strip())
    except ValueError as exc:
        raise RtspProtocolError(f"invalid Content-Length {value!r}") from exc
    if length < 0 or length > 1 << 20:
        raise RtspProtocolError(f"Content-Length {length} out of range")
    return length


def build_request(method: str, url: str, headers: list[tuple[str, str]], body: bytes = b"") -> bytes:
    lines = [f"{method} {url} RTSP/1.0"]
    lines += [f"{name}: {value}" for name, value in headers]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


# --- Session, Transport and RTP-Info -------------------------------------------------


@dataclass(slots=True)
class SessionHeader:
    id: str
    timeout_seconds: float


DEFAULT_SESSION_TIMEOUT = 60.0


def parse_session(value: str) -> SessionHeader:
    """Parse ``Session: id[;timeout=N]`` with any padding; timeout defaults to 60 s."""
    parts = [part.strip() for part in value.split(";")]
    timeout = DEFAULT_SESSION_TIMEOUT
    for part in parts[1:]:
        key, _, raw = part.partition("=")
        if key.strip().lower() == "timeout":
            try:
                timeout = float(raw.strip().strip('"'))
            except ValueError:
                pass
    if timeout <= 0:
        timeout = DEFAULT_SESSION_TIMEOUT
    return SessionHeader(parts[0], timeout)


@dataclass(slots=True)
class TransportHeader:
    interleaved: tuple[int, int] | None = None
    server_port: tuple[int, int] | None = None
    client_port: tuple[int, int] | None = None
    source: str | None = None
    ssrc: int | None = None
    tcp: bool = False


def _parse_port_pair(raw: str) -> tuple[int, int] | None:
    first, _, second = raw.strip().partition("-")
    try:
        low = int(first.strip())
        high = int(second.strip()) if second.strip() else low + 1
    except ValueError:
        return None
    return low, high


def parse_ssrc(raw: str) -> int | None:
    """Parse a hex SSRC with any padding and any number of digits (``ssrc= d6d6627``)."""
    text = raw.strip().strip('"').strip()
    try:
        value = int(text, 16)
    except ValueError:
        return None
    return value & 0xFFFFFFFF


def parse_transport(value: str) -> TransportHeader:
    """Parse a Transport header: parameters in any order, quoted or padded values.

    Only the first transport spec is read when a server lists several.
    """
    spec = value.split(",")[0]
    result = TransportHeader()
    for part in spec.split(";"):
        key, _, raw = part.strip().partition("=")
        key = key.strip().lower()
        if key.startswith("rtp/avp"):
            result.tcp = key.endswith("/tcp")
        elif key == "interleaved":
            result.interleaved = _parse_port_pair(raw)
        elif key == "server_port":
            result.server_port = _parse_port_pair(raw)
        elif key == "client_port":
            result.client_port = _parse_port_pair(raw)
        elif key == "source":
            result.source = raw.strip() or None
        elif key == "ssrc":
            result.ssrc = parse_ssrc(raw)
    return result


@dataclass(slots=True)
class RtpInfoEntry:
    url: str
    seq: int | None
    rtptime: int | None
    ssrc: int | None


def parse_rtp_info(value: str) -> list[RtpInfoEntry]:
    """Parse RTP-Info entries; trailing ``;``, negative rtptime and odd urls never raise."""
    entries = []
    for chunk in re.split(r",\s*(?=url=)", value.strip()):
        url = ""
        seq = rtptime = ssrc = None
        for part in chunk.split(";"):
            key, _, raw = part.strip().partition("=")
            key = key.strip().lower()
            raw = raw.strip()
            try:
                if key == "url":
                    url = raw
                elif key == "seq":
                    seq = int(raw) & 0xFFFF
                elif key == "rtptime":
                    rtptime = int(raw) & 0xFFFFFFFF
                elif key == "ssrc":
                    ssrc = parse_ssrc(raw)
            except ValueError:
                continue
        entries.append(RtpInfoEntry(url, seq, rtptime, ssrc))
    return entries


# --- URLs ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RtspUrl:
    """A camera URL split into the address to request and the credentials to use."""

    url: str  # without credentials, as sent in request lines
    host: str
    port: int
    tls: bool
    username: str | None
    password: str | None


def split_url(url: str) -> RtspUrl:
    """Split ``rtsp://user:pass@host:port/path`` and drop the credentials from the URL.

    Raises ValueError for a URL that is not rtsp:// or rtsps://, or has no host.
    """
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in ("rtsp", "rtsps"):
        raise ValueError(f"unsupported scheme {parts.scheme!r}, expected rtsp:// or rtsps://")
    if not parts.hostname:
        raise ValueError("URL has no host")
    try:
        port = parts.port or (322 if scheme == "rtsps" else 554)
    except ValueError as exc:
        raise ValueError(f"invalid port in URL: {exc}") from exc
    host = parts.hostname
    netloc = f"[{host}]" if ":" in host else host
    if parts.port:
        netloc += f":{parts.port}"
    clean = urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))
    username = unquote(parts.username) if parts.username is not None else None
    password = unquote(parts.password) if parts.password is not None else None
    return RtspUrl(clean, host, port, scheme == "rtsps", username, password)


def strip_credentials(url: str) -> str:
    """Remove ``user:pass@`` from a URL a camera echoed back (Content-Base, controls)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    authority, slash, path = rest.partition("/")
    if "@" in authority:
        authority = authority.rsplit("@", 1)[1]
    return f"{scheme}{sep}{authority}{slash}{path}"


def sanitize_base_url(raw: str, request_url: str) -> str:
    """Repair a Content-Base the ways cameras break it, else fall back to the request URL.

    Handles a doubled scheme (``rtsp://rtsp://host/``), a missing scheme
    (``host:554/path``), a bare IPv6 host (``rtsp://::ffff:192.0.2.1/x``) and
    echoed credentials.
    """
    value = raw.strip()
    if not value:
        return request_url
    while re.match(r"(?i)^rtsps?://rtsps?://", value):
        value = value.split("://", 1)[1]
    if not re.match(r"(?i)^rtsps?://", value):
        scheme = request_url.split("://", 1)[0]
        value = f"{scheme}://{value.lstrip('/')}"
    value = strip_credentials(value)
    scheme, _, rest = value.partition("://")
    authority, slash, path = rest.partition("/")
    if authority.count(":") > 1 and not authority.startswith("["):
        # A bare IPv6 address; a trailing :port cannot be told apart, so keep it all.
        authority = f"[{authority}]"
    value = f"{scheme.lower()}://{authority}{slash}{path}"
    try:
        parts = urlsplit(value)
        if not parts.hostname:
            return request_url
        _ = parts.port
    except ValueError:
        return request_url
    return value


def join_control(base: str, control: str | None) -> str:
    """Resolve a media ``a=control`` against the base URL.

    Absolute controls are used as given (minus credentials) even when their
    host or port differ. Relative ones are appended to the base with one
    slash, as live555 and FFmpeg do, which is what cameras with a query
    string in the base (``...?channel=1&subtype=0/``) expect.
    """
    if control is None or control.strip() in ("", "*"):
        return base
    control = control.strip()
    if re.match(r"(?i)^rtsps?://", control):
        return strip_credentials(control)
    if base.endswith("/") or control.startswith("/"):
        if base.endswith("/") and control.startswith("/"):
            return base + control[1:]
        return base + control
    return f"{base}/{control}"


# --- Authentication -----------------------------------------------------------------


@dataclass(slots=True)
class Challenge:
    scheme: str  # "digest" or "basic"
    params: dict[str, str]


def parse_challenges(values: list[str]) -> list[Challenge]:
    """Parse WWW-Authenticate values; tolerates missing spaces after commas and odd quoting."""
    challenges = []
    for value in values:
        scheme, _, rest = value.strip().partition(" ")
        params: dict[str, str] = {}
        for match in re.finditer(r'([A-Za-z0-9_-]+)\s*=\s*("([^"]*)"|[^,\s]*)', rest):
            key = match.group(1).lower()
            params[key] = match.group(3) if match.group(3) is not None else match.group(2)
        challenges.append(Challenge(scheme.lower(), params))
    return challenges


def choose_challenge(challenges: list[Challenge]) -> Challenge | None:
    """Prefer Digest over Basic when a camera offers both."""
    for wanted in ("digest", "basic"):
        for challenge in challenges:
            if challenge.scheme == wanted:
                return challenge
    return None


class Authenticator:
    """Build Authorization headers for one challenge (Digest RFC 2617/2069 or Basic)."""

    def __init__(self, challenge: Challenge, username: str, password: str) -> None:
        self._challenge = challenge
        self._username = username
        self._password = password
        self._nonce_count = 0
        self._cnonce = os.urandom(8).hex()

    @property
    def scheme(self) -> str:
        return self._challenge.scheme

    def header(self, method: str, uri: str) -> str:
        if self._challenge.scheme == "basic":
            token = b64encode(f"{self._username}:{self._password}".encode()).decode()
            return f"Basic {token}"
        params = self._challenge.params
        realm = params.get("realm", "")
        nonce = params.get("nonce", "")
        algorithm = params.get("algorithm", "MD5")
        ha1 = _md5(f"{self._username}:{realm}:{self._password}")
        if algorithm.lower() == "md5-sess":
            ha1 = _md5(f"{ha1}:{nonce}:{self._cnonce}")
        ha2 = _md5(f"{method}:{uri}")
        qop_options = [q.strip().lower() for q in params.get("qop", "").split(",") if q.strip()]
        fields = [
            f'username="{self._username}"',
            f'realm="{realm}"',
            f'nonce="{nonce}"',
            f'uri="{uri}"',
        ]
        if "auth" in qop_options:
            self._nonce_count += 1
            nc = f"{self._nonce_count:08x}"
            response = _md5(f"{ha1}:{nonce}:{nc}:{self._cnonce}:auth:{ha2}")
            fields += [f'response="{response}"', "qop=auth", f"nc={nc}", f'cnonce="{self._cnonce}"']
        else:
            # RFC 2069 digest, which many cameras still send.
            fields.append(f'response="{_md5(f"{ha1}:{nonce}:{ha2}")}"')
        if "algorithm" in params:
            fields.append(f"algorithm={algorithm}")
        if "opaque" in params:
            fields.append(f'opaque="{params["opaque"]}"')
        return "Digest " + ", ".join(fields)


def _md5(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


def quote_userinfo(value: str) -> str:
    return quote(value, safe="")
