"""Viewing sessions for the audit log, and the rate limit on failed authentication.

An HLS or VOD player makes many requests for one viewing: playlists, init
segments and media segments. :class:`Sessions` groups them into one
session that ends ``idle_seconds`` after its last request, and then yields
one audit event. A request names its session with the ``session`` query
parameter, which Pantau writes into every URI of the playlists it serves.
A request without one (a playlist reload, or a player that drops query
strings) joins the open session of the same credential, camera, format,
client address and user agent.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from relay.access import Principal

SESSION_PATTERN = re.compile(r"^[A-Za-z0-9_-]{8,32}$")
MAX_SESSIONS = 100_000


@dataclass(eq=False)
class Session:
    """One viewing by one client, from its first to its last request."""

    id: str
    kind: str  # hls_fmp4, hls_ts or vod
    principal: Principal
    camera_id: str
    client: str
    user_agent: str | None
    context: dict[str, Any]  # audit fields fixed at the first request (owner, reason)
    started_wall: float
    started: float
    last: float
    bytes: int = 0
    requests: int = 0
    ok_requests: int = 0
    last_status: int = 0
    statuses: dict[int, int] = field(default_factory=dict)

    @property
    def grouping(self) -> tuple[str, str, str, str, str | None]:
        return (self.principal.identity, self.camera_id, self.kind, self.client, self.user_agent)


class Sessions:
    """Open sessions; ``emit`` receives each one when it ends."""

    def __init__(self, idle_seconds: float, emit: Callable[[Session], None]) -> None:
        self.idle_seconds = idle_seconds
        self.emit = emit
        self.by_id: dict[str, Session] = {}
        self.by_grouping: dict[tuple[str, str, str, str, str | None], Session] = {}

    def find_or_start(
        self,
        requested_id: str | None,
        principal: Principal,
        camera_id: str,
        kind: str,
        client: str,
        user_agent: str | None,
        context: dict[str, Any],
    ) -> Session:
        """Return the session a request belongs to, starting one when none is open."""
        if requested_id is not None and not SESSION_PATTERN.match(requested_id):
            requested_id = None
        if requested_id is not None:
            session = self.by_id.get(requested_id)
            if session is not None:
                if session.principal.identity == principal.identity and session.camera_id == camera_id:
                    return session
                requested_id = None  # another credential's session: never join it

        grouping = (principal.identity, camera_id, kind, client, user_agent)
        session = self.by_grouping.get(grouping)
        if session is not None:
            return session
        if len(self.by_id) >= MAX_SESSIONS:
            self.end(min(self.by_id.values(), key=lambda s: s.last))

        now = time.monotonic()
        session = Session(
            id=requested_id or secrets.token_urlsafe(9),
            kind=kind,
            principal=principal,
            camera_id=camera_id,
            client=client,
            user_agent=user_agent,
            context=context,
            started_wall=time.time(),
            started=now,
            last=now,
        )
        self.by_id[session.id] = session
        self.by_grouping[grouping] = session
        return session

    @staticmethod
    def touch(session: Session, status: int) -> None:
        session.last = time.monotonic()
        session.requests += 1
        session.last_status = status
        session.statuses[status] = session.statuses.get(status, 0) + 1
        if 200 <= status < 300:
            session.ok_requests += 1

    def end(self, session: Session) -> None:
        if self.by_id.pop(session.id, None) is None:
            return
        if self.by_grouping.get(session.grouping) is session:
            del self.by_grouping[session.grouping]
        self.emit(session)

    def sweep(self) -> None:
        """End every session idle for ``idle_seconds``."""
        limit = time.monotonic() - self.idle_seconds
        for session in [s for s in self.by_id.values() if s.last <= limit]:
            self.end(session)

    def end_matching(self, predicate: Callable[[Principal], bool]) -> int:
        ended = [s for s in self.by_id.values() if predicate(s.principal)]
        for session in ended:
            self.end(session)
        return len(ended)

    def end_all(self) -> None:
        for session in list(self.by_id.values()):
            self.end(session)


@dataclass
class WindowCounts:
    """Failures counted in one window of the limiter."""

    by_address: dict[str, int] = field(default_factory=dict)
    by_consumer: dict[str, int] = field(default_factory=dict)
    consumer_addresses: dict[str, set[str]] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)  # requests rejected with 429, by address


class FailureLimiter:
    """Count failed authentications per client address and per consumer in fixed windows.

    An address with ``max_failures`` failures in the current window gets 429
    for every request carrying a credential until the window ends. A
    consumer with ``max_failures`` failures against its keys or tokens, from
    any addresses, gets 429 only at the addresses that failed in this
    window, so an attacker cannot lock a consumer's own clients out.
    """

    def __init__(self, max_failures: int, window_seconds: float, on_window_end: Callable[[WindowCounts], None]) -> None:
        self.max_failures = max_failures
        self.window_seconds = window_seconds
        self.on_window_end = on_window_end
        self.window_started = time.monotonic()
        self.counts = WindowCounts()

    def roll(self, force: bool = False) -> None:
        """Start a new window when the current one is over (or ``force``), handing its counts to ``on_window_end``."""
        now = time.monotonic()
        if now - self.window_started < self.window_seconds and not force:
            return
        finished, self.counts = self.counts, WindowCounts()
        self.window_started = now
        if finished.by_address or finished.rejected:
            self.on_window_end(finished)

    def retry_after(self) -> int:
        return max(1, int(self.window_started + self.window_seconds - time.monotonic() + 0.999))

    def address_blocked(self, address: str) -> bool:
        self.roll()
        return self.counts.by_address.get(address, 0) >= self.max_failures

    def consumer_blocked(self, consumer: str | None, address: str) -> bool:
        self.roll()
        if consumer is None or self.counts.by_consumer.get(consumer, 0) < self.max_failures:
            return False
        return address in self.counts.consumer_addresses.get(consumer, set())

    def failure(self, address: str, consumer: str | None) -> int:
        """Count a failure; return the address's failures in this window, this one included."""
        self.roll()
        counts = self.counts
        counts.by_address[address] = counts.by_address.get(address, 0) + 1
        if consumer is not None:
            counts.by_consumer[consumer] = counts.by_consumer.get(consumer, 0) + 1
            counts.consumer_addresses.setdefault(consumer, set()).add(address)
        return counts.by_address[address]

    def rejected(self, address: str) -> int:
        """Count a request rejected with 429; return how many this address got in this window."""
        self.counts.rejected[address] = self.counts.rejected.get(address, 0) + 1
        return self.counts.rejected[address]
