"""The lease keeper's rounds: heartbeats, and the sweep that sends lost steps again."""

from __future__ import annotations

import io
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest
import requests
from sqlalchemy import create_engine, select, text, update

import loader
from jobs import errors, executors, leases, steps
from jobs.options import ReportRequest
from models import Report, ReportShard, ReportStatus, db, utcnow
from tests.conftest import ROOT, SAMPLE, SHARED, make_app
from tests.jobcheck import Outbox, check_report_agrees
from tests.server import ServerProcess, run_cli, wait_for_report


def test_a_sweep_goes_on_past_a_step_the_broker_refuses_and_sends_it_next_round(
    database_url, tmp_path
):
    # Four shards sent to a broker that then lost them: after REPORT_REQUEUE_SECONDS a sweep
    # sends them again. The broker refuses the first (it is restarting): the round must go on
    # with the other three, and the next round send the first.
    app = make_app(database_url, tmp_path, REPORT_SHARD_STORES=50)
    with app.app_context():
        loader.load(db.engine, SAMPLE)
        lost = Outbox()
        report_id = steps.submit_report(ReportRequest(), lost)
        steps.start_report(report_id, executors.process_owner(), lost)
        assert lost.shards_sent(report_id) == [0, 1, 2, 3]
        waited_too_long = utcnow() - timedelta(seconds=1)
        db.session.execute(
            text("UPDATE report_shards SET lease_expires_at = :t"), {"t": waited_too_long}
        )
        db.session.commit()
        again = Outbox(failing={("shard", report_id, 0)}, error=errors.BrokerUnavailable)
        assert leases.take_over_expired(again) == 3
        assert again.shards_sent(report_id) == [1, 2, 3]
        assert leases.take_over_expired(again) == 1  # the next round, not 10 minutes later
        assert again.shards_sent(report_id) == [0, 1, 2, 3]
        assert leases.take_over_expired(again) == 0
        for shard in range(4):
            steps.run_shard(report_id, shard, "worker-a", wait_for_owner=True, retry_elsewhere=True)
    assert check_report_agrees(app, report_id) == ReportStatus.COMPLETE


def test_a_sweep_stops_its_round_when_the_broker_takes_nothing(database_url, tmp_path):
    # Each refused send has already cost CELERY_CONNECT_TIMEOUT: after three in a row the round
    # stops, and every step not sent is left for the next round.
    app = make_app(database_url, tmp_path, REPORT_SHARD_STORES=20)
    with app.app_context():
        loader.load(db.engine, SAMPLE)
        lost = Outbox()
        report_id = steps.submit_report(ReportRequest(), lost)
        steps.start_report(report_id, executors.process_owner(), lost)
        shards = len(lost.shards_sent(report_id))
        db.session.execute(
            text("UPDATE report_shards SET lease_expires_at = :t"),
            {"t": utcnow() - timedelta(seconds=1)},
        )
        db.session.commit()
        refused = {("shard", report_id, n) for n in range(shards)}
        down = Outbox(failing=refused, error=errors.BrokerUnavailable)
        assert leases.take_over_expired(down) == 0 and len(down.failing) == shards - 3
        back = Outbox()
        assert leases.take_over_expired(back) == shards
        assert back.shards_sent(report_id) == list(range(shards))


@pytest.fixture(scope="module")
def big_data(tmp_path_factory) -> Path:
    """Data big enough that a report takes seconds: the full set, else a generated one."""
    full = SHARED / "loop-full"
    if (full / "store_status.csv.gz").exists():
        return full
    out = tmp_path_factory.mktemp("big")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "flask",
            "--app",
            "app",
            "generate-data",
            str(out),
            "--stores",
            "6000",
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    return out


def report_status(database_url: str, report_id: str) -> str:
    engine = create_engine(database_url)
    with engine.connect() as conn:
        status = conn.execute(
            text("SELECT status FROM reports WHERE id = :i"), {"i": report_id}
        ).scalar()
    engine.dispose()
    return status


def wait_until_part_done(database_url: str, report_id: str, timeout: float = 60) -> None:
    """Return once the report is Running with some, not all, of its shards done."""
    engine = create_engine(database_url)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                row = conn.execute(
                    text("SELECT status, shards_done, shard_count FROM reports WHERE id = :i"),
                    {"i": report_id},
                ).one()
            if row.status == "Running" and 0 < row.shards_done < row.shard_count:
                return
            assert row.status in ("Queued", "Running"), f"report ended first: {row.status}"
            time.sleep(0.01)
        raise TimeoutError("no shard was done in time")
    finally:
        engine.dispose()


