"""Leases: a process renews the rows it works on; expired rows are taken over, once.

Every Queued or Running report step carries an owner (a process, see
`jobs.executors.process_owner`) and a lease deadline. A live process renews its leases every third
of REPORT_LEASE_SECONDS. When a process dies (kill -9, a lost machine), its leases run out and
any other process takes the rows over with a conditional update that only one can win, then
queues the step again. Rows queued in a broker (owner NULL) are sent again only if still
waiting after REPORT_REQUEUE_SECONDS; a step delivered twice is harmless.

The keeper of a broker's worker process also records a heartbeat (`workers` table), so any
API process can tell whether workers are there without asking the broker.
"""

from __future__ import annotations

import logging
import os
import threading

from flask import Flask, current_app

from jobs import alerts, deliveries, states
from jobs.errors import BrokerUnavailable
from jobs.executors import machine_id, process_owner
from jobs.steps import Executor
from jobs.workers import HEARTBEAT_SECONDS, record_heartbeat
from models import STEP_MODELS, utcnow

logger = logging.getLogger(__name__)


class LeaseKeeper(threading.Thread):
    """Renews this process's leases and, with `sweep`, takes over expired ones; with
    `heartbeat` (a broker's worker process), records that this worker is alive; with
    `catch_up` (a serving process), has loads no process evaluated yet evaluated."""

    def __init__(
        self, app: Flask, sweep: bool, heartbeat: bool = False, catch_up: bool = False
    ) -> None:
        super().__init__(name="lease-keeper", daemon=True)
        self.app = app
        self.sweep = sweep
        self.heartbeat = heartbeat
        self.catch_up = catch_up  # a serving process: evaluate loads committed by commands
        self.stopped = threading.Event()

    def run(self) -> None:
        interval = self.app.config["REPORT_LEASE_SECONDS"] / 3
        if self.heartbeat:
            interval = min(interval, HEARTBEAT_SECONDS)
        first = True
        while first or not self.stopped.wait(interval):
            first = False
            try:
                self.round()
            except Exception:  # the database may be away for a while: try again next round
                logger.exception("lease keeper: round failed")

    def round(self) -> None:
        """One round: heartbeat, renew, sweep, evaluate loads no process has evaluated yet,
        and have due alert events sent."""
        with self.app.app_context():
            if self.heartbeat:
                record_heartbeat(process_owner())
            states.renew(process_owner())
            if self.catch_up and alerts.behind():
                alerts.evaluate_soon(self.app)
            if self.sweep:
                take_over_expired(self.app.extensions["report_executor"])
                if deliveries.due_events(utcnow(), limit=1):  # retries, leases run out
                    deliveries.kick(self.app)

    def stop(self) -> None:
        self.stopped.set()


def dead_local_owners(owners: set[str]) -> set[str]:
    """Owners on this machine (same host and pid namespace) whose process no longer exists:
    no need to wait for their lease."""
    here, me = machine_id(), process_owner()
    dead = set()
    for owner in owners:
        machine, _, rest = owner.partition(":")
        pid_text = rest.partition(":")[0]
        if owner == me or machine != here or not pid_text.isdigit():
            continue
        try:
            os.kill(int(pid_text), 0)
        except ProcessLookupError:
            dead.add(owner)
        except PermissionError:
            pass
    return dead


# A sweep round stops after this many steps in a row the broker did not take (each send
# already tried for CELERY_CONNECT_TIMEOUT): the broker is away, the next round tries again.
SEND_FAILURES_PER_ROUND = 3


def take_over_expired(executor: Executor) -> int:
    """Queue again the steps whose owner stopped renewing; return how many were sent.

    A step the broker does not take is left for the next round (its lease runs out now); the
    round goes on with the others.
    """
    dead = dead_local_owners(states.active_owners())
    expired = [(model, row) for model in STEP_MODELS for row in states.expired_steps(model, dead)]
    sent = failures = 0
    for model, row in expired:
        if failures >= SEND_FAILURES_PER_ROUND:
            logger.warning("sweep: the broker takes nothing; the next round tries again")
            return sent
        if not states.take_over(model, row, executor.owner):
            continue
        logger.warning(
            "report %s: taking over %s left by %s",
            row.report_id,
            "its start" if row.shard is None else f"shard {row.shard}",
            row.owner or "the broker",
        )
        if send_step(executor, row.report_id, row.shard):
            sent, failures = sent + 1, 0
        else:
            failures += 1
    grace = current_app.config["REPORT_LEASE_SECONDS"]
    for report_id in states.reports_waiting_for_assembly(grace):
        # a finished shard's step assembles the report
        sent += send_step(executor, report_id, 0, assembly=True)
    return sent


def send_step(
    executor: Executor, report_id: str, shard: int | None, assembly: bool = False
) -> bool:
    """Queue a report's start (`shard` None) or one shard; False when the broker does not
    take it (then it is sent again by the next round)."""
    try:
        if shard is None:
            executor.enqueue_start(report_id)
        else:
            executor.enqueue_shard(report_id, shard)
    except BrokerUnavailable as exc:
        logger.warning("report %s: not sent again (%s); the next round tries", report_id, exc)
        if not assembly:
            states.send_again_soon(report_id, None if shard is None else [shard])
        return False
    return True
