"""Bulk registration: camera lists as CSV, validated completely before any row is applied.

The CSV is the form a government office collects from camera owners, one
row per camera. Column names are matched without regard to case, spaces
or hyphens (``RTSP URL`` is ``rtsp_url``):

    id, name, rtsp_url, owner_category, owner_name        required
    kecamatan, desa, lat, lon, mode, record,              optional
    installed_on, retention_days, transport

Spreadsheets save CSV in several dialects, and all of these are read. The
file is UTF-8 with or without a byte order mark, with CRLF or LF line ends.
Fields are separated by ``,``, ``;`` or tab, whichever the header line
uses, and ``lat``/``lon`` may have a decimal comma. Files in other encodings are rejected with the line that is
not UTF-8, because guessing an encoding would silently garble names.

Every row is checked, and every problem is reported with its line number
(the header is line 1), column and reason. If any row is invalid, nothing
is applied.
"""

from __future__ import annotations

import csv
import datetime
import io
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from relay.cameras import (
    CAMERA_ID_PATTERN,
    MASK_UNRESOLVED,
    CameraConfig,
    EntryInvalid,
    carries_mask,
    merge_password,
    parse_entry,
    validate_camera_url,
)
from relay.settings import Settings

COLUMNS = (
    "id",
    "name",
    "rtsp_url",
    "owner_category",
    "owner_name",
    "kecamatan",
    "desa",
    "lat",
    "lon",
    "mode",
    "record",
    "installed_on",
    "retention_days",
    "transport",
)
REQUIRED_COLUMNS = ("id", "name", "rtsp_url", "owner_category", "owner_name")
COLUMN_ALIASES = {"url": "rtsp_url"}
OWNER_CATEGORIES = ("pemkab", "desa", "swasta")
TRUE_WORDS = frozenset({"true", "yes", "y", "1", "ya"})
FALSE_WORDS = frozenset({"false", "no", "n", "0", "tidak", ""})

# Entry fields as parse_entry names them, and the CSV column each comes from.
FIELD_COLUMNS = {
    "url": "rtsp_url",
    "owner.category": "owner_category",
    "owner.name": "owner_name",
    "owner": "owner_name",
    "location.kecamatan": "kecamatan",
    "location.desa": "desa",
    "location.lat": "lat",
    "location.lon": "lon",
}
ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True, slots=True)
class RowError:
    line: int
    column: str | None
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"line": self.line, "column": self.column, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class Area:
    """A latitude and longitude box in decimal degrees."""

    lat_min: float
    lat_max: float
    lon_min: float
    lon_max: float

    @classmethod
    def parse(cls, text: str) -> Area:
        """Read ``lat_min,lat_max,lon_min,lon_max``; each pair may come in either order."""
        lat_a, lat_b, lon_a, lon_b = (float(part) for part in text.split(","))
        return cls(min(lat_a, lat_b), max(lat_a, lat_b), min(lon_a, lon_b), max(lon_a, lon_b))

    def contains(self, lat: float, lon: float) -> bool:
        return self.lat_min <= lat <= self.lat_max and self.lon_min <= lon <= self.lon_max


@dataclass
class ImportPlan:
    """The outcome of validating a CSV: the entries to write, or the errors."""

    rows: int = 0
    items: list[tuple[dict[str, Any], CameraConfig]] = field(default_factory=list)
    created: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)

    @property
    def bad_lines(self) -> list[int]:
        return sorted({error.line for error in self.errors})

    def summary(self, dry_run: bool, applied: bool) -> dict[str, Any]:
        """Return the response body of a valid import."""
        return {
            "dry_run": dry_run,
            "applied": applied,
            "rows": self.rows,
            "created": self.created,
            "replaced": self.replaced,
        }

    def error_body(self, dry_run: bool) -> dict[str, Any]:
        """Return the response body of an import with invalid rows: the usual error fields plus every problem."""
        lines = len(self.bad_lines)
        verb = "is" if lines == 1 else "are"
        return {
            "error": "invalid_rows",
            "reason": f"{lines} line{'' if lines == 1 else 's'} of the CSV {verb} invalid, so nothing was applied",
            "field": None,
            "items": [error.as_dict() for error in self.errors],
            **self.summary(dry_run, applied=False),
        }


class ImportRules:
    """Limits of the import, from the settings: the plausible area and the known kecamatan."""

    def __init__(self, settings: Settings, today: datetime.date | None = None) -> None:
        self.area = Area.parse(settings.import_area)
        self.area_text = settings.import_area
        names = [name.strip() for name in settings.import_kecamatan.split(",") if name.strip()]
        self.kecamatan = {_fold(name): name for name in names}
        self.today = today or datetime.date.today()


def _fold(name: str) -> str:
    return " ".join(name.split()).casefold()


def normalize_header(name: str) -> str:
    key = re.sub(r"[\s\-]+", "_", name.strip().lstrip("\ufeff").strip().lower())
    return COLUMN_ALIASES.get(key, key)


