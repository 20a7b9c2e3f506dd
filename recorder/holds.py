"""Evidence holds: time ranges of a camera that retention must keep.

Holds are few and precious, so they live in their own JSON file
(``PANTAU_DATA_DIR/holds.json``), written atomically, and survive a
rebuild of the recording index.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

import msgspec


class Hold(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    camera_id: str
    start_utc: float
    end_utc: float
    reason: str
    created_utc: float


class HoldStoreError(Exception):
    """The holds file cannot be read or written; nothing was changed."""


class HoldStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.holds: list[Hold] = []

    def load(self) -> None:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            self.holds = []
            return
        except OSError as exc:
            raise HoldStoreError(f"cannot read {self.path}: {exc.strerror}") from exc
        try:
            self.holds = msgspec.json.decode(data, type=list[Hold]) if data.strip() else []
        except msgspec.DecodeError as exc:
            raise HoldStoreError(f"{self.path} is not a valid holds file: {exc}") from exc

    def add(self, camera_id: str, start_utc: float, end_utc: float, reason: str) -> Hold:
        hold = Hold(
            id=max((item.id for item in self.holds), default=0) + 1,
            camera_id=camera_id,
            start_utc=start_utc,
            end_utc=end_utc,
            reason=reason,
            created_utc=time.time(),
        )
        self._write([*self.holds, hold])
        return hold

    def remove(self, camera_id: str, hold_id: int) -> Hold | None:
        found = next(
            (item for item in self.holds if item.id == hold_id and item.camera_id == camera_id), None
        )
        if found is not None:
            self._write([item for item in self.holds if item is not found])
        return found

    def for_camera(self, camera_id: str) -> list[Hold]:
        return [item for item in self.holds if item.camera_id == camera_id]

    def _write(self, holds: list[Hold]) -> None:
        """Write atomically (temporary file, fsync, rename), then take the new list."""
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(temporary, "wb") as handle:
                handle.write(msgspec.json.format(msgspec.json.encode(holds)))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, self.path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                temporary.unlink(missing_ok=True)
            raise HoldStoreError(f"cannot write {self.path}: {exc.strerror or exc}") from exc
        self.holds = holds
