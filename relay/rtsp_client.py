"""Pantau's own asyncio RTSP client: one TCP connection per camera, RTP over TCP or UDP.

The client speaks RTSP the way cameras need it, not the way RFC 2326 hopes:

- Responses are matched in order, not by CSeq, because there is never more
  than one request waiting and some cameras echo CSeq wrongly.
- Keep-alives are never awaited. Every one is an OPTIONS request with the
  Session header, plus an RTCP receiver report per track (over TCP too),
  because cameras differ in what they count as liveness. GET_PARAMETER is
  added only while the camera lists it in Public and responds to it: some
  cameras list it and never respond, and a client that waits for that
  response, or relies on it alone, loses a healthy stream at the session
  timeout.
- Interleaved data before the PLAY reply, or on a channel that was not set
  up, is dropped: old LIVE555 servers push a stale session's packets into a
  new connection. The SSRCs seen before the PLAY reply are remembered
  (``pre_play_ssrcs``), so the ingest can tell that session's packets from
  the new one's.
- TEARDOWN is sent before closing, so those servers release the session.
"""

from __future__ import annotations

import asyncio
import random
import socket
import ssl
from collections.abc import Callable
from typing import cast

from proto import rtsp
from proto.rtp import receiver_report

# Called with (buffer, start, end) for every RTP or RTCP packet on a channel.
PacketHandler = Callable[[bytes | bytearray, int, int], None]

USER_AGENT = "Pantau"
MAX_HEAD_BYTES = 64 * 1024
KEEPALIVE_MAX_INTERVAL = 30.0
MAX_PRE_PLAY_SSRCS = 8  # per channel; a stale session has one, a flood is not worth more


