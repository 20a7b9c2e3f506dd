"""The service: the cameras file, the running cameras and their shared outputs."""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import Callable, Iterable
import time
from collections import Counter
from typing import Any

from recorder.recorder import Recorder
from relay.camera import STATUS_FIELDS, Camera
from relay.compliance import compliance_of
from relay.cameras import CameraConfig, CameraStore, CameraStoreError, EntryError, public_view
from relay.fanout import FlvFanout
from relay.hls import HlsStream
from relay.logs import get_logger
from relay.prober import ProbeManager
from relay.settings import Settings


MAX_START_SPREAD_SECONDS = 5.0
FLV_COUNTERS = ("egress_bytes", "skipped_frames", "slow_disconnects")


class Service:
    """Owns every camera and its outputs; the HTTP layer only calls into it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = CameraStore(settings.cameras_path)
        self.cameras: dict[str, Camera] = {}
        self.ephemeral: set[str] = set()  # cameras not written to the file (the demo camera)
        self.flv: dict[str, FlvFanout] = {}
        # Counters of FLV fan-outs already released, so metrics stay cumulative.
        self._flv_released: dict[str, dict[str, int]] = {}
        # Fields of GET /api/cameras/{id} that a PUT ignores, so a GET response can be sent back.
        self.read_only_fields: set[str] = {*STATUS_FIELDS, "probe", "compliance"}
        # Callables that yield extra Prometheus metric families (see relay.metrics).
        self.metric_sources: list[Callable[[], Iterable[Any]]] = []
        self.hls: dict[tuple[str, str], HlsStream] = {}  # (camera id, "fmp4" or "ts")
        self.hls_egress: Counter[tuple[str, str]] = Counter()  # segment bytes served, same keys
        self._hls_next_sequence: dict[tuple[str, str], int] = {}
        self.ready = False
        self.log = get_logger()
        self.probes = ProbeManager(settings, self.cameras)
        self.recorder = Recorder(settings)
        self.metric_sources.append(self.recorder.metrics)

    async def start(self) -> None:
        self.probes.load()
        try:
            await self.recorder.start()
        except Exception as exc:  # recording is lost, live video must still run
            self.log.exception("recorder_unavailable", reason=str(exc))
        self.store.load()
        if self.store.file_error:
            self.log.error("cameras_file_invalid", path=str(self.store.path), reason=self.store.file_error)
        for error in self.store.errors:
            self._log_rejected(error)
        # Spread the first connections of a large fleet over a few seconds
        # instead of opening a thousand at once.
        spread = min(MAX_START_SPREAD_SECONDS, len(self.store.cameras) / 200)
        for config in self.store.cameras.values():
            self._start_camera(config, random.uniform(0, spread))
        self.probes.start()
        if self.recorder.started:
            self.recorder.cameras_loaded()
        self.log.info(
            "cameras_loaded",
            path=str(self.store.path),
            cameras=len(self.store.cameras),
            rejected=len(self.store.errors),
        )
        self.ready = self.store.file_error is None

    async def reload(self) -> None:
        """Re-read the cameras file (SIGHUP) and apply what changed.

        A file that no longer parses changes nothing: the running cameras
        stay as they are and the error is logged.
        """
        fresh = CameraStore(self.store.path)
        fresh.load()
        if fresh.file_error:
            self.log.error("cameras_reload_failed", path=str(fresh.path), reason=fresh.file_error)
            return
        for error in fresh.errors:
            self._log_rejected(error)
        old = self.store.cameras
        self.store = fresh
        added = removed = changed = 0
        for camera_id in list(self.cameras):
            if camera_id not in fresh.cameras and camera_id not in self.ephemeral:
                await self._remove_runtime(camera_id)
                self.probes.forget(camera_id)
                removed += 1
        for camera_id, config in fresh.cameras.items():
            if camera_id not in self.cameras:
                added += 1
            elif old.get(camera_id) != config:
                changed += 1
            else:
                continue
            await self._apply_config(config)
        self.ready = True
        self.log.info(
            "cameras_reloaded", added=added, removed=removed, changed=changed, rejected=len(fresh.errors)
        )

    def _log_rejected(self, error: EntryError) -> None:
        self.log.error("camera_rejected", camera_id=error.camera_id, field=error.field, reason=error.reason)

    async def stop(self) -> None:
        """End every client and upstream; used on SIGTERM."""
        self.ready = False
        await self.probes.stop()
        await self.recorder.stop()
        for fanout in list(self.flv.values()):
            fanout.on_camera_removed("service_stopping")
        await asyncio.gather(
            *(camera.stop("service_stopping") for camera in self.cameras.values()), return_exceptions=True
        )

    def _start_camera(self, config: CameraConfig, delay: float = 0.0) -> Camera:
        camera = Camera(config, self.settings)
        self.cameras[config.id] = camera
        self.probes.attach(camera)
        camera.start(delay)
        self.recorder.camera_started(camera)
        return camera

    def add_ephemeral_camera(self, config: CameraConfig) -> Camera:
        """Run a camera that is not written to the cameras file."""
        self.ephemeral.add(config.id)
        return self._start_camera(config)

    # --- admin changes ------------------------------------------------------------

    async def put_camera(self, raw: dict[str, Any], config: CameraConfig) -> bool:
        """Create or replace a camera, file first; return True when it is new.

        Raises CameraStoreError when the file cannot be written; then
        nothing changed.
        """
        self.store.put(raw, config)
        return await self._apply_config(config)

    async def put_cameras(self, items: list[tuple[dict[str, Any], CameraConfig]]) -> list[bool]:
        """Create or replace several cameras with one file write; return, per item, True when new.

        Raises CameraStoreError when the file cannot be written; then
        nothing changed.
        """
        self.store.put_many(items)
        return [await self._apply_config(config) for _raw, config in items]

    async def _apply_config(self, config: CameraConfig) -> bool:
        """Start, restart or update the running camera for a stored entry; return True when it is new."""
        self.ephemeral.discard(config.id)
        existing = self.cameras.get(config.id)
        if existing is None:
            self._start_camera(config)
            self.log.info("camera_added", camera_id=config.id)
            return True
        if Camera.needs_restart(existing.config, config):
            await self._remove_runtime(config.id, restarting=True)
            self._start_camera(config)
        else:
            existing.update_config(config)
            self.recorder.camera_started(existing)
        self.log.info("camera_updated", camera_id=config.id)
        return False

    async def delete_camera(self, camera_id: str) -> None:
        if camera_id not in self.ephemeral:
            self.store.delete(camera_id)
        self.ephemeral.discard(camera_id)
        await self._remove_runtime(camera_id)
        self.probes.forget(camera_id)
        self.log.info("camera_deleted", camera_id=camera_id)

    async def _remove_runtime(self, camera_id: str, restarting: bool = False) -> None:
        self.recorder.camera_stopped(camera_id, restarting)
        camera = self.cameras.pop(camera_id, None)
        fanout = self.flv.pop(camera_id, None)
        if fanout is not None:
            fanout.on_camera_removed()
        if camera is not None:
            await camera.stop()

    def stored_url(self, camera_id: str) -> str | None:
        config = self.store.cameras.get(camera_id)
        if config is None and camera_id in self.cameras:
            return self.cameras[camera_id].config.url
        return config.url if config else None

    # --- outputs ------------------------------------------------------------------

    def flv_fanout(self, camera: Camera) -> FlvFanout:
        fanout = self.flv.get(camera.id)
        if fanout is None:
            fanout = FlvFanout(camera)
            self.flv[camera.id] = fanout
            camera.add_sink(fanout)
        return fanout

    def release_flv_fanout(self, camera: Camera) -> None:
        """Stop muxing FLV for a camera that has no FLV client left."""
        fanout = self.flv.get(camera.id)
        if fanout is not None and not fanout.clients:
            del self.flv[camera.id]
            camera.remove_sink(fanout)
            released = self._flv_released.setdefault(camera.id, dict.fromkeys(FLV_COUNTERS, 0))
            for name in FLV_COUNTERS:
                released[name] += getattr(fanout, name)

    def flv_totals(self, camera_id: str) -> dict[str, int]:
        """Return cumulative FLV counters of a camera and its current client count."""
        totals = dict(self._flv_released.get(camera_id, dict.fromkeys(FLV_COUNTERS, 0)))
        fanout = self.flv.get(camera_id)
        if fanout is not None:
            for name in FLV_COUNTERS:
                totals[name] += getattr(fanout, name)
        totals["clients"] = len(fanout.clients) if fanout is not None else 0
        return totals

    def hls_stream(self, camera: Camera, fmt: str) -> HlsStream:
        """Return the camera's running HLS output in ``fmt``, starting it when there is none.

        Media sequence numbers start at the Unix time in tenths of a second, or
        where the camera's previous HLS output stopped if that is larger. A
        segment lasts at least 0.9 s unless an outage or new camera parameters
        cut it short, so the numbers stay below the clock and do not go
        backwards when the output or Pantau restarts (unless the clock does).
        """
        key = (camera.id, fmt)
        stream = self.hls.get(key)
        if stream is None:
            first = max(int(time.time() * 10), self._hls_next_sequence.get(key, 0))
            stream = HlsStream(camera, fmt, first, self._hls_stopped)
            self.hls[key] = stream
        return stream

    def _hls_stopped(self, stream: HlsStream) -> None:
        key = (stream.camera.id, stream.fmt)
        if self.hls.get(key) is stream:
            del self.hls[key]
        self._hls_next_sequence[key] = stream.next_sequence

    # --- views --------------------------------------------------------------------

    def camera_view(self, camera: Camera) -> dict[str, Any]:
        view = public_view(camera.config)
        view.update(camera.status())
        view["probe"] = self.probes.view(camera.id)
        view["compliance"] = compliance_of(self, camera).as_dict()
        return view

    def rejected_entries(self) -> list[dict[str, Any]]:
        return [dataclasses.asdict(error) for error in self.store.errors]


__all__ = ["Service", "CameraStoreError"]
