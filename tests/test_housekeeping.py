"""Housekeeping: retention of reports, purge of retired versions."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from sqlalchemy import select, text, update

import loader
from jobs import housekeeping, results
from models import LoadBatch, Report, ReportStatus, db, utcnow


def make_report_row(report_id: str, age_days: float) -> None:
    db.session.add(
        Report(
            id=report_id,
            status=ReportStatus.COMPLETE,
            created_at=utcnow() - timedelta(days=age_days),
        )
    )
    db.session.commit()


def test_expired_reports_and_their_files_are_removed(app):
    reports_dir = Path(app.config["REPORTS_DIR"])
    with app.app_context():
        old, new = "b" * 32, "c" * 32
        make_report_row(old, 40)
        make_report_row(new, 0)
        for report_id in (old, new):
            results.report_path(reports_dir, report_id).write_text("store_id\n")
        assert housekeeping.remove_expired(str(reports_dir), ttl_days=30) == 1
        assert db.session.get(Report, old) is None and db.session.get(Report, new) is not None
    assert not results.report_path(reports_dir, old).exists()
    assert results.report_path(reports_dir, new).exists()


def test_at_most_report_max_count_reports_are_kept_oldest_go_first(app):
    reports_dir = Path(app.config["REPORTS_DIR"])
    ids = [f"{n:032x}" for n in range(5)]
    with app.app_context():
        for age, report_id in enumerate(ids):  # ids[0] is the newest
            make_report_row(report_id, age)
            results.report_path(reports_dir, report_id).write_text("store_id\n")
        db.session.add(
            Report(
                id="e" * 32, status=ReportStatus.RUNNING, created_at=utcnow() - timedelta(days=9)
            )
        )
        db.session.commit()
        assert housekeeping.remove_beyond_count(str(reports_dir), keep=2) == 3
        kept = set(db.session.scalars(select(Report.id)))
    assert kept == {ids[0], ids[1], "e" * 32}  # a running report is never removed
    assert sorted(path.name for path in reports_dir.iterdir()) == sorted(
        f"report_{i}.csv" for i in ids[:2]
    )


def test_retired_versions_are_purged_only_when_no_report_can_read_them(app, tmp_path):
    # Hours loaded twice: the first version is retired by batch 2. It stays while a report
    # reading batch 1 is kept, and while batch 2 is less than an hour old; then it goes.
    hours = "store_id,day,start_time_local,end_time_local\n1,0,09:00,17:00\n"
    (tmp_path / "menu_hours.csv").write_text(hours)
    with app.app_context():
        loader.load(db.engine, hours=tmp_path / "menu_hours.csv")
        (tmp_path / "menu_hours.csv").write_text(hours.replace("17:00", "18:00"))
        loader.load(db.engine, hours=tmp_path / "menu_hours.csv")
        db.session.add(Report(id="d" * 32, status=ReportStatus.COMPLETE, batch=1))
        db.session.commit()

        def versions() -> int:
            count = db.session.scalar(text("SELECT COUNT(*) FROM business_hours"))
            db.session.commit()
            return count

        assert (
            housekeeping.purge_retired_versions() == 0 and versions() == 2
        )  # batch 2 is too recent
        db.session.execute(update(LoadBatch).values(finished_at=utcnow() - timedelta(hours=2)))
        db.session.commit()
        assert (
            housekeeping.purge_retired_versions() == 0 and versions() == 2
        )  # a report reads batch 1
        housekeeping.delete_reports(["d" * 32])
        assert housekeeping.purge_retired_versions() == 1 and versions() == 1