class RtspError(Exception):
    """A camera session failed; ``code`` is a stable identifier for APIs and logs."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


class _Connection(asyncio.Protocol):
    """The TCP stream: RTSP messages and ``$``-framed interleaved packets."""

    def __init__(self, client: RtspClient) -> None:
        self._client = client
        self._buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
        self._client._on_connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        client = self._client
        client.last_receive = client.loop.time()
        buf = self._buf
        buf += data
        pos = 0
        size = len(buf)
        handlers = client.handlers
        playing = client.playing
        while pos < size:
            if buf[pos] == 0x24:  # '$': interleaved frame
                if pos + 4 > size:
                    break
                length = (buf[pos + 2] << 8) | buf[pos + 3]
                end = pos + 4 + length
                if end > size:
                    break
                handler = handlers.get(buf[pos + 1]) if playing else None
                if handler is not None:
                    handler(buf, pos + 4, end)
                else:
                    client.dropped_interleaved += 1
                    if not playing:
                        client.note_pre_play_packet(buf[pos + 1], buf, pos + 4, end)
                pos = end
                continue
            consumed = self._message(buf, pos, size)
            if consumed < 0:
                break
            pos += consumed
            playing = client.playing
            if self.transport is None or self.transport.is_closing():
                break
        if pos:
            del buf[:pos]
        if len(buf) > MAX_HEAD_BYTES + (1 << 20):
            client._fail(rtsp.RtspProtocolError("message larger than 1 MB"))

    def _message(self, buf: bytearray, pos: int, size: int) -> int:
        """Parse one RTSP message at ``pos``; return bytes used or -1 when incomplete."""
        if size - pos < 5:
            return -1
        head_start = bytes(buf[pos : pos + 5])
        if not (head_start.upper().startswith(b"RTSP/") or head_start[:1].isalpha()):
            # Neither '$' nor a message: skip to the next plausible start.
            next_frame = buf.find(b"$", pos + 1)
            next_message = buf.find(b"RTSP/", pos + 1)
            candidates = [index for index in (next_frame, next_message) if index >= 0]
            skip_to = min(candidates) if candidates else size
            self._client.garbage_bytes += skip_to - pos
            if not self._client.playing:
                self._client._fail(rtsp.RtspProtocolError("the server sent data that is not RTSP"))
            return skip_to - pos
        end, separator = rtsp.find_header_end(buf, pos)
        if end < 0:
            if size - pos > MAX_HEAD_BYTES:
                self._client._fail(rtsp.RtspProtocolError("RTSP header larger than 64 KiB"))
                return size - pos
            return -1
        try:
            first_line, headers = rtsp.parse_head(bytes(buf[pos:end]))
            length = rtsp.content_length(headers)
        except rtsp.RtspProtocolError as exc:
            self._client._fail(exc)
            return size - pos
        body_start = end + separator
        if body_start + length > size:
            return -1
        body = bytes(buf[body_start : body_start + length])
        self._client._on_message(first_line, headers, body)
        return body_start + length - pos


class _UdpReceiver(asyncio.DatagramProtocol):
    def __init__(self, client: RtspClient, channel: int) -> None:
        self._client = client
        self._channel = channel
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.DatagramTransport, transport)
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        client = self._client
        if not client.playing or addr[0] != client.peer_host:
            client.dropped_interleaved += 1
            if not client.playing and addr[0] == client.peer_host:
                client.note_pre_play_packet(self._channel, data, 0, len(data))
            return
        client.last_receive = client.loop.time()
        handler = client.handlers.get(self._channel)
        if handler is not None:
            handler(data, 0, len(data))

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and the like; the read timeout decides.
        pass


class RtspClient:
    """One RTSP session with a camera.

    The caller runs ``connect``, ``describe``, ``setup`` per track and
    ``play``, then awaits ``run`` until the session fails, and finally calls
    ``close``. Every failure is raised as :class:`RtspError`.
    """

    def __init__(
        self,
        url: str,
        *,
        connect_timeout: float,
        read_timeout: float,
        transport: str = "tcp",
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.target = rtsp.split_url(url)
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self.transport_mode = transport
        self.handlers: dict[int, PacketHandler] = {}
        self.playing = False
        self.last_receive = 0.0
        self.dropped_interleaved = 0
        self.garbage_bytes = 0
        self.peer_host = ""
        self.session: rtsp.SessionHeader | None = None
        self.public_methods: set[str] = set()
        # SSRCs of RTP packets that arrived on each channel before the PLAY reply.
        self.pre_play_ssrcs: dict[int, set[int]] = {}
        self.rtcp_channels: list[int] = []  # interleaved RTCP channels, for receiver reports
        self.keepalive_get_parameter: bool | None = None  # None: not tried yet, True: the camera responds to it, False: it does not
        self._get_parameter_cseq: int | None = None
        self._on_play_response: Callable[[rtsp.Response], None] | None = None
        self._connection: _Connection | None = None
        self._cseq = 0
        self._waiter: asyncio.Future[rtsp.Response] | None = None
        self._pending_method = ""
        self._failure: asyncio.Future[None] = self.loop.create_future()
        self._authenticator: rtsp.Authenticator | None = None
        self._udp: list[_UdpReceiver] = []
        self._next_channel = 0
        self._rtcp_ssrc = random.getrandbits(32)
        self._udp_rtcp_targets: list[tuple[_UdpReceiver, tuple[str, int]]] = []

    # --- connection ---------------------------------------------------------------

    async def connect(self) -> None:
        context: ssl.SSLContext | None = None
        if self.target.tls:
            # NOTE: cameras ship self-signed certificates, so rtsps:// encrypts
            # but does not verify the camera's identity.
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, protocol = await self.loop.create_connection(
                    lambda: _Connection(self), self.target.host, self.target.port, ssl=context
                )
        except TimeoutError as exc:
            what = "TCP connection and TLS handshake" if self.target.tls else "TCP connection"
            hint = "; check that the camera speaks RTSP over TLS (rtsps://)" if self.target.tls else ""
            raise RtspError(
                "connect_timeout",
                f"no {what} with {self.target.host}:{self.target.port} within {self._connect_timeout:g} s{hint}",
            ) from exc
        except ConnectionRefusedError as exc:
            raise RtspError(
                "connection_refused", f"{self.target.host}:{self.target.port} refused the connection"
            ) from exc
        except socket.gaierror as exc:
            raise RtspError("dns_error", f"cannot resolve {self.target.host}: {exc.strerror}") from exc
        except (OSError, ssl.SSLError) as exc:
            raise RtspError(
                "connect_failed", f"cannot connect to {self.target.host}:{self.target.port}: {exc}"
            ) from exc
        self._connection = protocol
        peer = protocol.transport.get_extra_info("peername") if protocol.transport else None
        self.peer_host = peer[0] if peer else self.target.host
        self.last_receive = self.loop.time()

    def _on_connection_lost(self, exc: Exception | None) -> None:
        reason = f"connection lost: {exc}" if exc else "the camera closed the connection"
        self._fail(RtspError("connection_closed", reason))

    def _fail(self, exc: Exception) -> None:
        if isinstance(exc, rtsp.RtspProtocolError):
            exc = RtspError("protocol_error", str(exc))
        if not self._failure.done():
            self._failure.set_exception(exc)
            # run() retrieves it; marking it retrieved here avoids the
            # "exception was never retrieved" warning when run() is not waiting.
            self._failure.exception()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)
        if self._connection is not None and self._connection.transport is not None:
            self._connection.transport.close()

    # --- requests -----------------------------------------------------------------

    def _on_message(self, first_line: str, headers: rtsp.Headers, body: bytes) -> None:
        if not first_line.upper().startswith("RTSP/"):
            self._answer_server_request(first_line, headers)
            return
        try:
            status, reason = rtsp.parse_status_line(first_line)
        except rtsp.RtspProtocolError as exc:
            self._fail(exc)
            return
        response = rtsp.Response(status, reason, headers, body)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            self._waiter = None
            if status == 200 and self._pending_method == "PLAY":
                # Packets that follow in the same read belong to this session, so
                # what the reply states about them (RTP-Info) is applied first.
                if self._on_play_response is not None:
                    self._on_play_response(response)
                self.playing = True
            waiter.set_result(response)
            return
        # Otherwise it is the response to a keep-alive, which is not awaited.
        if self._get_parameter_cseq is not None and response.cseq == self._get_parameter_cseq:
            self.keepalive_get_parameter = 200 <= status < 300
            self._get_parameter_cseq = None

    def _answer_server_request(self, first_line: str, headers: rtsp.Headers) -> None:
        """Respond to a request from the camera (some send OPTIONS or GET_PARAMETER as pings)."""
        method = first_line.split(" ", 1)[0].upper()
        cseq = headers.get("CSeq", "0")
        status = "200 OK" if method in ("OPTIONS", "GET_PARAMETER", "SET_PARAMETER") else "501 Not Implemented"
        self._send(f"RTSP/1.0 {status}\r\nCSeq: {cseq}\r\n\r\n".encode())

    def _send(self, data: bytes) -> None:
        if self._connection is None or self._connection.transport is None:
            raise RtspError("connection_closed", "not connected")
        self._connection.transport.write(data)

    def _headers(self, method: str, url: str, extra: list[tuple[str, str]]) -> list[tuple[str, str]]:
        self._cseq += 1
        headers = [("CSeq", str(self._cseq)), ("User-Agent", USER_AGENT)]
        if self._authenticator is not None:
            headers.append(("Authorization", self._authenticator.header(method, url)))
        if self.session is not None:
            headers.append(("Session", self.session.id))
        return headers + extra

    async def request(
        self, method: str, url: str, extra: list[tuple[str, str]] | None = None
    ) -> rtsp.Response:
        """Send a request and return its response, authenticating once on 401."""
        response = await self._roundtrip(method, url, extra or [])
        if response.status != 401:
            return response

        username = self.target.username
        password = self.target.password or ""
        if username is None:
            raise RtspError("unauthorized", f"{method} needs credentials and the camera URL has none")
        if self._authenticator is not None and not _stale_nonce(response):
            # One authenticated attempt per request: retrying wrong credentials
            # gets accounts locked on several camera brands.
            raise RtspError("unauthorized", f"the camera rejected the credentials for user {username!r}")
        challenge = rtsp.choose_challenge(rtsp.parse_challenges(response.headers.get_all("WWW-Authenticate")))
        if challenge is None:
            raise RtspError("unauthorized", "401 without a Basic or Digest challenge")
        self._authenticator = rtsp.Authenticator(challenge, username, password)
        response = await self._roundtrip(method, url, extra or [])
        if response.status == 401:
            raise RtspError("unauthorized", f"the camera rejected the credentials for user {username!r}")
        return response

    async def _roundtrip(self, method: str, url: str, extra: list[tuple[str, str]]) -> rtsp.Response:
        if self._failure.done():
            self._failure.result()  # raises the recorded failure
        self._waiter = self.loop.create_future()
        self._pending_method = method
        self._send(rtsp.build_request(method, url, self._headers(method, url, extra)))
        try:
            async with asyncio.timeout(self._read_timeout):
                return await self._waiter
        except TimeoutError as exc:
            raise RtspError("response_timeout", f"no reply to {method} within {self._read_timeout:g} s") from exc

    # --- handshake ----------------------------------------------------------------

    async def options(self) -> None:
        response = await self.request("OPTIONS", self.target.url)
        public = response.headers.get("Public") or ""
        self.public_methods = {item.strip().upper() for item in public.split(",") if item.strip()}

    async def describe(self) -> tuple[bytes, str]:
        """Return the SDP body and the base URL for control attributes.

        DESCRIBE carries no ``Require: www.onvif.org/ver20/backchannel``:
        Pantau never talks back to a camera, and some cameras (Axis door
        stations) reject that header with 551.
        """
        url = self.target.url
        response = await self.request("DESCRIBE", url, [("Accept", "application/sdp")])
        _raise_for_status("DESCRIBE", response)
        if not response.body.strip():
            raise RtspError("protocol_error", "DESCRIBE returned no session description")
        base = response.headers.get("Content-Base") or response.headers.get("Content-Location") or url
        return response.body, rtsp.sanitize_base_url(base, url)

    async def setup(self, control_url: str) -> tuple[int, rtsp.TransportHeader]:
        """Set up one track; return the RTP channel number packets arrive on."""
        rtp_channel = self._next_channel
        self._next_channel += 2
        if self.transport_mode == "udp":
            ports = await self._open_udp(rtp_channel)
            transport = f"RTP/AVP;unicast;client_port={ports[0]}-{ports[1]}"
        else:
            transport = f"RTP/AVP/TCP;unicast;interleaved={rtp_channel}-{rtp_channel + 1}"
        response = await self.request("SETUP", control_url, [("Transport", transport)])
        if response.status == 461:
            raise RtspError(
                "unsupported_transport",
                f"the camera does not support RTP over {self.transport_mode.upper()}; "
                f"try transport: {'udp' if self.transport_mode == 'tcp' else 'tcp'}",
            )
        _raise_for_status("SETUP", response)
        session_value = response.headers.get("Session")
        if session_value and self.session is None:
            self.session = rtsp.parse_session(session_value)
        parsed = rtsp.parse_transport(response.headers.get("Transport") or "")
        if self.transport_mode == "tcp" and parsed.interleaved is not None and parsed.interleaved[0] != rtp_channel:
            # The camera chose its own channels; follow them.
            rtp_channel = parsed.interleaved[0]
        if self.transport_mode == "udp" and parsed.server_port is not None:
            receiver = self._udp[-1]
            self._udp_rtcp_targets.append((receiver, (self.peer_host, parsed.server_port[1])))
        if self.transport_mode == "tcp":
            self.rtcp_channels.append(rtp_channel + 1)
        return rtp_channel, parsed

    def note_pre_play_packet(self, channel: int, buf: bytes | bytearray, start: int, end: int) -> None:
        """Remember the SSRC of an RTP packet that arrived before the PLAY reply."""
        if end - start < 12 or buf[start] >> 6 != 2 or 200 <= buf[start + 1] <= 207:
            return  # not RTP: RTCP packet types 200 to 207 sit where RTP has marker and payload type
        ssrcs = self.pre_play_ssrcs.setdefault(channel, set())
        if len(ssrcs) < MAX_PRE_PLAY_SSRCS:
            ssrcs.add(int.from_bytes(buf[start + 8 : start + 12], "big"))

    async def play(
        self, url: str, on_response: Callable[[rtsp.Response], None] | None = None
    ) -> rtsp.Response:
        """Send PLAY; ``on_response`` runs with a 200 reply before any packet that follows it."""
        self._on_play_response = on_response
        response = await self.request("PLAY", url, [("Range", "npt=0.000-")])
        _raise_for_status("PLAY", response)
        self.playing = True
        self.last_receive = self.loop.time()
        return response

    async def _open_udp(self, channel: int) -> tuple[int, int]:
        """Bind an even/odd UDP port pair for RTP and RTCP."""
        for _ in range(20):
            rtp_port = random.randrange(20000, 60000, 2)
            try:
                _, rtp_proto = await self.loop.create_datagram_endpoint(
                    lambda: _UdpReceiver(self, channel), local_addr=("0.0.0.0", rtp_port)
                )
            except OSError:
                continue
            try:
                _, rtcp_proto = await self.loop.create_datagram_endpoint(
                    lambda: _UdpReceiver(self, channel + 1), local_addr=("0.0.0.0", rtp_port + 1)
                )
            except OSError:
                if rtp_proto.transport is not None:
                    rtp_proto.transport.close()
                continue
            self._udp += [rtp_proto, rtcp_proto]
            return rtp_port, rtp_port + 1
        raise RtspError("udp_ports", "no free UDP port pair for RTP")

    # --- streaming ----------------------------------------------------------------

    async def run(self) -> None:
        """Keep the session alive until it fails; always raises :class:`RtspError`."""
        timeout = self.session.timeout_seconds if self.session else rtsp.DEFAULT_SESSION_TIMEOUT
        keepalive_interval = max(5.0, min(timeout / 2, KEEPALIVE_MAX_INTERVAL))
        next_keepalive = self.loop.time() + keepalive_interval
        check_interval = min(1.0, self._read_timeout / 4)
        while True:
            done, _ = await asyncio.wait([self._failure], timeout=check_interval)
            if done:
                self._failure.result()
                raise RtspError("connection_closed", "the session ended")
            now = self.loop.time()
            if now - self.last_receive > self._read_timeout:
                raise RtspError("read_timeout", f"no data from the camera for {self._read_timeout:g} s")
            if now >= next_keepalive:
                next_keepalive = now + keepalive_interval
                self._send_keepalive()

    def fail(self, code: str, reason: str) -> None:
        """End the session from outside (for example, no decodable video)."""
        self._fail(RtspError(code, reason))

    def _send_keepalive(self) -> None:
        """Send every kind of liveness a camera may count; no reply is awaited."""
        url = self.target.url
        try:
            self._send(rtsp.build_request("OPTIONS", url, self._headers("OPTIONS", url, [])))
            if self._get_parameter_cseq is not None:
                # The previous GET_PARAMETER is still unanswered: the camera ignores it.
                self.keepalive_get_parameter = False
                self._get_parameter_cseq = None
            if "GET_PARAMETER" in self.public_methods and self.keepalive_get_parameter is not False:
                headers = self._headers("GET_PARAMETER", url, [])
                self._get_parameter_cseq = self._cseq
                self._send(rtsp.build_request("GET_PARAMETER", url, headers))
            report = receiver_report(self._rtcp_ssrc, None)
            for channel in self.rtcp_channels:
                self._send(b"$" + bytes((channel,)) + len(report).to_bytes(2, "big") + report)
        except RtspError:
            return
        for receiver, address in self._udp_rtcp_targets:
            if receiver.transport is not None:
                receiver.transport.sendto(receiver_report(self._rtcp_ssrc, None), address)

    def close(self) -> None:
        """Send TEARDOWN without waiting and close every socket."""
        connection = self._connection
        if connection is not None and connection.transport is not None and not connection.transport.is_closing():
            if self.session is not None:
                try:
                    self._send(
                        rtsp.build_request(
                            "TEARDOWN", self.target.url, self._headers("TEARDOWN", self.target.url, [])
                        )
                    )
                except RtspError:
                    pass
            connection.transport.close()
        for receiver in self._udp:
            if receiver.transport is not None:
                receiver.transport.close()
        self.playing = False
        if not self._failure.done():
            self._failure.set_result(None)


def _stale_nonce(response: rtsp.Response) -> bool:
    for challenge in rtsp.parse_challenges(response.headers.get_all("WWW-Authenticate")):
        if challenge.params.get("stale", "").lower() == "true":
            return True
    return False


class RtspRedirect(RtspError):
    """A 3xx response with a Location header to request instead."""

    def __init__(self, location: str) -> None:
        super().__init__("redirect", "the camera redirected the request")
        self.location = location


def _raise_for_status(method: str, response: rtsp.Response) -> None:
    if 200 <= response.status < 300:
        return
    text = f"{method} returned {response.status} {response.reason}".strip()
    location = response.headers.get("Location")
    if 300 <= response.status < 400 and location:
        raise RtspRedirect(location)
    if response.status == 404:
        raise RtspError("not_found", f"{text}: wrong path or channel?")
    if response.status in (401, 403):
        raise RtspError("unauthorized", text)
    if response.status == 454:
        raise RtspError("session_not_found", text)
    raise RtspError("camera_error", text)
