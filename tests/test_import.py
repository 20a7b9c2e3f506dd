"""Bulk registration from CSV: validation, the HTTP endpoint and ``pantau import``."""

from __future__ import annotations

import csv
import datetime
import io
import os
import subprocess
import sys
import time
import uuid

import pytest
import yaml

from relay.cameras import CameraConfig, Owner
from relay.importer import ImportRules, plan_import
from relay.settings import Settings
from tests.conftest import start_pantau
from tests.support import REPO, free_port

SAMPLE = REPO / "deploy" / "cameras-import-sample.csv"
SAMPLE_ROWS = 19
TODAY = datetime.date(2026, 1, 1)
HEADER = "id,name,rtsp_url,owner_category,owner_name,kecamatan,desa,lat,lon,mode,record,installed_on,retention_days"


def plan(data: bytes | str, existing: dict[str, CameraConfig] | None = None, replace: bool = False, **settings):
    if isinstance(data, str):
        data = data.encode()
    return plan_import(data, existing or {}, ImportRules(Settings(**settings), today=TODAY), replace=replace)


def row(camera_id: str = "cam-1", **cells: str) -> str:
    values = {
        "id": camera_id,
        "name": "Hotel Contoh - Lobi",
        "rtsp_url": f"rtsp://192.0.2.10:554/{camera_id}",
        "owner_category": "swasta",
        "owner_name": "PT Contoh",
        "kecamatan": "Kuta",
        "desa": "Legian",
        "lat": "-8.704",
        "lon": "115.173",
        "mode": "on_demand",
        "record": "",
        "installed_on": "2024-05-31",
        "retention_days": "",
    }
    values.update(cells)
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(values[name] for name in HEADER.split(","))
    return out.getvalue().removesuffix("\n")


def csv_text(*rows: str) -> str:
    return "\n".join([HEADER, *rows]) + "\n"


def sample_on_loopback(port: int) -> bytes:
    """The sample CSV with every camera pointed at a closed loopback port, so tests reach no other host."""
    rows = list(csv.DictReader(io.StringIO(SAMPLE.read_text(encoding="utf-8"), newline="")))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for item in rows:
        item["rtsp_url"] = f"rtsp://127.0.0.1:{port}/{item['id']}"
        writer.writerow(item)
    return out.getvalue().encode()


def windows_export(data: bytes) -> bytes:
    """What a Windows spreadsheet writes for "CSV UTF-8": a byte order mark and CRLF line ends."""
    return b"\xef\xbb\xbf" + data.replace(b"\n", b"\r\n")


def existing_camera(camera_id: str) -> CameraConfig:
    return CameraConfig(
        id=camera_id, name="Old", url="rtsp://viewer:secret@192.0.2.10:554/old", owner=Owner(category="desa", name="Desa")
    )


# --- validation --------------------------------------------------------------------------


def test_sample_is_valid_and_covers_six_kecamatan():
    result = plan(SAMPLE.read_bytes())

    assert result.errors == []
    assert result.rows == SAMPLE_ROWS
    assert len(result.created) == SAMPLE_ROWS
    kecamatan = {raw["location"]["kecamatan"] for raw, _ in result.items}
    assert kecamatan == {"Kuta Selatan", "Kuta", "Kuta Utara", "Mengwi", "Abiansemal", "Petang"}
    assert {config.owner.category for _, config in result.items} == {"pemkab", "desa", "swasta"}


def test_bom_and_crlf_read_like_plain_file():
    plain = plan(SAMPLE.read_bytes())
    exported = plan(windows_export(SAMPLE.read_bytes()))

    assert exported.errors == []
    assert [raw for raw, _ in exported.items] == [raw for raw, _ in plain.items]


def test_indonesian_names_kept_exactly():
    result = plan(SAMPLE.read_bytes())
    configs = {config.id: config for _, config in result.items}

    assert configs["kutsel-jimbaran-villa-01"].name == "Villa D'Uma Jimbaran - Gerbang"
    assert configs["kutara-canggu-homestay-01"].owner.name == "Ni Made Ayu's Homestay"
    assert configs["kutara-berawa-hotel-01"].name == "Hotel Pantai Berawa, Lobi"
    assert configs["abiansemal-dauh-yeh-cani-01"].location.desa == "Abiansemal Dauh Yeh Cani"


