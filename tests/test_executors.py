"""Where steps run: the Celery executor's sends through a real broker, cut by a proxy."""

from __future__ import annotations

import contextlib
import os
import secrets
import sys
import threading
from types import SimpleNamespace

import kombu.utils.functional
import pytest
from celery import Celery
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

import loader
from jobs import executors, leases, states, steps
from jobs.options import ReportRequest
from models import Report, ReportShard, db, utcnow
from tests.brokers import broker_port, broker_url
from tests.conftest import SAMPLE, make_app
from tests.jobcheck import StepHook
from tests.tcpproxy import TcpProxy


@pytest.fixture(params=["rabbitmq", "redis"])
def broker(request):
    """(the broker's own URL, a proxy in front of it) for one of the machine's brokers."""
    url = broker_url(request.param)
    proxy = TcpProxy(("127.0.0.1", broker_port(request.param)))
    yield url, proxy
    proxy.close()


@pytest.fixture
def celery_app(broker, tmp_path):
    """The app of an API process whose broker is behind the proxy, sending to a queue of its
    own (no worker of another test takes its messages); the queue is deleted afterwards."""
    url, proxy = broker

    def build(**settings):
        app = make_app(
            f"sqlite:///{tmp_path / 'x.sqlite3'}",
            tmp_path,
            REPORTS_INLINE=False,
            CELERY_BROKER_URL=proxy.url(url),
            **settings,
        )
        app.extensions["celery"].conf.task_default_queue = queue
        built.append(app)
        return app

    queue, built = f"sm_test_{secrets.token_hex(4)}", []
    yield build, queue
    for app in built:
        with app.app_context():
            db.engine.dispose()
    with Celery(broker=url).connection_for_write() as connection:
        connection.default_channel.queue_delete(queue)


def waiting_messages(broker_url: str, queue: str) -> int:
    with Celery(broker=broker_url).connection_for_write() as connection:
        return connection.default_channel.queue_declare(queue, passive=True).message_count


def test_a_step_sent_after_a_broker_restart_is_not_lost(broker, celery_app):
    # The pooled connection is stale after the broker went away and came back: the send
    # must go through on a new connection (it used to fail: 503 for a trigger, a stalled
    # report for a worker).
    url, proxy = broker
    build, queue = celery_app
    executor = build().extensions["report_executor"]
    executor.enqueue_start("a" * 32)
    proxy.cut()
    proxy.restore()
    executor.enqueue_start("b" * 32)
    executor.enqueue_shard("b" * 32, 0)
    assert waiting_messages(url, queue) == 3


