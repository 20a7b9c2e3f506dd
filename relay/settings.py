"""Settings: environment variables read once at start-up into one frozen struct.

Every field of :class:`Settings` is the variable ``PANTAU_<FIELD NAME>``, has
a default, and carries its unit and help text in its ``msgspec.Meta``, from
which ``pantau --help`` prints the table. An invalid value stops start-up
with one line that names the variable, the value and what is allowed.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin, get_type_hints

import msgspec

ENV_PREFIX = "PANTAU_"


def _meta(
    description: str, unit: str = "", allowed: str = "", secret: bool = False, **constraints: Any
) -> msgspec.Meta:
    """Describe a setting; ``allowed`` replaces the generated "Allowed:" text where that would be unclear.

    The value of a ``secret`` setting never appears in an error message.
    """
    extra: dict[str, Any] = {"unit": unit, "allowed": allowed} if allowed else {"unit": unit}
    if secret:
        extra["secret"] = True
    return msgspec.Meta(description=description, extra=extra, **constraints)


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
        _meta("Close an on_demand camera's upstream this long after its last reader left.", "s", gt=0, le=86400),
    ] = 20.0
    connect_timeout_seconds: Annotated[
        float, _meta("Limit for the TCP connection (and TLS handshake) to a camera.", "s", gt=0, le=300)
    ] = 10.0
    read_timeout_seconds: Annotated[
        float,
        _meta(
            "No reply or packet from a camera for this long counts as a failure; "
            "no decodable frame for this long (twice as long for the first) too.",
            "s",
            gt=0,
            le=300,
        ),
    ] = 10.0
    retry_max_seconds: Annotated[
        float, _meta("Upper limit of the reconnect backoff, which starts at 1 s and doubles.", "s", ge=1, le=3600)
    ] = 60.0
    outage_hold_seconds: Annotated[
        float,
        _meta(
            "Live clients stay connected, receiving nothing, for this long while their camera "
            "reconnects; then their response ends.",
            "s",
            ge=0,
            le=3600,
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
        _meta(
            "A live client that has skipped frames for this long without catching up is disconnected.",
            "s",
            gt=0,
            le=600,
        ),
    ] = 10.0
    hls_segment_seconds: Annotated[
        float,
        _meta(
            "Target length of an HLS segment. Segments are cut only at keyframes, so they follow "
            "the camera's keyframe interval when it is longer.",
            "s",
            ge=1,
            le=30,
        ),
    ] = 2.0
    hls_window: Annotated[int, _meta("Number of segments an HLS playlist lists.", "segments", ge=3, le=60)] = 6
    hls_first_segment_wait_seconds: Annotated[
        float,
        _meta(
            "Limit for the wait of a first playlist request while the camera connects and its "
            "first segment is cut; then the request gets 503.",
            "s",
            gt=0,
            le=120,
        ),
    ] = 10.0
    node_modules: Annotated[
        str,
        _meta(
            "Directory with the npm packages hls.js and mpegts.js that the status page serves. "
            "Empty means node_modules in the Pantau source tree, where npm ci puts them.",
            "path",
        ),
    ] = ""
    segment_seconds: Annotated[
        float,
        _meta("A recording segment is cut at the first keyframe after this long.", "s", ge=1, le=3600),
    ] = 60.0
    retention_days: Annotated[
        float,
        _meta("Recordings older than this are deleted, unless the camera sets retention_days.", "days", gt=0),
    ] = 30.0
    retention_max_bytes: (
        Annotated[int, _meta("Quota for all recordings together; the oldest go first. Unset means no quota.", "bytes", ge=1)]
        | None
    ) = None
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
    # --- camera facts, the minimum-resolution rule and bulk registration ---
    probe_interval_hours: Annotated[
        float,
        _meta(
            "Probe on_demand cameras at start-up, when added, and again after this long without a probe "
            "(live cameras are measured on their running session). 0 turns scheduled probes off; cameras "
            "are still probed whenever they connect.",
            "h",
            ge=0,
        ),
    ] = 24.0
    probe_window_seconds: Annotated[
        float,
        _meta(
            "Stream time a probe measures, from a keyframe to the first keyframe after this long, so that "
            "frame rate and bit rate cover whole GOPs. A probe gives up waiting for that keyframe after "
            "three times this long.",
            "s",
            ge=2,
            le=120,
        ),
    ] = 10.0
    probe_concurrency: Annotated[
        int, _meta("Scheduled probes that may run at the same time.", "probes", ge=1, le=256)
    ] = 8
    min_pixels: Annotated[
        int,
        _meta(
            "Minimum width x height of a swasta camera's video under the resolution rule. The default is "
            "2560x1440, the smallest resolution sold as 4 MP.",
            "pixels",
            ge=1,
        ),
    ] = 3686400
    min_pixels_since: Annotated[
        datetime.date | None,
        _meta(
            "The rule applies to swasta cameras installed on or after this date (installed_on); empty "
            "applies it to every swasta camera.",
            "date",
            allowed="a date YYYY-MM-DD, or empty",
        ),
    ] = None
    import_area: Annotated[
        str,
        _meta(
            "Plausible camera coordinates for the CSV import: lat_min,lat_max,lon_min,lon_max in decimal "
            "degrees. The default is Badung Regency with about 3 km margin.",
            "degrees",
            pattern=r"^\s*-?\d+(\.\d+)?\s*(,\s*-?\d+(\.\d+)?\s*){3}$",
            allowed="four decimal numbers lat_min,lat_max,lon_min,lon_max",
        ),
    ] = "-8.88,-8.20,115.05,115.28"
    import_kecamatan: Annotated[
        str,
        _meta(
            "Comma-separated kecamatan names the CSV import accepts, matched without regard to case or "
            "spacing and stored as written here. Empty accepts any name.",
            "names",
        ),
    ] = "Kuta Selatan,Kuta,Kuta Utara,Mengwi,Abiansemal,Petang"
    # --- access control ---
    auth: Annotated[
        Literal["on", "off"],
        _meta(
            "on: every endpoint except health checks and the status page's files needs a credential. "
            "off: no checks, for a closed lab network only; a warning is logged at start and every hour."
        ),
    ] = "on"
    admin_token: Annotated[
        str,
        _meta(
            "The admin token, sent as Authorization: Bearer. Empty means a random one is generated at first "
            "start and kept in PANTAU_DATA_DIR/admin-token (mode 0600).",
            "secret",
            pattern=r"^(|[\x21-\x7e]{16,512})$",
            allowed="empty, or 16 to 512 printable ASCII characters without spaces",
            secret=True,
        ),
    ] = ""
    token_secret: Annotated[
        str,
        _meta(
            "Key that signs URL tokens; instances serving the same cameras must share it. Empty means a random "
            "one is generated at first start and kept in PANTAU_DATA_DIR/token-secret (mode 0600).",
            "secret",
            pattern=r"^(|[\x21-\x7e]{32,512})$",
            allowed="empty, or 32 to 512 printable ASCII characters without spaces",
            secret=True,
        ),
    ] = ""
    token_max_seconds: Annotated[
        float, _meta("Longest lifetime of a signed URL token (the default lifetime is 600 s or this, if less).", "s", ge=10)
    ] = 86400.0
    auth_max_failures: Annotated[
        int,
        _meta(
            "Failed authentications from one client address, or against one consumer's keys, within "
            "PANTAU_AUTH_FAILURE_WINDOW_SECONDS; beyond them further attempts get 429 until the window ends.",
            "failures",
            ge=1,
        ),
    ] = 20
    auth_failure_window_seconds: Annotated[
        float,
        _meta("Window of the failed-authentication limit; repeated failures are logged once per window.", "s", ge=1, le=86400),
    ] = 60.0

    @property
    def cameras_path(self) -> Path:
        return Path(self.cameras) if self.cameras else Path(self.data_dir) / "cameras.yaml"


class SettingsError(ValueError):
    """An environment variable has a value that is not allowed."""


def env_name(field: str) -> str:
    return ENV_PREFIX + field.upper()


def _field_meta(annotation: Any) -> tuple[Any, msgspec.Meta | None]:
    arguments = get_args(annotation)
    if type(None) in arguments and get_origin(annotation) is not Annotated:
        # An optional setting: describe the type inside ``X | None``.
        inner = [argument for argument in arguments if argument is not type(None)]
        if len(inner) == 1:
            return _field_meta(inner[0])
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
    if meta is not None and meta.extra and meta.extra.get("allowed"):
        return meta.extra["allowed"]
    optional = type(None) in get_args(annotation) and get_origin(annotation) is not Annotated
    if optional:
        inner = next(argument for argument in get_args(annotation) if argument is not type(None))
        return describe_allowed(inner) + ", or empty for unset"
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
        if raw == "" and _default is None:
            values[name] = None  # an empty optional setting means "not set"
            continue
        try:
            values[name] = msgspec.convert(raw, annotation, strict=False)
        except msgspec.ValidationError as exc:
            allowed = describe_allowed(annotation)
            secret = _meta is not None and (_meta.extra or {}).get("secret")
            shown = "(secret, not shown)" if secret else repr(raw)
            raise SettingsError(f"invalid {variable}={shown}: expected {allowed}") from exc
    values.update(overrides)
    return msgspec.convert(values, Settings)


def unknown_variables(environ: Mapping[str, str] | None = None) -> list[str]:
    """Return ``PANTAU_*`` variables that are not settings (usually a typo)."""
    environ = os.environ if environ is None else environ
    known = {env_name(name) for name, *_ in settings_fields()}
    return sorted(name for name in environ if name.startswith(ENV_PREFIX) and name not in known)


def help_table() -> str:
    """Format every setting as help text: variable, default, unit and meaning."""
    lines = ["Environment variables (all optional):", ""]
    for name, annotation, default, meta in settings_fields():
        unit = (meta.extra or {}).get("unit", "") if meta else ""
        description = meta.description if meta and meta.description else ""
        shown_default = '""' if default in ("", None) else default
        unit_text = f" [{unit}]" if unit else ""
        lines.append(f"  {env_name(name)}={shown_default}{unit_text}")
        lines.append(f"      {description} Allowed: {describe_allowed(annotation)}.")
    return "\n".join(lines)


def env_file_text() -> str:
    """Format every setting as a commented environment file (systemd EnvironmentFile, docker --env-file)."""
    lines = [
        "# Pantau settings. Every line is commented out, so the defaults apply;",
        "# remove the '#' in front of a variable to set it. Generated by",
        "# `python -m relay.settings`; a test keeps this file and the code in step.",
    ]
    for name, annotation, default, meta in settings_fields():
        unit = (meta.extra or {}).get("unit", "") if meta else ""
        description = meta.description if meta and meta.description else ""
        lines.append("")
        lines.append(f"# {description}")
        lines.append(f"# Allowed: {describe_allowed(annotation)}.{f' Unit: {unit}.' if unit else ''}")
        shown = "" if default is None else default
        lines.append(f"#{env_name(name)}={shown}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(env_file_text(), end="")