def test_semicolon_file_with_decimal_comma():
    text = HEADER.replace(",", ";") + "\n" + row().replace(",", ";").replace("-8.704", "-8,704").replace("115.173", "115,173")

    result = plan(text)

    assert result.errors == []
    assert result.items[0][1].location.lat == -8.704
    assert result.items[0][1].location.lon == 115.173


def test_header_names_matched_loosely():
    header = "ID,Name,RTSP URL,Owner Category,owner-name,Kecamatan,Desa,Lat,Lon,Mode,Record,Installed On,Retention Days"

    result = plan(header + "\n" + row() + "\n")

    assert result.errors == []
    assert result.items[0][1].installed_on == datetime.date(2024, 5, 31)


def test_kecamatan_spelling_normalized():
    result = plan(csv_text(row(kecamatan="kuta   selatan", desa="Jimbaran", lat="-8.79", lon="115.163")))

    assert result.errors == []
    assert result.items[0][1].location.kecamatan == "Kuta Selatan"


def test_three_bad_rows_all_reported():
    text = csv_text(
        row("good-1"),
        row("bad-category", owner_category="hotel"),
        row("good-2"),
        row("bad-coordinates", lat="-9.5"),
        row("bad-url", rtsp_url="http://192.0.2.10/stream"),
    )

    result = plan(text)

    assert [(error.line, error.column) for error in result.errors] == [
        (3, "owner_category"),
        (5, "lat"),
        (6, "rtsp_url"),
    ]
    assert "hotel" in result.errors[0].reason
    assert result.bad_lines == [3, 5, 6]


@pytest.mark.parametrize(
    ("cells", "column", "words"),
    [
        ({"lat": "115.173", "lon": "-8.704"}, "lat", "swapped"),
        ({"lat": "8.704"}, "lat", "wrong sign"),
        ({"lat": "-8.1", "lon": "115.173"}, "lat", "outside the plausible area"),
        ({"lon": "116.5"}, "lon", "outside the plausible area"),
        ({"lat": "0", "lon": "0"}, "lat", "placeholder"),
        ({"lat": "-8.704", "lon": ""}, "lon", "give both or neither"),
        ({"lat": "8°42'S"}, "lat", "decimal degrees"),
        ({"lat": "-95"}, "lat", "-90 to 90"),
    ],
)
def test_implausible_coordinates(cells, column, words):
    result = plan(csv_text(row(**cells)))

    assert len(result.errors) == 1
    assert result.errors[0].column == column
    assert words in result.errors[0].reason


def test_unicode_minus_accepted():
    result = plan(csv_text(row(lat="\u22128.704")))

    assert result.errors == []
    assert result.items[0][1].location.lat == -8.704


@pytest.mark.parametrize(
    ("cells", "column", "words"),
    [
        ({"owner_category": "Hotel"}, "owner_category", "pemkab, desa, swasta"),
        ({"rtsp_url": "rtsp://"}, "rtsp_url", "no host"),
        ({"rtsp_url": "rtsp://192.0.2.10/a b"}, "rtsp_url", "space"),
        ({"id": "Hotel 1"}, "id", "lowercase letters"),
        ({"name": ""}, "name", "empty"),
        ({"mode": "sometimes"}, "mode", "on_demand or always"),
        ({"record": "maybe"}, "record", "true or false"),
        ({"record": "ya"}, "record", "mode: always"),
        ({"installed_on": "31/05/2024"}, "installed_on", "YYYY-MM-DD"),
        ({"installed_on": "2024-02-30"}, "installed_on", "YYYY-MM-DD"),
        ({"installed_on": "2027-01-01"}, "installed_on", "future"),
        ({"retention_days": "0"}, "retention_days", "1 to 3650"),
        ({"kecamatan": "Denpasar Barat"}, "kecamatan", "unknown kecamatan"),
    ],
)
def test_bad_cells(cells, column, words):
    result = plan(csv_text(row(**cells)))

    assert [error.column for error in result.errors] == [column]
    assert words in result.errors[0].reason


