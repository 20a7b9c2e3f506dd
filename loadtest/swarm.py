"""Viewer swarm: HTTP-FLV and HLS clients that check what they receive.

An FLV viewer parses tag headers as bytes arrive (payloads are skipped, not
copied) and checks that video timestamps advance and keyframes arrive. An
HLS viewer polls the playlist, fetches new segments and reads each fMP4
fragment's decode time. Both record time to first byte, time to first
keyframe, stalls (no new video for more than ``STALL_SECONDS``) and bytes.
"""

from __future__ import annotations

import asyncio
import struct
import time
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

import aiohttp

from proto.mp4 import iter_boxes

STALL_SECONDS = 2.0


@dataclass(slots=True)
class ViewerResult:
    camera_id: str
    kind: str  # "flv" or "hls"
    cold: bool
    flapping: bool
    status: int = 0
    first_byte_seconds: float | None = None
    first_keyframe_seconds: float | None = None
    frames: int = 0
    keyframes: int = 0
    bytes: int = 0
    stalls: int = 0
    longest_gap_seconds: float = 0.0
    timestamp_regressions: int = 0
    disconnected: bool = False
    error: str | None = None
    last_frame_at: float = 0.0
    started_at: float = field(default_factory=time.monotonic)


class _FlvTagScanner:
    """Scan an FLV byte stream for tag headers without keeping payloads."""

    __slots__ = ("_head", "_need", "_skip", "_in_header", "_tag_size", "_tag_type", "_timestamp", "_started")

    def __init__(self) -> None:
        self._head = bytearray()
        self._need = 13  # FLV file header and the first previous-tag-size
        self._skip = 0
        self._in_header = True  # reading the 11-byte tag header, else the first payload bytes
        self._tag_size = 0
        self._tag_type = 0
        self._timestamp = 0
        self._started = False

    def feed(self, data: bytes, on_video: callable) -> None:  # type: ignore[valid-type]
        """Call ``on_video(timestamp_ms, key, is_frame)`` for each video tag in ``data``."""
        pos = 0
        size = len(data)
        while pos < size:
            if self._skip:
                take = min(self._skip, size - pos)
                self._skip -= take
                pos += take
                continue
            take = min(self._need - len(self._head), size - pos)
            self._head += data[pos : pos + take]
            pos += take
            if len(self._head) < self._need:
                return
            head = self._head
            if not self._started:
                if head[:3] != b"FLV":
                    raise ValueError("response is not FLV")
                self._started = True
                self._head = bytearray()
                self._need = 11
                continue
            if self._in_header:
                self._tag_type = head[0] & 0x1F
                self._tag_size = int.from_bytes(head[1:4], "big")
                self._timestamp = int.from_bytes(head[4:7], "big") | (head[7] << 24)
                self._head = bytearray()
                first = min(2, self._tag_size)
                if first == 0:
                    self._skip = 4
                    continue
                self._in_header = False
                self._need = first
                continue
            if self._tag_type == 9:
                first_byte = head[0]
                if first_byte & 0x80:  # enhanced FLV
                    packet_type = first_byte & 0x0F
                    is_frame = packet_type in (1, 3)
                    key = (first_byte >> 4) & 0x07 == 1
                else:
                    is_frame = len(head) > 1 and head[1] == 1
                    key = first_byte >> 4 == 1
                on_video(self._timestamp, key, is_frame)
            self._skip = self._tag_size - len(head) + 4
            self._head = bytearray()
            self._in_header = True
            self._need = 11


def _percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def summarize(values: list[float]) -> dict[str, float | int | None]:
    """Return p50, p95 and p99 in milliseconds with the sample count."""
    def ms(value: float | None) -> float | None:
        return None if value is None else round(value * 1000, 1)

    return {
        "n": len(values),
        "p50_ms": ms(_percentile(values, 0.50)),
        "p95_ms": ms(_percentile(values, 0.95)),
        "p99_ms": ms(_percentile(values, 0.99)),
    }


def _note_frame(result: ViewerResult, key: bool, now: float, stall_after: float = STALL_SECONDS) -> None:
    if result.first_keyframe_seconds is None:
        if not key:
            return
        result.first_keyframe_seconds = now - result.started_at
    elif result.last_frame_at:
        gap = now - result.last_frame_at
        if gap > result.longest_gap_seconds:
            result.longest_gap_seconds = gap
        if gap > stall_after:
            result.stalls += 1
    result.frames += 1
    result.keyframes += int(key)
    result.last_frame_at = now


class _FlvClient(asyncio.Protocol):
    """An HTTP/1.0 FLV client: a plain body, scanned as it arrives, with no copy of payloads."""

    def __init__(self, result: ViewerResult, request: bytes, done: asyncio.Future[None]) -> None:
        self.result = result
        self.request = request
        self.done = done
        self.scanner = _FlvTagScanner()
        self.head = b""
        self.in_body = False
        self.last_timestamp = -1
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.result.started_at = time.monotonic()
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        result = self.result
        if not self.in_body:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            status_line = self.head.split(b"\r\n", 1)[0].split(b" ")
            result.status = int(status_line[1]) if len(status_line) > 1 and status_line[1].isdigit() else 0
            if result.status != 200:
                result.error = f"HTTP {result.status}"
                assert self.transport is not None
                self.transport.close()
                return
            data = self.head[end + 4 :]
            self.in_body = True
            if not data:
                return
        if result.first_byte_seconds is None:
            result.first_byte_seconds = time.monotonic() - result.started_at
        result.bytes += len(data)
        try:
            self.scanner.feed(data, self._on_video)
        except ValueError as exc:
            result.error = str(exc)
            assert self.transport is not None
            self.transport.close()

    def _on_video(self, timestamp: int, key: bool, is_frame: bool) -> None:
        if not is_frame:
            return
        if timestamp < self.last_timestamp:
            self.result.timestamp_regressions += 1
        self.last_timestamp = timestamp
        _note_frame(self.result, key, time.monotonic())

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


