"""The report job steps over every path: the row, the stored result, the answers and the log
agree (see tests/jobcheck.py), on both engines."""

from __future__ import annotations

import contextlib
import logging

import pytest

import loader
from jobs import errors, executors, leases, results, steps
from jobs.options import ReportRequest
from models import Report, ReportStatus, db
from tests.conftest import SAMPLE, make_app
from tests.jobcheck import Outbox, check_report_agrees, is_short_reason
from tests.loading import HOURS_HEADER, POLL_HEADER, write

HEADER = (
    "store_id,uptime_last_hour,uptime_last_day,uptime_last_week,"
    "downtime_last_hour,downtime_last_day,downtime_last_week\n"
)

ONE_POLL = POLL_HEADER + "42,active,2023-01-25 12:00:00 UTC\n"


@pytest.fixture
def logged(caplog):
    caplog.set_level(logging.INFO)
    return caplog


def trigger(app, **body) -> str:
    response = app.test_client().post("/trigger_report", json=body or None)
    assert response.status_code == 202, response.get_json()
    return response.get_json()["report_id"]


def csv_of(app, report_id: str) -> str:
    return app.test_client().get(f"/get_report/{report_id}").data.decode()


def test_a_report_on_an_empty_database_is_complete_with_no_rows(app, logged):
    # After init-db, before any load: no stores, no shards. An empty report is an answer.
    report_id = trigger(app)
    assert check_report_agrees(app, report_id, logged.records) == ReportStatus.COMPLETE
    assert csv_of(app, report_id) == HEADER
    assert app.test_client().get(f"/get_report/{report_id}?format=json").get_json()["rows"] == []


def test_the_report_command_on_an_empty_database_says_complete_and_logs_no_error(app, logged):
    done = app.test_cli_runner().invoke(args=["report"])
    assert done.exit_code == 0, done.output
    report_id = done.output.split()[0]
    assert done.output.rstrip().endswith("(0 stores)")
    assert check_report_agrees(app, report_id, logged.records) == ReportStatus.COMPLETE


def test_stores_without_polls_make_no_shards_and_an_empty_complete_report(app, tmp_path, logged):
    # Hours name two stores, no poll does: no `now`, so no shard at all.
    hours = write(tmp_path / "menu_hours.csv", HOURS_HEADER + "7,0,09:00,17:00\n8,1,10:00,12:00\n")
    with app.app_context():
        loader.load(db.engine, hours=hours)
    report_id = trigger(app)
    assert check_report_agrees(app, report_id, logged.records) == ReportStatus.COMPLETE
    assert csv_of(app, report_id) == HEADER


def test_shards_that_find_no_poll_make_an_empty_complete_report(app, logged):
    # As of a time before every poll: shards exist, each one is empty.
    with app.app_context():
        loader.load(db.engine, SAMPLE)
    report_id = trigger(app, as_of="2000-01-01T00:00:00Z", outages=True, stale_after="1h")
    assert check_report_agrees(app, report_id, logged.records) == ReportStatus.COMPLETE
    assert csv_of(app, report_id).count("\n") == 1


def test_one_store_one_poll(app, tmp_path, logged):
    # Open 24×7 (no hours rows), one active poll, now = that poll: the poll owns all time,
    # so every window is up in full: 60 min, 24 h, 7 × 24 = 168 h.
    polls = write(tmp_path / "store_status.csv", ONE_POLL)
    with app.app_context():
        loader.load(db.engine, polls=polls)
    report_id = trigger(app)
    assert check_report_agrees(app, report_id, logged.records) == ReportStatus.COMPLETE
    assert csv_of(app, report_id) == HEADER + "42,60.00,24.00,168.00,0.00,0.00,0.00\n"


def test_an_assembly_that_fails_fails_the_report_and_nothing_says_otherwise(
    app, tmp_path, logged, monkeypatch
):
    # Writing the table as CSV fails: the report is Failed with a short reason, no result is
    # stored, no file is left, and the log says so (it used to commit Complete first).
    polls = write(tmp_path / "store_status.csv", ONE_POLL)
    with app.app_context():
        loader.load(db.engine, polls=polls)

    def broken(frame):
        raise RuntimeError("no CSV today")

    monkeypatch.setattr(results, "csv_bytes", broken)
    report_id = trigger(app)
    assert check_report_agrees(app, report_id, logged.records) == ReportStatus.FAILED
    message = app.test_client().get(f"/get_report/{report_id}").get_json()["message"]
    assert message == "could not assemble the report: internal error (RuntimeError)"
    assert list((tmp_path / "reports").iterdir()) == []


