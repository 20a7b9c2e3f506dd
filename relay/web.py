"""The HTTP service: admin JSON API, health checks and HTTP-FLV.

API conventions, shared by every endpoint: snake_case JSON fields with the
unit in the name where there is one, times as ISO 8601 UTC with ``Z``,
lists as ``{"items": [...]}``, and errors as ``{"error": code, "reason":
text, "field": name-or-null}`` with a fitting HTTP status.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from aiohttp import HttpVersion11, web

from relay.access import BYTES_SENT_KEY, camera_visible, principal_of, shape_camera_view
from relay.camera import Camera, CameraUnavailable
from relay.cameras import MASK_UNRESOLVED, CameraStoreError, EntryInvalid, carries_mask, merge_password, parse_entry
from relay.logs import get_logger
from relay.metrics import create_registry, render
from relay.service import Service

SERVICE_KEY = web.AppKey("service", Service)
MAX_JSON_BODY = 64 * 1024

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
log = get_logger(component="http")


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=msgspec.json.encode(data),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def json_error(status: int, code: str, reason: str, field: str | None = None) -> web.Response:
    return json_response({"error": code, "reason": reason, "field": field}, status=status)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every error into the JSON error shape; never show a traceback."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}.get(exc.status, "http_error")
        # aiohttp's 413 text names the limit and the body's size in bytes; its reason does not.
        reason = exc.text if exc.status == 413 and exc.text else exc.reason
        response = json_error(exc.status, code, reason)
        if "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]  # required on a 405 by RFC 9110
        return response
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception:
        log.exception("http_handler_failed", path=request.path, method=request.method)
        return json_error(500, "internal_error", "an internal error occurred; see the service log")


def service_of(request: web.Request) -> Service:
    return request.app[SERVICE_KEY]


def camera_or_404(request: web.Request) -> Camera | web.Response:
    camera_id = request.match_info["id"]
    camera = service_of(request).cameras.get(camera_id)
    if camera is None:
        return json_error(404, "camera_not_found", f"no camera with id {camera_id!r}", "id")
    return camera


# --- health -----------------------------------------------------------------------


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    service = service_of(request)
    if service.ready:
        return json_response({"status": "ready", "cameras": len(service.cameras)})
    reason = service.store.file_error or "starting or stopping"
    return json_response({"status": "not_ready", "reason": reason}, status=503)


# --- cameras API ------------------------------------------------------------------


async def list_cameras(request: web.Request) -> web.Response:
    service = service_of(request)
    items = [
        shape_camera_view(request, service.camera_view(camera))
        for camera in service.cameras.values()
        if camera_visible(request, camera.id, camera.config)
    ]
    principal = principal_of(request)
    rejected = service.rejected_entries() if principal is None or principal.unrestricted else []
    return json_response({"items": items, "rejected": rejected})


async def get_camera(request: web.Request) -> web.Response:
    found = camera_or_404(request)
    if isinstance(found, web.Response):
        return found
    return json_response(shape_camera_view(request, service_of(request).camera_view(found)))


async def read_json_object(request: web.Request) -> dict[str, Any] | web.Response:
    """Read a JSON object body, or return the 4xx response that explains why not."""
    if request.content_type not in ("application/json", ""):
        return json_error(415, "unsupported_media_type", "send the body as application/json")
    body = await request.read()
    if len(body) > MAX_JSON_BODY:
        return json_error(413, "body_too_large", f"the body is larger than {MAX_JSON_BODY} bytes")
    if not body.strip():
        return json_error(400, "invalid_body", "the body is empty; send a JSON object")
    try:
        data = msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        return json_error(400, "invalid_json", f"the body is not valid JSON: {exc}")
    if not isinstance(data, dict):
        return json_error(400, "invalid_body", "the body must be a JSON object")
    return data


async def put_camera(request: web.Request) -> web.Response:
    service = service_of(request)
    camera_id = request.match_info["id"]
    data = await read_json_object(request)
    if isinstance(data, web.Response):
        return data
    body_id = data.pop("id", camera_id)
    if body_id != camera_id:
        return json_error(400, "invalid_field", f"id {body_id!r} does not match the URL's {camera_id!r}", "id")
    # A GET response can be sent back as it is: its read-only status fields are dropped.
    entry = {"id": camera_id}
    entry.update((key, value) for key, value in data.items() if key not in service.read_only_fields)
    if isinstance(entry.get("url"), str):
        entry["url"] = merge_password(entry["url"], service.stored_url(camera_id))
        if carries_mask(entry["url"]):
            return json_error(
                400,
                "invalid_field",
                MASK_UNRESOLVED,
                "url",
            )
    try:
        config = parse_entry(entry)
    except EntryInvalid as exc:
        return json_error(400, "invalid_field", exc.error.reason, exc.error.field)
    try:
        created = await service.put_camera(entry, config)
    except CameraStoreError as exc:
        log.warning("camera_change_failed", camera_id=camera_id, error=exc.code, reason=str(exc))
        return json_error(409, exc.code, str(exc))
    view = service.camera_view(service.cameras[camera_id])
    return json_response(view, status=201 if created else 200)


async def delete_camera(request: web.Request) -> web.Response:
    found = camera_or_404(request)
    if isinstance(found, web.Response):
        return found
    try:
        await service_of(request).delete_camera(found.id)
    except CameraStoreError as exc:
        log.warning("camera_change_failed", camera_id=found.id, error=exc.code, reason=str(exc))
        return json_error(409, exc.code, str(exc))
    return web.Response(status=204)


# --- HTTP-FLV ---------------------------------------------------------------------


def first_frame_timeout(service: Service) -> float:
    """Return how long a live request waits for a cold camera: connect, then one reply or frame.

    A failed attempt ends the wait as soon as it fails.
    """
    settings = service.settings
    return settings.connect_timeout_seconds + settings.read_timeout_seconds

FLV_HEADERS = {
    "Content-Type": "video/x-flv",
    "Cache-Control": "no-cache, no-store",
    "Access-Control-Allow-Origin": "*",
    "Connection": "close",
}


def unsupported_codec(camera: Camera) -> web.Response | None:
    if camera.video is not None and not camera.video.relayed:
        return json_error(
            406,
            "unsupported_codec",
            f"camera {camera.id!r} sends {camera.video.codec} video; only H.264 and H.265 are relayed",
        )
    return None


async def live_flv(request: web.Request) -> web.StreamResponse:
    service = service_of(request)
    found = camera_or_404(request)
    if isinstance(found, web.Response):
        return found
    camera = found
    refused = unsupported_codec(camera)
    if refused is not None:
        return refused

    with camera.reading("flv"):
        try:
            await camera.wait_ready(first_frame_timeout(service))
        except CameraUnavailable as exc:
            status = 406 if exc.code == "unsupported_codec" else 503
            return json_error(status, exc.code, exc.reason)
        refused = unsupported_codec(camera)
        if refused is not None:
            return refused

        response = web.StreamResponse(headers=FLV_HEADERS)
        # HTTP/1.0 clients get a plain body that ends when the connection closes.
        chunked = request.version >= HttpVersion11
        if chunked:
            response.enable_chunked_encoding()
        response.force_close()
        await response.prepare(request)
        transport = request.transport
        if transport is None or transport.is_closing():
            return response
        peer = request.remote or ""
        fanout = service.flv_fanout(camera)
        client = fanout.add_client(transport, peer, chunked)  # type: ignore[arg-type]
        started = asyncio.get_running_loop().time()
        log.info("client_connected", camera_id=camera.id, output="flv", peer=peer)
        reason = "client_closed"
        try:
            reason = await client.done
        finally:
            request[BYTES_SENT_KEY] = client.bytes_sent
            fanout.remove_client(client)
            service.release_flv_fanout(camera)
            log.info(
                "client_disconnected",
                camera_id=camera.id,
                output="flv",
                peer=peer,
                reason=reason,
                bytes=client.bytes_sent,
                duration_seconds=round(asyncio.get_running_loop().time() - started, 1),
            )
        return response


# --- metrics ----------------------------------------------------------------------

METRICS_KEY = web.AppKey("metrics", object)


async def metrics(request: web.Request) -> web.Response:
    body, content_type = render(request.app[METRICS_KEY])  # type: ignore[arg-type]
    response = web.Response(body=body)
    response.headers["Content-Type"] = content_type
    return response


# --- application ------------------------------------------------------------------


async def not_found(request: web.Request) -> web.Response:
    return json_error(404, "not_found", f"no such endpoint: {request.method} {request.path}")


async def allow_any_origin(request: web.Request, response: web.StreamResponse) -> None:
    """Let players on other origins read every stream and recording response, errors included.

    A browser hides a cross-origin response without this header, so a player would see a
    network error instead of the 404 or 503 that directs it to reload or wait.
    """
    if request.path.startswith(("/live/", "/vod/")) and "Access-Control-Allow-Origin" not in response.headers:
        response.headers["Access-Control-Allow-Origin"] = "*"


def create_app(service: Service) -> web.Application:
    app = web.Application(middlewares=[error_middleware], client_max_size=MAX_JSON_BODY)
    app.on_response_prepare.append(allow_any_origin)
    app[SERVICE_KEY] = service
    app[METRICS_KEY] = create_registry(service)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/cameras", list_cameras)
    app.router.add_get("/api/cameras/{id}", get_camera)
    app.router.add_put("/api/cameras/{id}", put_camera)
    app.router.add_delete("/api/cameras/{id}", delete_camera)
    app.router.add_get("/live/{id}.flv", live_flv)

    # Imported here because these modules import this one for its helpers.
    from relay.hls_http import add_hls_routes
    from relay.status_page import add_status_page_routes
    from relay.web_registry import add_registry_routes

    add_registry_routes(app)
    add_hls_routes(app)
    add_status_page_routes(app)
    from recorder.api import add_recording_routes

    add_recording_routes(app)
    from relay.access_http import add_access_control

    add_access_control(app)
    return app
