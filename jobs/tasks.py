"""Celery tasks: the report job steps on worker processes.

Follows Flask's "Background Tasks with Celery": `celery_init_app` builds the Celery app from
the Flask config, and every task runs inside the Flask app context. Set up for no lost work:
a task is acknowledged only after it ran (`task_acks_late`), requeued if its worker process
dies (`task_reject_on_worker_lost`), and a worker takes one task at a time (prefetch 1). The
steps are idempotent (see `jobs.steps`), so a redelivered task is harmless.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Any

from celery import Celery, Task, shared_task, signals
from flask import Flask

from jobs import deliveries, steps
from jobs.executors import process_owner, release_quietly
from jobs.leases import LeaseKeeper
from jobs.workers import forget_worker
from models import db

logger = logging.getLogger(__name__)
QUEUE = "store_monitor"


def celery_settings(config: dict[str, Any]) -> dict[str, Any]:
    settings = {
        "broker_url": config["CELERY_BROKER_URL"],
        "broker_connection_timeout": config["CELERY_CONNECT_TIMEOUT"],
        "broker_connection_retry_on_startup": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_ignore_result": True,
        "task_default_queue": QUEUE,
        "task_serializer": "json",
        "accept_content": ["json"],
        "worker_hijack_root_logger": False,
    }
    if config["CELERY_BROKER_URL"].startswith(("amqp://", "amqps://", "pyamqp://")):
        # The broker confirms each step it stored: a step sent just before it went away is
        # sent again instead of lost (an API answered 202 for it).
        settings["broker_transport_options"] = {"confirm_publish": True}
    if config["CELERY_BROKER_URL"].startswith(("redis://", "rediss://", "redis+socket://")):
        # Without a socket timeout, a Redis that accepts a connection and then says nothing
        # holds a publish (and the trigger waiting on it) for ever.
        timeout = config["CELERY_CONNECT_TIMEOUT"]
        settings["broker_transport_options"] = {
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
        }
    return settings


def celery_init_app(app: Flask) -> Celery:
    """The Celery app of this Flask app: config from app.config, tasks in the app context."""

    class FlaskTask(Task):
        def __call__(self, *args: object, **kwargs: object) -> object:
            with app.app_context():
                return self.run(*args, **kwargs)

    celery_app = Celery(app.name, task_cls=FlaskTask)
    celery_app.config_from_object(celery_settings(app.config))
    celery_app.set_default()
    app.extensions["celery"] = celery_app
    _flask_apps[0:1] = [app]
    return celery_app


_flask_apps: list[Flask] = []


@shared_task(name="store_monitor.start_report", ignore_result=True)
def start_report(report_id: str) -> None:
    with released_on_error(report_id):
        steps.start_report(report_id, process_owner(), steps.app_executor())


@shared_task(name="store_monitor.run_shard", ignore_result=True)
def run_shard(report_id: str, shard: int) -> None:
    with released_on_error(report_id):
        steps.run_shard(
            report_id, shard, process_owner(), wait_for_owner=True, retry_elsewhere=True
        )


@shared_task(name="store_monitor.deliver_alerts", ignore_result=True)
def deliver_alerts() -> None:
    """Send the alert events that are due (claimed one by one: two workers never both send)."""
    deliveries.deliver_due()


@contextmanager
def released_on_error(report_id: str):
    """A step that raises lets go of its rows, so a sweep queues it again (an attempt)."""
    try:
        yield
    except Exception:
        release_quietly(report_id, process_owner())
        raise


@signals.worker_process_init.connect
def start_lease_keeper(**_: object) -> None:
    """In each worker process: fresh database connections, leases renewed and swept, and a
    heartbeat that tells API processes this worker is there."""
    if not _flask_apps:
        return
    app = _flask_apps[0]
    with app.app_context():
        db.engine.dispose(close=False)  # connections inherited from the parent are not ours
    LeaseKeeper(app, sweep=True, heartbeat=True).start()


@signals.worker_process_shutdown.connect
def say_goodbye(**_: object) -> None:
    """A worker process that stops is no longer counted (one that dies ages out)."""
    if not _flask_apps:
        return
    try:
        with _flask_apps[0].app_context():
            forget_worker(process_owner())
    except Exception:  # stopping anyway: its heartbeat ages out within a minute
        logger.exception("worker %s: could not remove its heartbeat", process_owner())
