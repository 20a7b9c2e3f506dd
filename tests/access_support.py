"""Helpers for the access-control and audit tests: consumers, tokens, audit events, other source addresses."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Callable
from typing import Any

from tests.support import Pantau

OWNERS = {
    "hotel-cam": {"category": "swasta", "name": "Hotel Contoh"},
    "desa-cam": {"category": "desa", "name": "Desa Kuta"},
    "pemkab-cam": {"category": "pemkab", "name": "Diskominfo Badung"},
}
RANGE = "start=2020-01-01T00:00:00Z&end=2020-01-01T01:00:00Z"


def create_consumer(instance: Pantau, name: str, scope: dict[str, Any]) -> str:
    """Create a consumer through the admin API and return its key."""
    status, body = instance.admin("POST", "/api/consumers", {"name": name, "scope": scope})
    assert status == 201, body
    return body["key"]


def make_token(instance: Pantau, key: str, camera_id: str, **fields: Any) -> dict[str, Any]:
    status, body = instance.request("POST", "/api/tokens", {"camera_id": camera_id, **fields}, key=key)
    assert status == 201, body
    return body


def audit_events(instance: Pantau, **filters: str) -> list[dict[str, Any]]:
    """Return audit events through GET /api/audit (admin), without the reads of the log itself."""
    query = "&".join(f"{name}={value}" for name, value in filters.items())
    status, body = instance.admin("GET", f"/api/audit?limit=10000&{query}")
    assert status == 200, body
    return [event for event in body["items"] if event["action"] != "audit_read"]


def wait_for_events(
    instance: Pantau, predicate: Callable[[dict[str, Any]], bool], count: int = 1, timeout: float = 20
) -> list[dict[str, Any]]:
    """Wait until at least ``count`` audit events match ``predicate``; return the matching ones."""
    deadline = time.monotonic() + timeout
    while True:
        found = [event for event in audit_events(instance) if predicate(event)]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.3)


def settled_events(
    instance: Pantau, predicate: Callable[[dict[str, Any]], bool], timeout: float = 20, quiet: float = 2.0
) -> list[dict[str, Any]]:
    """Wait for a matching audit event, then ``quiet`` seconds more, and return every match.

    The extra wait lets a second event for the same access show up, so that "exactly one" can be checked.
    """
    wait_for_events(instance, predicate, timeout=timeout)
    time.sleep(quiet)
    return [event for event in audit_events(instance) if predicate(event)]


def request_from(
    source: str, instance: Pantau, method: str, path: str, key: str | None = None
) -> tuple[int, dict[str, str], Any]:
    """Send a request from another loopback address (127.0.0.0/8), as a different client would."""
    connection = http.client.HTTPConnection("127.0.0.1", instance.port, timeout=30, source_address=(source, 0))
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        connection.request(method, path, headers=headers)
        response = connection.getresponse()
        payload = response.read()
        return response.status, dict(response.getheaders()), json.loads(payload) if payload else None
    finally:
        connection.close()
