"""One client connection to a replay mount: RTSP requests in, RTP and RTCP out.

The responses are the scenario's templates with this session's values
filled in. Streaming starts at PLAY and follows the mount's video plan in
real time, with the scenario's timing faults, an earlier session's packets,
RTCP and audio as the behaviour requests.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import random
import re
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from loadtest.cases import Message, synthesized
from loadtest.clip import VIDEO_CLOCK
from loadtest.replay_media import AudioPlan, PlannedFrame
from loadtest.replay_mount import (
    MediaSection,
    Mount,
    is_backchannel,
    join_control,
    path_view,
    rewrite_addresses,
)
from proto import rtsp

Emit = Callable[[dict[str, Any]], None]
MAX_SEND_BUFFER = 4 * 1024 * 1024  # above this a session skips pictures, as a camera would
NTP_UNIX_OFFSET = 2208988800
RTCP_INTERVAL_SECONDS = 1.0


@dataclass(slots=True)
class StreamTrack:
    section: MediaSection
    channel: int  # RTP channel (TCP) or -1 (UDP)
    ssrc: int
    seq: int
    ts: int
    udp: tuple[asyncio.DatagramTransport, tuple[str, int]] | None = None
    udp_rtcp: tuple[asyncio.DatagramTransport, tuple[str, int]] | None = None
    audio: AudioPlan | None = None
    audio_index: int = 0
    audio_sent_ticks: int = 0
    packets: int = 0
    octets: int = 0


class _UdpSink(asyncio.DatagramProtocol):
    """The server side of a UDP port pair; what arrives (receiver reports) counts as liveness."""

    def __init__(self, connection: ReplaySession) -> None:
        self._connection = connection

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self._connection.keepalive("rtcp")


class ReplaySession(asyncio.Protocol):
    """One client connection to a mount: RTSP requests in, RTP out."""

    def __init__(self, mount: Mount, emit: Emit) -> None:
        self._emit_event = emit
        self._mount = mount
        self._behaviour = mount.scenario.behaviour
        self._buf = bytearray()
        self._transport: asyncio.Transport | None = None
        self._tracks: list[StreamTrack] = []
        self._setup_count = 0
        self._session_id = os.urandom(4).hex().upper()
        self._session_timeout = 60.0
        self._last_keepalive = time.monotonic()
        self._stream_task: asyncio.Task[None] | None = None
        self._stale_task: asyncio.Task[None] | None = None
        self._udp_transports: list[asyncio.DatagramTransport] = []
        self._peer = ""
        self._describe_url = ""
        self._ghost: StreamTrack | None = None
        self._ghost_index = 0
        self._ts_shift = 0  # 90 kHz added to every timestamp by steps and resets
        self._next_fault = self._behaviour.fault_interval
        self._fault_count = 0

    # --- plumbing ---------------------------------------------------------------

    def _emit(self, event: str, **fields: Any) -> None:
        self._emit_event({"event": event, "mount": self._mount.name, **fields})

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        peer = self._transport.get_extra_info("peername")
        self._peer = peer[0] if peer else "127.0.0.1"
        self._emit("connected")

    def connection_lost(self, exc: Exception | None) -> None:
        for task in (self._stream_task, self._stale_task):
            if task is not None:
                task.cancel()
        for udp in self._udp_transports:
            udp.close()
        self._emit("disconnected")

    def data_received(self, data: bytes) -> None:
        self._buf += data
        while (message := rtsp.pop_client_message(self._buf)) is not None:
            _channel, request = message
            if request is None:
                self.keepalive("rtcp")  # interleaved data from the client: RTCP receiver reports
            else:
                self._handle(request[0], request[1])

    def _write(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def keepalive(self, how: str) -> None:
        """Refresh the session if this camera counts ``how`` (a method or "rtcp") as liveness."""
        wanted = self._behaviour.keepalive
        if how == "GET_PARAMETER" and self._behaviour.get_parameter_unanswered:
            return
        if (
            wanted == "any"
            or how == "PLAY"
            or how.lower() == wanted
            or (wanted == "get_parameter" and how == "SET_PARAMETER")
        ):
            self._last_keepalive = time.monotonic()

    # --- responses --------------------------------------------------------------

    def _respond(self, template: Message, cseq: str, extra: list[tuple[str, str]] | None = None) -> None:
        message = template.copy()
        if self._behaviour.cseq == "missing":
            message.remove("CSeq")
        else:
            message.set("CSeq", "0" if self._behaviour.cseq == "zero" else cseq)
        for name, value in extra or []:
            message.set(name, value)
        message.headers = [(name, rewrite_addresses(raw, self._mount.port)) for name, raw in message.headers]
        self._write(message.encode())

    def _authorized(self, method: str, url: str, headers: rtsp.Headers) -> bool:
        behaviour = self._behaviour
        credentials = self._mount.credentials
        if credentials is None or not (behaviour.auth or self._mount.scenario.unauthorized is not None):
            return True
        value = (headers.get("Authorization") or "").strip()
        user, password = credentials
        if value.lower().startswith("basic "):
            if "basic" not in (behaviour.auth or "digest"):
                return False
            try:
                return base64.b64decode(value[6:].strip()).decode(errors="replace") == f"{user}:{password}"
            except ValueError:
                return False
        if value.lower().startswith("digest "):
            params = rtsp.parse_challenges([value])[0].params
            realm = self._challenge()[0]
            if params.get("realm") != realm or params.get("username") != user or params.get("uri") != url:
                return False
            ha1 = hashlib.md5(f"{user}:{realm}:{password}".encode()).hexdigest()
            ha2 = hashlib.md5(f"{method}:{params.get('uri', '')}".encode()).hexdigest()
            nonce = self._challenge()[1]
            if params.get("qop"):
                expected = (
                    f"{ha1}:{nonce}:{params.get('nc')}:{params.get('cnonce')}:{params.get('qop')}:{ha2}"
                )
            else:
                expected = f"{ha1}:{nonce}:{ha2}"
            return params.get("response") == hashlib.md5(expected.encode()).hexdigest()
        return False

    def _challenge(self) -> tuple[str, str]:
        """Return (realm, nonce): the case's 401 values when it publishes one, else the behaviour's."""
        template = self._mount.scenario.unauthorized
        if template is not None:
            params = rtsp.parse_challenges(
                [
                    rewrite_addresses(value, 0)
                    for name, value in template.headers
                    if name.strip().lower() == "www-authenticate"
                ]
            )
            for challenge in params:
                if challenge.scheme == "digest":
                    return challenge.params.get("realm", ""), challenge.params.get("nonce", "")
        return self._behaviour.realm, self._behaviour.nonce

    def _unauthorized(self, cseq: str) -> None:
        template = self._mount.scenario.unauthorized
        if template is not None:
            self._respond(template, cseq)
            return
        realm, nonce = self._challenge()
        auth = self._behaviour.auth or "digest"
        challenges = []
        if auth in ("basic", "basic+digest"):
            challenges.append(("WWW-Authenticate", f'Basic realm="{realm}"'))
        if auth in ("digest", "basic+digest"):
            challenges.append(("WWW-Authenticate", f'Digest realm="{realm}", nonce="{nonce}"'))
        if auth == "digest-qop":
            challenges.append(
                ("WWW-Authenticate", f'Digest realm="{realm}", nonce="{nonce}", qop="auth", algorithm=MD5')
            )
        message = synthesized("401 Unauthorized")
        message.headers += [(name, " " + value) for name, value in challenges]
        self._respond(message, cseq)

    # --- requests ---------------------------------------------------------------

    def _handle(self, first_line: str, headers: rtsp.Headers) -> None:
        parts = first_line.split()
        if len(parts) < 3:
            self._emit("bad_request", line=first_line[:80])
            if self._transport is not None:
                self._transport.close()
            return
        method, url = parts[0].upper(), parts[1]
        cseq = (headers.get("CSeq") or "0").strip()
        authorization = (headers.get("Authorization") or "").split(" ", 1)[0].lower() or None
        event: dict[str, Any] = {"method": method, "url": url, "auth": authorization}
        if headers.get("Require"):
            event["require"] = headers.get("Require")
        if headers.get("Transport"):
            event["transport"] = headers.get("Transport")
        if self._tracks and method in ("OPTIONS", "SET_PARAMETER", "GET_PARAMETER", "PLAY"):
            self.keepalive(method)

        if method != "OPTIONS" and not self._authorized(method, url, headers):
            self._emit("request", status=401, **event)
            self._unauthorized(cseq)
            return
        handler = {
            "OPTIONS": self._options,
            "DESCRIBE": self._describe,
            "SETUP": self._setup,
            "PLAY": self._play,
            "GET_PARAMETER": self._get_parameter,
            "SET_PARAMETER": self._parameter_ok,
            "PAUSE": self._parameter_ok,
            "TEARDOWN": self._teardown,
        }.get(method)
        if handler is None:
            self._emit("request", status=501, **event)
            self._respond(synthesized("501 Not Implemented"), cseq)
            return
        status = handler(url, headers, cseq)
        self._emit("request", status=status, **event)

    def _options(self, url: str, headers: rtsp.Headers, cseq: str) -> int:
        template = self._mount.scenario.options or synthesized(
            headers=[
                ("Public", "OPTIONS, DESCRIBE, SETUP, PLAY, PAUSE, TEARDOWN, GET_PARAMETER, SET_PARAMETER")
            ]
        )
        self._respond(template, cseq)
        return template.status

    def _describe(self, url: str, headers: rtsp.Headers, cseq: str) -> int:
        scenario = self._mount.scenario
        if headers.get("Require") and self._behaviour.require_rejected:
            template = scenario.require_rejected or synthesized("551 Option not supported")
            self._respond(template, cseq, [("Unsupported", headers.get("Require") or "")])
            return template.status
        self._describe_url = url
        message = scenario.describe.copy()
        message.body = self._mount.sdp
        if message.synthesized:
            # A case that publishes only an SDP gets the Content-Base most cameras send.
            message.set("Content-Base", url.rstrip("/") + "/")
        message.set("Content-Type", message.get("Content-Type") or "application/sdp")
        self._respond(message, cseq)
        return message.status

    def _base(self) -> str:
        describe = self._mount.scenario.describe
        base = describe.get("Content-Base") or describe.get("Content-Location")
        if base and not describe.synthesized:
            return rewrite_addresses(base, self._mount.port)
        return self._describe_url.rstrip("/") + "/"

    def _section_for(self, url: str) -> MediaSection | None:
        """Find the media section a SETUP URL names, comparing paths and queries as cameras do."""
        requested = path_view(rtsp.strip_credentials(url))
        base = self._base()
        for section in self._mount.sections:
            if not section.control:
                continue
            expected = path_view(rtsp.strip_credentials(join_control(base, section.control)))
            if requested == expected:
                return section
        if len([section for section in self._mount.sections if section.kind in ("video", "audio")]) == 1:
            # One stream and a control that is the base itself ("*" or empty).
            for section in self._mount.sections:
                if section.control in ("", "*") and requested.rstrip("/") == path_view(base).rstrip("/"):
                    return section
        return None

    def _setup(self, url: str, headers: rtsp.Headers, cseq: str) -> int:
        section = self._section_for(url)
        if section is None:
            self._emit("setup_unmatched", url=url, base=self._base())
            self._respond(synthesized("404 Not Found"), cseq)
            return 404

        # The case's SETUP responses are used in order; the last one repeats.
        templates = self._mount.scenario.setups
        template = (
            templates[min(self._setup_count, len(templates) - 1)] if templates else None
        ) or synthesized(headers=[("Session", f"{self._session_id};timeout=60")])
        self._setup_count += 1
        template_transport = template.get("Transport") or "RTP/AVP/TCP;unicast"
        ssrc_text = re.search(r"(?i)ssrc\s*=\s*([0-9a-fA-F ]+)", template_transport)
        ssrc = int(ssrc_text.group(1).strip() or "0", 16) if ssrc_text else 0
        track = StreamTrack(
            section, -1, ssrc or random.getrandbits(32), random.getrandbits(16), random.getrandbits(32)
        )
        track.audio = self._mount.audio.get(section.index)

        requested = rtsp.parse_transport(headers.get("Transport") or "")
        if requested.tcp or requested.client_port is None:
            channels = requested.interleaved or (2 * len(self._tracks), 2 * len(self._tracks) + 1)
            if self._behaviour.own_channels:
                channels = (channels[0] + 4, channels[1] + 4)
            track.channel = channels[0]
            transport = _rewrite_transport(
                template_transport, tcp=True, first=channels[0], second=channels[1]
            )
            self._complete_setup(template, cseq, track, transport)
            return template.status

        # Binding the server's UDP ports is asynchronous, so the response goes out from there.
        rtp_port, rtcp_port = requested.client_port
        asyncio.ensure_future(
            self._finish_udp_setup(template, cseq, track, rtp_port, rtcp_port, template_transport)
        )
        return template.status

    async def _finish_udp_setup(
        self,
        template: Message,
        cseq: str,
        track: StreamTrack,
        rtp_port: int,
        rtcp_port: int,
        template_transport: str,
    ) -> None:
        """Bind the server's RTP and RTCP ports; what the client sends to them counts as liveness."""
        loop = asyncio.get_running_loop()
        rtp_transport, _ = await loop.create_datagram_endpoint(
            lambda: _UdpSink(self), local_addr=("127.0.0.1", 0)
        )
        rtcp_transport, _ = await loop.create_datagram_endpoint(
            lambda: _UdpSink(self), local_addr=("127.0.0.1", 0)
        )
        self._udp_transports += [rtp_transport, rtcp_transport]
        server_ports = (
            rtp_transport.get_extra_info("sockname")[1],
            rtcp_transport.get_extra_info("sockname")[1],
        )
        track.udp = (rtp_transport, (self._peer, rtp_port))
        track.udp_rtcp = (rtcp_transport, (self._peer, rtcp_port))
        transport = _rewrite_transport(
            template_transport, tcp=False, first=rtp_port, second=rtcp_port, server=server_ports
        )
        self._complete_setup(template, cseq, track, transport)

    def _complete_setup(self, template: Message, cseq: str, track: StreamTrack, transport: str) -> None:
        session_value = template.get("Session")
        extra = [("Transport", transport)]
        if session_value is None:
            extra.append(("Session", f"{self._session_id};timeout=60"))
        self._session_timeout = self._timeout_of(session_value)
        self._tracks.append(track)
        self._respond(template, cseq, extra)
        self._emit(
            "setup",
            kind=self._kind_of(track.section),
            control=track.section.control,
            ssrc=f"{track.ssrc:08x}",
            channel=track.channel,
            udp=track.udp is not None,
        )

    def _kind_of(self, section: MediaSection) -> str:
        return "backchannel" if is_backchannel(self._mount.sections, section) else section.kind

    def _timeout_of(self, session_value: str | None) -> float:
        if self._behaviour.session_timeout:
            return self._behaviour.session_timeout
        if session_value:
            match = re.search(r"(?i)timeout\s*=\s*(\d+)", session_value)
            if match:
                return float(match.group(1))
        return 60.0

    def _play(self, url: str, headers: rtsp.Headers, cseq: str) -> int:
        if not self._tracks:
            self._respond(synthesized("455 Method Not Valid in This State"), cseq)
            return 455

        template = self._mount.scenario.play
        extra: list[tuple[str, str]] = []
        if template is not None:
            self._apply_rtp_info(template.get("RTP-Info") or "")
        else:
            template = synthesized(headers=[("Range", "npt=0.000-")])
            base = self._base()
            entries = [
                f"url={join_control(base, track.section.control)};seq={track.seq};rtptime={track.ts}"
                for track in self._tracks
            ]
            extra.append(("RTP-Info", ",".join(entries)))
        if template.get("Session") is None:
            extra.append(("Session", self._session_id))

        if self._behaviour.rtcp_before_play:
            for track in self._tracks:
                self._send_rtcp(track, _sender_report(track))
            self._emit("rtcp_before_play")
        if self._behaviour.stale_session:
            # The earlier session's packets surround the PLAY response, so its
            # SSRC is the first one a client sees on either side of it.
            self._stale_task = asyncio.ensure_future(self._stale_stream())
            self._send_stale_frame(self._stale_ghost())
        self._respond(template, cseq, extra)
        if self._behaviour.stale_session:
            self._send_stale_frame(self._stale_ghost())

        if self._stream_task is None:
            self._last_keepalive = time.monotonic()
            self._stream_task = asyncio.ensure_future(self._stream())
        self._emit(
            "play",
            tracks=[
                {"kind": self._kind_of(t.section), "ssrc": f"{t.ssrc:08x}", "seq": t.seq, "rtptime": t.ts}
                for t in self._tracks
            ],
        )
        return template.status

    def _apply_rtp_info(self, value: str) -> None:
        """Start each track where the case's RTP-Info states, unless it gives placeholders (seq 0, rtptime 0)."""
        for entry in rtsp.parse_rtp_info(value):
            for track in self._tracks:
                control = track.section.control
                if control and entry.url.rstrip("/").endswith(control.rstrip("/").rsplit("/", 1)[-1]):
                    if (
                        entry.seq is not None
                        and entry.rtptime is not None
                        and (entry.seq, entry.rtptime) != (0, 0)
                    ):
                        track.seq, track.ts = entry.seq, entry.rtptime
                    if entry.ssrc:
                        track.ssrc = entry.ssrc
                    break

    def _get_parameter(self, url: str, headers: rtsp.Headers, cseq: str) -> int:
        if self._behaviour.get_parameter_unanswered:
            self._emit("unanswered", method="GET_PARAMETER")
            return 0
        return self._parameter_ok(url, headers, cseq)

    def _parameter_ok(self, url: str, headers: rtsp.Headers, cseq: str) -> int:
        self._respond(synthesized(headers=[("Session", self._session_id)]), cseq)
        return 200

    def _teardown(self, url: str, headers: rtsp.Headers, cseq: str) -> int:
        template = self._mount.scenario.teardown or synthesized()
        self._respond(template, cseq)
        if self._transport is not None:
            self._transport.close()
        return template.status

    # --- streaming --------------------------------------------------------------

    def _send_rtp(
        self,
        track: StreamTrack,
        marker: bool,
        payload_type: int,
        ts: int,
        payload: bytes,
        ssrc: int | None = None,
    ) -> None:
        header = struct.pack(
            ">BBHII",
            0x80,
            (0x80 if marker else 0) | payload_type,
            track.seq,
            ts & 0xFFFFFFFF,
            track.ssrc if ssrc is None else ssrc,
        )
        track.seq = (track.seq + 1) & 0xFFFF
        track.packets += 1
        track.octets += len(payload)
        self._send_packet(track, header + payload, rtcp=False)

    def _send_packet(self, track: StreamTrack, packet: bytes, rtcp: bool) -> None:
        if track.udp is not None:
            sink = track.udp_rtcp if rtcp else track.udp
            if sink is not None:
                sink[0].sendto(packet, sink[1])
            return
        channel = track.channel + (1 if rtcp else 0)
        self._write(struct.pack(">BBH", 0x24, channel, len(packet)) + packet)

    def _send_rtcp(self, track: StreamTrack, packet: bytes) -> None:
        self._send_packet(track, packet, rtcp=True)

    async def _stream(self) -> None:
        """Send the clip in real time, in decode order, looping with continuous timestamps."""
        loop = asyncio.get_running_loop()
        plan = self._mount.video
        video = next((track for track in self._tracks if track.section.kind == "video"), None)
        audio_tracks = [track for track in self._tracks if track.audio is not None]
        start = loop.time()
        frame_index = 0
        loop_ticks = 0
        sent = 0
        next_periodic = 0.0
        while True:
            elapsed = loop.time() - start
            self._check_session()
            frame = plan.frames[frame_index]
            if video is not None:
                outlier = self._timestamp_fault(elapsed, video.ts + loop_ticks + frame.pts)
                self._send_picture(video, frame, video.ts + loop_ticks + frame.pts + self._ts_shift + outlier)
            for track in audio_tracks:
                self._send_audio(track, elapsed, self._ts_shift)
            if elapsed >= next_periodic:
                next_periodic = elapsed + RTCP_INTERVAL_SECONDS
                self._send_periodic(video)
            sent += 1
            frame_index += 1
            if frame_index == len(plan.frames):
                frame_index = 0
                loop_ticks += plan.duration
            await asyncio.sleep(max(0.0, start + sent / plan.fps - loop.time()))

    def _timestamp_fault(self, elapsed: float, ts: int) -> int:
        """Apply the next timestamp fault when it is due; return a one-picture offset (outliers)."""
        behaviour = self._behaviour
        kinds = [
            kind
            for kind, wanted in (
                ("step", behaviour.timestamp_step),
                ("outlier", behaviour.timestamp_outlier),
                ("reset", behaviour.timestamp_reset),
            )
            if wanted
        ]
        if not kinds or elapsed < self._next_fault:
            return 0
        self._next_fault += behaviour.fault_interval
        kind = kinds[self._fault_count % len(kinds)]
        self._fault_count += 1
        self._emit("timestamp_fault", kind=kind)
        if kind == "step":
            self._ts_shift += int(behaviour.timestamp_step * VIDEO_CLOCK)
        elif kind == "reset":
            self._ts_shift = -ts  # the next picture is stamped 0
        else:
            return int(behaviour.timestamp_outlier * VIDEO_CLOCK)
        return 0

    def _send_picture(self, video: StreamTrack, frame: PlannedFrame, ts: int) -> None:
        behaviour = self._behaviour
        payload_type = behaviour.payload_type if behaviour.payload_type >= 0 else video.section.payload_type
        if payload_type is None or frame.skip:
            return
        if self._transport is not None and self._transport.get_write_buffer_size() > MAX_SEND_BUFFER:
            return
        for packet in frame.packets:
            if packet.kind == "foreign":
                self._send_rtp(video, False, behaviour.foreign_payload_type, ts, packet.payload)
            else:
                self._send_rtp(video, packet.marker, payload_type, ts + packet.ts_offset, packet.payload)

    def _send_periodic(self, video: StreamTrack | None) -> None:
        """Send each track's sender report and, if the camera does that, data on channels that were not set up."""
        for track in self._tracks:
            report = _sender_report(track)
            if self._behaviour.malformed_rtcp_sdes:
                report += _unterminated_sdes(track.ssrc)
            self._send_rtcp(track, report)
        if self._behaviour.unassigned_channel_data and video is not None and video.udp is None:
            channel = max(track.channel for track in self._tracks) + 2
            packet = struct.pack(">BBHII", 0x80, 96, 1, 0, 0x0BADF00D) + b"\x00" * 32
            for extra_channel in (channel, channel + 1, channel + 6):
                self._write(struct.pack(">BBH", 0x24, extra_channel, len(packet)) + packet)

    def _send_audio(self, track: StreamTrack, elapsed: float, video_shift: int) -> None:
        plan = track.audio
        assert plan is not None
        due = int(elapsed * plan.clock_rate)
        shift = video_shift * plan.clock_rate // VIDEO_CLOCK
        while track.audio_sent_ticks <= due:
            payload, ticks = plan.packets[track.audio_index % len(plan.packets)]
            track.audio_index += 1
            payload_type = track.section.payload_type or 0
            self._send_rtp(track, True, payload_type, track.ts + track.audio_sent_ticks + shift, payload)
            track.audio_sent_ticks += ticks

    def _stale_ghost(self) -> StreamTrack | None:
        """Return the video track of the earlier session: another SSRC, sequence and clock, same channel."""
        if self._ghost is None:
            video = next((track for track in self._tracks if track.section.kind == "video"), None)
            if video is None or video.section.payload_type is None:
                return None
            self._ghost = StreamTrack(
                video.section,
                video.channel,
                random.getrandbits(32),
                random.getrandbits(16),
                random.getrandbits(32),
                video.udp,
                video.udp_rtcp,
            )
            self._emit("stale_session", ssrc=f"{self._ghost.ssrc:08x}")
        return self._ghost

    def _send_stale_frame(self, ghost: StreamTrack | None) -> None:
        plan = self._mount.stale_video
        if ghost is None or plan is None or ghost.section.payload_type is None:
            return
        frame = plan.frames[self._ghost_index % len(plan.frames)]
        ts = ghost.ts + frame.pts + (self._ghost_index // len(plan.frames)) * plan.duration
        for packet in frame.packets:
            if packet.kind != "foreign":
                self._send_rtp(ghost, packet.marker, ghost.section.payload_type, ts, packet.payload)
        self._ghost_index += 1

    async def _stale_stream(self) -> None:
        """Keep sending the earlier session's packets for ``stale_session`` seconds."""
        plan = self._mount.stale_video
        if plan is None:
            return
        loop = asyncio.get_running_loop()
        start = loop.time()
        while loop.time() - start < self._behaviour.stale_session:
            await asyncio.sleep(1 / plan.fps)
            self._send_stale_frame(self._stale_ghost())

    def _check_session(self) -> None:
        idle = time.monotonic() - self._last_keepalive
        if (
            idle > self._session_timeout + 1.0
            and self._transport is not None
            and not self._transport.is_closing()
        ):
            self._emit("session_expired", idle_seconds=round(idle, 1), timeout_seconds=self._session_timeout)
            self._transport.close()


def _rewrite_transport(
    template: str, *, tcp: bool, first: int, second: int, server: tuple[int, int] | None = None
) -> str:
    """Fill a case's Transport value with this session's channels or ports, keeping its other quirks."""
    items = template.strip().split(";")
    out: list[str] = []
    seen: set[str] = set()
    for index, item in enumerate(items):
        key = item.split("=", 1)[0].strip().lower()
        if index == 0 and key.startswith("rtp/avp"):
            if tcp and "/tcp" not in key:
                out.append("RTP/AVP/TCP")
            elif not tcp and "/tcp" in key:
                out.append("RTP/AVP")
            else:
                out.append(item)
            continue
        seen.add(key)
        if key == "interleaved":
            if tcp:
                out.append(f"{item.split('=', 1)[0]}={first}-{second}")
        elif key in ("client_port", "server_port"):
            if tcp:
                continue
            single = "-" not in item.split("=", 1)[1]
            low, high = (first, second) if key == "client_port" else (server or (first, second))
            out.append(f"{item.split('=', 1)[0]}={low}" + ("" if single else f"-{high}"))
        else:
            out.append(item)
    if tcp and "interleaved" not in seen:
        out.append(f"interleaved={first}-{second}")
    if not tcp and "client_port" not in seen:
        out.append(f"client_port={first}-{second}")
    if not tcp and "server_port" not in seen and server is not None:
        out.append(f"server_port={server[0]}-{server[1]}")
    return ";".join(out)


def _sender_report(track: StreamTrack) -> bytes:
    now = time.time() + NTP_UNIX_OFFSET
    seconds = int(now)
    fraction = int((now - seconds) * (1 << 32)) & 0xFFFFFFFF
    return struct.pack(
        ">BBHIIIIII",
        0x80,
        200,
        6,
        track.ssrc,
        seconds & 0xFFFFFFFF,
        fraction,
        track.ts & 0xFFFFFFFF,
        track.packets & 0xFFFFFFFF,
        track.octets & 0xFFFFFFFF,
    )


def _unterminated_sdes(ssrc: int) -> bytes:
    """Build an SDES chunk whose CNAME item lacks the end item, as Hanwha QNV-8080R cameras send it."""
    return struct.pack(">BBHI", 0x81, 202, 3, ssrc) + b"\x01\x06camera"
