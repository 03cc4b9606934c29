"""Report jobs: a persisted state machine run on a bounded thread pool.

Every job is a `reports` row (Running → Complete | Failed, with timestamps, progress and the
error), so nothing is lost with the process: reports left Running by a process that died are
run again when the service starts. Results are written under a temporary name and renamed,
so a reader never sees half a file.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

from flask import Flask
from sqlalchemy import select, update

import report
import snapshot
from models import Report, ReportStatus, db, utcnow

logger = logging.getLogger(__name__)

REPORT_ID_PATTERN = re.compile(r"^[0-9a-f]{32}$")


class QueueFull(Exception):
    """More reports are running or waiting than the service accepts."""


class ReportNotFound(Exception):
    """No report has this id (or the id is malformed)."""


def new_report_id() -> str:
    """128 random bits as 32 hex digits: unguessable, and safe in a file name."""
    return secrets.token_hex(16)


def is_valid_report_id(report_id: str) -> bool:
    return bool(REPORT_ID_PATTERN.fullmatch(report_id))


def report_path(reports_dir: str | Path, report_id: str) -> Path:
    """Where a report's CSV lives; refuses any id that is not 32 hex digits."""
    if not is_valid_report_id(report_id):
        raise ReportNotFound(report_id)
    return Path(reports_dir) / f"report_{report_id}.csv"


class ReportRunner:
    """Runs report jobs on `workers` threads with at most `queue_limit` waiting."""

    def __init__(self, app: Flask, workers: int, queue_limit: int, inline: bool = False) -> None:
        self.app = app
        self.capacity = workers + queue_limit
        self._executor = (
            None if inline else ThreadPoolExecutor(workers, thread_name_prefix="report")
        )
        self._lock = threading.Lock()
        self._in_flight = 0

    def submit(self, report_id: str) -> None:
        """Queue a job, or raise QueueFull when `workers + queue_limit` are in flight."""
        with self._lock:
            if self._in_flight >= self.capacity:
                raise QueueFull(f"{self._in_flight} reports running or queued")
            self._in_flight += 1
        if self._executor is None:
            self._run(report_id)
        else:
            self._executor.submit(self._run, report_id)

    def has_room(self) -> bool:
        with self._lock:
            return self._in_flight < self.capacity

    def _run(self, report_id: str) -> None:
        try:
            with self.app.app_context():
                execute_report(report_id, self.app.config["REPORTS_DIR"])
                remove_expired(self.app.config["REPORTS_DIR"], self.app.config["REPORT_TTL_DAYS"])
        except Exception:  # e.g. the database went away: log it, keep the worker alive
            logger.exception("report %s: could not record the outcome or clean up", report_id)
        finally:
            with self._lock:
                self._in_flight -= 1

    def shutdown(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=False)


def create_report(as_of_us: int | None) -> str:
    """Persist a new Running report before any work starts, so it survives a crash."""
    report_id = new_report_id()
    db.session.add(Report(id=report_id, status=ReportStatus.RUNNING, requested_as_of_us=as_of_us))
    db.session.commit()
    return report_id


def execute_report(report_id: str, reports_dir: str) -> None:
    """Compute one report and record the outcome; never raises (errors become Failed)."""
    logger.info("report %s: started", report_id)
    try:
        requested = _start(report_id)
        inputs = snapshot.read_inputs(db.engine, requested)
        _set_progress(report_id, 0.5, as_of_us=inputs.now_us, batch=inputs.batch)
        result = compute(inputs)
        _set_progress(report_id, 0.9)
        write_atomically(result, report_path(reports_dir, report_id))
        _finish(report_id, ReportStatus.COMPLETE, row_count=len(result))
        logger.info("report %s: complete, %d stores", report_id, len(result))
    except Exception as exc:
        db.session.rollback()
        logger.exception("report %s: failed", report_id)
        _finish(report_id, ReportStatus.FAILED, error=f"{type(exc).__name__}: {exc}")


def compute(inputs: snapshot.ReportInputs):
    """Run the engine on the snapshot and put the external store ids back."""
    result = report.compute_report(inputs.polls, inputs.hours, inputs.timezones, inputs.now_us)
    if inputs.now_us is None or result.empty:
        return result
    result["store_id"] = inputs.external_ids.reindex(result["store_id"].to_numpy()).to_numpy()
    return result.sort_values("store_id", kind="stable").reset_index(drop=True)


def write_atomically(result, path: Path) -> None:
    """Write the CSV to a temporary name beside its final one, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        result.to_csv(temporary, index=False, float_format="%.2f")
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _start(report_id: str) -> int | None:
    """Mark the job started and return its requested as_of.

    Writes before it reads: on SQLite a transaction that reads first cannot wait for the write
    lock later (it fails with "database is locked"), one that writes first simply waits.
    """
    started = db.session.execute(
        update(Report)
        .where(Report.id == report_id)
        .values(started_at=utcnow(), attempts=Report.attempts + 1, progress=0.1)
    )
    if started.rowcount != 1:
        db.session.rollback()
        raise ReportNotFound(report_id)
    requested = db.session.scalar(select(Report.requested_as_of_us).where(Report.id == report_id))
    db.session.commit()
    return requested


def _set_progress(report_id: str, progress: float, **values) -> None:
    db.session.execute(
        update(Report).where(Report.id == report_id).values(progress=progress, **values)
    )
    db.session.commit()


def _finish(report_id: str, status: ReportStatus, **values) -> None:
    if status == ReportStatus.COMPLETE:
        values.update(progress=1.0, file_name=f"report_{report_id}.csv")
    values.update(status=status, finished_at=utcnow())
    db.session.execute(update(Report).where(Report.id == report_id).values(**values))
    db.session.commit()


def recover_interrupted(runner: ReportRunner) -> list[str]:
    """Run again the reports a dead process left Running (called once at start-up)."""
    ids = list(db.session.scalars(select(Report.id).where(Report.status == ReportStatus.RUNNING)))
    for report_id in ids:
        logger.warning("report %s: left running by a previous process; running it again", report_id)
        try:
            runner.submit(report_id)
        except QueueFull:
            _finish(
                report_id,
                ReportStatus.FAILED,
                error="interrupted and the queue was full at restart",
            )
    return ids


def remove_partial_files(reports_dir: str) -> int:
    """Delete temporary files a dead process left half-written (never served anyway)."""
    stale = list(Path(reports_dir).glob(".report_*.tmp"))
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)


def remove_expired(reports_dir: str, ttl_days: float) -> int:
    """Delete finished reports older than the retention period, with their files."""
    cutoff = utcnow() - timedelta(days=ttl_days)
    finished_before = (Report.status != ReportStatus.RUNNING) & (Report.created_at < cutoff)
    expired = list(db.session.scalars(select(Report.id).where(finished_before)))
    db.session.commit()  # end the read; the delete below starts a write-first transaction
    for start in range(0, len(expired), 500):
        chunk = expired[start : start + 500]
        db.session.execute(Report.__table__.delete().where(Report.id.in_(chunk)))
        db.session.commit()
        for report_id in chunk:
            report_path(reports_dir, report_id).unlink(missing_ok=True)
    return len(expired)