def test_record_with_always_and_retention():
    result = plan(csv_text(row(mode="always", record="TRUE", retention_days="30")))

    assert result.errors == []
    config = result.items[0][1]
    assert (config.mode, config.record, config.retention_days) == ("always", True, 30)


def test_duplicate_id_and_url_in_file():
    text = csv_text(row("cam-1"), row("cam-1", rtsp_url="rtsp://192.0.2.11/x"), row("cam-3", rtsp_url="rtsp://192.0.2.10:554/cam-1"))

    result = plan(text)

    assert [(error.line, error.column) for error in result.errors] == [(3, "id"), (4, "rtsp_url")]
    assert "line 2" in result.errors[0].reason
    assert "line 2" in result.errors[1].reason


def test_existing_id_needs_replace():
    existing = {"cam-1": existing_camera("cam-1")}

    refused = plan(csv_text(row("cam-1")), existing)
    replaced = plan(csv_text(row("cam-1")), existing, replace=True)

    assert refused.errors[0].column == "id"
    assert "replace=true" in refused.errors[0].reason
    assert replaced.errors == []
    assert replaced.replaced == ["cam-1"]


def test_replace_keeps_stored_password():
    existing = {"cam-1": existing_camera("cam-1")}

    result = plan(csv_text(row("cam-1", rtsp_url="rtsp://viewer:***@192.0.2.10:554/old")), existing, replace=True)

    assert result.items[0][1].url == "rtsp://viewer:secret@192.0.2.10:554/old"


def test_mask_without_stored_password_rejected():
    existing = {"cam-1": existing_camera("cam-1"), "cam-3": existing_camera("cam-3")}
    moved = row("cam-1", rtsp_url="rtsp://viewer:***@192.0.2.99:554/old")
    new = row("cam-2", rtsp_url="rtsp://admin:***@192.0.2.11:554/new")
    other_port = row("cam-3", rtsp_url="rtsp://viewer:***@192.0.2.10:8554/old")  # NAT: another device

    result = plan(csv_text(moved, new, other_port), existing, replace=True)

    assert [(error.line, error.column) for error in result.errors] == [
        (2, "rtsp_url"), (3, "rtsp_url"), (4, "rtsp_url")
    ]
    assert all("***" in error.reason for error in result.errors)
    assert result.items == []


def test_header_problems_on_line_one():
    result = plan("id,name,url,owner_category,colour\ncam,Cam,rtsp://192.0.2.1/x,swasta,red\n")

    assert [(error.line, error.column) for error in result.errors] == [(1, "colour"), (1, "owner_name")]


def test_not_utf8_names_the_line():
    data = (csv_text(row()) + row("cam-2", name="Caf\u00e9") + "\n").encode("cp1252")

    result = plan(data)

    assert result.errors[0].line == 3
    assert "UTF-8" in result.errors[0].reason


def test_quoted_field_with_newline_keeps_line_numbers():
    text = csv_text(row("cam-1", name="Lobi\nlantai 2"), row("cam-2", owner_category="x", rtsp_url="rtsp://192.0.2.12/y"))

    result = plan(text)

    assert [(error.line, error.column) for error in result.errors] == [(4, "owner_category")]


def test_blank_lines_skipped_and_empty_file_rejected():
    assert plan(csv_text(row(), "", ",,,,")).errors == []
    assert plan("").errors[0].line == 1
    assert "no camera rows" in plan(HEADER + "\n").errors[0].reason


# --- HTTP endpoint -----------------------------------------------------------------------

QUIET = {"PANTAU_PROBE_INTERVAL_HOURS": "0"}  # no probes of imported cameras (also the harness default)


def import_csv(instance, data: bytes, query: str = "", content_type: str = "text/csv"):
    return instance.request("POST", f"/api/cameras/import{query}", raw=data, headers={"Content-Type": content_type})


