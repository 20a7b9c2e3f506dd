"""The resolution rule, the report's CSV form, and the camera entry fields it reads."""

from __future__ import annotations

import csv
import datetime
import io

import pytest

from relay.cameras import CameraConfig, EntryInvalid, Owner, parse_entry
from relay.compliance import evaluate, report_csv, totals
from relay.prober import ProbeFailure, ProbeRecord
from relay.probe import ProbeFacts
from relay.settings import Settings, SettingsError, load_settings

SINCE = datetime.date(2025, 1, 1)


def camera(category: str = "swasta", installed_on: datetime.date | None = None) -> CameraConfig:
    return CameraConfig(
        id="cam",
        name="Cam",
        url="rtsp://192.0.2.1/stream",
        owner=Owner(category=category, name="Owner"),
        installed_on=installed_on,
    )


def probed(width: int, height: int) -> ProbeRecord:
    facts = ProbeFacts(codec="h264", width=width, height=height, pixels=width * height, megapixels=0.0)
    return ProbeRecord(facts=facts, probed_at="2026-01-01T00:00:00.000Z")


@pytest.mark.parametrize(
    ("size", "min_pixels", "status"),
    [
        ((2688, 1520), 3686400, "compliant"),
        ((2560, 1440), 3686400, "compliant"),
        ((2560, 1440), 4000000, "below_minimum"),
        ((2688, 1520), 4000000, "compliant"),
        ((1920, 1080), 3686400, "below_minimum"),
        ((768, 576), 3686400, "below_minimum"),
    ],
)
def test_rule_by_pixels(size, min_pixels, status):
    verdict = evaluate(camera(), probed(*size), Settings(min_pixels=min_pixels))

    assert verdict.status == status
    assert f"{size[0]}x{size[1]}" in verdict.reason


@pytest.mark.parametrize("category", ["pemkab", "desa"])
def test_public_cameras_exempt(category):
    verdict = evaluate(camera(category), probed(768, 576), Settings())

    assert verdict.status == "exempt"
    assert category in verdict.reason


def test_since_date_rules():
    settings = Settings(min_pixels_since=SINCE)

    before = evaluate(camera(installed_on=datetime.date(2024, 12, 31)), probed(768, 576), settings)
    on_the_day = evaluate(camera(installed_on=SINCE), probed(768, 576), settings)
    undated = evaluate(camera(), probed(2688, 1520), settings)

    assert before.status == "exempt"
    assert "2024-12-31" in before.reason
    assert on_the_day.status == "below_minimum"
    assert (undated.status, undated.reason) == ("unknown", "installed_on missing")


def test_unknown_reasons():
    failed = ProbeRecord(last_error=ProbeFailure(code="connection_refused", reason="refused", at="2026-01-01T00:00:00Z"))

    assert evaluate(camera(), None, Settings()).reason == "never probed"
    assert evaluate(camera(), None, Settings(), "timed out").reason == "never probed; last connection error: timed out"
    assert evaluate(camera(), failed, Settings()).reason == "probe failed: refused"


def test_failed_reprobe_keeps_last_facts():
    record = probed(1920, 1080)
    record.last_error = ProbeFailure(code="camera_timeout", reason="no video", at="2026-02-01T00:00:00Z")

    verdict = evaluate(camera(), record, Settings())

    assert verdict.status == "below_minimum"
    assert "the last probe failed: no video" in verdict.reason


def test_totals_group_and_sort():
    rows = [
        {"kecamatan": "Mengwi", "status": "compliant"},
        {"kecamatan": None, "status": "unknown"},
        {"kecamatan": "Kuta", "status": "exempt"},
        {"kecamatan": "Mengwi", "status": "below_minimum"},
    ]

    result = totals(rows, "kecamatan")

    assert [group["kecamatan"] for group in result] == ["Kuta", "Mengwi", None]
    assert result[1] == {
        "kecamatan": "Mengwi", "cameras": 2, "compliant": 1, "below_minimum": 1, "exempt": 0, "unknown": 0,
    }


def report_with(rows: list[dict]) -> dict:
    return {
        "items": rows,
        "totals": {"by_owner_category": totals(rows, "owner_category"), "by_kecamatan": totals(rows, "kecamatan")},
    }


def test_csv_keeps_names_and_writes_empty_for_missing():
    row = {
        "id": "villa", "name": "Villa D'Uma, Gerbang", "owner_category": "swasta", "owner_name": "Ni Made Ayu's",
        "kecamatan": "Kuta Selatan", "desa": "Jimbaran", "installed_on": "2025-01-15", "codec": None,
        "resolution": None, "width": None, "height": None, "megapixels": None, "fps": None, "gop_seconds": None,
        "video_bitrate_bps": None, "status": "unknown", "reason": "never probed", "probed_at": None,
    }

    body = report_csv(report_with([row]))

    assert body.startswith(b"\xef\xbb\xbf")
    parsed = list(csv.DictReader(io.StringIO(body.decode("utf-8-sig").split("\r\n\r\n")[0], newline="")))
    assert parsed[0]["name"] == "Villa D'Uma, Gerbang"
    assert parsed[0]["owner_name"] == "Ni Made Ayu's"
    assert parsed[0]["installed_on"] == "2025-01-15"
    assert parsed[0]["codec"] == ""


def test_settings_since_date():
    assert load_settings({"PANTAU_MIN_PIXELS_SINCE": ""}).min_pixels_since is None
    assert load_settings({"PANTAU_MIN_PIXELS_SINCE": "2025-01-01"}).min_pixels_since == SINCE
    with pytest.raises(SettingsError, match="PANTAU_MIN_PIXELS_SINCE"):
        load_settings({"PANTAU_MIN_PIXELS_SINCE": "01/01/2025"})


def test_entry_record_needs_always():
    entry = {
        "id": "cam", "name": "Cam", "url": "rtsp://192.0.2.1/s", "owner": {"category": "pemkab", "name": "Dinas"},
        "record": True,
    }

    with pytest.raises(EntryInvalid) as caught:
        parse_entry(entry)
    config = parse_entry({**entry, "mode": "always", "retention_days": 30, "installed_on": "2024-05-31"})

    assert caught.value.error.field == "record"
    assert config.installed_on == datetime.date(2024, 5, 31)
    assert config.retention_days == 30
