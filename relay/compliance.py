"""The minimum-resolution rule for private cameras, and the compliance report.

The regency requires newly built accommodations to install cameras of at
least 4 megapixels. Pantau checks what each camera really delivers, from
its probed bitstream, against ``PANTAU_MIN_PIXELS`` (width x height). The
default, 3,686,400, is 2560x1440: the smallest resolution that cameras are
sold as "4 MP" with. A strict reading of 4,000,000 would fail every 1440p
camera, although its owner bought a "4 MP" camera in good faith. Operators
who want the strict reading set ``PANTAU_MIN_PIXELS=4000000``.

The rule covers ``swasta`` cameras only, and with ``PANTAU_MIN_PIXELS_SINCE``
set only those installed on or after that date. The regency's rule is about
the accommodation's opening date, which Pantau does not know, so the
camera's ``installed_on`` is used in its place.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from relay.cameras import CameraConfig
from relay.prober import ProbeRecord
from relay.settings import Settings

if TYPE_CHECKING:
    from relay.camera import Camera
    from relay.service import Service

STATUSES = ("compliant", "below_minimum", "exempt", "unknown")
RULE_CATEGORY = "swasta"

CSV_COLUMNS = (
    "id",
    "name",
    "owner_category",
    "owner_name",
    "kecamatan",
    "desa",
    "installed_on",
    "codec",
    "resolution",
    "width",
    "height",
    "megapixels",
    "fps",
    "gop_seconds",
    "video_bitrate_bps",
    "status",
    "reason",
    "probed_at",
)
DECIMAL_COLUMNS = frozenset({"megapixels", "fps", "gop_seconds"})


@dataclass(frozen=True, slots=True)
class Verdict:
    status: str  # one of STATUSES
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"status": self.status, "reason": self.reason}


def evaluate(
    config: CameraConfig, record: ProbeRecord | None, settings: Settings, camera_error: str | None = None
) -> Verdict:
    """Apply the rule to one camera.

    ``camera_error`` is the camera's last connection error, quoted when the
    camera was never probed.
    """
    category = config.owner.category
    if category != RULE_CATEGORY:
        return Verdict("exempt", f"owner category {category}: the rule covers {RULE_CATEGORY} cameras only")

    since = settings.min_pixels_since
    if since is not None:
        if config.installed_on is None:
            return Verdict("unknown", "installed_on missing")
        if config.installed_on < since:
            return Verdict(
                "exempt",
                f"installed on {config.installed_on.isoformat()}, before PANTAU_MIN_PIXELS_SINCE {since.isoformat()}",
            )

    facts = record.facts if record else None
    failure = record.last_error if record else None
    if facts is None:
        if failure is not None:
            return Verdict("unknown", f"probe failed: {failure.reason}")
        if camera_error:
            return Verdict("unknown", f"never probed; last connection error: {camera_error}")
        return Verdict("unknown", "never probed")

    minimum = settings.min_pixels
    size = f"{facts.width}x{facts.height} = {_grouped(facts.pixels)} pixels"
    if facts.pixels >= minimum:
        status, reason = "compliant", f"{size}, at least the minimum {_grouped(minimum)}"
    else:
        status, reason = "below_minimum", f"{size}, below the minimum {_grouped(minimum)}"
    if failure is not None and record is not None:
        reason += f" (measured at {record.probed_at}; the last probe failed: {failure.reason})"
    return Verdict(status, reason)


def compliance_of(service: Service, camera: Camera) -> Verdict:
    error = camera.last_error["reason"] if camera.last_error else None
    return evaluate(camera.config, service.probes.records.get(camera.id), service.settings, error)


# --- report ----------------------------------------------------------------------------


def report_row(service: Service, camera: Camera) -> dict[str, Any]:
    config = camera.config
    record = service.probes.records.get(camera.id)
    facts = record.facts if record else None
    verdict = compliance_of(service, camera)
    location = config.location
    return {
        "id": config.id,
        "name": config.name,
        "owner_category": config.owner.category,
        "owner_name": config.owner.name,
        "kecamatan": location.kecamatan if location else None,
        "desa": location.desa if location else None,
        "installed_on": config.installed_on.isoformat() if config.installed_on else None,
        "codec": facts.codec if facts else None,
        "resolution": f"{facts.width}x{facts.height}" if facts else None,
        "width": facts.width if facts else None,
        "height": facts.height if facts else None,
        "megapixels": facts.megapixels if facts else None,
        "fps": facts.fps if facts else None,
        "gop_seconds": facts.gop_seconds if facts else None,
        "video_bitrate_bps": facts.video_bitrate_bps if facts else None,
        "status": verdict.status,
        "reason": verdict.reason,
        "probed_at": record.probed_at if record else None,
    }


def totals(rows: Iterable[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    """Count cameras per status for each value of ``key``, sorted by that value (None last)."""
    groups: dict[Any, dict[str, Any]] = {}
    for row in rows:
        value = row[key]
        group = groups.get(value)
        if group is None:
            group = {key: value, "cameras": 0, **{status: 0 for status in STATUSES}}
            groups[value] = group
        group["cameras"] += 1
        group[row["status"]] += 1
    return sorted(groups.values(), key=lambda group: (group[key] is None, group[key] or ""))


def build_report(service: Service, visible: Callable[[Camera], bool] | None = None) -> dict[str, Any]:
    """Return the compliance report: one row per camera, totals and the rule applied.

    ``visible`` limits the rows and totals to the cameras it accepts.
    """
    cameras = [camera for camera in service.cameras.values() if visible is None or visible(camera)]
    rows = [report_row(service, camera) for camera in sorted(cameras, key=lambda c: c.id)]
    settings = service.settings
    return {
        "generated_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "rule": {
            "min_pixels": settings.min_pixels,
            "min_pixels_since": settings.min_pixels_since.isoformat() if settings.min_pixels_since else None,
            "owner_category": RULE_CATEGORY,
        },
        "items": rows,
        "totals": {
            "by_owner_category": totals(rows, "owner_category"),
            "by_kecamatan": totals(rows, "kecamatan"),
        },
    }


def report_csv(report: dict[str, Any], decimal_comma: bool = False) -> bytes:
    """Write the report as CSV for spreadsheets: UTF-8 with BOM, CRLF, a header row.

    Camera rows come first; after a blank line, a second table with its own
    header row contains the totals per owner category and per kecamatan.
    ``decimal_comma`` writes ``;`` between fields and ``,`` before decimals,
    which spreadsheets set to Indonesian expect.
    """
    out = io.StringIO()
    writer = csv.writer(out, delimiter=";" if decimal_comma else ",", lineterminator="\r\n")

    def cell(column: str, value: Any) -> Any:
        if value is None:
            return ""
        if decimal_comma and column in DECIMAL_COLUMNS:
            return str(value).replace(".", ",")
        return value

    writer.writerow(CSV_COLUMNS)
    for row in report["items"]:
        writer.writerow([cell(column, row[column]) for column in CSV_COLUMNS])

    writer.writerow([])
    writer.writerow(["total_by", "group", "cameras", *STATUSES])
    for key, groups in (
        ("owner_category", report["totals"]["by_owner_category"]),
        ("kecamatan", report["totals"]["by_kecamatan"]),
    ):
        for group in groups:
            name = group[key] if group[key] is not None else "(none)"
            writer.writerow([key, name, group["cameras"], *(group[status] for status in STATUSES)])
    return "\ufeff".encode() + out.getvalue().encode("utf-8")


def _grouped(number: int) -> str:
    """Group digits by thousands with spaces (3 686 400), which no locale reads as a decimal mark."""
    return f"{number:,}".replace(",", " ")
