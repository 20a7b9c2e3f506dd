"""Settings: environment variables read once at start-up into one frozen struct.

Every field of :class:`Settings` is the variable ``PANTAU_<FIELD NAME>``, has
a default, and carries its unit and help text in its ``msgspec.Meta``, from
which ``pantau --help`` prints the table. An invalid value stops start-up
with one line that names the variable, the value and what is allowed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin, get_type_hints

import msgspec

ENV_PREFIX = "PANTAU_"


def _meta(description: str, unit: str = "", **constraints: Any) -> msgspec.Meta:
    return msgspec.Meta(description=description, extra={"unit": unit}, **constraints)


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """All of Pantau's settings; field ``x_y`` is read from ``PANTAU_X_Y``."""

    http_host: Annotated[str, _meta("Address the HTTP server listens on.", "address")] = "0.0.0.0"
    http_port: Annotated[int, _meta("TCP port of the HTTP server.", "port", ge=1, le=65535)] = 8080
    data_dir: Annotated[
        str, _meta("Writable directory for the cameras file, recordings and keys.", "path")
    ] = "./data"
    cameras: Annotated[
        str,
        _meta(
            "Cameras file (YAML). Empty means cameras.yaml inside PANTAU_DATA_DIR; "
            "a missing file means no cameras yet.",
            "path",
        ),
    ] = ""
    idle_close_seconds: Annotated[
        float,
        _meta("Close an on_demand camera's upstream this long after its last reader left.", "s", gt=0),
    ] = 20.0
    connect_timeout_seconds: Annotated[
        float, _meta("Limit for the TCP connection to a camera and for a first frame.", "s", gt=0)
    ] = 10.0
    read_timeout_seconds: Annotated[
        float,
        _meta("No packet from a connected camera for this long counts as a failure.", "s", gt=0),
    ] = 10.0
    retry_max_seconds: Annotated[
        float, _meta("Upper limit of the reconnect backoff, which starts at 1 s and doubles.", "s", ge=1)
    ] = 60.0
    outage_hold_seconds: Annotated[
        float,
        _meta(
            "Live clients stay connected, receiving nothing, for this long while their camera "
            "reconnects; then their response ends.",
            "s",
            ge=0,
        ),
    ] = 30.0
    gop_cache_max_frames: Annotated[
        int, _meta("Limit of the per-camera cache of frames since the last keyframe.", "frames", ge=1)
    ] = 600
    gop_cache_max_bytes: Annotated[
        int, _meta("Limit of the per-camera cache of frames since the last keyframe.", "bytes", ge=65536)
    ] = 8 * 1024 * 1024
    client_buffer_bytes: Annotated[
        int,
        _meta(
            "A live client with more unsent bytes than this skips frames until the next keyframe.",
            "bytes",
            ge=65536,
        ),
    ] = 2 * 1024 * 1024
    slow_client_seconds: Annotated[
        float,
        _meta("A live client that has skipped frames for this long without catching up is disconnected.", "s", gt=0),
    ] = 10.0
    segment_seconds: Annotated[
        float,
        _meta("A recording segment is cut at the first keyframe after this long.", "s", ge=1, le=3600),
    ] = 60.0
    retention_days: Annotated[
        float,
        _meta("Recordings older than this are deleted, unless the camera sets retention_days.", "days", gt=0),
    ] = 30.0
    retention_max_bytes: Annotated[
        int,
        _meta("Quota for all recordings together; the oldest go first. 0 means no quota.", "bytes", ge=0),
    ] = 0
    min_free_bytes: Annotated[
        int,
        _meta("Below this much free space on the recordings disk the oldest segments go first.", "bytes", ge=0),
    ] = 5_000_000_000
    retention_interval_seconds: Annotated[
        float, _meta("Pause between two retention runs.", "s", ge=0.5)
    ] = 60.0
    record_queue_bytes: Annotated[
        int,
        _meta(
            "Limit of recording data waiting for the disk; beyond it a camera's segment is closed "
            "and a disk_slow gap recorded.",
            "bytes",
            ge=1048576,
        ),
    ] = 128 * 1024 * 1024
    export_max_seconds: Annotated[
        float, _meta("Longest time range of a recording listing, playlist or export.", "s", gt=0)
    ] = 86400.0
    log_format: Annotated[
        Literal["json", "console"], _meta("Log output: JSON lines, or readable text for a terminal.")
    ] = "json"
    log_level: Annotated[
        Literal["debug", "info", "warning", "error"], _meta("Lowest level that is logged.")
    ] = "info"

    @property
    def cameras_path(self) -> Path:
        return Path(self.cameras) if self.cameras else Path(self.data_dir) / "cameras.yaml"


class SettingsError(ValueError):
    """An environment variable has a value that is not allowed."""


def env_name(field: str) -> str:
    return ENV_PREFIX + field.upper()


def _field_meta(annotation: Any) -> tuple[Any, msgspec.Meta | None]:
    if get_origin(annotation) is Annotated:
        base, *extras = get_args(annotation)
        for extra in extras:
            if isinstance(extra, msgspec.Meta):
                return base, extra
        return base, None
    return annotation, None


def describe_allowed(annotation: Any) -> str:
    """Describe the values a setting accepts, in words for error and help text."""
    base, meta = _field_meta(annotation)
    if get_origin(base) is Literal:
        return "one of " + ", ".join(str(choice) for choice in get_args(base))
    kind = {int: "an integer", float: "a number", str: "text", bool: "true or false"}.get(base, str(base))
    bounds = []
    if meta is not None:
        if meta.ge is not None:
            bounds.append(f">= {meta.ge:.15g}")
        if meta.gt is not None:
            bounds.append(f"> {meta.gt:.15g}")
        if meta.le is not None:
            bounds.append(f"<= {meta.le:.15g}")
        if meta.lt is not None:
            bounds.append(f"< {meta.lt:.15g}")
    return kind + (" " + " and ".join(bounds) if bounds else "")


def settings_fields() -> list[tuple[str, Any, Any, msgspec.Meta | None]]:
    """Return (field, annotation, default, meta) for every setting, in declaration order."""
    hints = get_type_hints(Settings, include_extras=True)
    defaults = Settings()
    rows = []
    for name in Settings.__struct_fields__:
        annotation = hints[name]
        _, meta = _field_meta(annotation)
        rows.append((name, annotation, getattr(defaults, name), meta))
    return rows


def load_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Read every ``PANTAU_*`` variable; ``overrides`` win over the environment.

    Raises :class:`SettingsError` naming the first invalid variable.
    """
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for name, annotation, _default, _meta in settings_fields():
        variable = env_name(name)
        raw = environ.get(variable)
        if raw is None:
            continue
        raw = raw.strip()
        try:
            values[name] = msgspec.convert(raw, annotation, strict=False)
        except msgspec.ValidationError as exc:
            allowed = describe_allowed(annotation)
            raise SettingsError(f"invalid {variable}={raw!r}: expected {allowed}") from exc
    values.update(overrides)
    return msgspec.convert(values, Settings)


def help_table() -> str:
    """Format every setting as help text: variable, default, unit and meaning."""
    lines = ["Environment variables (all optional):", ""]
    for name, annotation, default, meta in settings_fields():
        unit = (meta.extra or {}).get("unit", "") if meta else ""
        description = meta.description if meta and meta.description else ""
        shown_default = default if default != "" else '""'
        unit_text = f" [{unit}]" if unit else ""
        lines.append(f"  {env_name(name)}={shown_default}{unit_text}")
        lines.append(f"      {description} Allowed: {describe_allowed(annotation)}.")
    return "\n".join(lines)
