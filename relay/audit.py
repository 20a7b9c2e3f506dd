"""The audit log: one JSON line per access or change, chained by SHA-256.

Files are ``PANTAU_DATA_DIR/audit/audit-YYYY-MM-DD.jsonl``, one per UTC day
of writing, mode 0600. Every line is a JSON object whose ``prev`` field is
the SHA-256 (hex) of the previous line's bytes without its newline. The
first line of the oldest file has 64 zeros. The chain runs across files,
so editing or removing a line, or a whole file other than the newest,
breaks it at the next line. ``head.json`` names the newest line and its
hash, so that removing lines from the end is detected too.

Writing happens in one thread, never on the event loop. The thread takes
every event queued so far, appends them, calls ``fsync`` on the file and
then replaces ``head.json`` (written, fsynced and renamed). An event is
therefore on disk one batch after it was recorded, typically within
milliseconds. Events still queued when the process is killed are lost,
while a clean stop writes them all.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from relay.cameras import write_atomically
from relay.logs import get_logger

GENESIS = "0" * 64
HEAD_FILE = "head.json"
FILE_PREFIX = "audit-"
FILE_SUFFIX = ".jsonl"
# Events waiting for the disk; beyond this the oldest are dropped, counted and reported in the log.
MAX_PENDING_EVENTS = 100_000
RETRY_SECONDS = 1.0

log = get_logger(component="audit")


def iso_time(value: float) -> str:
    moment = datetime.datetime.fromtimestamp(value, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def utc_today() -> datetime.date:
    return datetime.datetime.now(datetime.UTC).date()


def file_name(day: datetime.date) -> str:
    return f"{FILE_PREFIX}{day.isoformat()}{FILE_SUFFIX}"


def line_hash(line: bytes) -> str:
    return hashlib.sha256(line).hexdigest()


def audit_files(directory: Path) -> list[Path]:
    """Return the audit files in chain order (by day)."""
    if not directory.is_dir():
        return []
    return sorted(
        path
        for path in directory.iterdir()
        if path.name.startswith(FILE_PREFIX) and path.name.endswith(FILE_SUFFIX) and path.is_file()
    )


def _day_of(path: Path) -> datetime.date | None:
    try:
        return datetime.date.fromisoformat(path.name[len(FILE_PREFIX) : -len(FILE_SUFFIX)])
    except ValueError:
        return None


class AuditLog:
    """Append-only writer of the chained audit files."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._pending: deque[dict[str, Any]] = deque()
        self._condition = threading.Condition()
        self._closing = False
        self._thread: threading.Thread | None = None
        self._prev = GENESIS
        self._day: datetime.date | None = None
        self._lines_in_file = 0
        self.dropped = 0
        self.written = 0
        self.write_errors = 0
        # Events recorded so far, and how many of them are settled (written or dropped):
        # the queue is first in, first out, so event n is settled once _settled >= n.
        self.recorded = 0
        self._settled = 0

    # --- start and stop -------------------------------------------------------------

    def start(self) -> None:
        """Find the end of the chain, repair a torn last line, and start the writer thread.

        Raises OSError when the directory cannot be created or read.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)
        notes = self._recover()
        self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
        self._thread.start()
        for note in notes:
            self.record(note)

    def close(self, timeout: float = 10.0) -> None:
        """Write every queued event and stop the thread."""
        with self._condition:
            self._closing = True
            self._condition.notify()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.error("audit_close_timed_out", pending=len(self._pending))

    def _recover(self) -> list[dict[str, Any]]:
        """Continue the chain after the newest line on disk; return events that report repairs."""
        notes: list[dict[str, Any]] = []
        files = audit_files(self.directory)
        if not files:
            return notes
        newest = files[-1]
        data = newest.read_bytes()
        if data and not data.endswith(b"\n"):
            # A write torn by a crash or power loss: the partial line is no event.
            keep = data.rfind(b"\n") + 1
            with open(newest, "r+b") as handle:
                handle.truncate(keep)
                os.fsync(handle.fileno())
            log.warning("audit_torn_line_removed", file=newest.name, bytes=len(data) - keep)
            notes.append(
                {"action": "audit_repaired", "result": "ok", "detail": {"file": newest.name, "torn_bytes": len(data) - keep}}
            )
            data = data[:keep]

        lines = data.splitlines()
        self._day = _day_of(newest)
        self._lines_in_file = len(lines)
        if lines:
            self._prev = line_hash(lines[-1])
        elif len(files) > 1:
            previous = files[-2].read_bytes().splitlines()
            self._prev = line_hash(previous[-1]) if previous else GENESIS

        head = read_head(self.directory)
        if head is not None and not _head_matches(self.directory, head):
            log.error("audit_log_truncated", head=head, file=newest.name, lines=len(lines))
            notes.append({"action": "audit_truncation_found", "result": "failed", "detail": {"head": head}})
        return notes

    # --- recording ------------------------------------------------------------------

    def record(self, event: dict[str, Any]) -> None:
        """Queue an event, stamped with the current time, without waiting for the disk."""
        event = {"time": iso_time(time.time()), **event}
        with self._condition:
            if len(self._pending) >= MAX_PENDING_EVENTS:
                self._pending.popleft()
                self.dropped += 1
                self._settled += 1
            self._pending.append(event)
            self.recorded += 1
            self._condition.notify_all()

    def wait_settled(self, count: int, timeout: float) -> bool:
        """Wait until the first ``count`` recorded events are written (or dropped); return False on timeout."""
        with self._condition:
            return self._condition.wait_for(lambda: self._settled >= count or self._thread is None, timeout)

    def pending(self) -> int:
        return len(self._pending)

    def _run(self) -> None:
        reported_drops = 0
        while True:
            with self._condition:
                while not self._pending and not self._closing:
                    self._condition.wait()
                if not self._pending and self._closing:
                    return
                batch = list(self._pending)
                self._pending.clear()
                drops = self.dropped - reported_drops
            if drops:
                batch.insert(0, {"time": batch[0]["time"], "action": "audit_events_lost", "result": "failed",
                                 "detail": {"events": drops}})
            try:
                self._write(batch)
            except OSError as exc:
                self.write_errors += 1
                log.error("audit_write_failed", reason=str(exc), events=len(batch), retry_seconds=RETRY_SECONDS)
                with self._condition:
                    # Put the batch back in front, keeping the bound on memory.
                    room = MAX_PENDING_EVENTS - len(self._pending)
                    kept = [event for event in batch if event.get("action") != "audit_events_lost"]
                    lost = max(0, len(kept) - room)
                    self.dropped += lost
                    self._settled += lost
                    self._pending.extendleft(reversed(kept[lost:]))
                    closing = self._closing
                if closing:
                    log.error("audit_events_not_written", events=len(self._pending))
                    return
                time.sleep(RETRY_SECONDS)
                continue
            reported_drops += drops
            with self._condition:
                self.written += len(batch)
                self._settled += len(batch) - (1 if drops else 0)
                self._condition.notify_all()

    def _write(self, batch: list[dict[str, Any]]) -> None:
        today = utc_today()
        # Days never go backwards, even when the clock does, so the files stay in chain order.
        day = today if self._day is None or today > self._day else self._day
        path = self.directory / file_name(day)
        prev = self._prev
        lines = []

        for event in batch:
            event["prev"] = prev
            line = msgspec.json.encode(event)
            lines.append(line)
            prev = line_hash(line)

        created = not path.exists()
        descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            size = os.fstat(descriptor).st_size
            try:
                data = b"".join(line + b"\n" for line in lines)
                if os.write(descriptor, data) != len(data):
                    raise OSError(f"short write to {path.name}")
                os.fsync(descriptor)
            except OSError:
                # Cut a partial batch off, so that the retry continues the chain from the last whole line.
                with contextlib.suppress(OSError):
                    os.ftruncate(descriptor, size)
                raise
        finally:
            os.close(descriptor)

        if created:
            _fsync_directory(self.directory)
        if day != self._day:
            self._lines_in_file = 0
        self._day = day
        self._lines_in_file += len(lines)
        self._prev = prev
        head = {"file": path.name, "line": self._lines_in_file, "sha256": prev}
        try:
            write_atomically(self.directory / HEAD_FILE, msgspec.json.encode(head))
        except OSError as exc:
            # The events are on disk; an old head only leaves the newest lines unguarded until the next batch.
            log.error("audit_head_write_failed", reason=str(exc))


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def read_head(directory: Path) -> dict[str, Any] | None:
    try:
        head = json.loads((directory / HEAD_FILE).read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {"file": None, "line": None, "sha256": None}
    return head if isinstance(head, dict) else {"file": None, "line": None, "sha256": None}


def _head_matches(directory: Path, head: dict[str, Any]) -> bool:
    name = head.get("file")
    number = head.get("line")
    if not isinstance(name, str) or "/" in name or not isinstance(number, int) or number < 1:
        return False
    try:
        lines = (directory / name).read_bytes().splitlines()
    except OSError:
        return False
    return len(lines) >= number and line_hash(lines[number - 1]) == head.get("sha256")


# --- verification ------------------------------------------------------------------------


@dataclass
class VerifyResult:
    ok: bool
    files: int = 0
    lines: int = 0
    problem: str | None = None


def verify_directory(directory: Path) -> VerifyResult:
    """Check the chain of every audit file in ``directory`` and the head; stop at the first break."""
    files = audit_files(directory)
    if not files:
        return VerifyResult(False, problem=f"no audit files ({FILE_PREFIX}YYYY-MM-DD{FILE_SUFFIX}) in {directory}")
    prev = GENESIS
    total = 0
    for path in files:
        with open(path, "rb") as handle:
            data = handle.read()
        if data and not data.endswith(b"\n"):
            count = data.count(b"\n") + 1
            return VerifyResult(False, len(files), total, f"{path.name} line {count}: the last line is incomplete")
        for number, line in enumerate(data.splitlines(), start=1):
            where = f"{path.name} line {number}"
            try:
                event = json.loads(line)
            except ValueError:
                return VerifyResult(False, len(files), total, f"{where}: not valid JSON (edited?)")
            if not isinstance(event, dict) or "prev" not in event:
                return VerifyResult(False, len(files), total, f"{where}: not an audit event (no prev field)")
            if event["prev"] != prev:
                previous = f"line {number - 1}" if number > 1 else "the last line of the previous file"
                return VerifyResult(
                    False,
                    len(files),
                    total,
                    f"{where}: prev does not match the SHA-256 of {previous}, so {previous} was edited "
                    "or lines after it were removed",
                )
            prev = line_hash(line)
            total += 1
    head = read_head(directory)
    if head is None:
        return VerifyResult(False, len(files), total, f"{HEAD_FILE} is missing, so removed lines at the end cannot be ruled out")
    if not _head_matches(directory, head):
        return VerifyResult(
            False,
            len(files),
            total,
            f"{HEAD_FILE} names {head.get('file')} line {head.get('line')}, which is missing or differs: "
            "lines were removed from or edited at the end",
        )
    return VerifyResult(True, len(files), total)


# --- reading -----------------------------------------------------------------------------


def read_events(directory: Path, first_day: datetime.date | None = None) -> Iterator[dict[str, Any]]:
    """Yield the events of every file from ``first_day`` on, oldest first; unreadable lines are skipped."""
    for path in audit_files(directory):
        day = _day_of(path)
        if first_day is not None and day is not None and day < first_day:
            continue
        try:
            data = path.read_bytes()
        except OSError as exc:
            log.warning("audit_file_unreadable", file=path.name, reason=str(exc))
            continue
        for line in data.splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                yield event
