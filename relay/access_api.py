"""Endpoints of access control: consumers and their keys, signed tokens, and the audit log.

Consumers and the audit log are for the admin token only; ``POST
/api/tokens`` takes a consumer key or the admin token (see
``relay.access_rules``).
"""

from __future__ import annotations

import asyncio
import datetime
import time
from typing import Annotated, Any

import msgspec
from aiohttp import web

from recorder.api import BadRange, parse_time
from relay.access import (
    AUDIT_CAMERA_KEY,
    AUDIT_DETAIL_KEY,
    CONSUMER_NAME_PATTERN,
    Action,
    Consumer,
    ConsumerStoreError,
    Principal,
    Scope,
    TokenClaims,
    principal_of,
    sign_token,
)
from relay.access_auth import clean_text
from relay.access_http import ACCESS_KEY, AccessControl, owner_view
from relay.audit import iso_time, read_events
from relay.cameras import CAMERA_ID_PATTERN, validation_error
from relay.web import json_error, json_response, read_json_object

DEFAULT_TOKEN_SECONDS = 600.0
AUDIT_DEFAULT_LIMIT = 1000
AUDIT_MAX_LIMIT = 10_000


class ConsumerRequest(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(pattern=CONSUMER_NAME_PATTERN)]
    scope: Scope


class ScopeRequest(msgspec.Struct, forbid_unknown_fields=True):
    scope: Scope


class TokenRequest(msgspec.Struct, forbid_unknown_fields=True):
    camera_id: Annotated[str, msgspec.Meta(pattern=CAMERA_ID_PATTERN)]
    actions: Annotated[list[Action], msgspec.Meta(min_length=1, max_length=3)] | None = None
    expires_in_seconds: Annotated[float, msgspec.Meta(gt=0)] | None = None
    reason: Annotated[str, msgspec.Meta(max_length=200)] | None = None


def access_of(request: web.Request) -> AccessControl:
    return request.app[ACCESS_KEY]


async def read_body(request: web.Request, kind: type[Any]) -> Any:
    """Decode a JSON body into ``kind``, or return the 4xx response that explains why not."""
    data = await read_json_object(request)
    if isinstance(data, web.Response):
        return data
    try:
        return msgspec.convert(data, kind)
    except msgspec.ValidationError as exc:
        error = validation_error(exc)
        return json_error(400, "invalid_field", error.reason, error.field)


def consumer_view(consumer: Consumer) -> dict[str, Any]:
    return {
        "name": consumer.name,
        "scope": msgspec.to_builtins(consumer.scope),
        "created": consumer.created,
        "keys": [{"key_id": key.key_id, "created": key.created} for key in consumer.keys],
    }


def note(request: web.Request, **detail: Any) -> None:
    """Add details to the request's audit event."""
    request.setdefault(AUDIT_DETAIL_KEY, {}).update(detail)


def consumer_not_found(name: str) -> web.Response:
    return json_error(404, "consumer_not_found", f"no consumer named {name!r}", "consumer")


def store_failed(exc: ConsumerStoreError) -> web.Response:
    return json_error(409, "consumers_file_not_writable", str(exc))


# --- consumers ----------------------------------------------------------------------------


async def list_consumers(request: web.Request) -> web.Response:
    consumers = access_of(request).store.consumers.values()
    return json_response({"items": [consumer_view(consumer) for consumer in sorted(consumers, key=lambda c: c.name)]})


async def get_consumer(request: web.Request) -> web.Response:
    name = request.match_info["consumer"]
    consumer = access_of(request).store.consumers.get(name)
    if consumer is None:
        return consumer_not_found(name)
    return json_response(consumer_view(consumer))


async def create_consumer(request: web.Request) -> web.Response:
    """Create a consumer with its first key; the key appears only in this response."""
    body = await read_body(request, ConsumerRequest)
    if isinstance(body, web.Response):
        return body
    note(request, consumer=body.name, scope=msgspec.to_builtins(body.scope))
    try:
        consumer, key_id, key = access_of(request).store.create(body.name, body.scope)
    except KeyError:
        return json_error(409, "consumer_exists", f"a consumer named {body.name!r} exists already", "name")
    except ConsumerStoreError as exc:
        return store_failed(exc)
    note(request, key_id=key_id)
    return json_response({**consumer_view(consumer), "key_id": key_id, "key": key}, status=201)


async def update_consumer(request: web.Request) -> web.Response:
    """Replace a consumer's scope; its keys and tokens stay valid under the new scope."""
    name = request.match_info["consumer"]
    body = await read_body(request, ScopeRequest)
    if isinstance(body, web.Response):
        return body
    note(request, consumer=name, scope=msgspec.to_builtins(body.scope))
    try:
        consumer = access_of(request).store.set_scope(name, body.scope)
    except KeyError:
        return consumer_not_found(name)
    except ConsumerStoreError as exc:
        return store_failed(exc)
    return json_response(consumer_view(consumer))


