"""The lease keeper's rounds: heartbeats, and the sweep that sends lost steps again."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import text

import loader
from jobs import errors, executors, leases, steps
from jobs.options import ReportRequest
from models import ReportStatus, db, utcnow
from tests.conftest import SAMPLE, make_app
from tests.jobcheck import Outbox, check_report_agrees


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
