"""The cameras file: entries, validation, password masking and atomic write-back.

The file is a YAML list of camera entries. Each entry is validated on its
own, so one malformed entry is reported with its id, field and reason while
the others run. Write-back keeps every entry as the admin wrote it: a
``${VAR}`` reference stays a reference, and a malformed entry stays in the
file untouched.
"""

from __future__ import annotations

import datetime
import os
import re
import stat
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin, get_type_hints
from urllib.parse import SplitResult, quote, unquote, urlsplit

import msgspec
import msgspec.yaml

CAMERA_ID_PATTERN = "^[a-z0-9][a-z0-9_-]{0,62}$"
_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
MASK = "***"

OwnerCategory = Literal["pemkab", "desa", "swasta"]


class Owner(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    category: OwnerCategory
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class Location(msgspec.Struct, forbid_unknown_fields=True, frozen=True, omit_defaults=True):
    kecamatan: Annotated[str, msgspec.Meta(max_length=100)] | None = None
    desa: Annotated[str, msgspec.Meta(max_length=100)] | None = None
    lat: Annotated[float, msgspec.Meta(ge=-90, le=90)] | None = None
    lon: Annotated[float, msgspec.Meta(ge=-180, le=180)] | None = None


class CameraConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """One camera entry as the cameras file and the admin API carry it."""

    id: Annotated[str, msgspec.Meta(pattern=CAMERA_ID_PATTERN)]
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    url: Annotated[str, msgspec.Meta(min_length=8, max_length=2048)]
    owner: Owner
    location: Location | None = None
    mode: Literal["on_demand", "always"] = "on_demand"
    transport: Literal["tcp", "udp"] = "tcp"
    record: bool = False
    retention_days: Annotated[int, msgspec.Meta(ge=1, le=3650)] | None = None
    # The day the camera was installed. The minimum-resolution rule is about the
    # accommodation's opening date, and this date is used in its place.
    installed_on: datetime.date | None = None


def validate_camera_url(url: str) -> None:
    """Raise ValueError unless ``url`` is an rtsp:// or rtsps:// URL with a host."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("rtsp", "rtsps"):
        raise ValueError("must start with rtsp:// or rtsps://")
    try:
        _ = parts.port
    except ValueError as exc:
        raise ValueError("has an invalid port") from exc
    if not parts.hostname:
        raise ValueError("has no host")


@dataclass(frozen=True, slots=True)
class EntryError:
    """The reason one entry of the cameras file or one request body was rejected."""

    camera_id: str | None
    field: str | None
    reason: str


def validation_error(exc: msgspec.ValidationError, camera_id: str | None = None) -> EntryError:
    """Turn msgspec's ``Expected ... - at `$.owner.category``` into field and reason."""
    message = str(exc)
    reason, sep, path = message.rpartition(" - at `")
    if not sep:
        reason, path = message, "$"
    field = path.rstrip("`").removeprefix("$").lstrip(".") or None
    # A missing or unknown field is named in the message, not in the path.
    named = re.search(r"(?:missing required field|unknown field) `([^`]+)`", reason)
    if named:
        field = f"{field}.{named.group(1)}" if field else named.group(1)
    if reason.startswith("Invalid enum value") and field is not None:
        allowed = allowed_values(field)
        if allowed:
            reason = f"{reason}; expected one of {', '.join(allowed)}"
    return EntryError(camera_id, field, reason)


def allowed_values(field: str) -> list[str]:
    """Return the values a Literal field of CameraConfig accepts, by dotted path."""
    annotation: Any = CameraConfig
    for name in field.split("."):
        try:
            hints = get_type_hints(annotation, include_extras=True)
        except TypeError:
            return []
        if name not in hints:
            return []
        annotation = hints[name]
        while get_origin(annotation) in (Annotated, Union, types.UnionType):
            arguments = [arg for arg in get_args(annotation) if arg is not type(None)]
            annotation = arguments[0]
    if get_origin(annotation) is Literal:
        return [str(value) for value in get_args(annotation)]
    return []


class EntryInvalid(ValueError):
    """A camera entry failed validation; ``error`` names the field and reason."""

    def __init__(self, error: EntryError) -> None:
        super().__init__(f"{error.field}: {error.reason}" if error.field else error.reason)
        self.error = error


def parse_entry(raw: Any) -> CameraConfig:
    """Validate one raw entry; raises :class:`EntryInvalid`."""
    camera_id = raw_id(raw)
    try:
        config = msgspec.convert(raw, CameraConfig)
    except msgspec.ValidationError as exc:
        raise EntryInvalid(validation_error(exc, camera_id)) from exc
    try:
        validate_camera_url(config.url)
    except ValueError as exc:
        raise EntryInvalid(EntryError(camera_id, "url", f"URL {exc}")) from exc
    if config.record and config.mode != "always":
        reason = (
            "record: true requires mode: always, because an on_demand camera is connected "
            "only while someone watches"
        )
        raise EntryInvalid(EntryError(camera_id, "record", reason))
    return config


def raw_id(raw: Any) -> str | None:
    if isinstance(raw, dict):
        value = raw.get("id")
        return value if isinstance(value, str) else None
    return None


# --- URLs and secrets ---------------------------------------------------------------


def expand_env(url: str, environ: dict[str, str] | os._Environ[str] | None = None) -> str:
    """Replace ``${VAR}`` references with the environment's values.

    Raises KeyError naming the first variable that is not set. Values are
    percent-encoded, so a password with ``@`` or ``/`` works.
    """
    environ = os.environ if environ is None else environ

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in environ:
            raise KeyError(name)
        return quote(environ[name], safe="")

    return _ENV_REFERENCE.sub(substitute, url)


def _split_userinfo(url: str) -> tuple[str, str | None, str | None, str]:
    """Return (scheme://, user, password, host-and-rest) without decoding."""
    scheme, sep, rest = url.partition("://")
    authority, slash, path = rest.partition("/")
    if "@" not in authority:
        return scheme + sep, None, None, rest
    userinfo, _, hostport = authority.rpartition("@")
    user, colon, password = userinfo.partition(":")
    return scheme + sep, user, password if colon else None, hostport + slash + path


def redact_url(url: str) -> str:
    """Mask a literal password: ``rtsp://user:***@host/path``.

    A ``${VAR}`` reference is shown as written, because it is a name and not
    the secret itself.
    """
    prefix, user, password, rest = _split_userinfo(url)
    if user is None:
        return url
    if password is None:
        return f"{prefix}{user}@{rest}"
    if _ENV_REFERENCE.fullmatch(password):
        return f"{prefix}{user}:{password}@{rest}"
    return f"{prefix}{user}:{MASK}@{rest}"


def carries_mask(url: str) -> bool:
    """Return True when a URL's password is the ``***`` mask from a GET response."""
    _, user, password, _ = _split_userinfo(url)
    return user is not None and password in (MASK, quote(MASK))


def _port(parts: SplitResult) -> int:
    """Return the URL's port, with RTSP's defaults (554, and 322 for rtsps) when it has none."""
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is not None:
        return port
    return 322 if parts.scheme == "rtsps" else 554


MASK_UNRESOLVED = (
    "the URL carries the masked password *** but no stored password for the same user, host "
    "and port can replace it; send the real password or a ${VAR} reference"
)


def merge_password(new_url: str, stored_url: str | None) -> str:
    """Keep the stored password when an edit sends ``***`` or no password.

    Applies only when user, host and port are unchanged, so a GET-edit-PUT
    round trip never destroys credentials, while a URL for another device
    (another host, or another port forwarded through NAT) never inherits them.
    """
    if stored_url is None:
        return new_url
    new_prefix, new_user, new_password, new_rest = _split_userinfo(new_url)
    _, old_user, old_password, old_rest = _split_userinfo(stored_url)
    if new_user is None or old_password is None:
        return new_url
    if new_password not in (None, MASK, quote(MASK)):
        return new_url
    if unquote(new_user) != unquote(old_user or ""):
        return new_url
    new_parts, old_parts = urlsplit(new_url), urlsplit(stored_url)
    if (new_parts.hostname, _port(new_parts)) != (old_parts.hostname, _port(old_parts)):
        return new_url
    return f"{new_prefix}{new_user}:{old_password}@{new_rest}"


def public_view(config: CameraConfig) -> dict[str, Any]:
    """Return the entry as API responses show it, password masked."""
    data = msgspec.to_builtins(config)
    data["url"] = redact_url(config.url)
    return data


# --- The file -----------------------------------------------------------------------


class CameraStoreError(Exception):
    """The cameras file cannot be read or written; nothing was changed."""

    code = "cameras_file_not_writable"


class CameraFileInvalid(CameraStoreError):
    """The cameras file does not parse, so no change is written over it."""

    code = "cameras_file_invalid"


class CameraStore:
    """The cameras file: load, validate per entry, and write back atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: list[Any] = []  # raw entries in file order, as written
        self.cameras: dict[str, CameraConfig] = {}
        self.errors: list[EntryError] = []
        self.file_error: str | None = None  # set when the whole file is unusable

    def load(self) -> None:
        """Read the file; a missing file means no cameras yet."""
        self.entries = []
        self.cameras = {}
        self.errors = []
        self.file_error = None
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        except OSError as exc:
            self.file_error = f"cannot read {self.path}: {exc.strerror}"
            return
        try:
            raw = msgspec.yaml.decode(data) if data.strip() else []
        except msgspec.DecodeError as exc:
            self.file_error = f"{self.path} is not valid YAML: {exc}"
            return
        if raw is None:
            raw = []
        if not isinstance(raw, list):
            self.file_error = f"{self.path} must hold a YAML list of cameras"
            return
        self.entries = raw
        for index, entry in enumerate(raw):
            try:
                config = parse_entry(entry)
            except EntryInvalid as exc:
                error = exc.error
                if error.camera_id is None:
                    error = EntryError(f"entry {index + 1}", error.field, error.reason)
                self.errors.append(error)
                continue
            if config.id in self.cameras:
                self.errors.append(EntryError(config.id, "id", "duplicate id; the first entry is used"))
                continue
            self.cameras[config.id] = config

    def put(self, raw: dict[str, Any], config: CameraConfig) -> bool:
        """Create or replace an entry and write the file; return True when created."""
        return self.put_many([(raw, config)])[0]

    def put_many(self, items: list[tuple[dict[str, Any], CameraConfig]]) -> list[bool]:
        """Create or replace several entries with one write; return, per item, True when created.

        Either every item is written or, when the file cannot be written, none.
        """
        if self.file_error:
            raise CameraFileInvalid(f"the cameras file is not usable, fix it first: {self.file_error}")
        entries = list(self.entries)
        positions = {raw_id(entry): index for index, entry in reversed(list(enumerate(entries)))}
        created = []
        for raw, config in items:
            index = positions.get(config.id)
            created.append(index is None)
            if index is None:
                positions[config.id] = len(entries)
                entries.append(raw)
            else:
                entries[index] = raw
        self._write(entries)
        self.entries = entries
        ids = set()
        for _raw, config in items:
            self.cameras[config.id] = config
            ids.add(config.id)
        self.errors = [error for error in self.errors if error.camera_id not in ids]
        return created

    def delete(self, camera_id: str) -> None:
        if self.file_error:
            raise CameraFileInvalid(f"the cameras file is not usable, fix it first: {self.file_error}")
        entries = [entry for entry in self.entries if raw_id(entry) != camera_id]
        self._write(entries)
        self.entries = entries
        self.cameras.pop(camera_id, None)

    def _write(self, entries: list[Any]) -> None:
        # NOTE: YAML comments in the file are not kept by a write-back.
        try:
            write_atomically(self.path, msgspec.yaml.encode(entries))
        except OSError as exc:
            raise CameraStoreError(f"cannot write {self.path}: {exc.strerror or exc}") from exc


def write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data``: temporary file in the same directory, fsync, rename.

    A new file is readable by its owner only (mode 0600), because the files
    written this way may hold camera passwords; a replaced file keeps its
    mode. Raises OSError; then the old file is untouched and no temporary
    file is left.
    """
    directory = path.parent
    temporary = directory / f".{path.name}.{os.getpid()}.tmp"
    try:
        mode = stat.S_IMODE(path.stat().st_mode) if path.exists() else 0o600
        directory.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with open(descriptor, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
        descriptor = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
    except OSError:
        try:
            temporary.unlink(missing_ok=True)
        except OSError:
            pass
        raise