def decode_csv(data: bytes) -> str | RowError:
    """Return the text of a UTF-8 CSV without its byte order mark, or the error for the first line that is not UTF-8."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        return RowError(line, None, 'the line is not valid UTF-8; save the file as "CSV UTF-8" in the spreadsheet')


def detect_delimiter(text: str) -> str:
    header = text.split("\n", 1)[0]
    counts = {delimiter: header.count(delimiter) for delimiter in (",", ";", "\t")}
    return max(counts, key=lambda delimiter: counts[delimiter])


def plan_import(
    data: bytes,
    existing: Mapping[str, CameraConfig],
    rules: ImportRules,
    replace: bool = False,
) -> ImportPlan:
    """Validate every row of a CSV against the cameras in ``existing``; apply nothing."""
    plan = ImportPlan()
    text = decode_csv(data)
    if isinstance(text, RowError):
        plan.errors.append(text)
        return plan
    if not text.strip():
        plan.errors.append(RowError(1, None, "the file is empty; the first line must name the columns"))
        return plan

    reader = csv.reader(io.StringIO(text, newline=""), delimiter=detect_delimiter(text))
    header = [normalize_header(name) for name in next(reader)]
    if not _check_header(header, plan):
        return plan

    first_line: dict[str, int] = {}  # id -> line of its first row
    url_lines: dict[str, int] = {}
    line = reader.line_num + 1
    for cells in reader:
        row_line, line = line, reader.line_num + 1
        if not any(cell.strip() for cell in cells):
            continue
        plan.rows += 1
        if len(cells) > len(header):
            plan.errors.append(
                RowError(row_line, None, f"the row has {len(cells)} fields but the header names {len(header)}")
            )
            continue
        values = {name: (cells[index].strip() if index < len(cells) else "") for index, name in enumerate(header)}
        _plan_row(plan, row_line, values, existing, rules, replace, first_line, url_lines)
    if plan.rows == 0 and not plan.errors:
        plan.errors.append(RowError(1, None, "the file has a header line but no camera rows"))
    return plan


def _check_header(header: list[str], plan: ImportPlan) -> bool:
    unknown = [name for name in header if name not in COLUMNS]
    for name in unknown:
        plan.errors.append(
            RowError(1, name or None, f"unknown column {name!r}; the columns are {', '.join(COLUMNS)}")
        )
    repeated = sorted({name for name in header if header.count(name) > 1})
    for name in repeated:
        plan.errors.append(RowError(1, name, f"column {name!r} appears more than once"))
    for name in REQUIRED_COLUMNS:
        if name not in header:
            plan.errors.append(RowError(1, name, f"required column {name!r} is missing"))
    return not plan.errors


def _plan_row(
    plan: ImportPlan,
    line: int,
    values: dict[str, str],
    existing: Mapping[str, CameraConfig],
    rules: ImportRules,
    replace: bool,
    first_line: dict[str, int],
    url_lines: dict[str, int],
) -> None:
    errors: list[RowError] = []

    def fail(column: str, reason: str) -> None:
        errors.append(RowError(line, column, reason))

    raw = _row_entry(values, rules, fail)
    camera_id = values.get("id", "")

    if camera_id in first_line:
        fail("id", f"duplicate id {camera_id!r}: line {first_line[camera_id]} has it already")
    elif camera_id:
        first_line[camera_id] = line
        if camera_id in existing and not replace:
            fail("id", f"camera {camera_id!r} already exists; import with replace=true to replace it")
    url = values.get("rtsp_url", "")
    if url in url_lines:
        fail("rtsp_url", f"the same rtsp_url as line {url_lines[url]}")
    elif url:
        url_lines[url] = line

    if not errors:
        stored = existing.get(camera_id)
        raw["url"] = merge_password(raw["url"], stored.url if stored else None)
        if carries_mask(raw["url"]):
            fail("rtsp_url", MASK_UNRESOLVED)
            plan.errors.extend(errors)
            return
        try:
            config = parse_entry(raw)
        except EntryInvalid as exc:
            column = FIELD_COLUMNS.get(exc.error.field or "", exc.error.field)
            fail(column or "id", exc.error.reason)
        else:
            plan.items.append((raw, config))
            (plan.replaced if camera_id in existing else plan.created).append(camera_id)
    plan.errors.extend(errors)


def _row_entry(values: dict[str, str], rules: ImportRules, fail: Any) -> dict[str, Any]:
    """Build a cameras-file entry from one row's cells, reporting each bad cell through ``fail``."""
    raw: dict[str, Any] = {"id": values.get("id", ""), "name": values.get("name", "")}
    for column in REQUIRED_COLUMNS:
        if not values.get(column):
            fail(column, f"{column} is empty")
    if raw["id"] and not re.match(CAMERA_ID_PATTERN, raw["id"]):
        fail(
            "id",
            f"id {raw['id']!r} must be 1 to 63 lowercase letters, digits, '-' or '_', "
            "starting with a letter or digit",
        )

    url = values.get("rtsp_url", "")
    if url:
        try:
            validate_camera_url(url)
        except ValueError as exc:
            fail("rtsp_url", f"rtsp_url {exc}")
        if any(character.isspace() for character in url):
            fail("rtsp_url", "rtsp_url contains a space; percent-encode it as %20")
    raw["url"] = url

    category = values.get("owner_category", "").lower()
    if category and category not in OWNER_CATEGORIES:
        fail(
            "owner_category",
            f"unknown owner category {values['owner_category']!r}; expected {', '.join(OWNER_CATEGORIES)}",
        )
    raw["owner"] = {"category": category, "name": values.get("owner_name", "")}

    location = _location(values, rules, fail)
    if location:
        raw["location"] = location

    mode = re.sub(r"[\s\-]+", "_", values.get("mode", "").lower()) or "on_demand"
    if mode not in ("on_demand", "always"):
        fail("mode", f"unknown mode {values['mode']!r}; expected on_demand or always")
    raw["mode"] = mode

    record = values.get("record", "").lower()
    if record in TRUE_WORDS:
        raw["record"] = True
    elif record not in FALSE_WORDS:
        fail("record", f"record {values['record']!r} is not true or false (yes/no, ya/tidak, 1/0 also work)")

    installed_on = values.get("installed_on", "")
    if installed_on:
        day = _parse_date(installed_on)
        if day is None:
            fail("installed_on", f"installed_on {installed_on!r} is not a date written YYYY-MM-DD, such as 2024-05-31")
        elif day > rules.today:
            fail("installed_on", f"installed_on {installed_on} is in the future")
        else:
            raw["installed_on"] = day.isoformat()

    retention = values.get("retention_days", "")
    if retention:
        if not retention.isdigit() or not 1 <= int(retention) <= 3650:
            fail("retention_days", f"retention_days {retention!r} is not a whole number of days from 1 to 3650")
        else:
            raw["retention_days"] = int(retention)

    transport = values.get("transport", "").lower()
    if transport:
        if transport not in ("tcp", "udp"):
            fail("transport", f"unknown transport {values['transport']!r}; expected tcp or udp")
        raw["transport"] = transport
    return raw