def test_a_shard_that_fails_inline_fails_the_report_with_a_short_reason(app, logged, monkeypatch):
    with app.app_context():
        loader.load(db.engine, SAMPLE)

    def broken(work):
        raise ValueError("SELECT * FROM /var/lib/secret")

    monkeypatch.setattr(steps, "compute_shard", broken)
    report_id = trigger(app)
    assert check_report_agrees(app, report_id, logged.records) == ReportStatus.FAILED
    message = app.test_client().get(f"/get_report/{report_id}").get_json()["message"]
    assert message == "shard 1 of 1: internal error (ValueError)"


@pytest.mark.parametrize(
    "reason, short",
    [
        ("shard 1 of 1: the database failed (OperationalError 2013)", True),
        ("", False),
        ("line one\nline two", False),
        ("failed: SELECT secret FROM polls", False),
        ("could not read /var/lib/store/x.csv", False),
        ("x" * 201, False),
    ],
)
def test_what_counts_as_a_short_reason(reason, short):
    assert is_short_reason(reason) is short


def test_shards_the_broker_did_not_take_are_sent_by_the_very_next_sweep(database_url, tmp_path):
    # The broker restarted while the start step queued the shards: shard 1 was not taken
    # (after the executor's own tries). The plan is committed, so the next sweep must send
    # what is missing at once, not REPORT_REQUEUE_SECONDS (10 minutes) later.
    app = make_app(database_url, tmp_path, REPORT_SHARD_STORES=50, REPORT_REQUEUE_SECONDS=600)
    with app.app_context():
        loader.load(db.engine, SAMPLE)
        outbox = Outbox(error=errors.BrokerUnavailable)
        report_id = steps.submit_report(ReportRequest(), outbox)
        outbox.failing = {("shard", report_id, 1)}
        with contextlib.suppress(errors.BrokerUnavailable):
            steps.start_report(report_id, executors.process_owner(), outbox)
        shards = db.session.get(Report, report_id).shard_count
        db.session.commit()
        assert shards == 4 and outbox.shards_sent(report_id) == [0]
        leases.take_over_expired(outbox)  # the next keeper round
        assert outbox.shards_sent(report_id) == list(range(shards))
        for shard in outbox.shards_sent(report_id):  # what the workers then run
            steps.run_shard(report_id, shard, "worker-a", wait_for_owner=True, retry_elsewhere=True)
    assert check_report_agrees(app, report_id) == ReportStatus.COMPLETE


def test_a_shard_delivered_twice_is_computed_once(app, monkeypatch):
    with app.app_context():
        loader.load(db.engine, SAMPLE)
    computed = []
    original = steps.compute_shard
    monkeypatch.setattr(
        steps,
        "compute_shard",
        lambda work: computed.append(work.shard) or original(work),
    )
    client = app.test_client()
    report_id = client.post("/trigger_report").get_json()["report_id"]
    first = client.get(f"/get_report/{report_id}").data
    with app.app_context():
        for shard in range(db.session.get(Report, report_id).shard_count):
            steps.run_shard(report_id, shard, executors.process_owner())
        assert db.session.get(Report, report_id).shards_done == len(computed)
    assert sorted(computed) == list(range(len(computed)))
    assert client.get(f"/get_report/{report_id}").data == first


def test_a_trigger_leaves_every_pooled_sqlite_connection_with_its_own_lock_wait(tmp_path):
    app = make_app(f"sqlite:///{tmp_path / 'x.sqlite3'}", tmp_path, TRIGGER_LOCK_TIMEOUT_MS=250)
    client = app.test_client()
    for _ in range(3):
        assert client.post("/trigger_report").status_code == 202
    with app.app_context():
        connections = [db.engine.connect() for _ in range(5)]
        waits = [c.exec_driver_sql("PRAGMA busy_timeout").scalar() for c in connections]
        for connection in connections:
            connection.close()
    assert waits == [30_000] * 5
