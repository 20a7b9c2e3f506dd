"""HTTP endpoints of the recorder: listing, evidence holds, HLS VOD and export.

Every range is ``start`` and ``end`` in ISO 8601 with ``Z`` or an offset,
at most ``PANTAU_EXPORT_MAX_SECONDS`` apart. A camera is known while it is
configured or has anything in the index, so recordings of a removed camera
stay reachable until retention deletes them.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import msgspec
from aiohttp import web

from recorder import index
from recorder.holds import Hold, HoldStoreError
from recorder.playback import ExportResult, ScannedSegment, build_playlist, export_chunks, export_digest, iso
from recorder.recorder import Recorder
from recorder.segment import SegmentFileError, scan_segment
from relay.access import AUDIT_DETAIL_KEY, BYTES_SENT_KEY
from relay.cameras import validation_error
from relay.logs import get_logger
from relay.service import Service
from relay.web import SERVICE_KEY, json_error, json_response, read_json_object


def log() -> Any:
    """Return the recorder's logger; bound at call time, after logging is configured."""
    return get_logger(component="recorder")


PLAYLIST_HEADERS = {"Cache-Control": "no-cache", "Access-Control-Allow-Origin": "*"}
SCAN_CACHE_SIZE = 4096


class HoldRequest(msgspec.Struct, forbid_unknown_fields=True):
    start: str
    end: str
    reason: Annotated[str, msgspec.Meta(min_length=1, max_length=1000)]


class BadRange(Exception):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field
        self.reason = reason


def parse_time(value: str | None, field: str) -> float:
    """Parse an ISO 8601 time with ``Z`` or an offset into Unix seconds."""
    if value is None or not value.strip():
        raise BadRange(field, f"{field} is missing: give an ISO 8601 UTC time such as 2024-05-01T08:00:00Z")
    # A '+' in a query string arrives as a space unless it was percent-encoded.
    text = value.strip().replace(" ", "+")
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise BadRange(field, f"{field} {value!r} is not an ISO 8601 time") from exc
    if moment.tzinfo is None:
        raise BadRange(field, f"{field} {value!r} has no time zone: add Z for UTC")
    return moment.timestamp()


def parse_range(start: str | None, end: str | None, max_seconds: float | None) -> tuple[float, float]:
    start_utc = parse_time(start, "start")
    end_utc = parse_time(end, "end")
    if end_utc <= start_utc:
        raise BadRange("end", "end must be after start")
    if max_seconds is not None and end_utc - start_utc > max_seconds:
        raise BadRange("end", f"the range is longer than PANTAU_EXPORT_MAX_SECONDS ({max_seconds:g} s)")
    return start_utc, end_utc


