"""The quirk replay server (``loadtest.replay``) as a test fixture: one process, many mounts."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from tests.support import REPO, follow_json_lines, terminate

CORPUS = REPO / "tests" / "data" / "cameras"
VARIANTS = REPO / "tests" / "data" / "camera-variants"


def corpus_files() -> list[Path]:
    return sorted(CORPUS.glob("q*.txt"))


def variant_files() -> list[Path]:
    return sorted(VARIANTS.glob("v*.txt"))


class ReplayProcess:
    """``python -m loadtest.replay`` in a subprocess; its JSON event lines are collected."""

    def __init__(self, files: list[Path], log_dir: Path, options: list[str] | None = None) -> None:
        self.files = files
        self.options = options or []
        self.process: subprocess.Popen[str] | None = None
        self.mounts: dict[str, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self.stderr_path = log_dir / "replay-stderr.log"

    def start(self, timeout: float = 60) -> ReplayProcess:
        command = [sys.executable, "-m", "loadtest.replay", "--port", "0", *map(str, self.files)]
        for option in self.options:
            command += ["--option", option]
        stderr = open(self.stderr_path, "wb")  # noqa: SIM115 - closed with the process
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, text=True, cwd=REPO)
        stderr.close()
        ready = threading.Event()

        def on_event(event: dict[str, Any]) -> None:
            if event.get("event") == "ready":
                self.mounts = {mount["name"]: mount for mount in event["mounts"]}
                ready.set()
                return
            with self._lock:
                self.events.append(event)

        follow_json_lines(self.process, on_event)
        if not ready.wait(timeout):
            self.stop()
            raise RuntimeError(
                f"the replay did not start within {timeout} s:\n{self.stderr_path.read_text()}"
            )
        return self

    def events_of(self, mount: str, event: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [
                item
                for item in self.events
                if item.get("mount") == mount and (event is None or item.get("event") == event)
            ]

    def requests(self, mount: str, method: str | None = None) -> list[dict[str, Any]]:
        return [
            item for item in self.events_of(mount, "request") if method is None or item["method"] == method
        ]

    def wait_event(self, mount: str, event: str, timeout: float = 20) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.events_of(mount, event)
            if found:
                return found[-1]
            time.sleep(0.1)
        raise AssertionError(f"no {event} event from mount {mount} within {timeout} s")

    def stop(self) -> None:
        if self.process is not None:
            terminate(self.process)
        self.process = None
