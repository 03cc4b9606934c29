"""Where report job steps run: threads of this process, inline (tests), or Celery workers.

All three run the same steps (`jobs.steps`); they differ only in who holds a step until it runs.
The embedded thread pool is the default (no broker needed); with CELERY_BROKER_URL set, API
processes only enqueue and `flask --app app worker` processes run the steps.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import secrets
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from flask import Flask
from kombu.exceptions import OperationalError as KombuOperationalError

from jobs import states, steps
from jobs.errors import BrokerUnavailable
from jobs.retries import short_reason

logger = logging.getLogger(__name__)

_OWNER: dict[int, str] = {}
_OWNER_LOCK = threading.Lock()


def machine_id() -> str:
    """This machine and process-id namespace, as a short hash: processes in two containers of
    one host may share a host name and pid numbers, never both of these."""
    try:
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        namespace = 0
    return hashlib.sha256(f"{socket.gethostname()}|{namespace}".encode()).hexdigest()[:12]


def process_owner() -> str:
    """This process's name on the rows it works on: machine, pid and a random token.

    Computed per pid, so a forked worker process gets a name of its own; under a lock, so two
    threads asking at once (a step and the lease keeper) get the same name.
    """
    pid = os.getpid()
    with _OWNER_LOCK:
        if pid not in _OWNER:
            _OWNER[pid] = f"{machine_id()}:{pid}:{secrets.token_hex(4)}"
        return _OWNER[pid]


class InlineExecutor:
    """Runs every step at once in the caller's thread (tests; the `report` command).

    Nobody else will run a step it holds, so a step that stops with an error fails the report
    with a short reason (the log keeps the traceback) instead of waiting for a sweep.
    """

    @property
    def owner(self) -> str:
        return process_owner()

    def enqueue_start(self, report_id: str) -> None:
        self._run(steps.start_report, report_id, self.owner, self)

    def enqueue_shard(self, report_id: str, shard: int) -> None:
        self._run(steps.run_shard, report_id, shard, self.owner)

    @staticmethod
    def _run(step, report_id: str, *args: Any) -> None:
        try:
            step(report_id, *args)
        except Exception as exc:
            logger.exception("report %s: a step stopped", report_id)
            steps.give_up(report_id, short_reason(exc))

    def shutdown(self) -> None:
        pass


class ThreadExecutor:
    """Runs steps on `workers` threads of this process, each inside the app context."""

    def __init__(self, app: Flask, workers: int) -> None:
        self.app = app
        self.pool = ThreadPoolExecutor(
            workers, thread_name_prefix="report", initializer=lower_cpu_priority
        )

    @property
    def owner(self) -> str:
        return process_owner()

    def enqueue_start(self, report_id: str) -> None:
        self.pool.submit(self._run, steps.start_report, report_id, self.owner, self)

    def enqueue_shard(self, report_id: str, shard: int) -> None:
        step = functools.partial(steps.run_shard, retry_elsewhere=True)
        self.pool.submit(self._run, step, report_id, shard, self.owner)

    def _run(self, step, *args: Any) -> None:
        with self.app.app_context():
            try:
                step(*args)
            except Exception:  # e.g. the database went away: let a sweep bring the step back
                logger.exception("report %s: a step stopped", args[0])
                release_quietly(args[0], self.owner)

    def shutdown(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=False)


REPORT_NICENESS = 10


def lower_cpu_priority() -> None:
    """Run this thread (on Linux, a thread has a niceness of its own) below the request
    threads, so uploads and page requests stay quick while a report keeps the cores busy."""
    try:
        thread = threading.get_native_id()
        niceness = os.getpriority(os.PRIO_PROCESS, thread) + REPORT_NICENESS
        os.setpriority(os.PRIO_PROCESS, thread, min(niceness, 19))
    except (AttributeError, OSError):  # not Linux, or not allowed: run at normal priority
        pass


def release_quietly(report_id: str, owner: str) -> None:
    """Release a report's rows after a step stopped; never raises (see `jobs.states.release`)."""
    try:
        states.release(report_id, owner)
    except Exception:  # the lease runs out by itself once this process stops renewing it
        logger.exception("report %s: could not release its rows", report_id)


class CeleryExecutor:
    """Sends steps to Celery workers through the broker; the broker holds queued steps.

    A send takes at most CELERY_CONNECT_TIMEOUT, however many tries that needs: the pooled
    connection first (after a broker restart it is stale and fails at once), then new
    connections, each given only the time left. A broker back within the timeout loses
    nothing; one that stays away costs one timeout, then `BrokerUnavailable`.
    """

    owner = None

    def __init__(self, celery_app) -> None:
        self.celery = celery_app
        self.timeout = float(celery_app.conf.broker_connection_timeout)
        with celery_app.connection_for_write() as probe:  # not connected: just its error kinds
            self.broker_errors = (
                KombuOperationalError,
                *probe.connection_errors,
                *probe.channel_errors,
            )

    def enqueue_start(self, report_id: str) -> None:
        self.send("store_monitor.start_report", [report_id])

    def enqueue_shard(self, report_id: str, shard: int) -> None:
        self.send("store_monitor.run_shard", [report_id, shard])

    def send(self, task: str, args: list) -> None:
        deadline = time.monotonic() + self.timeout
        tries = 0
        while True:
            tries += 1
            try:
                self._send_once(task, args, pooled=tries == 1, deadline=deadline)
                return
            except self.broker_errors as exc:
                left = deadline - time.monotonic()
                if left <= BROKER_RETRY_PAUSE:
                    raise BrokerUnavailable(
                        f"the broker did not take {task} in {tries} tries: {exc}"
                    ) from exc
                logger.info("broker: %s failed (%s); sending it on a new connection", task, exc)
                time.sleep(BROKER_RETRY_PAUSE)

    def _send_once(self, task: str, args: list, pooled: bool, deadline: float) -> None:
        """One try, on the pooled connection or a new one given the time left."""
        left = max(deadline - time.monotonic(), BROKER_RETRY_PAUSE)
        if pooled:
            with self.celery.pool.acquire(block=True) as connection:
                self._publish(connection, task, args, left)
            return
        with self.celery.connection_for_write(connect_timeout=left) as connection:
            self._publish(connection, task, args, left)

    def _publish(self, connection, task: str, args: list, seconds: float) -> None:
        """Publish, waiting at most `seconds` for the broker's confirmation (AMQP); a
        connection that failed is dropped, so the pool's next user connects afresh."""
        try:
            # One connection attempt (kombu's own schedule would sleep 2 s and more between
            # attempts, past the timeout): `send` decides about trying again.
            connection.ensure_connection(max_retries=0)
            self.celery.send_task(
                task, args=args, connection=connection, retry=False, confirm_timeout=seconds
            )
        except self.broker_errors:
            connection.collect()
            raise

    def shutdown(self) -> None:
        pass


BROKER_RETRY_PAUSE = 0.2
