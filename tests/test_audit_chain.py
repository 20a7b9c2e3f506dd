"""The audit writer and verifier in-process: daily files, one chain across them, and what breaks it."""

from __future__ import annotations

import datetime
import json

from relay import audit
from relay.audit import AuditLog, verify_directory


def write_days(directory, monkeypatch, days: list[tuple[datetime.date, int]]) -> None:
    """Write ``count`` events on each day, starting and closing the writer once per day."""
    for day, count in days:
        monkeypatch.setattr(audit, "utc_today", lambda day=day: day)
        log = AuditLog(directory)
        log.start()
        for number in range(count):
            log.record({"action": "test", "number": number, "day": day.isoformat()})
        log.close()


def test_chain_runs_across_daily_files(tmp_path, monkeypatch):
    write_days(tmp_path, monkeypatch, [(datetime.date(2025, 3, 1), 3), (datetime.date(2025, 3, 2), 2)])
    files = sorted(path.name for path in tmp_path.glob("audit-*.jsonl"))
    first_of_second_day = json.loads((tmp_path / "audit-2025-03-02.jsonl").read_text().splitlines()[0])
    last_of_first_day = (tmp_path / "audit-2025-03-01.jsonl").read_bytes().splitlines()[-1]

    result = verify_directory(tmp_path)

    assert files == ["audit-2025-03-01.jsonl", "audit-2025-03-02.jsonl"]
    assert first_of_second_day["prev"] == audit.line_hash(last_of_first_day)
    assert result.ok, result.problem
    assert result.lines == 5
    assert result.files == 2


def test_removed_day_file_breaks_the_chain(tmp_path, monkeypatch):
    write_days(
        tmp_path,
        monkeypatch,
        [(datetime.date(2025, 3, 1), 2), (datetime.date(2025, 3, 2), 2), (datetime.date(2025, 3, 3), 2)],
    )
    (tmp_path / "audit-2025-03-02.jsonl").unlink()

    result = verify_directory(tmp_path)

    assert not result.ok
    assert result.problem.startswith("audit-2025-03-03.jsonl line 1: prev does not match")
    assert "the last line of the previous file" in result.problem


def test_clock_going_back_keeps_writing_the_newest_file(tmp_path, monkeypatch):
    write_days(tmp_path, monkeypatch, [(datetime.date(2025, 3, 2), 1), (datetime.date(2025, 3, 1), 1)])

    result = verify_directory(tmp_path)

    assert sorted(path.name for path in tmp_path.glob("audit-*.jsonl")) == ["audit-2025-03-02.jsonl"]
    assert result.ok, result.problem
    assert result.lines == 2


def test_missing_head_fails_verification(tmp_path, monkeypatch):
    write_days(tmp_path, monkeypatch, [(datetime.date(2025, 3, 1), 2)])
    (tmp_path / "head.json").unlink()

    result = verify_directory(tmp_path)

    assert not result.ok
    assert "head.json is missing" in result.problem


def test_recorded_events_settle_in_order(tmp_path):
    log = AuditLog(tmp_path)
    log.start()
    for number in range(50):
        log.record({"action": "test", "number": number})

    settled = log.wait_settled(log.recorded, 10)
    lines = [json.loads(line) for path in tmp_path.glob("audit-*.jsonl") for line in path.read_text().splitlines()]
    log.close()

    assert settled
    assert [line["number"] for line in lines] == list(range(50))
    assert all(line["time"].endswith("Z") for line in lines)
