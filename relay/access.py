"""Access control: who is asking (admin, consumer, signed token) and what they may see.

Three kinds of credential exist. The admin token (``PANTAU_ADMIN_TOKEN``)
may do everything. A consumer key (``pk_{key_id}_{secret}``) belongs to a
named consumer whose scope limits cameras and actions. A signed token,
made by ``POST /api/tokens``, is bound to one camera, a set of actions, an
expiry and the key (or admin token) that made it, so revoking the key or
deleting the consumer ends the token too.

This module contains the parts without HTTP: scopes, the consumers file,
key hashing, token signing and the secrets kept under ``PANTAU_DATA_DIR``.
``relay.access_http`` applies them to requests.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from relay.cameras import CAMERA_ID_PATTERN, CameraConfig, OwnerCategory, write_atomically

Action = Literal["live", "playback", "export"]
ACTIONS: tuple[Action, ...] = ("live", "playback", "export")
CONSUMER_NAME_PATTERN = "^[a-z0-9][a-z0-9_-]{0,62}$"
KEY_ID_PATTERN = "^[0-9a-f]{12}$"
KEY_PREFIX = "pk_"
MAX_KEYS_PER_CONSUMER = 20
MAX_CONSUMERS = 10_000
MAX_SCOPE_ENTRIES = 10_000
ADMIN_TOKEN_FILE = "admin-token"
TOKEN_SECRET_FILE = "token-secret"
CONSUMERS_FILE = "consumers.json"
# Keys in the aiohttp request mapping: the caller, and what a streaming
# handler reports for the audit log (body bytes it sent, extra details).
PRINCIPAL_KEY = "pantau.principal"
BYTES_SENT_KEY = "pantau.bytes_sent"
AUDIT_DETAIL_KEY = "pantau.audit_detail"
AUDIT_CAMERA_KEY = "pantau.audit_camera"  # (camera id, owner) for endpoints whose body names the camera

_KEY_RE = re.compile(r"^pk_([0-9a-f]{12})_([A-Za-z0-9_-]{20,200})$")


# --- scopes and principals ----------------------------------------------------------


class Scope(msgspec.Struct, forbid_unknown_fields=True, frozen=True, omit_defaults=True):
    """The cameras and actions a consumer may use. A missing list (None) allows any value, an empty list none.

    A camera is in scope when it passes every list the scope gives.
    """

    owner_categories: Annotated[list[OwnerCategory], msgspec.Meta(max_length=3)] | None = None
    owners: (
        Annotated[
            list[Annotated[str, msgspec.Meta(min_length=1, max_length=200)]],
            msgspec.Meta(max_length=MAX_SCOPE_ENTRIES),
        ]
        | None
    ) = None
    cameras: (
        Annotated[
            list[Annotated[str, msgspec.Meta(pattern=CAMERA_ID_PATTERN)]],
            msgspec.Meta(max_length=MAX_SCOPE_ENTRIES),
        ]
        | None
    ) = None
    actions: Annotated[list[Action], msgspec.Meta(max_length=3)] | None = None

    def allows_camera(self, camera_id: str, config: CameraConfig | None) -> bool:
        """Return whether the camera passes every filter; an unknown owner passes no owner filter."""
        if self.cameras is not None and camera_id not in self.cameras:
            return False
        owner = config.owner if config is not None else None
        if self.owner_categories is not None and (owner is None or owner.category not in self.owner_categories):
            return False
        if self.owners is not None and (owner is None or owner.name not in self.owners):
            return False
        return True

    def allows_action(self, action: Action) -> bool:
        return self.actions is None or action in self.actions


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller of a request.

    ``kind`` is ``admin``, ``consumer`` (a key), ``token`` (a signed URL) or
    ``anonymous`` (access control is off and no valid credential was sent).
    """

    kind: Literal["admin", "consumer", "token", "anonymous"]
    consumer: str | None = None
    key_id: str | None = None
    scope: Scope | None = None
    token_camera: str | None = None
    token_actions: tuple[str, ...] = ()
    token_reason: str | None = None

    @property
    def unrestricted(self) -> bool:
        """True for the admin and for anyone while access control is off."""
        return self.kind in ("admin", "anonymous")

    @property
    def identity(self) -> str:
        """A stable name of the credential, used to group requests into sessions."""
        if self.kind in ("admin", "anonymous"):
            return self.kind
        return f"{self.kind}:{self.consumer}:{self.key_id}"

    def allows(self, action: Action, camera_id: str, config: CameraConfig | None) -> bool:
        """Return whether this principal may use ``action`` on the camera."""
        if self.unrestricted:
            return True
        if self.kind == "token" and (camera_id != self.token_camera or action not in self.token_actions):
            return False
        scope = self.scope or Scope()
        return scope.allows_action(action) and scope.allows_camera(camera_id, config)

    def sees_camera(self, camera_id: str, config: CameraConfig | None) -> bool:
        """Return whether a camera appears in this principal's camera lists and reports."""
        if self.unrestricted:
            return True
        if self.kind == "token":
            return False
        return (self.scope or Scope()).allows_camera(camera_id, config)


