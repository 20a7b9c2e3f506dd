"""Deployment files: they parse, agree with the code, and start Pantau the way they say.

This machine has no container engine, so the image and compose file are
checked by reading them, and the commands they run are run directly.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import av
import pytest
import yaml

from relay.settings import Settings, env_file_text
from tests.support import REPO, camera_entry, free_port

DEPLOY = REPO / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
DEFAULTS = Settings()


def dockerfile_instructions() -> list[tuple[str, str]]:
    """Return (instruction, arguments) pairs of deploy/Dockerfile, continuation lines joined."""
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
    return instructions


def dockerfile_env() -> dict[str, str]:
    env = {}
    for keyword, rest in dockerfile_instructions():
        if keyword == "ENV":
            for item in shlex.split(rest):
                key, _, value = item.partition("=")
                env[key] = value
    return env


def app_routes() -> set[str]:
    import asyncio

    from relay.service import Service
    from relay.web import create_app

    async def build() -> set[str]:
        app = create_app(Service(Settings(data_dir="/nonexistent")))
        return {resource.canonical for resource in app.router.resources()}

    return asyncio.run(build())


def test_dockerfile_is_multistage_nonroot_with_healthcheck():
    instructions = dockerfile_instructions()
    stages = [rest for keyword, rest in instructions if keyword == "FROM"]
    users = [rest for keyword, rest in instructions if keyword == "USER"]
    env = dockerfile_env()

    assert len(stages) >= 2
    assert users and users[-1] not in ("root", "0")
    assert any(keyword == "HEALTHCHECK" and "/healthz" in rest for keyword, rest in instructions)
    assert ("EXPOSE", str(DEFAULTS.http_port)) in instructions
    assert env["PANTAU_HTTP_PORT"] == str(DEFAULTS.http_port)
    assert ("VOLUME", f'["{env["PANTAU_DATA_DIR"]}"]') in instructions
    assert ("STOPSIGNAL", "SIGTERM") in instructions
    assert ("ENTRYPOINT", '["pantau"]') in instructions


def test_compose_file_matches_the_image():
    compose = yaml.safe_load((DEPLOY / "compose" / "compose.yaml").read_text())
    services = compose["services"]
    pantau = services["pantau"]
    camera = services["camera"]
    seed = yaml.safe_load((DEPLOY / "compose" / "cameras.yaml").read_text())

    assert pantau["image"] == camera["image"]
    assert pantau["ports"] == [f"{DEFAULTS.http_port}:{DEFAULTS.http_port}"]
    data_dir = pantau["environment"]["PANTAU_DATA_DIR"]
    assert any(volume.endswith(f":{data_dir}") for volume in pantau["volumes"])
    assert data_dir == dockerfile_env()["PANTAU_DATA_DIR"]
    assert "pantau serve" in pantau["command"][0]
    assert camera["build"]["dockerfile"] == "deploy/Dockerfile"
    assert (DEPLOY / "compose" / camera["build"]["context"] / "deploy" / "Dockerfile").resolve().exists()
    assert "--port" in camera["command"]
    port = camera["command"][camera["command"].index("--port") + 1]
    assert seed[0]["url"] == f"rtsp://camera:{port}/demo"
    assert seed[0]["mode"] == "always"


def test_kubernetes_manifests_agree_with_the_code():
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    documents = {}
    for name in kustomization["resources"]:
        document = yaml.safe_load((KUBERNETES / name).read_text())
        documents[document["kind"]] = document
    statefulset = documents["StatefulSet"]
    service = documents["Service"]
    pod = statefulset["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = {item["name"]: item for item in container["env"]}
    routes = app_routes()

    assert set(documents) == {"Namespace", "ConfigMap", "Service", "StatefulSet"}
    assert container["ports"][0]["containerPort"] == DEFAULTS.http_port
    assert service["spec"]["ports"][0]["port"] == DEFAULTS.http_port
    assert service["spec"]["selector"] == statefulset["spec"]["template"]["metadata"]["labels"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert {"/readyz", "/healthz"} <= routes
    data_dir = env["PANTAU_DATA_DIR"]["value"]
    assert {"name": "data", "mountPath": data_dir} in container["volumeMounts"]
    assert statefulset["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    assert env["PANTAU_ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "pantau-admin"
    assert "requests" in container["resources"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    seed = pod["initContainers"][0]
    assert "test -f /data/cameras.yaml ||" in seed["command"][-1]
    cameras = yaml.safe_load(documents["ConfigMap"]["data"]["cameras.yaml"])
    assert cameras[0]["id"]


def test_environment_file_lists_every_setting():
    assert (DEPLOY / "systemd" / "pantau.env").read_text() == env_file_text()


def test_systemd_unit_verifies():
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    result = subprocess.run(
        ["systemd-analyze", "verify", str(DEPLOY / "systemd" / "pantau.service")],
        capture_output=True,
        text=True,
    )
    # Known and documented: the binary lives under /opt/pantau only once installed,
    # and systemd older than 254 does not know the back-off keys.
    allowed = ("is not executable", "Unknown key 'RestartSteps'", "Unknown key 'RestartMaxDelaySec'")
    problems = [line for line in result.stderr.splitlines() if line.strip() and not any(a in line for a in allowed)]
    assert problems == []


def unit_settings() -> tuple[list[str], dict[str, str], list[str]]:
    """Return the unit's ExecStart argv, its Environment= values and EnvironmentFile paths."""
    argv: list[str] = []
    env: dict[str, str] = {}
    files: list[str] = []
    for line in (DEPLOY / "systemd" / "pantau.service").read_text().splitlines():
        key, _, value = line.partition("=")
        if key == "ExecStart":
            argv = shlex.split(value)
        elif key == "Environment":
            name, _, setting = value.partition("=")
            env[name] = setting
        elif key == "EnvironmentFile":
            files.append(value.lstrip("-"))
    return argv, env, files