def _parse_date(text: str) -> datetime.date | None:
    if not ISO_DATE.match(text):
        return None
    try:
        return datetime.date.fromisoformat(text)
    except ValueError:
        return None


def _location(values: dict[str, str], rules: ImportRules, fail: Any) -> dict[str, Any]:
    location: dict[str, Any] = {}
    kecamatan = " ".join(values.get("kecamatan", "").split())
    if kecamatan:
        if rules.kecamatan:
            canonical = rules.kecamatan.get(_fold(kecamatan))
            if canonical is None:
                known = ", ".join(rules.kecamatan.values())
                fail("kecamatan", f"unknown kecamatan {kecamatan!r}; expected one of {known} (PANTAU_IMPORT_KECAMATAN)")
            kecamatan = canonical or kecamatan
        location["kecamatan"] = kecamatan
    desa = " ".join(values.get("desa", "").split())
    if desa:
        location["desa"] = desa

    lat_text, lon_text = values.get("lat", ""), values.get("lon", "")
    if not lat_text and not lon_text:
        return location
    if not lat_text or not lon_text:
        fail("lat" if not lat_text else "lon", "lat and lon go together: give both or neither")
        return location
    lat = _parse_degrees(lat_text, "lat", fail)
    lon = _parse_degrees(lon_text, "lon", fail)
    if lat is None or lon is None:
        return location
    problem = _implausible(lat, lon, rules)
    if problem is not None:
        fail(*problem)
        return location
    location["lat"] = lat
    location["lon"] = lon
    return location


def _parse_degrees(text: str, column: str, fail: Any) -> float | None:
    cleaned = text.replace("\u2212", "-").replace(",", ".")
    try:
        value = float(cleaned)
    except ValueError:
        fail(column, f"{column} {text!r} is not a number in decimal degrees, such as -8.704 or 115.173")
        return None
    if not math.isfinite(value):
        fail(column, f"{column} {text!r} is not a number in decimal degrees")
        return None
    return value


def _implausible(lat: float, lon: float, rules: ImportRules) -> tuple[str, str] | None:
    """Return (column, reason) when the coordinates cannot be a camera in the area."""
    if not -90 <= lat <= 90:
        if rules.area.contains(lon, lat):
            return "lat", f"lat {lat:g} and lon {lon:g} look swapped"
        return "lat", f"lat {lat:g} is outside -90 to 90"
    if not -180 <= lon <= 180:
        return "lon", f"lon {lon:g} is outside -180 to 180"
    if lat == 0 and lon == 0:
        return "lat", "lat 0, lon 0 is a placeholder, not a camera location"
    area = rules.area
    if area.contains(lat, lon):
        return None
    if area.contains(lon, lat):
        return "lat", f"lat {lat:g} and lon {lon:g} look swapped"
    if area.contains(-lat, lon):
        return "lat", f"lat {lat:g} has the wrong sign: the area lies at {area.lat_min:g} to {area.lat_max:g}"
    column = "lat" if not area.lat_min <= lat <= area.lat_max else "lon"
    return (
        column,
        f"lat {lat:g}, lon {lon:g} is outside the plausible area (lat {area.lat_min:g} to {area.lat_max:g}, "
        f"lon {area.lon_min:g} to {area.lon_max:g}; PANTAU_IMPORT_AREA)",
    )