async def delete_consumer(request: web.Request) -> web.Response:
    """Delete a consumer: its keys and tokens stop working and its running streams end."""
    name = request.match_info["consumer"]
    access = access_of(request)
    note(request, consumer=name)
    try:
        removed = access.store.delete(name)
    except KeyError:
        return consumer_not_found(name)
    except ConsumerStoreError as exc:
        return store_failed(exc)
    note(request, key_ids=[key.key_id for key in removed.keys])
    access.revoke(name)
    return web.Response(status=204)


async def create_key(request: web.Request) -> web.Response:
    name = request.match_info["consumer"]
    note(request, consumer=name)
    try:
        key_id, key = access_of(request).store.add_key(name)
    except KeyError:
        return consumer_not_found(name)
    except ConsumerStoreError as exc:
        return store_failed(exc)
    note(request, key_id=key_id)
    return json_response({"name": name, "key_id": key_id, "key": key}, status=201)


async def revoke_key(request: web.Request) -> web.Response:
    """Revoke one key: it and the tokens made with it stop working, and its running streams end."""
    name = request.match_info["consumer"]
    key_id = request.match_info["key_id"]
    access = access_of(request)
    note(request, consumer=name, key_id=key_id)
    if name not in access.store.consumers:
        return consumer_not_found(name)
    try:
        access.store.revoke_key(name, key_id)
    except KeyError:
        return json_error(404, "key_not_found", f"consumer {name!r} has no key {key_id!r}", "key_id")
    except ConsumerStoreError as exc:
        return store_failed(exc)
    access.revoke(name, key_id)
    return web.Response(status=204)


# --- signed tokens ------------------------------------------------------------------------


def token_urls(camera_id: str, actions: list[str], token: str) -> dict[str, str]:
    """Return the relative URLs a token opens (VOD, listing and export still need start and end)."""
    urls = {}
    if "live" in actions:
        urls["flv"] = f"/live/{camera_id}.flv?token={token}"
        urls["hls"] = f"/live/{camera_id}/index.m3u8?token={token}"
        urls["hls_ts"] = f"/live/{camera_id}/ts/index.m3u8?token={token}"
    if "playback" in actions:
        urls["recordings"] = f"/api/recordings/{camera_id}?token={token}"
        urls["vod"] = f"/vod/{camera_id}/index.m3u8?token={token}"
    if "export" in actions:
        urls["export"] = f"/api/recordings/{camera_id}/export?token={token}"
        urls["export_manifest"] = f"/api/recordings/{camera_id}/export.json?token={token}"
    return urls


async def create_token(request: web.Request) -> web.Response:
    """Make a signed token for one camera, bound to the caller's key, actions and an expiry."""
    access = access_of(request)
    principal = principal_of(request) or Principal("anonymous")
    body = await read_body(request, TokenRequest)
    if isinstance(body, web.Response):
        return body
    camera_id = body.camera_id
    camera = access.service.cameras.get(camera_id)
    config = camera.config if camera is not None else None
    actions = list(dict.fromkeys(body.actions)) if body.actions else None
    if actions is None:
        scope_actions = principal.scope.actions if principal.scope is not None else None
        actions = [action for action in ("live", "playback", "export") if scope_actions is None or action in scope_actions]
    note(request, actions=actions)
    request[AUDIT_CAMERA_KEY] = (camera_id, owner_view(config))

    with_recordings = any(action != "live" for action in actions)
    exists = await access.camera_exists(camera_id, with_recordings)
    if not principal.unrestricted:
        rejected = [action for action in actions if not principal.allows(action, camera_id, config)]
        if rejected or not actions or not exists:
            names = ", ".join(rejected or actions) or "any action"
            return json_error(403, "forbidden", f"this credential does not allow {names} on camera {camera_id!r}")
    elif not exists:
        return json_error(404, "camera_not_found", f"no camera with id {camera_id!r}", "camera_id")

    max_seconds = access.settings.token_max_seconds
    seconds = body.expires_in_seconds or min(DEFAULT_TOKEN_SECONDS, max_seconds)
    if seconds > max_seconds:
        return json_error(
            400,
            "invalid_field",
            f"expires_in_seconds is above PANTAU_TOKEN_MAX_SECONDS ({max_seconds:g})",
            "expires_in_seconds",
        )
    reason = clean_text(body.reason, 200) or clean_text(request.headers.get("X-Pantau-Reason"), 200)
    expires = int(time.time() + seconds)
    # Tokens made while checks are off name no credential, so they fail once checks are on.
    key_id = {"consumer": principal.key_id, "admin": access.auth.admin_key_id}.get(principal.kind) or "anonymous"
    claims = TokenClaims(cam=camera_id, act=actions, exp=expires, k=key_id, c=principal.consumer, r=reason)
    token = sign_token(access.auth.token_secret, claims)
    expires_at = iso_time(expires)
    note(request, expires_at=expires_at)
    return json_response(
        {
            "token": token,
            "consumer": principal.consumer,
            "camera_id": camera_id,
            "actions": actions,
            "expires_at": expires_at,
            "urls": token_urls(camera_id, actions, token),
        },
        status=201,
    )