def principal_of(request: Any) -> Principal | None:
    """Return the request's principal, or None when the access middleware did not run."""
    return request.get(PRINCIPAL_KEY)


def camera_visible(request: Any, camera_id: str, config: CameraConfig | None) -> bool:
    """Return whether a camera list or report shown to this request's caller includes the camera."""
    principal = principal_of(request)
    return principal is None or principal.sees_camera(camera_id, config)


def shape_camera_view(request: Any, view: dict[str, Any]) -> dict[str, Any]:
    """Drop the fields shown only to the admin: a consumer has no use for a camera's RTSP address."""
    principal = principal_of(request)
    if principal is not None and not principal.unrestricted:
        view.pop("url", None)
    return view


# --- secrets under the data directory -----------------------------------------------


def load_or_create_secret(path: Path) -> tuple[str, bool]:
    """Return the secret stored in ``path``, creating a random one (mode 0600) when the file is missing.

    The second value is True when the secret was just created. Raises
    OSError when the file cannot be read or written, and ValueError when it
    contains too short a secret.
    """
    try:
        value = path.read_text().strip()
    except FileNotFoundError:
        value = secrets.token_urlsafe(32)
        write_atomically(path, (value + "\n").encode())
        return value, True
    if len(value) < 16:
        raise ValueError(f"{path} contains fewer than 16 characters; delete it so that a new secret is generated")
    return value, False


def fingerprint(value: str) -> str:
    """Return a short, non-secret name of a secret (the start of its SHA-256)."""
    return hashlib.sha256(value.encode("utf-8", "surrogateescape")).hexdigest()[:16]


def admin_key_id(admin_token: str) -> str:
    """Return the key id written into tokens that the admin makes; it changes with the admin token."""
    return "admin:" + fingerprint(admin_token)


def same_secret(given: str, expected: str) -> bool:
    """Compare two secrets in constant time."""
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode("utf-8", "surrogateescape"))


# --- consumers and keys ----------------------------------------------------------------


class StoredKey(msgspec.Struct, frozen=True):
    key_id: str
    sha256: str
    created: str


class Consumer(msgspec.Struct):
    name: str
    scope: Scope
    created: str
    keys: list[StoredKey] = msgspec.field(default_factory=list)


class ConsumersFile(msgspec.Struct):
    consumers: list[Consumer] = msgspec.field(default_factory=list)


class ConsumerStoreError(Exception):
    """The consumers file cannot be read or written; nothing was changed."""


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()


def new_key() -> tuple[str, str]:
    """Return (key_id, key) for a new consumer key; the key has 256 random bits."""
    key_id = secrets.token_hex(6)
    return key_id, f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"


def key_id_of(key: str) -> str | None:
    """Return the key id inside a consumer key, or None when ``key`` is not shaped like one."""
    match = _KEY_RE.match(key)
    return match.group(1) if match else None


