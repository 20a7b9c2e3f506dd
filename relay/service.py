"""The service: the cameras file, the running cameras and their shared outputs."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from recorder.recorder import Recorder
from relay.camera import Camera
from relay.cameras import CameraConfig, CameraStore, CameraStoreError, EntryError, public_view
from relay.fanout import FlvFanout
from relay.logs import get_logger
from relay.settings import Settings


class Service:
    """Owns every camera and its outputs; the HTTP layer only calls into it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = CameraStore(settings.cameras_path)
        self.cameras: dict[str, Camera] = {}
        self.ephemeral: set[str] = set()  # cameras not written to the file (the demo camera)
        self.flv: dict[str, FlvFanout] = {}
        self.ready = False
        self.log = get_logger()
        self.recorder = Recorder(settings)

    async def start(self) -> None:
        try:
            await self.recorder.start()
        except Exception as exc:  # recording is lost, live video must still run
            self.log.exception("recorder_unavailable", reason=str(exc))
        self.store.load()
        if self.store.file_error:
            self.log.error("cameras_file_invalid", path=str(self.store.path), reason=self.store.file_error)
        for error in self.store.errors:
            self._log_rejected(error)
        for config in self.store.cameras.values():
            self._start_camera(config)
        if self.recorder.started:
            self.recorder.cameras_loaded()
        self.log.info(
            "cameras_loaded",
            path=str(self.store.path),
            cameras=len(self.store.cameras),
            rejected=len(self.store.errors),
        )
        self.ready = self.store.file_error is None

    def _log_rejected(self, error: EntryError) -> None:
        self.log.error("camera_rejected", camera_id=error.camera_id, field=error.field, reason=error.reason)

    async def stop(self) -> None:
        """End every client and upstream; used on SIGTERM."""
        self.ready = False
        await self.recorder.stop()
        for fanout in list(self.flv.values()):
            fanout.on_camera_removed()
        await asyncio.gather(*(camera.stop() for camera in self.cameras.values()), return_exceptions=True)

    def _start_camera(self, config: CameraConfig) -> Camera:
        camera = Camera(config, self.settings)
        self.cameras[config.id] = camera
        camera.start()
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

    # --- views --------------------------------------------------------------------

    def camera_view(self, camera: Camera) -> dict[str, Any]:
        view = public_view(camera.config)
        view.update(camera.status())
        return view

    def rejected_entries(self) -> list[dict[str, Any]]:
        return [dataclasses.asdict(error) for error in self.store.errors]


__all__ = ["Service", "CameraStoreError"]
