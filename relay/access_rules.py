"""Access rules: the credential each endpoint needs, what it audits, and the valid path parameters.

Needs:

- ``public``: no credential (health checks, the status page and its files);
- ``admin``: the admin token;
- ``viewer``: a consumer key or the admin token; lists and reports are
  filtered to the consumer's scope, a camera outside it gets 403;
- ``stream``: a consumer key, a signed token or the admin token, with
  ``action`` (``live``, ``playback``, ``export``) allowed on the camera.

A route that has no entry here needs the admin token.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from aiohttp import web

from relay.access import CONSUMER_NAME_PATTERN, KEY_ID_PATTERN, Action
from relay.cameras import CAMERA_ID_PATTERN
from relay.web import json_error

Describe = Callable[[web.Request, web.StreamResponse | None], dict[str, Any]]

UPLOAD_TYPES = ("text/csv", "text/plain", "application/octet-stream", "application/vnd.ms-excel", "multipart/form-data", "")


def _nothing(request: web.Request, response: web.StreamResponse | None) -> dict[str, Any]:
    return {}


def _range(request: web.Request, response: web.StreamResponse | None) -> dict[str, Any]:
    return {name: request.query[name][:64] for name in ("start", "end") if name in request.query}


def _response_json(response: web.StreamResponse | None) -> dict[str, Any]:
    if not isinstance(response, web.Response) or not isinstance(response.body, bytes):
        return {}
    try:
        data = json.loads(response.body)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _camera_put(request: web.Request, response: web.StreamResponse | None) -> dict[str, Any]:
    return {"created": response is not None and response.status == 201}


def _camera_import(request: web.Request, response: web.StreamResponse | None) -> dict[str, Any]:
    data = _response_json(response)
    return {key: data[key] for key in ("applied", "dry_run", "created", "replaced") if key in data}


def _hold_created(request: web.Request, response: web.StreamResponse | None) -> dict[str, Any]:
    data = _response_json(response)
    return {key: data[key] for key in ("id", "start", "end", "reason") if key in data}


def _hold_released(request: web.Request, response: web.StreamResponse | None) -> dict[str, Any]:
    return {"hold_id": request.match_info.get("hold_id")}


def _query(request: web.Request, response: web.StreamResponse | None) -> dict[str, Any]:
    return {name: value[:200] for name, value in request.query.items() if name != "token"}


@dataclass(frozen=True)
class Rule:
    """The credential one endpoint needs, and how it appears in the audit log."""

    need: Literal["public", "admin", "viewer", "stream"]
    action: Action | None = None
    # Audit action of a request-per-event endpoint; None for endpoints that are not audited.
    audit: str | None = None
    # Requests of an HLS or VOD player form one session and one event.
    session: Literal["hls", "vod"] | None = None
    # The route's {id} is a camera id.
    camera: bool = False
    # A long response (FLV, export): revocation cuts it, and its event has a duration.
    streaming: bool = False
    format: str | None = None
    content_types: tuple[str, ...] | None = None
    describe: Describe = _nothing

    def session_kind(self, request: web.Request) -> str:
        if self.session == "vod":
            return "vod"
        return "hls_ts" if "/ts/" in request.path else "hls_fmp4"

    def check_content_type(self, request: web.Request) -> web.Response | None:
        """Return 415 when a body arrives with a type this endpoint does not take."""
        if self.content_types is None or request.content_type in self.content_types:
            return None
        allowed = ", ".join(kind for kind in self.content_types if kind)
        return json_error(415, "unsupported_media_type", f"send the body as one of: {allowed}")


PUBLIC = Rule("public")
ADMIN = Rule("admin")
VIEWER = Rule("viewer")
LIVE_HLS = Rule("stream", "live", session="hls", camera=True)
VOD = Rule("stream", "playback", session="vod", camera=True)

RULES: dict[tuple[str, str], Rule] = {
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/readyz"): PUBLIC,
    ("GET", "/"): PUBLIC,
    ("GET", "/static/{name}"): PUBLIC,
    ("GET", "/static/vendor/{name}"): PUBLIC,
    ("OPTIONS", "/live/{tail}"): PUBLIC,
    ("OPTIONS", "/vod/{tail}"): PUBLIC,
    ("GET", "/metrics"): ADMIN,
    # cameras, probes and the compliance report
    ("GET", "/api/cameras"): VIEWER,
    ("GET", "/api/cameras/{id}"): Rule("viewer", camera=True),
    ("PUT", "/api/cameras/{id}"): Rule("admin", audit="camera_put", camera=True, describe=_camera_put),
    ("DELETE", "/api/cameras/{id}"): Rule("admin", audit="camera_delete", camera=True),
    ("GET", "/api/cameras/{id}/probe"): Rule("viewer", camera=True),
    ("POST", "/api/cameras/{id}/probe"): Rule("admin", camera=True),
    ("POST", "/api/cameras/import"): Rule(
        "admin", audit="camera_import", content_types=UPLOAD_TYPES, describe=_camera_import
    ),
    ("GET", "/api/compliance"): VIEWER,
    ("GET", "/api/compliance.csv"): VIEWER,
    # live video
    ("GET", "/live/{id}.flv"): Rule("stream", "live", audit="live", camera=True, streaming=True, format="flv"),
    ("GET", "/live/{id}/index.m3u8"): LIVE_HLS,
    ("GET", "/live/{id}/init-{hash}.mp4"): LIVE_HLS,
    ("GET", "/live/{id}/seg-{sequence}.m4s"): LIVE_HLS,
    ("GET", "/live/{id}/ts/index.m3u8"): LIVE_HLS,
    ("GET", "/live/{id}/ts/seg-{sequence}.ts"): LIVE_HLS,
    # recordings
    ("GET", "/api/recordings/{id}"): Rule(
        "stream", "playback", audit="recordings_list", camera=True, describe=_range
    ),
    ("GET", "/api/recordings/{id}/export"): Rule(
        "stream", "export", audit="export", camera=True, streaming=True, format="mp4", describe=_range
    ),
    ("GET", "/api/recordings/{id}/export.json"): Rule(
        "stream", "export", audit="export_manifest", camera=True, describe=_range
    ),
    ("GET", "/vod/{id}/index.m3u8"): VOD,
    ("GET", "/vod/{id}/segments/{segment_id}.mp4"): VOD,
    ("GET", "/api/recordings/{id}/holds"): Rule("admin", camera=True),
    ("POST", "/api/recordings/{id}/holds"): Rule("admin", audit="hold_create", camera=True, describe=_hold_created),
    ("DELETE", "/api/recordings/{id}/holds/{hold_id}"): Rule(
        "admin", audit="hold_release", camera=True, describe=_hold_released
    ),
    # consumers, tokens and the audit log (relay.access_api)
    ("GET", "/api/consumers"): ADMIN,
    ("POST", "/api/consumers"): Rule("admin", audit="consumer_create"),
    ("GET", "/api/consumers/{consumer}"): ADMIN,
    ("PUT", "/api/consumers/{consumer}"): Rule("admin", audit="consumer_update"),
    ("DELETE", "/api/consumers/{consumer}"): Rule("admin", audit="consumer_delete"),
    ("POST", "/api/consumers/{consumer}/keys"): Rule("admin", audit="key_create"),
    ("DELETE", "/api/consumers/{consumer}/keys/{key_id}"): Rule("admin", audit="key_revoke"),
    ("POST", "/api/tokens"): Rule("viewer", audit="token_create"),
    ("GET", "/api/audit"): Rule("admin", audit="audit_read", describe=_query),
}

_DIGITS = re.compile(r"^\d{1,18}$")
PARAMETER_PATTERNS: dict[str, tuple[re.Pattern[str], str]] = {
    "id": (re.compile(CAMERA_ID_PATTERN), f"a camera id matching {CAMERA_ID_PATTERN}"),
    "hold_id": (_DIGITS, "a positive integer"),
    "segment_id": (_DIGITS, "a positive integer"),
    "sequence": (re.compile(r"^\d{1,19}$"), "a positive integer"),
    "hash": (re.compile(r"^[0-9a-f]{16}$"), "16 hexadecimal digits"),
    "consumer": (re.compile(CONSUMER_NAME_PATTERN), f"a consumer name matching {CONSUMER_NAME_PATTERN}"),
    "key_id": (re.compile(KEY_ID_PATTERN), "12 hexadecimal digits"),
    "name": (re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"), "a file name"),
}
# Any other parameter: one path segment of plain characters, never "..".
DEFAULT_PATTERN = (re.compile(r"^(?!.*\.\.)[A-Za-z0-9._-]{1,128}$"), "letters, digits, '.', '_' or '-'")
UNCHECKED_PARAMETERS = {"tail"}  # the CORS preflight's catch-all, which reads nothing
# "." or ".." as a whole path segment, also percent-encoded.
_DOT_SEGMENT = re.compile(r"(?:^|/)(?:\.|%2e){1,2}(?:/|$)", re.IGNORECASE)


def has_dot_segment(raw_path: str) -> bool:
    """Return whether the path (before any query) has a "." or ".." segment, which no Pantau URL has."""
    return _DOT_SEGMENT.search(raw_path.partition("?")[0]) is not None


def rule_for(request: web.Request) -> Rule | None:
    """Return the rule of the route that matched, or None when no route matched."""
    match_info = request.match_info
    if match_info.http_exception is not None:
        return None
    resource = match_info.route.resource
    if resource is None:
        return None
    method = "GET" if request.method == "HEAD" else request.method
    return RULES.get((method, resource.canonical), ADMIN)


def check_parameters(request: web.Request) -> web.Response | None:
    """Return 400 for the first path parameter that is not of its kind, so that no handler reads it."""
    for name, value in request.match_info.items():
        if name in UNCHECKED_PARAMETERS:
            continue
        pattern, expected = PARAMETER_PATTERNS.get(name, DEFAULT_PATTERN)
        if not pattern.match(value):
            shown = value if len(value) <= 80 else value[:80] + "…"
            return json_error(400, "invalid_parameter", f"{name} {shown!r} is invalid: expected {expected}", name)
    return None


def unclassified_routes(app: web.Application) -> list[str]:
    """Return "METHOD path" of every route without a rule; they need the admin token."""
    found = []
    for route in app.router.routes():
        resource = route.resource
        if resource is None or route.method in ("HEAD", "*"):
            continue
        if (route.method, resource.canonical) not in RULES:
            found.append(f"{route.method} {resource.canonical}")
    return found
