"""Access control and the audit trail for every HTTP request.

``add_access_control`` installs one middleware and the consumer, token
and audit endpoints (``relay.access_api``). The middleware, for each
request:

1. finds the rule of the matched route (``relay.access_rules``); routes
   without a rule need the admin token, so a new endpoint is never open by
   accident;
2. rejects invalid path parameters with 400, before anything reads them;
3. authenticates the caller (``relay.access_auth``): 401 without a valid
   credential, 429 after too many failures;
4. authorizes: 403 outside the caller's scope, also for a camera that does
   not exist, so that consumers cannot probe for ids;
5. runs the handler and writes the audit event, or adds the request to
   its HLS or VOD viewing session.

With ``PANTAU_AUTH=off`` steps 3 and 4 allow everything, and the audit
log still records every access.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from recorder import index
from relay.access import (
    AUDIT_CAMERA_KEY,
    AUDIT_DETAIL_KEY,
    BYTES_SENT_KEY,
    CONSUMERS_FILE,
    PRINCIPAL_KEY,
    ConsumerStore,
    ConsumerStoreError,
    Principal,
    load_or_create_secret,
    secret_paths,
)
from relay.access_auth import Authenticator, audit_event, clean_text, result_of
from relay.access_rules import Rule, check_parameters, has_dot_segment, rule_for, unclassified_routes
from relay.access_sessions import Session, Sessions
from relay.audit import AuditLog, iso_time
from relay.cameras import CameraConfig
from relay.logs import get_logger
from relay.service import Service
from relay.web import SERVICE_KEY, json_error

AUTH_OFF_WARNING_SECONDS = 3600.0
HOUSEKEEPING_SECONDS = 1.0
SESSION_KEY = "pantau.session"
PREPARED_STATUS_KEY = "pantau.prepared_status"  # status of a response whose headers went out
ENDED_KEY = "pantau.ended"  # why a streaming response ended, when Pantau ended it
PLAYLIST_TYPE = "application/vnd.apple.mpegurl"
_URI_ATTRIBUTE = re.compile(r'URI="([^"]*)"')

log = get_logger(component="access")


def owner_view(config: CameraConfig | None) -> dict[str, str] | None:
    return {"category": config.owner.category, "name": config.owner.name} if config is not None else None


def add_query_to_uris(playlist: str, query: str) -> str:
    """Append ``query`` to every URI of an HLS playlist: URI lines and ``URI="..."`` attributes."""

    def extend(uri: str) -> str:
        return f"{uri}{'&' if '?' in uri else '?'}{query}"

    lines = []
    for line in playlist.split("\n"):
        if line and not line.startswith("#"):
            line = extend(line)
        elif line.startswith("#") and 'URI="' in line:
            line = _URI_ATTRIBUTE.sub(lambda match: f'URI="{extend(match.group(1))}"', line)
        lines.append(line)
    return "\n".join(lines)


class AccessControl:
    """Credentials, rate limits, viewing sessions and the audit log of one service."""

    def __init__(self, service: Service) -> None:
        settings = service.settings
        self.service = service
        self.settings = settings
        self.enabled = settings.auth == "on"
        data_dir = Path(settings.data_dir)
        self.admin_token_path, self.token_secret_path = secret_paths(data_dir)
        self.store = ConsumerStore(data_dir / CONSUMERS_FILE)
        self.audit = AuditLog(data_dir / "audit")
        self.auth = Authenticator(settings, self.store, self.audit)
        self.sessions = Sessions(settings.idle_close_seconds, self._session_ended)
        # Streaming responses in progress (FLV, export), so a revoked credential's can be cut.
        self.streams: dict[int, tuple[web.Request, Principal]] = {}
        self._housekeeping: asyncio.Task[None] | None = None

    # --- start and stop ---------------------------------------------------------------

    async def start(self, app: web.Application) -> None:
        """Load or create the secrets, load the consumers and start the audit writer.

        A problem with any of them stops start-up with the reason: serving
        without them would either refuse everyone or record nothing.
        """
        settings = self.settings
        try:
            admin_token = settings.admin_token or self._secret(self.admin_token_path, "admin_token")
            token_secret = settings.token_secret or self._secret(self.token_secret_path, "token_secret")
            self.store.load()
            await asyncio.to_thread(self.audit.start)
        except (OSError, ValueError, ConsumerStoreError) as exc:
            log.error("access_control_unavailable", reason=str(exc))
            raise SystemExit(f"pantau: access control cannot start: {exc}") from exc
        self.auth.set_secrets(admin_token, token_secret)
        for route in unclassified_routes(app):
            log.warning("route_needs_admin", route=route, hint="no access rule; only the admin token may call it")
        if not self.enabled:
            self._warn_auth_off()
        log.info("access_control_started", auth=settings.auth, consumers=len(self.store.consumers))
        self.service.metric_sources.append(self.metrics)
        self._housekeeping = asyncio.create_task(self._keep_house())

    def _secret(self, path: Path, name: str) -> str:
        value, created = load_or_create_secret(path)
        if created:
            log.warning(f"{name}_created", path=str(path), mode="0600")
        else:
            log.info(f"{name}_loaded", path=str(path))
        return value

    def metrics(self) -> Iterator[Metric]:
        """Yield the access-control and audit counters for /metrics."""
        failures = CounterMetricFamily("pantau_auth_failures", "Requests rejected with 401 for a bad credential.")
        failures.add_metric([], self.auth.failures)
        limited = CounterMetricFamily("pantau_auth_rate_limited", "Requests rejected with 429 after repeated failures.")
        limited.add_metric([], self.auth.rate_limited)
        written = CounterMetricFamily("pantau_audit_events_written", "Audit events written and fsynced.")
        written.add_metric([], self.audit.written)
        dropped = CounterMetricFamily(
            "pantau_audit_events_dropped", "Audit events lost because the queue for the disk was full."
        )
        dropped.add_metric([], self.audit.dropped)
        errors = CounterMetricFamily("pantau_audit_write_errors", "Failed writes of the audit log (retried).")
        errors.add_metric([], self.audit.write_errors)
        pending = GaugeMetricFamily("pantau_audit_events_pending", "Audit events waiting for the disk.")
        pending.add_metric([], self.audit.pending())
        sessions = GaugeMetricFamily("pantau_viewing_sessions", "Open HLS and VOD viewing sessions.")
        sessions.add_metric([], len(self.sessions.by_id))
        yield from (failures, limited, written, dropped, errors, pending, sessions)

    def _warn_auth_off(self) -> None:
        log.warning(
            "access_control_off",
            setting="PANTAU_AUTH=off",
            effect="every endpoint is open to anyone who can reach the port; use it only on a closed network",
        )

    async def _keep_house(self) -> None:
        last_warning = time.monotonic()
        while True:
            await asyncio.sleep(HOUSEKEEPING_SECONDS)
            self.sessions.sweep()
            self.auth.limiter.roll()
            if not self.enabled and time.monotonic() - last_warning >= AUTH_OFF_WARNING_SECONDS:
                self._warn_auth_off()
                last_warning = time.monotonic()

    async def stop(self, app: web.Application) -> None:
        if self._housekeeping is not None:
            self._housekeeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._housekeeping
        self.sessions.end_all()
        self.auth.limiter.roll(force=True)
        await asyncio.to_thread(self.audit.close)

    # --- audit events -----------------------------------------------------------------

    def _session_ended(self, session: Session) -> None:
        principal = session.principal
        self.audit.record(
            {
                "action": "playback" if session.kind == "vod" else "live",
                "result": "ok" if session.ok_requests else result_of(session.last_status),
                "status": session.last_status,
                "consumer": principal.consumer,
                "credential": principal.kind,
                "key_id": principal.key_id if principal.kind != "admin" else None,
                "camera_id": session.camera_id,
                "client": session.client,
                "user_agent": session.user_agent,
                **session.context,
                "format": session.kind,
                "session": session.id,
                "started": iso_time(session.started_wall),
                "duration_seconds": round(session.last - session.started, 3),
                "bytes": session.bytes,
                "requests": session.requests,
                "statuses": {str(status): count for status, count in sorted(session.statuses.items())},
            }
        )

    # --- authorization ----------------------------------------------------------------

    async def camera_exists(self, camera_id: str, with_recordings: bool) -> bool:
        """Return whether a camera is configured or, for recording endpoints, has recordings."""
        if camera_id in self.service.cameras:
            return True
        recorder = self.service.recorder
        if not with_recordings or not recorder.started:
            return False
        return await recorder.query(index.camera_has_history, camera_id)

    async def authorize(
        self, rule: Rule, principal: Principal, camera_id: str | None, config: CameraConfig | None
    ) -> web.Response | None:
        """Return the 403 response when ``principal`` may not do what ``rule`` describes, else None."""
        if principal.unrestricted:
            return None
        if rule.need == "admin":
            return json_error(403, "forbidden", "this endpoint needs the admin token")
        if principal.kind == "token" and rule.need != "stream":
            return json_error(
                403, "forbidden", "a token grants access only to the stream and recording endpoints of its camera"
            )
        if camera_id is None:
            return None  # a list, filtered by the handler, or a request whose body names the camera
        if rule.need == "stream":
            assert rule.action is not None
            allowed = principal.allows(rule.action, camera_id, config)
            action_name = rule.action
        else:
            allowed = principal.sees_camera(camera_id, config)
            action_name = "access"
        # A camera that does not exist gets the same response as one outside the scope.
        if allowed and await self.camera_exists(camera_id, rule.action in ("playback", "export")):
            return None
        return json_error(403, "forbidden", f"this credential does not allow {action_name} on camera {camera_id!r}")

    # --- revocation -------------------------------------------------------------------

    def revoke(self, consumer: str, key_id: str | None = None) -> None:
        """End the running streams and sessions of a deleted consumer or a revoked key."""

        def matches(principal: Principal) -> bool:
            return principal.consumer == consumer and (key_id is None or principal.key_id == key_id)

        cut = 0
        for request, principal in list(self.streams.values()):
            if matches(principal) and request.transport is not None:
                request[ENDED_KEY] = "revoked"
                request.transport.abort()
                cut += 1
        ended = self.sessions.end_matching(matches)
        if cut or ended:
            log.info("access_revoked_sessions_ended", consumer=consumer, key_id=key_id, streams=cut, sessions=ended)

    # --- the middleware ---------------------------------------------------------------

    async def handle(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if has_dot_segment(request.raw_path):
            return json_error(400, "invalid_path", "the path contains a . or .. segment", None)
        rule = rule_for(request)
        if rule is None:
            exception = request.match_info.http_exception
            if isinstance(exception, web.HTTPMethodNotAllowed) and set(exception.allowed_methods) <= {"OPTIONS"}:
                # Only the CORS preflight's catch-all matched: for any other method there is no such URL.
                return json_error(404, "not_found", f"no such endpoint: {request.method} {request.path[:300]}")
            return await handler(request)  # no route matched: the router's 404 or 405
        invalid = check_parameters(request)
        if invalid is not None:
            return invalid
        unsupported = rule.check_content_type(request)
        if unsupported is not None:
            return unsupported
        if rule.need == "public":
            return await handler(request)

        found = self.auth.identify(request)
        if isinstance(found, web.Response):
            if rule.need == "stream":
                found.headers["Access-Control-Allow-Origin"] = "*"
            return found
        principal = found
        request[PRINCIPAL_KEY] = principal
        camera_id = request.match_info.get("id") if rule.camera else None
        camera = self.service.cameras.get(camera_id) if camera_id else None
        config = camera.config if camera is not None else None

        denied = await self.authorize(rule, principal, camera_id, config)
        if denied is not None:
            if rule.need == "stream":
                denied.headers["Access-Control-Allow-Origin"] = "*"
            if rule.audit or rule.session:
                action = rule.audit or ("playback" if rule.session == "vod" else "live")
                self.audit.record(audit_event(request, action, 403, principal, camera_id, owner_view(config)))
            return denied

        if rule.session is not None and camera_id is not None:
            return await self._in_session(request, handler, rule, principal, camera_id, config)
        if rule.audit is not None:
            return await self._audited(request, handler, rule, principal, camera_id, config)
        return await handler(request)

    async def _audited(
        self,
        request: web.Request,
        handler: Any,
        rule: Rule,
        principal: Principal,
        camera_id: str | None,
        config: CameraConfig | None,
    ) -> web.StreamResponse:
        started_wall = time.time()
        started = time.monotonic()
        status = 500
        response: web.StreamResponse | None = None
        streaming = rule.streaming
        ended = "server"
        if streaming:
            self.streams[id(request)] = (request, principal)
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        except (asyncio.CancelledError, ConnectionResetError):
            # The connection closed first. After the headers went out, that is how a
            # live viewer stops watching, so the response keeps its status.
            status = request.get(PREPARED_STATUS_KEY, 499)
            ended = request.get(ENDED_KEY, "client")
            raise
        finally:
            if streaming:
                self.streams.pop(id(request), None)
            if config is None and camera_id is not None:
                camera = self.service.cameras.get(camera_id)
                config = camera.config if camera is not None else None
            fields: dict[str, Any] = {}
            if streaming:
                fields["format"] = rule.format
                fields["started"] = iso_time(started_wall)
                fields["duration_seconds"] = round(time.monotonic() - started, 3)
                fields["ended"] = ended
            sent = request.get(BYTES_SENT_KEY)
            if sent is None and isinstance(response, web.Response) and request.method != "HEAD":
                body = response.body
                sent = len(body) if isinstance(body, (bytes, bytearray)) else None
            if sent is not None:
                fields["bytes"] = sent
            detail = rule.describe(request, response)
            detail.update(request.get(AUDIT_DETAIL_KEY) or {})
            owner = owner_view(config)
            if camera_id is None and AUDIT_CAMERA_KEY in request:
                camera_id, owner = request[AUDIT_CAMERA_KEY]
            if detail:
                fields["detail"] = detail
            self.audit.record(audit_event(request, rule.audit or "", status, principal, camera_id, owner, **fields))

    async def _in_session(
        self,
        request: web.Request,
        handler: Any,
        rule: Rule,
        principal: Principal,
        camera_id: str,
        config: CameraConfig | None,
    ) -> web.StreamResponse:
        kind = rule.session_kind(request)
        context = {
            "owner": owner_view(config),
            "reason": clean_text(request.headers.get("X-Pantau-Reason"), 500) or principal.token_reason,
        }
        session = self.sessions.find_or_start(
            request.query.get("session"),
            principal,
            camera_id,
            kind,
            request.remote or "",
            clean_text(request.headers.get("User-Agent"), 300),
            context,
        )
        if context["reason"] and not session.context.get("reason"):
            session.context["reason"] = context["reason"]
        request[SESSION_KEY] = session
        status = 500
        try:
            response = await handler(request)
            status = response.status
            if (
                status == 200
                and isinstance(response, web.Response)
                and response.content_type == PLAYLIST_TYPE
                and isinstance(response.body, bytes)
            ):
                query = self._uri_query(request, principal, session)
                if query:
                    response.body = add_query_to_uris(response.body.decode(), query).encode()
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            self.sessions.touch(session, status)

    def _uri_query(self, request: web.Request, principal: Principal, session: Session) -> str:
        """Return what every URI of a playlist must carry for the player's next requests."""
        if principal.kind == "anonymous" and "session" not in request.query:
            return ""  # checks off and nothing to carry: keep the playlist as it is
        token = request.query.get("token") if principal.kind == "token" else None
        return f"token={token}&session={session.id}" if token else f"session={session.id}"


def count_session_bytes(request: web.Request, response: web.StreamResponse) -> None:
    """Add a response's body length to its viewing session when its headers go out.

    Only here is the length of a file response (a VOD segment with a Range
    header) known before it is sent.
    """
    session = request.get(SESSION_KEY)
    if session is not None and request.method != "HEAD" and response.content_length:
        session.bytes += response.content_length


ACCESS_KEY = web.AppKey("access", AccessControl)


def add_access_control(app: web.Application) -> None:
    """Install the access middleware, its endpoints and its start and stop hooks on the app."""
    from relay.access_api import add_access_routes

    access = AccessControl(app[SERVICE_KEY])
    app[ACCESS_KEY] = access

    @web.middleware
    async def access_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        return await access.handle(request, handler)

    async def on_prepare(request: web.Request, response: web.StreamResponse) -> None:
        request[PREPARED_STATUS_KEY] = response.status
        count_session_bytes(request, response)

    app.middlewares.append(access_middleware)
    app.on_response_prepare.append(on_prepare)
    app.on_startup.append(access.start)
    app.on_cleanup.append(access.stop)
    add_access_routes(app)