async def watch_flv(
    session: aiohttp.ClientSession, base: str, result: ViewerResult, until: float, headers: dict[str, str]
) -> ViewerResult:
    """Watch ``/live/{id}.flv`` until the monotonic time ``until``.

    Uses a lean HTTP/1.0 client instead of ``session`` so that a thousand
    viewers of 4 Mbit/s streams cost the swarm little CPU.
    """
    parts = urlsplit(base)
    lines = [f"GET /live/{result.camera_id}.flv HTTP/1.0", f"Host: {parts.netloc}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode()
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    try:
        transport, _ = await asyncio.wait_for(
            loop.create_connection(lambda: _FlvClient(result, request, done), parts.hostname, parts.port), 30
        )
    except (OSError, TimeoutError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
        result.disconnected = True
        return result
    try:
        await asyncio.wait_for(asyncio.shield(done), max(0.0, until - time.monotonic()))
        if result.error is None:
            result.disconnected = True  # the server ended the stream early
    except TimeoutError:
        pass
    finally:
        transport.close()
    return result


def _fragment_times(data: bytes) -> list[tuple[int, bool]]:
    """Return (base decode time, first sample is a sync sample) per moof in an fMP4 segment."""
    times = []
    for kind, start, end in iter_boxes(data):
        if kind != b"moof":
            continue
        for traf_kind, traf_start, traf_end in iter_boxes(data, start, end):
            if traf_kind != b"traf":
                continue
            decode_time = None
            key = False
            track_id = 0
            for child, child_start, child_end in iter_boxes(data, traf_start, traf_end):
                if child == b"tfhd":
                    track_id = struct.unpack_from(">I", data, child_start + 4)[0]
                elif child == b"tfdt":
                    version = data[child_start]
                    decode_time = struct.unpack_from(">Q" if version == 1 else ">I", data, child_start + 4)[0]
                elif child == b"trun" and child_end - child_start >= 20:
                    flags = int.from_bytes(data[child_start + 1 : child_start + 4], "big")
                    offset = child_start + 12 + (4 if flags & 0x4 else 0)
                    if flags & 0x4:
                        key = not (struct.unpack_from(">I", data, child_start + 12)[0] & 0x00010000)
                    else:
                        offset += 4 * bool(flags & 0x100) + 4 * bool(flags & 0x200)
                        if flags & 0x400:
                            key = not (struct.unpack_from(">I", data, offset)[0] & 0x00010000)
            if track_id == 1 and decode_time is not None:
                times.append((decode_time, key))
    return times


async def watch_hls(
    session: aiohttp.ClientSession, base: str, result: ViewerResult, until: float, headers: dict[str, str]
) -> ViewerResult:
    """Poll ``/live/{id}/index.m3u8`` and fetch new segments until ``until``."""
    playlist_url = f"{base}/live/{result.camera_id}/index.m3u8"
    seen: set[str] = set()
    last_decode_time = -1
    target = 2.0
    timeout = aiohttp.ClientTimeout(total=60)
    try:
        while time.monotonic() < until:
            async with session.get(playlist_url, headers=headers, timeout=timeout) as response:
                result.status = response.status
                if response.status != 200:
                    result.error = f"HTTP {response.status}"
                    return result
                text = await response.text()
                if result.first_byte_seconds is None:
                    result.first_byte_seconds = time.monotonic() - result.started_at
            segments = []
            for line in text.splitlines():
                line = line.strip()
                if line.startswith("#EXT-X-TARGETDURATION:"):
                    target = float(line.split(":", 1)[1])
                elif line and not line.startswith("#"):
                    segments.append(urljoin(playlist_url, line))
            new = [url for url in segments if url not in seen]
            if result.first_keyframe_seconds is None and new:
                # A player starts at the live edge and never goes back for older segments.
                seen.update(new[:-1])
                new = new[-1:]
            for url in new:
                seen.add(url)
                async with session.get(url, headers=headers, timeout=timeout) as response:
                    if response.status != 200:
                        result.error = f"segment HTTP {response.status}"
                        continue
                    data = await response.read()
                result.bytes += len(data)
                for decode_time, key in _fragment_times(data):
                    if decode_time <= last_decode_time:
                        result.timestamp_regressions += 1
                    last_decode_time = decode_time
                    # Segments arrive one target duration apart, so a stall is a
                    # gap longer than that plus the FLV limit.
                    stall_after = target + STALL_SECONDS
                    _note_frame(result, key, time.monotonic(), stall_after)
            await asyncio.sleep(min(1.0, target / 2))
    except (aiohttp.ClientError, TimeoutError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
        result.disconnected = True
    return result
