"""Housekeeping after reports: retention of finished reports, old versions, leftover files.

Runs after each finished report and when a process starts; it never fails a report (what it
could not do, it does next time).
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from pathlib import Path

from flask import current_app
from sqlalchemy import delete, func, select

from jobs.results import report_path
from loading import writing
from models import (
    ACTIVE_STATES,
    LoadBatch,
    Report,
    ReportGroup,
    ReportResult,
    ReportShard,
    db,
    utcnow,
)

logger = logging.getLogger(__name__)
PARTIAL_FILE_AGE_SECONDS = 3600


def after_report() -> None:
    """Retention and old versions, after each finished report (never fails the report)."""
    config = current_app.config
    try:
        remove_expired(config["REPORTS_DIR"], config["REPORT_TTL_DAYS"])
        remove_beyond_count(config["REPORTS_DIR"], config["REPORT_MAX_COUNT"])
        purge_retired_versions()
    except Exception:
        db.session.rollback()
        logger.exception("housekeeping after a report failed; it will run again later")


def delete_reports(report_ids: list[str], reports_dir: str | None = None) -> None:
    """Delete reports with their shards, stored results and files."""
    for start in range(0, len(report_ids), 500):
        chunk = report_ids[start : start + 500]
        for model, column in (
            (ReportShard, ReportShard.report_id),
            (ReportResult, ReportResult.report_id),
            (ReportGroup, ReportGroup.report_id),
            (Report, Report.id),
        ):
            db.session.execute(delete(model).where(column.in_(chunk)))
        db.session.commit()
        if reports_dir:
            for report_id in chunk:
                report_path(reports_dir, report_id).unlink(missing_ok=True)


def remove_expired(reports_dir: str, ttl_days: float) -> int:
    """Delete finished reports older than the retention period, with their files."""
    cutoff = utcnow() - timedelta(days=ttl_days)
    finished_before = Report.status.not_in(ACTIVE_STATES) & (Report.created_at < cutoff)
    expired = list(db.session.scalars(select(Report.id).where(finished_before)))
    db.session.commit()
    delete_reports(expired, reports_dir)
    return len(expired)


def remove_beyond_count(reports_dir: str, keep: int) -> int:
    """Keep at most `keep` finished reports: the oldest go first."""
    finished = select(Report.id).where(Report.status.not_in(ACTIVE_STATES))
    surplus = list(db.session.scalars(finished.order_by(Report.created_at.desc()).offset(keep)))
    db.session.commit()
    delete_reports(surplus, reports_dir)
    return len(surplus)


def purge_retired_versions() -> int:
    """Delete hours, zones and closures rows no retained report can still read.

    A report reading as of batch W needs rows retired after W. Kept: everything retired after
    the oldest retained report's batch, and after any load that finished within the last
    hour (a report being planned right now may not have recorded its batch yet).
    """
    oldest_report = db.session.scalar(select(func.min(Report.batch)))
    grace = utcnow() - timedelta(hours=1)
    settled = db.session.scalar(select(func.max(LoadBatch.id)).where(LoadBatch.finished_at < grace))
    db.session.commit()
    limits = [value for value in (oldest_report, settled) if value is not None]
    if settled is None or not limits:
        return 0
    with db.engine.begin() as conn:
        return writing.purge_retired(conn, min(limits))


def remove_partial_files(reports_dir: str) -> int:
    """Delete temporary files a dead process left half-written (never served anyway); only
    old ones: another process sharing the folder may be writing a young one right now."""
    cutoff = time.time() - PARTIAL_FILE_AGE_SECONDS
    stale = [p for p in Path(reports_dir).glob(".report_*.tmp") if p.stat().st_mtime < cutoff]
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)
