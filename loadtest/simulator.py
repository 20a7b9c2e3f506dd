"""Camera simulator: many RTSP cameras from one asyncio process.

Each clip is packetised once (``loadtest.clip``). Every session replays it
in real time over RTP/TCP (interleaved) with its own SSRC, sequence numbers
and timestamps, which continue across loops of the clip as a real camera's
would. Sessions are spread over ``PHASE_SLOTS`` phases of the frame
interval, so a thousand cameras do not all send in the same millisecond.

Per frame and session the work is one copy of the frame's prebuilt packets
and a ``struct.pack_into`` per packet for sequence number, timestamp and
SSRC, so one core carries hundreds of cameras.

Run ``python -m loadtest.simulator --help`` for the command line.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import os
import random
import struct
import time
from collections.abc import Callable
from typing import cast
from dataclasses import dataclass, field
from pathlib import Path

from loadtest.clip import VIDEO_CLOCK, Clip, load_clip
from proto import rtsp

PHASE_SLOTS = 8
MAX_SEND_BUFFER = 4 * 1024 * 1024  # above this a session skips frames, as a camera would
_RTP_FIELDS = struct.Struct(">HII")  # sequence number, timestamp, SSRC

# SEI user_data_unregistered (payload type 5) carrying the send time, for
# latency measurements: this UUID, then the Unix time in microseconds as 16
# ASCII digits. ASCII has no zero bytes, so no emulation prevention is needed.
SEND_TIME_UUID = b"PantauSendTimeUS"
SEND_TIME_DIGITS = 16


def send_time_sei(codec: str) -> tuple[bytes, int]:
    """Return an SEI NAL unit with a placeholder send time, and the offset of its digits."""
    header = b"\x06" if codec == "h264" else bytes((39 << 1, 0x01))  # H.265: prefix SEI
    payload = SEND_TIME_UUID + b"0" * SEND_TIME_DIGITS
    nal = header + bytes((5, len(payload))) + payload + b"\x80"
    return nal, len(header) + 2 + len(SEND_TIME_UUID)


@dataclass(slots=True)
class FrameTemplate:
    """A frame's interleaved packets with the offsets of the fields to patch."""

    data: bytes
    video_offsets: list[int]  # offset of each video packet's sequence number
    audio_offsets: list[tuple[int, int]]  # (offset, audio clock timestamp)
    pts: int
    send_time_offset: int = -1  # offset of the send-time digits of the SEI, -1 without one


def build_templates(clip: Clip, with_send_time: bool = False) -> list[FrameTemplate]:
    templates = []
    sei, digits_offset = send_time_sei(clip.codec)
    for frame in clip.frames:
        parts: list[bytes] = []
        video_offsets: list[int] = []
        audio_offsets: list[tuple[int, int]] = []
        offset = 0
        payloads = list(frame.payloads)
        sei_index = -1
        if with_send_time:
            # After the in-band parameter sets of a keyframe, before the first slice.
            sei_index = len(clip.parameter_sets) if frame.key else 0
            payloads.insert(sei_index, sei)
        send_time_offset = -1
        for index, payload in enumerate(payloads):
            marker = 0x80 if index == len(payloads) - 1 else 0
            if index == sei_index:
                send_time_offset = offset + 4 + 12 + digits_offset
            packet = bytes((0x80, marker | 96)) + b"\x00" * 10 + payload
            parts.append(b"$\x00" + struct.pack(">H", len(packet)) + packet)
            video_offsets.append(offset + 4 + 2)
            offset += 4 + len(packet)
        for audio_ts, payload in frame.audio:
            packet = bytes((0x80, 0x80 | 97)) + b"\x00" * 10 + payload
            parts.append(b"$\x02" + struct.pack(">H", len(packet)) + packet)
            audio_offsets.append((offset + 4 + 2, audio_ts))
            offset += 4 + len(packet)
        templates.append(FrameTemplate(b"".join(parts), video_offsets, audio_offsets, frame.pts, send_time_offset))
    return templates


@dataclass(slots=True)
class Mount:
    clip: Clip
    templates: list[FrameTemplate]


