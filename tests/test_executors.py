"""Where steps run: the Celery executor's sends through a real broker, cut by a proxy."""

from __future__ import annotations

import secrets
import threading
from types import SimpleNamespace

import kombu.utils.functional
import pytest
from celery import Celery

from jobs import executors
from models import db
from tests.brokers import broker_port, broker_url
from tests.conftest import make_app
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