def read_env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


def start_like(argv: list[str], env: dict[str, str], data_dir: Path) -> tuple[subprocess.Popen[bytes], int, Path]:
    port = free_port()
    full_env = {key: value for key, value in os.environ.items() if not key.startswith("PANTAU_")}
    full_env.update(env)
    full_env.update({"PANTAU_DATA_DIR": str(data_dir), "PANTAU_HTTP_PORT": str(port), "PANTAU_HTTP_HOST": "127.0.0.1"})
    full_env.setdefault("PANTAU_AUTH", "off")
    pantau = Path(sys.executable).with_name("pantau")
    log_path = data_dir.parent / f"{data_dir.name}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([str(pantau), *argv[1:]], env=full_env, stdout=log, stderr=log)
    return process, port, log_path


def wait_healthy(port: int, process: subprocess.Popen[bytes], log_path: Path) -> None:
    import urllib.request

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert process.poll() is None, log_path.read_text()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"not healthy:\n{log_path.read_text()}")


def test_unit_command_serves_records_and_stops_cleanly(gst, tmp_path):
    argv, env, files = unit_settings()
    assert argv[0].endswith("/pantau") and argv[1:] == ["serve"]
    assert files == ["/etc/pantau/pantau.env"]
    env.update(read_env_file(DEPLOY / "systemd" / "pantau.env"))
    env["PANTAU_SEGMENT_SECONDS"] = "3"
    data_dir = tmp_path / "state"
    data_dir.mkdir()
    (data_dir / "cameras.yaml").write_text(
        yaml.safe_dump([camera_entry("rec", gst.url("/d1"), mode="always", record=True)])
    )

    process, port, log_path = start_like(argv, env, data_dir)
    try:
        wait_healthy(port, process, log_path)
        time.sleep(8)
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        code = process.wait(20)
        stop_seconds = time.monotonic() - started
    finally:
        if process.poll() is None:
            process.kill()

    assert code == 0, log_path.read_text()
    assert stop_seconds < 5
    with sqlite3.connect(data_dir / "recordings.sqlite") as connection:
        rows = connection.execute("SELECT path, status FROM segments").fetchall()
    assert rows
    assert {status for _, status in rows} == {"complete"}
    for path, _ in rows:
        with av.open(str(data_dir / "recordings" / path)) as container:
            frames = sum(1 for _ in container.decode(video=0))
        assert frames > 0


def test_image_entrypoint_serves_with_image_environment(tmp_path):
    instructions = dockerfile_instructions()
    entrypoint = yaml.safe_load(next(rest for keyword, rest in instructions if keyword == "ENTRYPOINT"))
    command = yaml.safe_load(next(rest for keyword, rest in instructions if keyword == "CMD"))
    env = {key: value for key, value in dockerfile_env().items() if key.startswith("PANTAU_")}
    env.pop("PANTAU_NODE_MODULES")  # players installed by npm ci in the source tree here
    data_dir = tmp_path / "data"
    data_dir.mkdir()

    process, port, log_path = start_like([*entrypoint, *command], env, data_dir)
    try:
        wait_healthy(port, process, log_path)
        process.send_signal(signal.SIGTERM)
        code = process.wait(10)
    finally:
        if process.poll() is None:
            process.kill()

    assert code == 0
    assert re.search(r'"event": "shutdown_complete"', log_path.read_text())