class FakeClock:
    """Time that passes only when slept: the test counts the waits, not the machine's speed."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_a_broker_that_stays_away_costs_one_timeout_with_tries_inside_it(
    broker, celery_app, monkeypatch
):
    # The broker refuses every connection: the trigger's send tries again within
    # CELERY_CONNECT_TIMEOUT, then the trigger answers 503, having waited no longer than that
    # (kombu's own schedule waited 2 s, then 4 s more, whatever the timeout).
    _, proxy = broker
    build, _ = celery_app
    client = build(CELERY_CONNECT_TIMEOUT=2.0).test_client()
    clock = FakeClock()
    fake_time = SimpleNamespace(monotonic=clock.monotonic, sleep=clock.sleep)
    monkeypatch.setattr(executors, "time", fake_time, raising=False)
    monkeypatch.setattr(kombu.utils.functional, "time", clock.monotonic)
    monkeypatch.setattr(kombu.utils.functional, "sleep", clock.sleep)
    proxy.cut()
    answer = client.post("/trigger_report")
    assert answer.status_code == 503 and "nothing was created" in answer.get_json()["message"]
    assert clock.now <= 2.0
    assert proxy.accepted >= 2  # tried more than once
    assert client.get("/reports").get_json()["reports"] == []


def test_a_broker_that_accepts_and_never_answers_gives_503_not_a_trigger_held_for_ever(
    broker, celery_app
):
    # A broker (or a network) that swallows connections: the trigger ends with 503 instead
    # of waiting without end (it did with Redis).
    _, proxy = broker
    build, _ = celery_app
    client = build(CELERY_CONNECT_TIMEOUT=0.5).test_client()
    proxy.hang()
    answers = []
    trigger = threading.Thread(
        target=lambda: answers.append(client.post("/trigger_report")), daemon=True
    )
    trigger.start()
    trigger.join(60)  # generous: the point is "not for ever"
    assert not trigger.is_alive(), "the trigger still waits for the broker"
    assert answers[0].status_code == 503


def test_threads_asking_at_once_get_one_owner_name(monkeypatch):
    # The `report` command's lease keeper asks for the name while the command creates its
    # report: two names would leave the report Queued under one and claimed under the other.
    monkeypatch.setattr(executors, "_OWNER", {})
    tokens = iter(range(1000))
    inside = threading.Barrier(2)

    def token_waiting_for_company(_size: int) -> str:
        # Wait here for a second thread: without the lock one comes at once (and gets a name
        # of its own); with it none can, and the wait ends unmet.
        with contextlib.suppress(threading.BrokenBarrierError):
            inside.wait(timeout=2)
        return f"{next(tokens):08x}"

    monkeypatch.setattr(executors.secrets, "token_hex", token_waiting_for_company)
    start = threading.Barrier(8)
    names: list[str] = []

    def ask() -> None:
        start.wait()
        names.append(executors.process_owner())

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(names) == 8 and len(set(names)) == 1


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread niceness is Linux's")
def test_report_threads_run_below_the_request_threads(sqlite_app):
    # Uploads and page requests must not queue behind a report for the cores.
    executor = executors.ThreadExecutor(sqlite_app, 1)
    here = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    def own_niceness() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    try:
        assert executor.pool.submit(own_niceness).result() == min(here + 10, 19)
        assert own_niceness() == here  # the calling thread keeps its own
    finally:
        executor.shutdown()


def released(report_id: str) -> bool:
    rows = db.session.execute(
        select(ReportShard.lease_expires_at).where(ReportShard.report_id == report_id)
    ).all()
    db.session.commit()
    return bool(rows) and all(lease is not None and lease <= utcnow() for (lease,) in rows)


def test_a_step_that_cannot_record_its_outcome_is_not_left_running(
    database_url, tmp_path, monkeypatch
):
    # Recording a shard's result fails (the database stays locked past every retry): the step
    # lets go of its rows at once (long before its 10-minute lease would run out), and the
    # next sweep runs the shard again, which completes.
    app = make_app(database_url, tmp_path, REPORT_LEASE_SECONDS=600)
    with app.app_context():
        loader.load(db.engine, SAMPLE)
    original, failures = states.complete_shard, []

    def locked_once(*args):
        if not failures:
            failures.append(args)
            raise OperationalError("UPDATE report_shards ...", {}, Exception("database is locked"))
        return original(*args)

    monkeypatch.setattr(states, "complete_shard", locked_once)
    let_go = StepHook(monkeypatch, states, "release")
    executor = executors.ThreadExecutor(app, 1)
    with app.app_context():
        report_id = steps.submit_report(ReportRequest(), executor)
        let_go.wait()  # the failed step let go of its shard
        executor.shutdown()
        assert released(report_id), "the shard was never released"
        assert failures and db.session.get(Report, report_id).status == "Running"
        app.extensions["report_executor"] = executors.InlineExecutor()
        states.renew(executors.process_owner())  # a keeper round renews first, then sweeps
        assert leases.take_over_expired(app.extensions["report_executor"]) == 1
        row = db.session.get(Report, report_id)
        assert row.status == "Complete"
        assert db.session.scalars(select(ReportShard.attempts)).all() == [2]


def test_a_shard_that_fails_is_tried_again_elsewhere_then_completes(
    database_url, tmp_path, monkeypatch
):
    # The computation fails once (say, out of memory on that worker): the shard is let go and
    # the next sweep runs it again; the second attempt completes the report.
    app = make_app(database_url, tmp_path, REPORT_LEASE_SECONDS=600)
    with app.app_context():
        loader.load(db.engine, SAMPLE)
    original, failures = steps.compute_shard, []

    def fails_once(work):
        if not failures:
            failures.append(work.shard)
            raise MemoryError
        return original(work)

    monkeypatch.setattr(steps, "compute_shard", fails_once)
    let_go = StepHook(monkeypatch, states, "release")
    executor = executors.ThreadExecutor(app, 1)
    with app.app_context():
        report_id = steps.submit_report(ReportRequest(), executor)
        let_go.wait()
        executor.shutdown()
        assert released(report_id), "the failed shard was never let go"
        app.extensions["report_executor"] = executors.InlineExecutor()
        states.renew(executors.process_owner())
        assert leases.take_over_expired(app.extensions["report_executor"]) == 1
        assert db.session.get(Report, report_id).status == "Complete"
        assert db.session.scalars(select(ReportShard.attempts)).all() == [2]
