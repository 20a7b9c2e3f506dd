"""HTTP endpoints of the HLS output.

fMP4 (CMAF) for H.264 and H.265::

    GET /live/{id}/index.m3u8            media playlist
    GET /live/{id}/init-{hash}.mp4       init segment, named by its content
    GET /live/{id}/seg-{sequence}.m4s    media segment

MPEG-TS for H.264, for players without fMP4 support::

    GET /live/{id}/ts/index.m3u8
    GET /live/{id}/ts/seg-{sequence}.ts

Playlists list relative URIs, so both layouts work behind a path prefix.
"""

from __future__ import annotations

from aiohttp import web

from relay.camera import Camera, CameraUnavailable
from relay.hls import HlsStream
from relay.logs import get_logger
from relay.web import camera_or_404, json_error, service_of, unsupported_codec

CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, HEAD, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Range, X-Pantau-Reason",
    "Access-Control-Max-Age": "600",
}
# Players reload a live playlist every target duration, so it may be cached only briefly.
PLAYLIST_HEADERS = {
    "Content-Type": "application/vnd.apple.mpegurl",
    "Cache-Control": "max-age=1",
    **CORS_HEADERS,
}
# A segment or init URL always names the same bytes.
SEGMENT_CACHE_CONTROL = "max-age=86400, immutable"
SEGMENT_CONTENT_TYPES = {"fmp4": "video/iso.segment", "ts": "video/mp2t"}

log = get_logger(component="hls_http")


def _format_refused(camera: Camera, fmt: str) -> web.Response | None:
    refused = unsupported_codec(camera)
    if refused is not None:
        return refused
    if fmt == "ts" and camera.video is not None and camera.video.codec != "h264":
        return json_error(
            406,
            "unsupported_codec",
            f"camera {camera.id!r} sends {camera.video.codec}; MPEG-TS HLS carries H.264 only. "
            f"Use /live/{camera.id}/index.m3u8 (fMP4) instead",
        )
    return None


async def _playlist(request: web.Request, fmt: str) -> web.Response:
    service = service_of(request)
    found = camera_or_404(request)
    if isinstance(found, web.Response):
        return found
    camera = found
    refused = _format_refused(camera, fmt)
    if refused is not None:
        return refused

    stream = service.hls_stream(camera, fmt)
    stream.touch()
    try:
        await stream.wait_first_segment(service.settings.hls_first_segment_wait_seconds)
    except CameraUnavailable as exc:
        log.info("hls_playlist_unavailable", camera_id=camera.id, format=fmt, error=exc.code, reason=exc.reason)
        refused = _format_refused(camera, fmt)
        if refused is not None:
            return refused
        return json_error(503, exc.code, exc.reason)

    hold = service.settings.outage_hold_seconds
    if stream.offline_seconds() > hold:
        # Old segments would play as if live, so report that the camera is gone instead.
        error = camera.last_error or {"code": "camera_offline", "reason": "the camera stopped sending video"}
        reason = f"camera offline for {stream.offline_seconds():.0f} s, retrying: {error['reason']}"
        return json_error(503, "camera_offline", reason)
    return web.Response(body=stream.playlist(), headers=PLAYLIST_HEADERS)


def _running_stream(request: web.Request, fmt: str) -> HlsStream | web.Response:
    found = camera_or_404(request)
    if isinstance(found, web.Response):
        return found
    stream = service_of(request).hls.get((found.id, fmt))
    if stream is None:
        return json_error(
            404,
            "segment_not_found",
            f"no HLS output is running for camera {found.id!r}; request its playlist first",
        )
    return stream


def _segment_response(stream: HlsStream, request: web.Request, fmt: str) -> web.Response:
    sequence = int(request.match_info["sequence"])
    segment = stream.segment(sequence)
    if segment is None:
        return json_error(
            404, "segment_not_found", f"segment {sequence} is not available; reload the playlist"
        )
    stream.touch()
    service_of(request).hls_egress[(stream.camera.id, fmt)] += len(segment.data)
    headers = {
        "Content-Type": SEGMENT_CONTENT_TYPES[fmt],
        "Cache-Control": SEGMENT_CACHE_CONTROL,
        **CORS_HEADERS,
    }
    return web.Response(body=segment.data, headers=headers)


async def fmp4_playlist(request: web.Request) -> web.Response:
    return await _playlist(request, "fmp4")


async def ts_playlist(request: web.Request) -> web.Response:
    return await _playlist(request, "ts")


async def fmp4_segment(request: web.Request) -> web.Response:
    stream = _running_stream(request, "fmp4")
    if isinstance(stream, web.Response):
        return stream
    return _segment_response(stream, request, "fmp4")


async def ts_segment(request: web.Request) -> web.Response:
    stream = _running_stream(request, "ts")
    if isinstance(stream, web.Response):
        return stream
    return _segment_response(stream, request, "ts")


async def fmp4_init(request: web.Request) -> web.Response:
    stream = _running_stream(request, "fmp4")
    if isinstance(stream, web.Response):
        return stream
    name = f"init-{request.match_info['hash']}.mp4"
    data = stream.init_segment(name)
    if data is None:
        return json_error(404, "segment_not_found", f"init segment {name} is not available; reload the playlist")
    stream.touch()
    headers = {"Content-Type": "video/mp4", "Cache-Control": SEGMENT_CACHE_CONTROL, **CORS_HEADERS}
    return web.Response(body=data, headers=headers)


async def preflight(request: web.Request) -> web.Response:
    """Reply to a CORS preflight, which a browser sends before a request with an Authorization header."""
    return web.Response(status=204, headers=CORS_HEADERS)


def add_hls_routes(app: web.Application) -> None:
    router = app.router
    router.add_get("/live/{id}/index.m3u8", fmp4_playlist)
    router.add_get("/live/{id}/init-{hash:[0-9a-f]{16}}.mp4", fmp4_init)
    router.add_get(r"/live/{id}/seg-{sequence:\d{1,19}}.m4s", fmp4_segment)
    router.add_get("/live/{id}/ts/index.m3u8", ts_playlist)
    router.add_get(r"/live/{id}/ts/seg-{sequence:\d{1,19}}.ts", ts_segment)
    router.add_route("OPTIONS", "/live/{tail:.*}", preflight)
    router.add_route("OPTIONS", "/vod/{tail:.*}", preflight)
