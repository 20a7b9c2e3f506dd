"""The ``pantau`` command line and settings from the environment."""

from __future__ import annotations

import os
import subprocess
import sys

from relay.settings import env_name, settings_fields
from tests.conftest import start_pantau
from tests.support import REPO


def run_pantau(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "relay", *args], capture_output=True, text=True, env=full_env, cwd=REPO, timeout=30
    )


def test_help_lists_every_variable():
    for args in (["--help"], ["serve", "--help"]):
        result = run_pantau(*args)
        assert result.returncode == 0
        for name, _annotation, default, _meta in settings_fields():
            line = next((line for line in result.stdout.splitlines() if line.strip().startswith(env_name(name) + "=")), None)
            assert line is not None, f"{env_name(name)} missing from {' '.join(args)}"
            assert str(default) in line or default in ("", None)


def test_invalid_value_stops_startup_with_one_line():
    result = run_pantau("serve", env={"PANTAU_HTTP_PORT": "eighty"})

    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1
    assert "PANTAU_HTTP_PORT" in lines[0]
    assert "'eighty'" in lines[0]
    assert "integer" in lines[0]


def test_invalid_choice_names_allowed_values():
    result = run_pantau("serve", env={"PANTAU_LOG_FORMAT": "xml"})

    assert result.returncode == 2
    assert "PANTAU_LOG_FORMAT" in result.stderr
    assert "json, console" in result.stderr


def test_starts_without_any_configuration(pantau, tmp_path):
    data_dir = tmp_path / "never-created"
    instance = start_pantau(pantau, data_dir, None)

    status, body = instance.request("GET", "/api/cameras")
    ready_status, ready = instance.request("GET", "/readyz")

    assert status == 200
    assert body["items"] == []
    assert ready_status == 200
    assert ready["status"] == "ready"


def test_unwritable_data_dir_stops_startup(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")

    result = run_pantau("serve", env={"PANTAU_DATA_DIR": str(blocker / "data")})

    assert result.returncode == 2
    assert "PANTAU_DATA_DIR" in result.stderr
    assert "writable" in result.stderr


def test_check_command_lists_rejected_entries(tmp_path):
    path = tmp_path / "cameras.yaml"
    path.write_text(
        "- {id: good, name: G, url: 'rtsp://10.0.0.1/x', owner: {category: desa, name: Desa Kuta}}\n"
        "- {id: bad, name: B, url: 'http://10.0.0.1/x', owner: {category: desa, name: Desa Kuta}}\n"
    )

    result = run_pantau("check", str(path))

    assert result.returncode == 1
    assert "rejected: camera bad field url" in result.stdout
    assert "1 cameras valid, 1 rejected" in result.stdout


def test_no_command_is_a_usage_error():
    result = run_pantau()

    assert result.returncode == 2
    assert "a command is required" in result.stderr


def test_unknown_variable_is_logged(pantau, tmp_path):
    instance = start_pantau(pantau, tmp_path, None, PANTAU_HTTTP_PORT="9999")

    warnings = instance.log_events("unknown_setting")

    assert [event["variable"] for event in warnings] == ["PANTAU_HTTTP_PORT"]