class RecordingsApi:
    """The handlers, bound to the service's recorder."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self._scans: OrderedDict[tuple[str, int], Any] = OrderedDict()
        self._scans_lock = threading.Lock()  # scans run in worker threads

    @property
    def recorder(self) -> Recorder:
        return self.service.recorder

    # --- helpers ------------------------------------------------------------------

    async def _camera(self, request: web.Request) -> str | web.Response:
        camera_id = request.match_info["id"]
        if not self.recorder.started:
            return json_error(503, "recorder_unavailable", "recording is not available; see the service log")
        if camera_id in self.service.cameras:
            return camera_id
        if await self.recorder.query(index.camera_has_history, camera_id):
            return camera_id
        return json_error(404, "camera_not_found", f"no camera with id {camera_id!r}", "id")

    async def _camera_and_range(self, request: web.Request) -> tuple[str, float, float] | web.Response:
        """Return the camera id and the time range of a request, or the error response."""
        camera_id = await self._camera(request)
        if isinstance(camera_id, web.Response):
            return camera_id
        span = self._range(request)
        if isinstance(span, web.Response):
            return span
        return camera_id, span[0], span[1]

    def _range(self, request: web.Request) -> tuple[float, float] | web.Response:
        try:
            return parse_range(
                request.query.get("start"), request.query.get("end"), self.service.settings.export_max_seconds
            )
        except BadRange as exc:
            return json_error(400, "invalid_range", exc.reason, exc.field)

    async def _segments(self, camera_id: str, start: float, end: float) -> list[index.SegmentRow]:
        return await self.recorder.query(index.segments_in_range, camera_id, start, end)

    def _scan_all(self, rows: list[index.SegmentRow]) -> list[ScannedSegment]:
        """Scan segment files (in a thread); complete ones are cached, since they never change."""
        scanned = []
        for row in rows:
            key = (row.path, row.bytes)
            with self._scans_lock:
                scan = self._scans.get(key) if row.status == "complete" else None
                if scan is not None:
                    self._scans.move_to_end(key)
            if scan is None:
                try:
                    scan = scan_segment(self.recorder.recordings_dir / row.path)
                except (OSError, SegmentFileError, ValueError) as exc:
                    log().warning(
                        "segment_unreadable", camera_id=row.camera_id, path=row.path, reason=str(exc)
                    )
                    continue
                if row.status == "complete":
                    with self._scans_lock:
                        self._scans[key] = scan
                        while len(self._scans) > SCAN_CACHE_SIZE:
                            self._scans.popitem(last=False)
            if scan.fragments:
                scanned.append(ScannedSegment(row, scan))
        return scanned

    def _segment_view(self, row: index.SegmentRow, holds: list[Hold]) -> dict[str, Any]:
        end_utc, size = row.end_utc, row.bytes
        if row.status == "recording":
            live = self.recorder.live_segment(row.camera_id)
            if live is not None and abs(live["start_utc"] - row.start_utc) < 1e-6:
                end_utc, size = live["end_utc"], live["bytes"]
        return {
            "id": row.id,
            "start": iso(row.start_utc),
            "end": iso(end_utc),
            "duration_seconds": round(end_utc - row.start_utc, 3),
            "bytes": size,
            "status": row.status,
            "codec": row.codec,
            "width": row.width,
            "height": row.height,
            "audio": row.has_audio,
            "clock_source": row.clock_source,
            "clock_skew_seconds": row.clock_skew_seconds,
            "path": row.path,
            "held": any(h.start_utc < end_utc and h.end_utc > row.start_utc for h in holds),
            "url": f"/vod/{row.camera_id}/segments/{row.id}.mp4",
        }

    @staticmethod
    def _gap_view(gap: index.GapRow) -> dict[str, Any]:
        end = gap.end_utc
        return {
            "start": iso(gap.start_utc),
            "end": iso(end),
            "duration_seconds": round((end if end is not None else time.time()) - gap.start_utc, 3),
            "cause": gap.cause,
            "ongoing": end is None,
        }

    @staticmethod
    def _hold_view(hold: Hold) -> dict[str, Any]:
        return {
            "id": hold.id,
            "camera_id": hold.camera_id,
            "start": iso(hold.start_utc),
            "end": iso(hold.end_utc),
            "reason": hold.reason,
            "created": iso(hold.created_utc),
        }

    # --- listing ------------------------------------------------------------------

    async def list_recordings(self, request: web.Request) -> web.Response:
        found = await self._camera_and_range(request)
        if isinstance(found, web.Response):
            return found
        camera_id, start, end = found
        rows = await self._segments(camera_id, start, end)
        gaps = await self.recorder.query(index.gaps_in_range, camera_id, start, end)
        holds = [
            h for h in self.recorder.holds.for_camera(camera_id) if h.start_utc < end and h.end_utc > start
        ]
        return json_response(
            {
                "camera_id": camera_id,
                "start": iso(start),
                "end": iso(end),
                "items": [self._segment_view(row, holds) for row in rows],
                "gaps": [self._gap_view(gap) for gap in gaps],
                "holds": [self._hold_view(hold) for hold in holds],
            }
        )

    # --- holds --------------------------------------------------------------------

    async def list_holds(self, request: web.Request) -> web.Response:
        camera_id = await self._camera(request)
        if isinstance(camera_id, web.Response):
            return camera_id
        return json_response(
            {"items": [self._hold_view(h) for h in self.recorder.holds.for_camera(camera_id)]}
        )

    async def create_hold(self, request: web.Request) -> web.Response:
        camera_id = await self._camera(request)
        if isinstance(camera_id, web.Response):
            return camera_id
        data = await read_json_object(request)
        if isinstance(data, web.Response):
            return data
        try:
            body = msgspec.convert(data, HoldRequest)
        except msgspec.ValidationError as exc:
            error = validation_error(exc)
            return json_error(400, "invalid_field", error.reason, error.field)
        try:
            start, end = parse_range(body.start, body.end, None)
        except BadRange as exc:
            return json_error(400, "invalid_range", exc.reason, exc.field)
        try:
            hold = self.recorder.holds.add(camera_id, start, end, body.reason)
        except HoldStoreError as exc:
            return json_error(409, "holds_file_not_writable", str(exc))
        log().info(
            "hold_created",
            camera_id=camera_id,
            hold_id=hold.id,
            start=iso(start),
            end=iso(end),
            reason=body.reason,
        )
        return json_response(self._hold_view(hold), status=201)

    async def delete_hold(self, request: web.Request) -> web.Response:
        camera_id = await self._camera(request)
        if isinstance(camera_id, web.Response):
            return camera_id
        hold_id = _int_parameter(request, "hold_id")
        if isinstance(hold_id, web.Response):
            return hold_id
        try:
            hold = self.recorder.holds.remove(camera_id, hold_id)
        except HoldStoreError as exc:
            return json_error(409, "holds_file_not_writable", str(exc))
        if hold is None:
            return json_error(404, "hold_not_found", f"camera {camera_id!r} has no hold {hold_id}", "hold_id")
        log().info("hold_released", camera_id=camera_id, hold_id=hold_id, reason=hold.reason)
        return web.Response(status=204)

    # --- HLS VOD ------------------------------------------------------------------

    async def vod_playlist(self, request: web.Request) -> web.Response:
        plan = await self._range_plan(request)
        if isinstance(plan, web.Response):
            return plan
        camera_id, start, end, scanned = plan
        if not scanned:
            # A playlist without segments would leave a player waiting, so reply as the export does.
            return _no_recording(camera_id)
        text = build_playlist(scanned, start, end, "segments/{id}.mp4")
        return web.Response(text=text, content_type="application/vnd.apple.mpegurl", headers=PLAYLIST_HEADERS)

    async def vod_segment(self, request: web.Request) -> web.StreamResponse:
        camera_id = await self._camera(request)
        if isinstance(camera_id, web.Response):
            return camera_id
        segment_id = _int_parameter(request, "segment_id")
        if isinstance(segment_id, web.Response):
            return segment_id
        row = await self.recorder.query(index.segment_by_id, segment_id)
        if row is None or row.camera_id != camera_id:
            return json_error(404, "segment_not_found", f"camera {camera_id!r} has no segment {segment_id}")
        path = self.recorder.recordings_dir / row.path
        if not _inside(path, self.recorder.recordings_dir) or not path.is_file():
            return json_error(404, "segment_not_found", f"the file of segment {segment_id} is gone")
        return web.FileResponse(
            path,
            headers={
                "Content-Type": "video/mp4",
                "Access-Control-Allow-Origin": "*",
                "Cache-Control": "no-cache",
            },
        )

    # --- export -------------------------------------------------------------------

    async def _range_plan(
        self, request: web.Request
    ) -> tuple[str, float, float, list[ScannedSegment]] | web.Response:
        """Return the camera, the range and the scanned segments that a VOD playlist or an export covers."""
        found = await self._camera_and_range(request)
        if isinstance(found, web.Response):
            return found
        camera_id, start, end = found
        rows = await self._segments(camera_id, start, end)
        scanned = await asyncio.to_thread(self._scan_all, rows)
        return camera_id, start, end, scanned

    async def export(self, request: web.Request) -> web.StreamResponse:
        plan = await self._range_plan(request)
        if isinstance(plan, web.Response):
            return plan
        camera_id, start, end, scanned = plan
        if not scanned:
            return _no_recording(camera_id)

        name = f"{camera_id}_{_compact(start)}_{_compact(end)}.mp4"
        response = web.StreamResponse(
            headers={
                "Content-Type": "video/mp4",
                "Content-Disposition": f'attachment; filename="{name}"',
                "Access-Control-Allow-Origin": "*",
            }
        )
        response.enable_chunked_encoding()

        result = ExportResult()
        chunks = export_chunks(scanned, self.recorder.recordings_dir, start, end, result)
        await response.prepare(request)
        started = time.monotonic()
        try:
            while (chunk := await asyncio.to_thread(next, chunks, None)) is not None:
                await response.write(chunk)
        except (ConnectionResetError, asyncio.CancelledError):
            request[BYTES_SENT_KEY] = result.bytes
            log().info(
                "export_aborted", camera_id=camera_id, start=iso(start), end=iso(end), bytes_sent=result.bytes
            )
            raise
        except (OSError, SegmentFileError, ValueError) as exc:
            # Headers are sent, so the client learns of the failure from the cut connection.
            log().error("export_failed", camera_id=camera_id, start=iso(start), end=iso(end), reason=str(exc))
            if request.transport is not None:
                request.transport.abort()
            request[BYTES_SENT_KEY] = result.bytes
            return response

        await response.write_eof()
        request[BYTES_SENT_KEY] = result.bytes
        request[AUDIT_DETAIL_KEY] = {"sha256": result.sha256, "segments": len(result.segments)}
        log().info(
            "export_completed",
            camera_id=camera_id,
            start=iso(start),
            end=iso(end),
            bytes=result.bytes,
            sha256=result.sha256,
            segments=len(result.segments),
            duration_seconds=round(time.monotonic() - started, 3),
        )
        return response

    async def export_manifest(self, request: web.Request) -> web.Response:
        plan = await self._range_plan(request)
        if isinstance(plan, web.Response):
            return plan
        camera_id, start, end, scanned = plan
        result = await asyncio.to_thread(export_digest, scanned, self.recorder.recordings_dir, start, end)
        gaps = await self.recorder.query(index.gaps_in_range, camera_id, start, end)
        camera = self.service.cameras.get(camera_id)
        owner = msgspec.to_builtins(camera.config.owner) if camera is not None else None
        used = result.segments
        fully_recorded = (
            bool(used)
            and not gaps
            and all(row.status == "complete" for row in used)
            and used[0].start_utc <= start
            and result.clip_end_utc is not None
            and result.clip_end_utc >= end - 0.5
        )
        return json_response(
            {
                "camera_id": camera_id,
                "owner": owner,
                "start": iso(start),
                "end": iso(end),
                "clip_start": iso(result.clip_start_utc),
                "clip_end": iso(result.clip_end_utc),
                "fully_recorded": fully_recorded,
                "stopped_at_parameter_change": iso(result.stopped_at_change),
                "segments": [
                    {
                        "id": row.id,
                        "path": row.path,
                        "start": iso(row.start_utc),
                        "end": iso(row.end_utc),
                        "bytes": row.bytes,
                    }
                    for row in used
                ],
                "gaps": [self._gap_view(gap) for gap in gaps],
                "bytes": result.bytes,
                "sha256": result.sha256 if used else None,
            }
        )


def _no_recording(camera_id: str) -> web.Response:
    return json_error(404, "no_recording", f"camera {camera_id!r} has no recording between the times given")


def _int_parameter(request: web.Request, name: str) -> int | web.Response:
    """Return an integer path parameter, or the 400 response for one that is not an integer."""
    value = request.match_info[name]
    if not value.isdigit() or len(value) > 18:
        return json_error(400, "invalid_field", f"{name} must be a positive integer, not {value!r}", name)
    return int(value)


def _compact(value: float) -> str:
    return (iso(value) or "").replace("-", "").replace(":", "").replace(".", "")


def _inside(path: Path, directory: Path) -> bool:
    try:
        path.resolve().relative_to(directory.resolve())
    except ValueError:
        return False
    return True


def add_recording_routes(app: web.Application) -> None:
    """Register the recorder's endpoints on the service's application."""
    api = RecordingsApi(app[SERVICE_KEY])
    app.router.add_get("/api/recordings/{id}", api.list_recordings)
    app.router.add_get("/api/recordings/{id}/holds", api.list_holds)
    app.router.add_post("/api/recordings/{id}/holds", api.create_hold)
    app.router.add_delete("/api/recordings/{id}/holds/{hold_id}", api.delete_hold)
    app.router.add_get("/api/recordings/{id}/export", api.export)
    app.router.add_get("/api/recordings/{id}/export.json", api.export_manifest)
    app.router.add_get("/vod/{id}/index.m3u8", api.vod_playlist)
    app.router.add_get("/vod/{id}/segments/{segment_id}.mp4", api.vod_segment)