class ConsumerStore:
    """The consumers and the SHA-256 of their keys, in ``consumers.json`` (mode 0600).

    Keys have 256 random bits, so a plain SHA-256 is enough to make the
    stored hashes useless to anyone who reads the file. Every change is
    written atomically before it takes effect.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.consumers: dict[str, Consumer] = {}
        self._keys: dict[str, tuple[str, str]] = {}  # key_id -> (consumer name, sha256)
        self._lock = threading.Lock()

    def load(self) -> None:
        """Read the file; a missing file means no consumers. Raises ConsumerStoreError."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise ConsumerStoreError(f"cannot read {self.path}: {exc.strerror or exc}") from exc
        try:
            stored = msgspec.json.decode(data, type=ConsumersFile)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise ConsumerStoreError(f"{self.path} is not a valid consumers file: {exc}") from exc
        self.consumers = {consumer.name: consumer for consumer in stored.consumers}
        self._index()

    def _index(self) -> None:
        self._keys = {
            key.key_id: (consumer.name, key.sha256) for consumer in self.consumers.values() for key in consumer.keys
        }

    def _save(self, consumers: dict[str, Consumer]) -> None:
        data = msgspec.json.encode(ConsumersFile(list(consumers.values())))
        try:
            write_atomically(self.path, data)
        except OSError as exc:
            raise ConsumerStoreError(f"cannot write {self.path}: {exc.strerror or exc}") from exc
        self.consumers = consumers
        self._index()

    def _copy(self) -> dict[str, Consumer]:
        return {name: msgspec.structs.replace(c, keys=list(c.keys)) for name, c in self.consumers.items()}

    def create(self, name: str, scope: Scope) -> tuple[Consumer, str, str]:
        """Add a consumer with one key; return (consumer, key_id, key). Raises KeyError if it exists."""
        with self._lock:
            if name in self.consumers:
                raise KeyError(name)
            if len(self.consumers) >= MAX_CONSUMERS:
                raise ConsumerStoreError(f"there are already {MAX_CONSUMERS} consumers")
            key_id, key = new_key()
            consumer = Consumer(name, scope, now_iso(), [StoredKey(key_id, hash_key(key), now_iso())])
            consumers = self._copy()
            consumers[name] = consumer
            self._save(consumers)
            return consumer, key_id, key

    def set_scope(self, name: str, scope: Scope) -> Consumer:
        """Replace a consumer's scope. Raises KeyError for an unknown consumer."""
        with self._lock:
            consumers = self._copy()
            consumers[name] = msgspec.structs.replace(consumers[name], scope=scope)
            self._save(consumers)
            return consumers[name]

    def delete(self, name: str) -> Consumer:
        """Remove a consumer and all its keys. Raises KeyError for an unknown consumer."""
        with self._lock:
            consumers = self._copy()
            removed = consumers.pop(name)
            self._save(consumers)
            return removed

    def add_key(self, name: str) -> tuple[str, str]:
        """Give a consumer another key; return (key_id, key). Raises KeyError or ConsumerStoreError."""
        with self._lock:
            consumers = self._copy()
            consumer = consumers[name]
            if len(consumer.keys) >= MAX_KEYS_PER_CONSUMER:
                raise ConsumerStoreError(
                    f"consumer {name!r} already has {MAX_KEYS_PER_CONSUMER} keys; revoke one first"
                )
            key_id, key = new_key()
            consumer.keys.append(StoredKey(key_id, hash_key(key), now_iso()))
            self._save(consumers)
            return key_id, key

    def revoke_key(self, name: str, key_id: str) -> None:
        """Remove one key. Raises KeyError when the consumer or the key does not exist."""
        with self._lock:
            consumers = self._copy()
            consumer = consumers[name]
            kept = [key for key in consumer.keys if key.key_id != key_id]
            if len(kept) == len(consumer.keys):
                raise KeyError(key_id)
            consumer.keys = kept
            self._save(consumers)

    def owner_of_key(self, key_id: str) -> str | None:
        """Return the consumer that has the key ``key_id``, or None."""
        entry = self._keys.get(key_id)
        return entry[0] if entry else None

    def verify(self, key: str) -> Consumer | None:
        """Return the consumer whose key this is, or None for an unknown, revoked or wrong key."""
        key_id = key_id_of(key)
        entry = self._keys.get(key_id) if key_id else None
        if entry is None:
            return None
        name, digest = entry
        if not hmac.compare_digest(hash_key(key), digest):
            return None
        return self.consumers.get(name)


# --- signed tokens -----------------------------------------------------------------------


class TokenClaims(msgspec.Struct, frozen=True, omit_defaults=True):
    """The signed content of a token. Short field names keep URLs short."""

    cam: str  # camera id
    act: list[str]  # actions
    exp: int  # expiry, Unix seconds
    k: str  # key id of the consumer key that made it, or "admin:" + admin token fingerprint
    c: str | None = None  # consumer name, None for the admin
    r: str | None = None  # reason given when the token was made


class TokenInvalid(Exception):
    """A token that cannot be used: ``code`` is invalid_token, token_expired or token_revoked."""

    def __init__(self, code: str, reason: str, consumer: str | None = None) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.consumer = consumer


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _signature(secret: str, payload: str) -> bytes:
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).digest()


def sign_token(secret: str, claims: TokenClaims) -> str:
    """Return ``payload.signature``, both base64url, signed with HMAC-SHA-256."""
    payload = _b64(msgspec.json.encode(claims))
    return f"{payload}.{_b64(_signature(secret, payload))}"


TOKEN_PATTERN = re.compile(r"^[A-Za-z0-9_-]{10,2000}\.[A-Za-z0-9_-]{43}$")


def read_token(secret: str, token: str, now: float | None = None) -> TokenClaims:
    """Check a token's signature and expiry and return its claims. Raises TokenInvalid."""
    if not TOKEN_PATTERN.match(token):
        raise TokenInvalid("invalid_token", "the token is malformed")
    payload, _, signature = token.partition(".")
    if not hmac.compare_digest(_unb64(signature), _signature(secret, payload)):
        raise TokenInvalid("invalid_token", "the token's signature is invalid (made with another PANTAU_TOKEN_SECRET?)")
    try:
        claims = msgspec.json.decode(_unb64(payload), type=TokenClaims)
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
        raise TokenInvalid("invalid_token", "the token's content is invalid") from exc
    if claims.exp <= (time.time() if now is None else now):
        expired = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(claims.exp))
        raise TokenInvalid("token_expired", f"the token expired at {expired}; request a new one", claims.c)
    return claims


def secret_paths(data_dir: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Return where the generated admin token and token secret are kept."""
    root = Path(data_dir)
    return root / ADMIN_TOKEN_FILE, root / TOKEN_SECRET_FILE
