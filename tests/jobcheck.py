"""Checks and hooks for report job tests: a finished report's row, stored result, HTTP answers
and log must tell the same story.

The invariant, whatever path a report took (and whatever shape the job steps take later):

- `Complete` ⇔ a stored result and no error: the row counts the stored table's rows, the CSV
  and the JSON answers serve that many rows, and the log says it completed with no ERROR record
  and no traceback about it, and never that it failed.
- `Failed` ⇔ a short reason: one line, no SQL, no server paths; no stored result; the API
  answers 422 with that reason, and the log says it failed with the same reason (a traceback
  there is fine: the log keeps the details) and never that it completed.
"""

from __future__ import annotations

import io
import logging
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from jobs import results
from models import Report, ReportResult, ReportStatus, db

SHORT_REASON_MAX = 200
SERVER_PATH = re.compile(r"(^|\s)/[\w.-]+/")
SQL_WORDS = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE)\b")


@dataclass(frozen=True)
class Ending:
    """How a report's row says it ended."""

    id: str
    status: ReportStatus
    error: str | None
    row_count: int | None


def check_report_agrees(
    app, report_id: str, records: Iterable[logging.LogRecord] | None = None
) -> ReportStatus:
    """Assert the row, the stored result, the HTTP answers and (given `records`) the log
    agree on how the report ended; return its status."""
    with app.app_context():
        found = db.session.get(Report, report_id, populate_existing=True)
        assert found is not None, f"report {report_id} has no row"
        row = Ending(found.id, ReportStatus(found.status), found.error, found.row_count)
        stored = db.session.get(ReportResult, report_id)
        table = None if stored is None else results.unpack(stored.data)
        db.session.commit()
    status = row.status
    assert status in (ReportStatus.COMPLETE, ReportStatus.FAILED), f"not finished: {status}"
    client = app.test_client()
    if status == ReportStatus.COMPLETE:
        check_complete(client, row, table)
    else:
        check_failed(client, row, table)
    if records is not None:
        check_log(report_id, status, row.error, list(records))
    return status


def check_complete(client, row: Ending, table: pd.DataFrame | None) -> None:
    assert table is not None, "Complete without a stored result"
    assert row.error is None, f"Complete with an error: {row.error!r}"
    assert row.row_count == len(table), (row.row_count, len(table))
    csv = client.get(f"/get_report/{row.id}")
    assert csv.status_code == 200, csv.data[:300]
    assert csv.headers["Content-Type"].startswith("text/csv")
    served = pd.read_csv(io.BytesIO(csv.data), dtype={"store_id": str})
    assert len(served) == row.row_count and list(served.columns) == list(table.columns)
    answer = client.get(f"/get_report/{row.id}?format=json")
    assert answer.status_code == 200 and len(answer.get_json()["rows"]) == row.row_count


def check_failed(client, row: Ending, table: pd.DataFrame | None) -> None:
    assert table is None, "Failed, yet a result is stored"
    assert is_short_reason(row.error), f"not a short reason: {row.error!r}"
    answer = client.get(f"/get_report/{row.id}")
    assert answer.status_code == 422
    assert answer.get_json()["message"] == row.error


def is_short_reason(reason: str | None) -> bool:
    """One line a person can read: no traceback, no SQL, no server paths."""
    return (
        bool(reason)
        and len(reason) <= SHORT_REASON_MAX
        and "\n" not in reason
        and "Traceback" not in reason
        and not SQL_WORDS.search(reason)
        and not SERVER_PATH.search(reason)
    )


def check_log(
    report_id: str, status: ReportStatus, error: str | None, records: list[logging.LogRecord]
) -> None:
    about = [record for record in records if report_id in record.getMessage()]
    completed = [r for r in about if f"report {report_id}: complete" in r.getMessage()]
    failed = [r for r in about if f"report {report_id}: failed" in r.getMessage()]
    if status == ReportStatus.COMPLETE:
        loud = [r.getMessage() for r in about if r.levelno >= logging.ERROR or r.exc_info]
        assert not loud, f"a Complete report logged errors: {loud}"
        assert completed and not failed, [r.getMessage() for r in about]
    else:
        assert not completed, [r.getMessage() for r in about]
        assert [r.getMessage() for r in failed] == [f"report {report_id}: failed: {error}"]


class StepHook:
    """Wraps a function of a module so a test can wait until it has run `count` times (in any
    thread), instead of sleeping: `hook = StepHook(monkeypatch, jobs, "release")`."""

    def __init__(self, monkeypatch, module: Any, name: str) -> None:
        self.calls = 0
        self.changed = threading.Condition()
        original: Callable = getattr(module, name)

        def counted(*args, **kwargs):
            try:
                return original(*args, **kwargs)
            finally:
                with self.changed:
                    self.calls += 1
                    self.changed.notify_all()

        monkeypatch.setattr(module, name, counted)

    def wait(self, count: int = 1, timeout: float = 60) -> None:
        with self.changed:
            if not self.changed.wait_for(lambda: self.calls >= count, timeout):
                raise TimeoutError(f"ran {self.calls} time(s) of {count} within {timeout} s")


class BrokerDown(Exception):
    """What an Outbox raises for a send it was told to fail."""


class Outbox:
    """An executor like Celery's (a broker holds queued steps: they have no owner) that keeps
    the steps sent instead of running them; the sends listed in `failing` raise, each once,
    as they do while a broker restarts. `run(app)` then runs what was sent, inline."""

    owner = None

    def __init__(self, failing: Iterable[tuple] = (), error: type[Exception] = BrokerDown):
        self.sent: list[tuple] = []
        self.failing = set(failing)
        self.error = error

    def enqueue_start(self, report_id: str) -> None:
        self._send(("start", report_id))

    def enqueue_shard(self, report_id: str, shard: int) -> None:
        self._send(("shard", report_id, shard))

    def _send(self, step: tuple) -> None:
        if step in self.failing:
            self.failing.discard(step)
            raise self.error(f"the broker did not take {step}")
        self.sent.append(step)

    def shards_sent(self, report_id: str) -> list[int]:
        return sorted(step[2] for step in self.sent if step[:2] == ("shard", report_id))