@pytest.mark.slow
def test_kill_9_mid_report_then_restart_completes_it(big_data, tmp_path):
    url = f"sqlite:///{tmp_path / 'crash.sqlite3'}"
    assert run_cli(url, "load-data", str(big_data)).returncode == 0
    reports = tmp_path / "reports"
    # Small shards, one at a time: the report takes a while, whatever the machine's speed.
    server = ServerProcess(
        url, reports, tmp_path / "server.log", REPORT_SHARD_STORES="300", REPORT_WORKERS="1"
    )
    server.start()
    try:
        report_id = requests.post(f"{server.url}/trigger_report", timeout=10).json()["report_id"]
        wait_until_part_done(url, report_id)
    finally:
        server.kill()  # SIGKILL: no cleanup, no goodbye
    assert report_status(url, report_id) in ("Queued", "Running")
    assert not (reports / f"report_{report_id}.csv").exists()
    # The new process finds the old owner dead on this machine and takes its work over.
    restarted = ServerProcess(url, reports, tmp_path / "server.log").start()
    try:
        done = wait_for_report(restarted.url, report_id)
        assert done.status_code == 200
        frame = pd.read_csv(io.StringIO(done.text))
        assert len(frame) > 1000
        listing = requests.get(f"{restarted.url}/reports", timeout=10).json()["reports"]
        assert next(r for r in listing if r["report_id"] == report_id)["status"] == "Complete"
        assert not list(reports.glob(".*.tmp"))
    finally:
        restarted.stop()
    assert "taking over" in (tmp_path / "server.log").read_text()


DEAD_OWNER = "other-host:4242:dead"


def add_running_report(report_id: str, shards: int, attempts: int = 1) -> None:
    """A report a vanished process left Running: its shards' leases have run out."""
    expired = utcnow() - timedelta(minutes=5)
    last_key = db.session.scalar(text("SELECT MAX(id) FROM stores"))
    batch = db.session.scalar(text("SELECT last_batch FROM data_state"))
    now_us = db.session.scalar(text("SELECT MAX(max_ts_us) FROM load_batches"))
    db.session.add(
        Report(
            id=report_id,
            status=ReportStatus.RUNNING,
            batch=batch,
            as_of_us=now_us,
            shard_count=shards,
            started_at=expired,
        )
    )
    bounds = [1 + last_key * n // shards for n in range(shards)] + [last_key + 1]
    for number in range(shards):
        db.session.add(
            ReportShard(
                report_id=report_id,
                shard=number,
                key_low=bounds[number],
                key_high=bounds[number + 1],
                status=ReportStatus.RUNNING,
                owner=DEAD_OWNER,
                lease_expires_at=expired,
                attempts=attempts,
            )
        )
    db.session.commit()


def test_work_whose_lease_expired_is_taken_over_and_completed(app):
    with app.app_context():
        loader.load(db.engine, SAMPLE)
        add_running_report("a" * 32, shards=3)
        assert leases.take_over_expired(app.extensions["report_executor"]) == 3
        row = db.session.get(Report, "a" * 32)
        assert row.status == "Complete" and row.row_count > 0 and row.progress == 1.0
        attempts = db.session.scalars(select(ReportShard.attempts)).all()
        assert attempts == [2, 2, 2]
        assert leases.take_over_expired(app.extensions["report_executor"]) == 0


def test_a_shard_attempted_too_often_fails_the_report_with_a_clear_message(app):
    # A report whose process died three times (e.g. out of memory) is not run a fourth time.
    with app.app_context():
        loader.load(db.engine, SAMPLE)
        add_running_report("b" * 32, shards=1, attempts=3)
        leases.take_over_expired(app.extensions["report_executor"])
        row = db.session.get(Report, "b" * 32)
        assert row.status == "Failed"
        assert row.error == (
            "gave up after 3 attempts at shard 1 of 1: the process computing it stopped each time"
        )


def test_a_live_owner_keeps_its_work(app):
    with app.app_context():
        loader.load(db.engine, SAMPLE)
        add_running_report("c" * 32, shards=1)
        db.session.execute(
            update(ReportShard).values(lease_expires_at=utcnow() + timedelta(minutes=5))
        )
        db.session.commit()
        assert leases.take_over_expired(app.extensions["report_executor"]) == 0
        assert db.session.get(Report, "c" * 32).status == "Running"
