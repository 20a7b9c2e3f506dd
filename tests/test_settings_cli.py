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