@dataclass(slots=True)
class Faults:
    """Faults to inject, for load tests and robustness tests."""

    drop_after_seconds: float = 0.0  # close the connection after this long (0 = never)
    timestamp_jump_seconds: float = 0.0  # jump the RTP clock forward once, mid-stream
    jump_after_seconds: float = 5.0


@dataclass(slots=True)
class Session:
    """One playing RTSP session."""

    mount: Mount
    transport: asyncio.Transport
    ssrc_video: int
    ssrc_audio: int
    seq_video: int
    seq_audio: int
    ts_video: int  # random base
    ts_audio: int
    frame_index: int = 0
    loop_ticks: int = 0  # 90 kHz offset of the current loop
    jump_ticks: int = 0
    frames_sent: int = 0
    frames_skipped: int = 0
    started: float = 0.0
    faults: Faults = field(default_factory=Faults)
    path: str = ""

    def send_next(self) -> int:
        """Send the next frame; return the bytes written (0 when the frame was skipped)."""
        templates = self.mount.templates
        template = templates[self.frame_index]
        written = 0
        if self.transport.get_write_buffer_size() > MAX_SEND_BUFFER:
            self.frames_skipped += 1
        else:
            buf = bytearray(template.data)
            pack = _RTP_FIELDS.pack_into
            ts = (self.ts_video + self.loop_ticks + self.jump_ticks + template.pts) & 0xFFFFFFFF
            seq = self.seq_video
            ssrc = self.ssrc_video
            for offset in template.video_offsets:
                pack(buf, offset, seq, ts, ssrc)
                seq = (seq + 1) & 0xFFFF
            self.seq_video = seq
            audio_rate = self.mount.clip.audio_rate or VIDEO_CLOCK
            audio_loop = (self.loop_ticks + self.jump_ticks) * audio_rate // VIDEO_CLOCK
            for offset, audio_ts in template.audio_offsets:
                pack(buf, offset, self.seq_audio, (self.ts_audio + audio_loop + audio_ts) & 0xFFFFFFFF, self.ssrc_audio)
                self.seq_audio = (self.seq_audio + 1) & 0xFFFF
            if template.send_time_offset >= 0:
                position = template.send_time_offset
                buf[position : position + SEND_TIME_DIGITS] = b"%016d" % int(time.time() * 1_000_000)
            self.transport.write(buf)
            self.frames_sent += 1
            written = len(buf)
        self.frame_index += 1
        if self.frame_index == len(templates):
            self.frame_index = 0
            self.loop_ticks += self.mount.clip.duration
        return written