def test_api_applies_every_row(pantau, tmp_path):
    instance = start_pantau(pantau, tmp_path / "data", [], **QUIET)

    status, body = import_csv(instance, windows_export(sample_on_loopback(free_port())))

    assert status == 200, body
    assert body["applied"] is True
    assert len(body["created"]) == SAMPLE_ROWS
    _, cameras = instance.request("GET", "/api/cameras")
    assert len(cameras["items"]) == SAMPLE_ROWS
    written = yaml.safe_load((tmp_path / "data" / "cameras.yaml").read_text())
    assert len(written) == SAMPLE_ROWS
    villa = instance.camera("kutsel-jimbaran-villa-01")
    assert villa["name"] == "Villa D'Uma Jimbaran - Gerbang"
    assert villa["installed_on"] == "2025-01-15"
    assert villa["compliance"]["status"] == "unknown"


def test_api_three_bad_rows_apply_nothing(pantau, tmp_path):
    instance = start_pantau(pantau, tmp_path / "data", [], **QUIET)
    port = free_port()
    text = csv_text(
        row("ok-1", rtsp_url=f"rtsp://127.0.0.1:{port}/1"),
        row("bad-1", rtsp_url=f"rtsp://127.0.0.1:{port}/2", lat="-7.0"),
        row("bad-2", rtsp_url=f"rtsp://127.0.0.1:{port}/3", owner_category=""),
        row("bad-3", rtsp_url=f"rtsp://127.0.0.1:{port}/4", installed_on="kemarin"),
        row("ok-2", rtsp_url=f"rtsp://127.0.0.1:{port}/5"),
    )

    status, body = import_csv(instance, text.encode())

    assert status == 400
    assert body["error"] == "invalid_rows"
    assert [(item["line"], item["column"]) for item in body["items"]] == [
        (3, "lat"),
        (4, "owner_category"),
        (5, "installed_on"),
    ]
    _, cameras = instance.request("GET", "/api/cameras")
    assert cameras["items"] == []
    assert yaml.safe_load((tmp_path / "data" / "cameras.yaml").read_text()) == []


def test_api_dry_run_changes_nothing(pantau, tmp_path):
    port = free_port()
    original = [{"id": "kept", "name": "Kept", "url": f"rtsp://127.0.0.1:{port}/kept",
                 "owner": {"category": "pemkab", "name": "Diskominfo"}}]
    instance = start_pantau(pantau, tmp_path / "data", original, **QUIET)
    before = (tmp_path / "data" / "cameras.yaml").read_bytes()

    status, body = import_csv(instance, sample_on_loopback(port), "?dry_run=true")

    assert status == 200, body
    assert body["dry_run"] is True
    assert body["applied"] is False
    assert len(body["created"]) == SAMPLE_ROWS
    assert (tmp_path / "data" / "cameras.yaml").read_bytes() == before
    _, cameras = instance.request("GET", "/api/cameras")
    assert [item["id"] for item in cameras["items"]] == ["kept"]


def test_api_replace_only_when_asked(pantau, tmp_path):
    instance = start_pantau(pantau, tmp_path / "data", [], **QUIET)
    data = sample_on_loopback(free_port())
    assert import_csv(instance, data)[0] == 200

    again, refused = import_csv(instance, data)
    replaced, body = import_csv(instance, data.replace(b"Pasar Kapal", b"Pasar Kapal Baru"), "?replace=true")

    assert again == 400
    assert len(refused["items"]) == SAMPLE_ROWS
    assert replaced == 200
    assert len(body["replaced"]) == SAMPLE_ROWS
    assert instance.camera("mengwi-kapal-01")["name"] == "Pasar Kapal Baru"


