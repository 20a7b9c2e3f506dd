"""HTTP-FLV fan-out: mux once per camera, write the same bytes to every client.

Frames are muxed into FLV tags once. Tags that arrive within one event-loop
iteration are joined and framed as one HTTP chunk, and that one ``bytes``
object is written straight to each client's transport: one write per client
per batch, no task or queue per client.

A client whose transport has more than ``PANTAU_CLIENT_BUFFER_BYTES``
unsent bytes gets nothing more until a keyframe arrives while it is below
that limit. It then resumes from that keyframe, so it never decodes a
broken GOP. A client that stays behind for ``PANTAU_SLOW_CLIENT_SECONDS``
is disconnected. Memory per client is therefore bounded by the limit plus
one batch, and a slow client never delays the others.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from proto import flv
from relay.camera import Camera
from relay.logs import get_logger
from relay.media import TIMEBASE, AudioInfo, Frame, VideoInfo


def _ms(ticks: int) -> int:
    return ticks * 1000 // TIMEBASE


def _chunk(data: bytes) -> bytes:
    """Frame ``data`` as one HTTP/1.1 chunk."""
    return b"%x\r\n%b\r\n" % (len(data), data)


class FlvClient:
    """One HTTP-FLV response; the handler awaits ``done``."""

    __slots__ = ("transport", "done", "skipping_since", "bytes_sent", "skipped_batches", "peer", "chunked")

    def __init__(self, transport: asyncio.Transport, peer: str, chunked: bool = True) -> None:
        self.transport = transport
        self.chunked = chunked  # False for HTTP/1.0 clients, whose body ends when the connection closes
        self.done: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.skipping_since: float | None = None
        self.bytes_sent = 0
        self.skipped_batches = 0
        self.peer = peer

    def finish(self, reason: str) -> None:
        if not self.done.done():
            self.done.set_result(reason)


class FlvFanout:
    """The FLV output of one camera, a sink of its frames."""

    def __init__(self, camera: Camera) -> None:
        self.camera = camera
        self.settings = camera.settings
        self.clients: list[FlvClient] = []
        self.log = get_logger(camera_id=camera.id, output="flv")
        self._video: VideoInfo | None = None
        self._audio: AudioInfo | None = None
        self._preamble = b""  # FLV header, metadata and sequence headers
        self._pending: list[bytes] = []
        self._pending_key_index = -1
        self._flush_scheduled = False
        self._outage_handle: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()
        self._join_cache: tuple[int, int, bytes] | None = None
        self.egress_bytes = 0
        self.skipped_frames = 0
        self.slow_disconnects = 0
        self.timestamp_ms = 0

    # --- sink ---------------------------------------------------------------------

    def on_stream_info(self, video: VideoInfo | None, audio: AudioInfo | None) -> None:
        old_config = (
            self._video.decoder_config if self._video else None,
            self._audio.specific_config if self._audio else None,
        )
        self._video = video if video is not None and video.relayed else None
        self._audio = audio if audio is not None and audio.relayed else None
        self._preamble = self._build_preamble()
        new_config = (
            self._video.decoder_config if self._video else None,
            self._audio.specific_config if self._audio else None,
        )
        if self.clients and new_config != old_config and any(new_config):
            # Parameters changed mid-stream: send fresh sequence headers before the next frame.
            self._pending.extend(self._sequence_headers(self.timestamp_ms))
            self._schedule_flush()

    def on_frame(self, frame: Frame) -> None:
        if frame.video:
            video = self._video
            if video is None:
                return
            if frame.key and self._outage_handle is not None:
                # The camera is back before the clients had to be let go.
                self._outage_handle.cancel()
                self._outage_handle = None
            dts_ms = _ms(frame.dts)
            cts_ms = _ms(frame.pts) - dts_ms
            if video.codec == "h265":
                tag = flv.hevc_frame(frame.key, dts_ms, cts_ms, frame.data)
            else:
                tag = flv.avc_frame(frame.key, dts_ms, cts_ms, frame.data)
            if frame.key and self._pending_key_index < 0:
                self._pending_key_index = len(self._pending)
        else:
            if self._audio is None:
                return
            dts_ms = _ms(frame.dts)
            tag = flv.aac_frame(dts_ms, frame.data)
        self.timestamp_ms = dts_ms
        self._pending.append(tag)
        self._schedule_flush()

    def on_stream_end(self, reason: str) -> None:
        self.flush()
        hold = self.settings.outage_hold_seconds
        if self.clients and self._outage_handle is None:
            self._outage_handle = self._loop.call_later(hold, self._end_clients, "camera_offline")

    def on_camera_removed(self, reason: str = "camera_removed") -> None:
        self._end_clients(reason)

    # --- clients ------------------------------------------------------------------

    def add_client(self, transport: asyncio.Transport, peer: str, chunked: bool = True) -> FlvClient:
        """Send the preamble and the GOP cache, then follow the live stream."""
        self.flush()
        if self._outage_handle is not None and self.camera.stream_live:
            self._outage_handle.cancel()
            self._outage_handle = None
        client = FlvClient(transport, peer, chunked)
        join = self._join_bytes()
        transport.write(_chunk(join) if chunked else join)
        client.bytes_sent += len(join)
        self.egress_bytes += len(join)
        self.clients.append(client)
        return client

    def remove_client(self, client: FlvClient) -> None:
        if client in self.clients:
            self.clients.remove(client)
        client.finish("closed")

    def _join_bytes(self) -> bytes:
        """Return preamble plus the GOP cache as tags, shared by joins within one frame."""
        gop = self.camera.gop
        key = (id(gop[0]) if gop else 0, len(gop))
        cached = self._join_cache
        if cached is not None and (cached[0], cached[1]) == key:
            return cached[2]
        parts = [self._preamble]
        for frame in gop:
            if frame.video and self._video is not None:
                dts_ms = _ms(frame.dts)
                cts_ms = _ms(frame.pts) - dts_ms
                mux = flv.hevc_frame if self._video.codec == "h265" else flv.avc_frame
                parts.append(mux(frame.key, dts_ms, cts_ms, frame.data))
            elif not frame.video and self._audio is not None:
                parts.append(flv.aac_frame(_ms(frame.dts), frame.data))
        data = b"".join(parts)
        self._join_cache = (key[0], key[1], data)
        return data

    def _build_preamble(self) -> bytes:
        video, audio = self._video, self._audio
        parts = [flv.file_header(audio is not None, video is not None)]
        metadata: dict[str, object] = {"duration": 0.0, "encoder": "Pantau"}
        if video is not None:
            metadata["width"] = float(video.width)
            metadata["height"] = float(video.height)
            metadata["videocodecid"] = float(flv.hevc_codec_id() if video.codec == "h265" else flv.CODEC_AVC)
            fps = self.camera.rate.fps or video.sps_fps
            if fps:
                metadata["framerate"] = round(float(fps), 3)
        if audio is not None:
            metadata["audiocodecid"] = 10.0
            metadata["audiosamplerate"] = float(audio.sample_rate)
            metadata["audiochannels"] = float(audio.channels)
            metadata["stereo"] = audio.channels > 1
        parts.append(flv.metadata_tag(metadata))
        parts.extend(self._sequence_headers(0))
        return b"".join(parts)

    def _sequence_headers(self, timestamp_ms: int) -> list[bytes]:
        headers = []
        video, audio = self._video, self._audio
        if video is not None and video.decoder_config is not None:
            if video.codec == "h265":
                headers.append(flv.hevc_sequence_header(video.decoder_config, timestamp_ms))
            else:
                headers.append(flv.avc_sequence_header(video.decoder_config, timestamp_ms))
        if audio is not None and audio.specific_config is not None:
            headers.append(flv.aac_sequence_header(audio.specific_config, timestamp_ms))
        return headers

    # --- writing ------------------------------------------------------------------

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        """Write the pending tags to every client, one write per client."""
        self._flush_scheduled = False
        pending = self._pending
        if not pending:
            return
        key_index = self._pending_key_index
        self._pending = []
        self._pending_key_index = -1
        self._join_cache = None
        if not self.clients:
            return

        data = b"".join(pending)
        chunk = _chunk(data)
        from_key: bytes | None = None
        from_key_raw: bytes | None = None
        limit = self.settings.client_buffer_bytes
        now = time.monotonic()
        finished: list[FlvClient] = []
        for client in self.clients:
            transport = client.transport
            if transport.is_closing():
                finished.append(client)
                continue
            buffered = transport.get_write_buffer_size()
            if client.skipping_since is None:
                if buffered <= limit:
                    transport.write(chunk if client.chunked else data)
                    client.bytes_sent += len(data)
                    continue
                client.skipping_since = now
                client.skipped_batches += 1
                self.skipped_frames += len(pending)
                self.log.info("client_skipping", peer=client.peer, buffered_bytes=buffered)
                continue
            # Behind: resume only at a keyframe, and only once the backlog drained.
            if key_index >= 0 and buffered <= limit:
                if from_key_raw is None:
                    from_key_raw = b"".join(pending[key_index:])
                    from_key = _chunk(from_key_raw)
                transport.write(from_key if client.chunked else from_key_raw)
                client.bytes_sent += len(from_key_raw)
                client.skipping_since = None
                continue
            client.skipped_batches += 1
            self.skipped_frames += len(pending)
            if now - client.skipping_since > self.settings.slow_client_seconds:
                self.slow_disconnects += 1
                self.log.info(
                    "client_too_slow",
                    peer=client.peer,
                    behind_seconds=round(now - client.skipping_since, 1),
                    buffered_bytes=buffered,
                )
                transport.abort()
                finished.append(client)
        self.egress_bytes += len(data) * (len(self.clients) - len(finished))
        for client in finished:
            self.remove_client(client)

    def _end_clients(self, reason: str) -> None:
        self._outage_handle = None
        if self.clients:
            self.log.info("clients_released", reason=reason, clients=len(self.clients))
        for client in list(self.clients):
            client.finish(reason)
        self.clients.clear()

    def stats(self) -> dict[str, Any]:
        return {
            "clients": len(self.clients),
            "egress_bytes": self.egress_bytes,
            "skipped_frames": self.skipped_frames,
            "slow_disconnects": self.slow_disconnects,
        }