class SimulatorServer:
    """An RTSP server that serves clips at configured paths.

    ``mounts`` maps a path (``/demo``) to a clip; ``pattern_mount``, when set,
    serves that clip at every path, for load tests with numbered cameras.
    """

    def __init__(
        self,
        mounts: dict[str, Clip] | None = None,
        *,
        any_path: Clip | None = None,
        credentials: tuple[str, str] | None = None,
        faults: Callable[[str], Faults] | None = None,
        send_time_sei: bool = False,
    ) -> None:
        """``send_time_sei`` adds an SEI with the send time to every frame (see ``SEND_TIME_UUID``)."""
        self._mounts = {
            path: Mount(clip, build_templates(clip, send_time_sei)) for path, clip in (mounts or {}).items()
        }
        self._any_path = Mount(any_path, build_templates(any_path, send_time_sei)) if any_path else None
        self._credentials = credentials
        self._faults = faults or (lambda _path: Faults())
        self._slots: list[list[Session]] = [[] for _ in range(PHASE_SLOTS)]
        self._server: asyncio.Server | None = None
        self._tickers: dict[float, asyncio.Task[None]] = {}
        self.port = 0
        self.connections_total = 0
        self.connections_open = 0
        self.sessions_playing = 0
        self.total_bytes = 0

    def mount_for(self, path: str) -> Mount | None:
        return self._mounts.get(path) or self._any_path

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._server = await asyncio.get_running_loop().create_server(
            lambda: _RtspServerConnection(self), host, port, backlog=4096
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        for task in self._tickers.values():
            task.cancel()
        if self._server is not None:
            self._server.close()
            for slot in self._slots:
                for session in slot:
                    session.transport.close()
            await self._server.wait_closed()

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"rtsp://{host}:{self.port}{path}"

    def add_session(self, session: Session) -> None:
        fps = session.mount.clip.fps
        if fps not in self._tickers:
            self._tickers[fps] = asyncio.create_task(self._tick(fps))
        slot = random.randrange(PHASE_SLOTS)
        self._slots[slot].append(session)
        self.sessions_playing += 1
        session.started = asyncio.get_running_loop().time()

    def sessions(self) -> list[Session]:
        return [session for slot in self._slots for session in slot]

    def remove_session(self, session: Session) -> None:
        for slot in self._slots:
            if session in slot:
                slot.remove(session)
                self.sessions_playing -= 1

    async def _tick(self, fps: float) -> None:
        """Send one frame to every session of this frame rate, one phase slot at a time."""
        loop = asyncio.get_running_loop()
        interval = 1.0 / fps / PHASE_SLOTS
        next_time = loop.time()
        slot = 0
        while True:
            now = loop.time()
            for session in list(self._slots[slot]):
                if session.mount.clip.fps != fps:
                    continue
                self._apply_faults(session, now)
                if session.transport.is_closing():
                    self.remove_session(session)
                    continue
                self.total_bytes += session.send_next()
            slot = (slot + 1) % PHASE_SLOTS
            next_time += interval
            delay = next_time - loop.time()
            if delay < -1.0:
                next_time = loop.time()  # fell behind by more than a second: do not burst
                delay = 0
            await asyncio.sleep(max(0.0, delay))

    def _apply_faults(self, session: Session, now: float) -> None:
        faults = session.faults
        age = now - session.started
        if faults.drop_after_seconds and age >= faults.drop_after_seconds:
            session.transport.abort()
        if faults.timestamp_jump_seconds and not session.jump_ticks and age >= faults.jump_after_seconds:
            session.jump_ticks = int(faults.timestamp_jump_seconds * VIDEO_CLOCK)


class _RtspServerConnection(asyncio.Protocol):
    def __init__(self, server: SimulatorServer) -> None:
        self._server = server
        self._buf = bytearray()
        self._transport: asyncio.Transport | None = None
        self._session: Session | None = None
        self._session_id = os.urandom(4).hex().upper()
        self._mount: Mount | None = None
        self._path = ""
        self._nonce = os.urandom(8).hex()
        self._setup_count = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)
        self._transport = transport
        self._server.connections_total += 1
        self._server.connections_open += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.connections_open -= 1
        if self._session is not None:
            self._server.remove_session(self._session)
            self._session = None

    def data_received(self, data: bytes) -> None:
        self._buf += data
        while (message := rtsp.pop_client_message(self._buf)) is not None:
            _channel, request = message
            if request is not None:  # interleaved frames are the client's RTCP, ignored
                self._handle(request[0], request[1])

    def _reply(self, status: str, cseq: str, headers: list[tuple[str, str]] | None = None, body: bytes = b"") -> None:
        lines = [f"RTSP/1.0 {status}", f"CSeq: {cseq}", "Server: Pantau simulator"]
        lines += [f"{name}: {value}" for name, value in headers or []]
        if body:
            lines.append(f"Content-Length: {len(body)}")
        assert self._transport is not None
        self._transport.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)

    def _authorized(self, method: str, headers: rtsp.Headers) -> bool:
        credentials = self._server._credentials
        if credentials is None:
            return True
        value = headers.get("Authorization") or ""
        user, password = credentials
        if value.startswith("Basic "):
            return base64.b64decode(value[6:]).decode(errors="replace") == f"{user}:{password}"
        if value.startswith("Digest "):
            params = rtsp.parse_challenges([value])[0].params
            ha1 = hashlib.md5(f"{user}:pantau:{password}".encode()).hexdigest()
            ha2 = hashlib.md5(f"{method}:{params.get('uri', '')}".encode()).hexdigest()
            if params.get("qop") == "auth":
                expected = f"{ha1}:{self._nonce}:{params.get('nc')}:{params.get('cnonce')}:auth:{ha2}"
            else:
                expected = f"{ha1}:{self._nonce}:{ha2}"
            return params.get("response") == hashlib.md5(expected.encode()).hexdigest()
        return False

    def _handle(self, first_line: str, headers: rtsp.Headers) -> None:
        parts = first_line.split()
        if len(parts) < 3:
            if self._transport is not None:
                self._transport.close()
            return
        method, url = parts[0].upper(), parts[1]
        cseq = headers.get("CSeq", "0") or "0"
        if method not in ("OPTIONS",) and not self._authorized(method, headers):
            self._reply(
                "401 Unauthorized",
                cseq,
                [("WWW-Authenticate", f'Digest realm="pantau", nonce="{self._nonce}", qop="auth"')],
            )
            return
        if method == "OPTIONS":
            self._reply("200 OK", cseq, [("Public", "OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN, GET_PARAMETER")])
        elif method == "DESCRIBE":
            self._path = "/" + url.split("://", 1)[-1].split("/", 1)[-1].split("?")[0].rstrip("/")
            self._mount = self._server.mount_for(self._path)
            if self._mount is None:
                self._reply("404 Not Found", cseq)
                return
            base = url.rstrip("/") + "/"
            body = self._mount.clip.sdp().encode()
            self._reply("200 OK", cseq, [("Content-Base", base), ("Content-Type", "application/sdp")], body)
        elif method == "SETUP":
            transport = headers.get("Transport") or ""
            if "TCP" not in transport.upper():
                self._reply("461 Unsupported Transport", cseq)
                return
            channel = 0 if self._setup_count == 0 else 2
            self._setup_count += 1
            self._reply(
                "200 OK",
                cseq,
                [
                    ("Transport", f"RTP/AVP/TCP;unicast;interleaved={channel}-{channel + 1}"),
                    ("Session", f"{self._session_id};timeout=60"),
                ],
            )
        elif method == "PLAY":
            if self._mount is None or self._transport is None:
                self._reply("455 Method Not Valid in This State", cseq)
                return
            session = Session(
                mount=self._mount,
                transport=self._transport,
                ssrc_video=random.getrandbits(32),
                ssrc_audio=random.getrandbits(32),
                seq_video=random.getrandbits(16),
                seq_audio=random.getrandbits(16),
                ts_video=random.getrandbits(32),
                ts_audio=random.getrandbits(32),
                faults=self._server._faults(self._path),
                path=self._path,
            )
            self._reply(
                "200 OK",
                cseq,
                [
                    ("Session", self._session_id),
                    ("Range", "npt=0.000-"),
                    ("RTP-Info", f"url={url.rstrip('/')}/trackID=0;seq={session.seq_video};rtptime={session.ts_video}"),
                ],
            )
            if self._session is None:
                self._session = session
                self._server.add_session(session)
        elif method in ("GET_PARAMETER", "SET_PARAMETER"):
            self._reply("200 OK", cseq, [("Session", self._session_id)])
        elif method == "TEARDOWN":
            self._reply("200 OK", cseq)
            if self._transport is not None:
                self._transport.close()
        else:
            self._reply("501 Not Implemented", cseq)


MEDIA_DIR = Path(__file__).resolve().parent / "media"
DEMO_CLIP = MEDIA_DIR / "street-4mp-h264.mp4"


async def _serve(args: argparse.Namespace) -> None:
    clip = load_clip(args.clip)
    server = SimulatorServer(any_path=clip, send_time_sei=args.send_time_sei)
    await server.start(args.host, args.port)
    print(f"serving {clip.path.name} ({clip.codec} {clip.width}x{clip.height}) at rtsp://{args.host}:{server.port}/ANY-PATH", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await server.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest.simulator", description="Serve a clip as RTSP cameras, one per path.")
    parser.add_argument("--clip", default=str(DEMO_CLIP), help="MP4 clip (H.264 or H.265, optional AAC)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8554, help="RTSP port")
    parser.add_argument(
        "--send-time-sei",
        action="store_true",
        help="put an SEI with the send time (Unix microseconds) into every frame, for loadtest.latency",
    )
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.run(_serve(args))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