# --- the audit log ------------------------------------------------------------------------


def _matches(event: dict[str, Any], filters: dict[str, str], start: str | None, end: str | None) -> bool:
    for name, wanted in filters.items():
        if name == "owner":
            owner = event.get("owner")
            owner = owner if isinstance(owner, dict) else {}
            if wanted not in (owner.get("name"), owner.get("category")):
                return False
        elif name == "consumer":
            # Admin changes to a consumer name it in their detail, not as the acting consumer.
            detail = event.get("detail")
            target = detail.get("consumer") if isinstance(detail, dict) else None
            if wanted not in (event.get("consumer"), target):
                return False
        elif event.get(name) != wanted:
            return False
    happened = event.get("time", "")
    began = event.get("started") or happened
    if start is not None and happened < start:
        return False
    return end is None or began <= end


def query_audit(access: AccessControl, filters: dict[str, str], start: float | None, end: float | None, limit: int) -> tuple[list[dict[str, Any]], bool]:
    """Return up to ``limit`` matching events, oldest first, and whether more matched."""
    # NOTE: every file from the start day on is read and parsed; there is no index, so a query
    # over years of a busy log reads all of it.
    first_day = datetime.datetime.fromtimestamp(start, datetime.UTC).date() if start is not None else None
    start_text = iso_time(start) if start is not None else None
    end_text = iso_time(end) if end is not None else None
    items = []
    for event in read_events(access.audit.directory, first_day):
        if _matches(event, filters, start_text, end_text):
            if len(items) == limit:
                return items, True
            items.append(event)
    return items, False


AUDIT_PARAMETERS = {"camera", "owner", "consumer", "action", "start", "end", "limit"}


async def get_audit(request: web.Request) -> web.Response:
    """Return audit events filtered by camera, owner (name or category), consumer, action and time."""
    query = request.query
    unknown = sorted(set(query) - AUDIT_PARAMETERS)
    if unknown:
        allowed = ", ".join(sorted(AUDIT_PARAMETERS))
        return json_error(400, "invalid_parameter", f"unknown parameter {unknown[0]!r}; allowed: {allowed}", unknown[0])
    filters = {}
    for parameter, field in (("camera", "camera_id"), ("owner", "owner"), ("consumer", "consumer"), ("action", "action")):
        if query.get(parameter):
            filters[field] = query[parameter]
    try:
        start = parse_time(query["start"], "start") if query.get("start") else None
        end = parse_time(query["end"], "end") if query.get("end") else None
    except BadRange as exc:
        return json_error(400, "invalid_parameter", exc.reason, exc.field)
    if start is not None and end is not None and end < start:
        return json_error(400, "invalid_parameter", "end must not be before start", "end")
    text = query.get("limit", str(AUDIT_DEFAULT_LIMIT))
    if not text.isdigit() or not 1 <= int(text) <= AUDIT_MAX_LIMIT:
        return json_error(400, "invalid_parameter", f"limit must be an integer from 1 to {AUDIT_MAX_LIMIT}", "limit")
    access = access_of(request)
    # Read what was recorded before this request, even if it was still on its way to the disk.
    await asyncio.to_thread(access.audit.wait_settled, access.audit.recorded, 5.0)
    items, truncated = await asyncio.to_thread(query_audit, access, filters, start, end, int(text))
    return json_response({"items": items, "truncated": truncated})


def add_access_routes(app: web.Application) -> None:
    router = app.router
    router.add_get("/api/consumers", list_consumers)
    router.add_post("/api/consumers", create_consumer)
    router.add_get("/api/consumers/{consumer}", get_consumer)
    router.add_put("/api/consumers/{consumer}", update_consumer)
    router.add_delete("/api/consumers/{consumer}", delete_consumer)
    router.add_post("/api/consumers/{consumer}/keys", create_key)
    router.add_delete("/api/consumers/{consumer}/keys/{key_id}", revoke_key)
    router.add_post("/api/tokens", create_token)
    router.add_get("/api/audit", get_audit)
