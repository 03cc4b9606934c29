"""Compaction of MariaDB's polls table after loads: when due, by one process, keeping every row."""

from __future__ import annotations

import pytest
from sqlalchemy import text

import loader
from loading import compaction
from models import db
from tests.loading import POLL_HEADER, contents, write

POLLS = "".join(f"s{n % 40},active,2023-01-25 10:{n // 40:02d}:00 UTC\n" for n in range(2000))


def load_with_compaction(app, tmp_path, every_seconds: float) -> loader.LoadSummary:
    with app.app_context():
        return loader.load(
            db.engine,
            polls=write(tmp_path / "store_status.csv", POLL_HEADER + POLLS),
            compact_every_seconds=every_seconds,
        )


@pytest.fixture
def any_size_is_bloated(monkeypatch):
    """Force the threshold: every table is over its limit, however small."""
    monkeypatch.setattr(compaction, "MIN_COMPACTED_BYTES", 0)
    monkeypatch.setattr(compaction, "BLOAT_LIMIT", 0.0)


def test_a_due_compaction_runs_once_under_the_lock_and_keeps_every_row(
    app, tmp_path, monkeypatch, any_size_is_bloated
):
    rebuilds, nested = [], []
    real_rebuild = compaction._rebuild

    def rebuild_trying_a_second(conn):
        # While this process holds the lock, another attempt must leave the table alone.
        with app.app_context():
            nested.append(compaction.compact_polls_if_bloated(db.engine, 0, bloat_limit=0.0))
        rebuilds.append(conn)
        return real_rebuild(conn)

    monkeypatch.setattr(compaction, "_rebuild", rebuild_trying_a_second)
    before = contents(app)
    summary = load_with_compaction(app, tmp_path, every_seconds=0)
    if app.config["DATABASE_URL"].startswith("sqlite"):
        assert summary.compaction is None and rebuilds == []  # SQLite: nothing to compact
        return
    assert len(rebuilds) == 1 and nested == [None]
    assert summary.compaction is not None and summary.compaction.polls == 2000
    assert "polls table compacted (ALTER TABLE polls FORCE, 2000 polls)" in str(summary)
    assert before["polls"] == [] and len(contents(app)["polls"]) == 2000
    with app.app_context():
        rebuilt = contents(app)
        compaction.compact_polls_if_bloated(db.engine, 0, bloat_limit=0.0)
        assert contents(app) == rebuilt  # a rebuild keeps every row as it was
    assert len(rebuilds) == 2


def test_a_compaction_waits_for_its_interval_since_the_last_rebuild(
    app, tmp_path, monkeypatch, any_size_is_bloated
):
    if app.config["DATABASE_URL"].startswith("sqlite"):
        pytest.skip("MariaDB only")
    rebuilds = []
    real_rebuild = compaction._rebuild
    monkeypatch.setattr(
        compaction, "_rebuild", lambda conn: rebuilds.append(1) or real_rebuild(conn)
    )
    # The table was created by this test's schema a moment ago: its last rebuild is recent.
    assert load_with_compaction(app, tmp_path, every_seconds=3600).compaction is None
    assert rebuilds == []


def test_a_table_within_its_limit_is_left_alone(app, tmp_path, monkeypatch):
    monkeypatch.setattr(compaction, "MIN_COMPACTED_BYTES", 0)
    monkeypatch.setattr(compaction, "BLOAT_LIMIT", 1000.0)
    rebuilds = []
    monkeypatch.setattr(compaction, "_rebuild", lambda conn: rebuilds.append(1))
    # 2,000 polls need 2000 × 38.4 bytes = 75 KB; their pages (a few of 16 KB) are far less
    # than 1,000 times that.
    with app.app_context():
        load_with_compaction(app, tmp_path, every_seconds=0)
        assert compaction.compact_polls_if_bloated(db.engine, 0, bloat_limit=1000.0) is None
    assert rebuilds == []


def test_a_bloated_table_is_seen_bloated_before_the_server_refreshes_its_statistics(
    app, tmp_path, monkeypatch
):
    # The server refreshes a table's page count in the background (here: never, as told), so
    # the statistic still says "one empty page" after the load. The check refreshes it first.
    if app.config["DATABASE_URL"].startswith("sqlite"):
        pytest.skip("MariaDB only")
    monkeypatch.setattr(compaction, "MIN_COMPACTED_BYTES", 0)
    rebuilds = []
    monkeypatch.setattr(compaction, "_rebuild", lambda conn: rebuilds.append(1))
    with app.app_context(), db.engine.begin() as conn:
        conn.execute(text("ALTER TABLE polls STATS_AUTO_RECALC=0"))
        conn.execute(text("ANALYZE TABLE polls")).all()  # the empty table's: one page
    load_with_compaction(app, tmp_path, every_seconds=3600)  # not due yet: loads only
    with app.app_context():
        # 2,000 polls need 75 KB; their pages take more than half of that (16 KB stated).
        compaction.compact_polls_if_bloated(db.engine, 0, bloat_limit=0.5)
    assert rebuilds == [1]
