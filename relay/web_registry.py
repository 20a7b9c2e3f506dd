"""HTTP endpoints for camera facts, the compliance report and bulk registration."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from relay.access import camera_visible
from relay.camera import Camera
from relay.cameras import CameraStoreError
from relay.compliance import build_report, report_csv
from relay.importer import ImportRules, plan_import
from relay.web import camera_or_404, json_error, json_response, service_of

IMPORT_MAX_BYTES = 8 * 1024 * 1024
TRUE_VALUES = ("1", "true", "yes")


def add_registry_routes(app: web.Application) -> None:
    app.router.add_get("/api/cameras/{id}/probe", get_probe)
    app.router.add_post("/api/cameras/{id}/probe", run_probe)
    app.router.add_post("/api/cameras/import", import_cameras)
    app.router.add_get("/api/compliance", compliance_json)
    app.router.add_get("/api/compliance.csv", compliance_csv)


def query_flag(request: web.Request, name: str) -> bool:
    return request.query.get(name, "").lower() in TRUE_VALUES


# --- probe ------------------------------------------------------------------------------


async def get_probe(request: web.Request) -> web.Response:
    found = camera_or_404(request)
    if isinstance(found, web.Response):
        return found
    return json_response(service_of(request).probes.view(found.id, history=True))


async def run_probe(request: web.Request) -> web.Response:
    """Probe the camera now and return the result; a camera fault is in ``last_error``, not an HTTP error."""
    found = camera_or_404(request)
    if isinstance(found, web.Response):
        return found
    probes = service_of(request).probes
    await probes.probe(found)
    return json_response(probes.view(found.id, history=True))


# --- compliance -------------------------------------------------------------------------


def visible_report(request: web.Request) -> dict[str, Any]:
    """Return the compliance report over the cameras the caller may see."""

    def visible(camera: Camera) -> bool:
        return camera_visible(request, camera.id, camera.config)

    return build_report(service_of(request), visible)


async def compliance_json(request: web.Request) -> web.Response:
    return json_response(visible_report(request))


async def compliance_csv(request: web.Request) -> web.Response:
    """Return the report as CSV; ``?locale=id`` writes ``;`` and decimal commas for Indonesian spreadsheets."""
    locale = request.query.get("locale", "")
    if locale not in ("", "en", "id"):
        return json_error(400, "invalid_parameter", f"locale {locale!r} is not en or id", "locale")
    body = report_csv(visible_report(request), decimal_comma=locale == "id")
    day = datetime.now(UTC).strftime("%Y-%m-%d")
    return web.Response(
        body=body,
        content_type="text/csv",
        charset="utf-8",
        headers={"Content-Disposition": f'attachment; filename="pantau-compliance-{day}.csv"'},
    )


# --- bulk registration ------------------------------------------------------------------


async def read_upload(request: web.Request) -> bytes | web.Response:
    """Read the CSV from a raw body or from the first file of a multipart form, up to the size limit."""
    if request.content_type.startswith("multipart/"):
        reader = await request.multipart()
        async for part in reader:
            if part.filename is not None or part.name in ("file", "csv"):
                return await _read_limited(part.read_chunk)
        return json_error(400, "missing_file", "the form has no file field", "file")
    return await _read_limited(request.content.read)


async def _read_limited(read: Any) -> bytes | web.Response:
    chunks = []
    size = 0
    while True:
        chunk = await read(65536)
        if not chunk:
            break
        size += len(chunk)
        if size > IMPORT_MAX_BYTES:
            return json_error(413, "body_too_large", f"the CSV is larger than {IMPORT_MAX_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def import_cameras(request: web.Request) -> web.Response:
    """Validate a camera CSV completely, then apply all rows or, if any is invalid, none."""
    service = service_of(request)
    data = await read_upload(request)
    if isinstance(data, web.Response):
        return data
    dry_run = query_flag(request, "dry_run")
    replace = query_flag(request, "replace")

    # Validation and the file write run without an await between them, so no
    # other change can slip in after the existing ids were checked.
    existing = {camera_id: camera.config for camera_id, camera in service.cameras.items()}
    plan = plan_import(data, existing, ImportRules(service.settings), replace=replace)
    if plan.errors:
        return json_response(plan.error_body(dry_run), status=400)
    if dry_run:
        return json_response(plan.summary(dry_run, applied=False))
    try:
        await service.put_cameras(plan.items)
    except CameraStoreError as exc:
        return json_error(409, "cameras_file_not_writable", str(exc))
    service.log.info("cameras_imported", created=len(plan.created), replaced=len(plan.replaced))
    return json_response(plan.summary(dry_run, applied=True))
