"""Authentication: who sent a request, and the limit on failed attempts.

:class:`Authenticator` checks the ``Authorization: Bearer`` header (admin
token or consumer key) or, without one, the ``token`` query parameter (a
signed URL). A credential that fails gets 401. The failure is logged once
per client address and window, counted per address and per consumer, and
recorded in the audit log; too many failures get 429.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web

from relay.access import (
    ConsumerStore,
    Principal,
    TokenInvalid,
    admin_key_id,
    key_id_of,
    read_token,
    same_secret,
)
from relay.access_sessions import FailureLimiter, WindowCounts
from relay.audit import AuditLog
from relay.logs import get_logger
from relay.settings import Settings
from relay.web import json_error

ANONYMOUS = Principal("anonymous")
ADMIN_PRINCIPAL = Principal("admin")

log = get_logger(component="access")


@dataclass(frozen=True, slots=True)
class Failure:
    """The reason a credential was rejected; ``consumer`` is set when the credential names one reliably."""

    code: str
    reason: str
    consumer: str | None = None


def clean_text(value: str | None, limit: int) -> str | None:
    """Keep printable characters of a header value, at most ``limit`` of them."""
    if not value:
        return None
    text = "".join(character for character in value if character.isprintable())[:limit].strip()
    return text or None


def result_of(status: int) -> str:
    if status < 300:
        return "ok"
    if status in (401, 403, 429):
        return "denied"
    if status == 404:
        return "not_found"
    return "failed"


def audit_event(
    request: web.Request,
    action: str,
    status: int,
    principal: Principal | None,
    camera_id: str | None = None,
    owner: dict[str, str] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """Build an audit event about ``request``; ``fields`` are added as given."""
    event: dict[str, Any] = {
        "action": action,
        "result": result_of(status),
        "status": status,
        "consumer": principal.consumer if principal else None,
        "credential": principal.kind if principal else None,
        "key_id": principal.key_id if principal and principal.kind != "admin" else None,
        "camera_id": camera_id,
        "owner": owner,
        "client": request.remote,
        "user_agent": clean_text(request.headers.get("User-Agent"), 300),
        "reason": clean_text(request.headers.get("X-Pantau-Reason"), 500)
        or (principal.token_reason if principal else None),
        "method": request.method,
        "path": request.path[:300],
    }
    event.update(fields)
    return event


class Authenticator:
    """The credentials of one service and the failed-authentication limit."""

    def __init__(self, settings: Settings, store: ConsumerStore, audit: AuditLog) -> None:
        self.enabled = settings.auth == "on"
        self.store = store
        self.audit = audit
        self.admin_token = ""
        self.token_secret = ""
        self.admin_key_id = ""
        self.limiter = FailureLimiter(
            settings.auth_max_failures, settings.auth_failure_window_seconds, self._failure_window_ended
        )
        self.failures = 0
        self.rate_limited = 0

    def set_secrets(self, admin_token: str, token_secret: str) -> None:
        self.admin_token = admin_token
        self.token_secret = token_secret
        self.admin_key_id = admin_key_id(admin_token)

    def identify(self, request: web.Request) -> Principal | web.Response:
        """Return the caller's principal, or the 401 or 429 response."""
        header = request.headers.get("Authorization")
        token = request.query.get("token") if header is None else None
        if header is None and token is None:
            if not self.enabled:
                return ANONYMOUS
            response = json_error(
                401,
                "unauthorized",
                "credentials are missing: send Authorization: Bearer KEY (a consumer key or the admin token) "
                "or a signed URL's token query parameter",
            )
            response.headers["WWW-Authenticate"] = 'Bearer realm="pantau"'
            return response
        if not self.enabled:
            # With checks off a credential only names the caller in the audit log.
            found = self._verify_key(header) if header is not None else self._verify_token(token or "")
            return found if isinstance(found, Principal) else ANONYMOUS
        address = request.remote or ""
        if self.limiter.address_blocked(address):
            return self._too_many(request)
        found = self._verify_key(header) if header is not None else self._verify_token(token or "")
        if self.limiter.consumer_blocked(found.consumer, address):
            return self._too_many(request)
        if isinstance(found, Failure):
            return self._fail(request, found)
        return found

    def _verify_key(self, header: str) -> Principal | Failure:
        scheme, _, value = header.strip().partition(" ")
        value = value.strip()
        if scheme.lower() != "bearer" or not value:
            return Failure("invalid_authorization", "send the credential as Authorization: Bearer KEY")
        if same_secret(value, self.admin_token):
            return ADMIN_PRINCIPAL
        key_id = key_id_of(value)
        consumer = self.store.verify(value)
        if consumer is None:
            holder = self.store.owner_of_key(key_id) if key_id else None
            return Failure("invalid_key", "the key is unknown, revoked or wrong", holder)
        return Principal("consumer", consumer.name, key_id, consumer.scope)

    def _verify_token(self, token: str) -> Principal | Failure:
        try:
            claims = read_token(self.token_secret, token)
        except TokenInvalid as exc:
            return Failure(exc.code, exc.reason, exc.consumer)
        if claims.c is None:
            if claims.k != self.admin_key_id:
                return Failure("token_revoked", "the admin token that made this token has changed")
            return Principal("token", None, claims.k, None, claims.cam, tuple(claims.act), claims.r)
        consumer = self.store.consumers.get(claims.c)
        if consumer is None or self.store.owner_of_key(claims.k) != claims.c:
            return Failure("token_revoked", "the consumer or the key that made this token was revoked", claims.c)
        return Principal("token", consumer.name, claims.k, consumer.scope, claims.cam, tuple(claims.act), claims.r)

    def _fail(self, request: web.Request, failure: Failure) -> web.Response:
        address = request.remote or ""
        self.failures += 1
        count = self.limiter.failure(address, failure.consumer)
        if count == 1:
            log.warning(
                "auth_failed", client=address, consumer=failure.consumer, error=failure.code, path=request.path[:300]
            )
        self.audit.record(audit_event(request, "auth_failed", 401, None, consumer=failure.consumer, error=failure.code))
        response = json_error(401, failure.code, failure.reason)
        response.headers["WWW-Authenticate"] = 'Bearer realm="pantau", error="invalid_token"'
        return response

    def _too_many(self, request: web.Request) -> web.Response:
        address = request.remote or ""
        self.rate_limited += 1
        if self.limiter.rejected(address) == 1:
            log.warning("auth_rate_limit_started", client=address, max_failures=self.limiter.max_failures)
        retry = self.limiter.retry_after()
        response = json_error(
            429, "too_many_failures", f"too many failed authentications from this client; retry in {retry} s"
        )
        response.headers["Retry-After"] = str(retry)
        return response

    def _failure_window_ended(self, counts: WindowCounts) -> None:
        window = self.limiter.window_seconds
        for address, count in counts.by_address.items():
            if count > 1:
                log.warning("auth_failures_repeated", client=address, failures=count, window_seconds=window)
        for consumer, count in counts.by_consumer.items():
            if count > 1:
                log.warning("auth_failures_repeated", consumer=consumer, failures=count, window_seconds=window)
        for address, count in counts.rejected.items():
            log.warning("auth_rate_limited", client=address, rejected=count, window_seconds=window)
            self.audit.record(
                {"action": "auth_rate_limited", "result": "denied", "status": 429, "client": address,
                 "requests": count, "window_seconds": window}
            )