def test_api_imported_cameras_get_probed(gst, pantau, tmp_path):
    instance = start_pantau(
        pantau, tmp_path / "data", [], PANTAU_PROBE_INTERVAL_HOURS="24", PANTAU_PROBE_WINDOW_SECONDS="3"
    )
    text = csv_text(row("villa-d1", rtsp_url=gst.url("/d1")), row("desa-d1", rtsp_url=gst.url("/d1") + "?x", owner_category="desa"))

    status, body = import_csv(instance, text.encode())
    deadline = time.monotonic() + 30
    views = {}
    while time.monotonic() < deadline:
        views = {camera_id: instance.camera(camera_id) for camera_id in ("villa-d1", "desa-d1")}
        if all(view["probe"]["facts"] for view in views.values()):
            break
        time.sleep(0.5)

    assert status == 200, body
    assert views["villa-d1"]["probe"]["facts"]["width"] == 768
    assert views["villa-d1"]["compliance"]["status"] == "below_minimum"
    assert views["desa-d1"]["compliance"]["status"] == "exempt"


def test_api_multipart_upload(pantau, tmp_path):
    instance = start_pantau(pantau, tmp_path / "data", [], **QUIET)
    boundary = uuid.uuid4().hex
    data = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"kamera.csv\"\r\n"
        "Content-Type: text/csv\r\n\r\n"
    ).encode() + csv_text(row("form-1", rtsp_url=f"rtsp://127.0.0.1:{free_port()}/x")).encode() + f"\r\n--{boundary}--\r\n".encode()

    status, body = import_csv(instance, data, content_type=f"multipart/form-data; boundary={boundary}")

    assert status == 200, body
    assert body["created"] == ["form-1"]


# --- command line ------------------------------------------------------------------------


def run_import(*args: str, data_dir, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = dict(os.environ, PANTAU_DATA_DIR=str(data_dir), **env)
    return subprocess.run(
        [sys.executable, "-m", "relay", "import", *args], capture_output=True, text=True, env=full_env, cwd=REPO, timeout=60
    )


def test_cli_direct_writes_cameras_file(tmp_path):
    data_dir = tmp_path / "data"

    dry = run_import(str(SAMPLE), "--direct", "--dry-run", data_dir=data_dir)
    applied = run_import(str(SAMPLE), "--direct", data_dir=data_dir)
    again = run_import(str(SAMPLE), "--direct", data_dir=data_dir)

    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "dry run" in dry.stdout
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert f"{SAMPLE_ROWS} kamera baru" in applied.stdout
    written = yaml.safe_load((data_dir / "cameras.yaml").read_text())
    assert len(written) == SAMPLE_ROWS
    assert again.returncode == 1
    assert again.stdout.count("already exists") == SAMPLE_ROWS
    assert "baris / line 2, kolom / column id" in again.stdout


def test_cli_posts_to_running_service(pantau, tmp_path):
    instance = start_pantau(pantau, tmp_path / "data", [], **QUIET)
    csv_path = tmp_path / "kamera.csv"
    csv_path.write_bytes(windows_export(sample_on_loopback(free_port())))

    result = run_import(str(csv_path), "--server", instance.base, data_dir=tmp_path / "elsewhere")

    assert result.returncode == 0, result.stdout + result.stderr
    _, cameras = instance.request("GET", "/api/cameras")
    assert len(cameras["items"]) == SAMPLE_ROWS


def test_cli_direct_refused_while_service_runs(pantau, tmp_path):
    data_dir = tmp_path / "data"
    start_pantau(pantau, data_dir, [], **QUIET)

    result = run_import(str(SAMPLE), "--direct", data_dir=data_dir)

    assert result.returncode == 2
    assert "without --direct" in result.stderr
    assert not yaml.safe_load((data_dir / "cameras.yaml").read_text())


def test_second_service_on_same_data_dir_refused(pantau, tmp_path):
    data_dir = tmp_path / "data"
    start_pantau(pantau, data_dir, [], **QUIET)

    second = subprocess.run(
        [sys.executable, "-m", "relay", "serve"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env=dict(os.environ, PANTAU_DATA_DIR=str(data_dir), PANTAU_HTTP_PORT=str(free_port())),
    )

    assert second.returncode == 2
    assert "another Pantau process" in second.stderr


def test_cli_reports_unreachable_service(tmp_path):
    result = run_import(str(SAMPLE), data_dir=tmp_path, PANTAU_HTTP_PORT=str(free_port()))

    assert result.returncode == 1
    assert "cannot reach the service" in result.stdout
    assert "--direct" in result.stdout
