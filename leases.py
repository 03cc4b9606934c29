"""Leases: a process renews the rows it works on; expired rows are taken over, once.

Every Queued or Running report step carries an owner (a process, see
`executors.process_owner`) and a lease deadline. A live process renews its leases every third
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
import socket
import threading
from datetime import timedelta

from flask import Flask
from sqlalchemy import delete, func, insert, or_, select, update

import jobs
from executors import machine_id, process_owner
from models import ACTIVE_STATES, Report, ReportShard, ReportStatus, Worker, db, utcnow

logger = logging.getLogger(__name__)


class LeaseKeeper(threading.Thread):
    """Renews this process's leases and, with `sweep`, takes over expired ones; with
    `heartbeat` (a broker's worker process), records that this worker is alive."""

    def __init__(self, app: Flask, sweep: bool, heartbeat: bool = False) -> None:
        super().__init__(name="lease-keeper", daemon=True)
        self.app = app
        self.sweep = sweep
        self.heartbeat = heartbeat
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
        """One round: heartbeat, renew, sweep."""
        with self.app.app_context():
            if self.heartbeat:
                record_heartbeat(process_owner())
            renew(process_owner())
            if self.sweep:
                take_over_expired(self.app.extensions["report_executor"])

    def stop(self) -> None:
        self.stopped.set()


# A worker's keeper records a heartbeat at least this often; one seen within WORKER_SEEN_SECONDS
# counts as there; rows of workers gone for a day are deleted.
HEARTBEAT_SECONDS = 20
WORKER_SEEN_SECONDS = 60
WORKER_FORGOTTEN_AFTER = timedelta(days=1)


def record_heartbeat(name: str) -> None:
    """Say that worker `name` (this process) is alive now."""
    now = utcnow()
    seen = db.session.execute(update(Worker).where(Worker.name == name).values(last_seen=now))
    if seen.rowcount == 0:
        db.session.execute(
            insert(Worker).values(
                name=name,
                host=socket.gethostname()[:255],
                pid=os.getpid(),
                started_at=now,
                last_seen=now,
            )
        )
        db.session.execute(delete(Worker).where(Worker.last_seen < now - WORKER_FORGOTTEN_AFTER))
    db.session.commit()


def forget_worker(name: str) -> None:
    """A worker process that stops says so at once (others would only age out)."""
    db.session.execute(delete(Worker).where(Worker.name == name))
    db.session.commit()


def workers_seen() -> int:
    """Worker processes whose heartbeat is at most WORKER_SEEN_SECONDS old."""
    since = utcnow() - timedelta(seconds=WORKER_SEEN_SECONDS)
    count = db.session.scalar(
        select(func.count()).select_from(Worker).where(Worker.last_seen >= since)
    )
    db.session.commit()
    return int(count or 0)


def lease_seconds() -> float:
    return jobs.settings()["REPORT_LEASE_SECONDS"]


def renew(owner: str) -> None:
    """Push back the deadline of every active row this process owns."""
    deadline = jobs.lease_deadline()
    for model in (ReportShard, Report):  # shards, then reports: the lock order of every step
        db.session.execute(
            update(model)
            .where(model.owner == owner, model.status.in_(ACTIVE_STATES))
            .values(lease_expires_at=deadline)
        )
    db.session.commit()


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


def take_over_expired(executor: jobs.Executor) -> int:
    """Queue again the steps whose owner stopped renewing; return how many were sent.

    A step the broker does not take is left for the next round (its lease runs out now); the
    round goes on with the others.
    """
    dead = dead_local_owners(active_owners())
    expired = [(model, row) for model in (Report, ReportShard) for row in expired_rows(model, dead)]
    sent = failures = 0
    for model, row in expired:
        if failures >= SEND_FAILURES_PER_ROUND:
            logger.warning("sweep: the broker takes nothing; the next round tries again")
            return sent
        if not claim_expired(model, row, executor.owner):
            continue
        logger.warning(
            "report %s: taking over %s left by %s",
            row.report_key,
            f"shard {row.shard}" if model is ReportShard else "its start",
            row.owner or "the broker",
        )
        shard = row.shard if model is ReportShard else None
        if send_step(executor, row.report_key, shard):
            sent, failures = sent + 1, 0
        else:
            failures += 1
    for report_id in reports_waiting_for_assembly():
        # a finished shard's step assembles the report
        sent += send_step(executor, report_id, 0, assembly=True)
    return sent


def send_step(
    executor: jobs.Executor, report_id: str, shard: int | None, assembly: bool = False
) -> bool:
    """Queue a report's start (`shard` None) or one shard; False when the broker does not
    take it (then it is sent again by the next round)."""
    try:
        if shard is None:
            executor.enqueue_start(report_id)
        else:
            executor.enqueue_shard(report_id, shard)
    except jobs.BrokerUnavailable as exc:
        logger.warning("report %s: not sent again (%s); the next round tries", report_id, exc)
        if not assembly:
            jobs.send_again_soon(report_id, None if shard is None else [shard])
        return False
    return True


def active_owners() -> set[str]:
    """The owners of active reports and shards."""
    owners: set[str] = set()
    for model in (Report, ReportShard):
        owners.update(
            db.session.scalars(
                select(model.owner)
                .where(model.status.in_(ACTIVE_STATES), model.owner.is_not(None))
                .distinct()
            )
        )
    db.session.commit()
    return owners


def expired_rows(model, dead: set[str]) -> list:
    """Active rows whose lease ran out or whose owner died on this machine (`dead`)."""
    now = utcnow()
    key = model.id if model is Report else model.report_id
    columns = [key.label("report_key"), model.owner, model.lease_expires_at, model.status]
    if model is ReportShard:
        columns.append(model.shard)
    stale = or_(model.lease_expires_at < now, model.owner.in_(dead))
    queued_steps = (
        model.status.in_(ACTIVE_STATES)
        if model is ReportShard
        else (model.status == ReportStatus.QUEUED)
    )
    rows = db.session.execute(select(*columns).where(queued_steps, stale)).all()
    db.session.commit()
    return rows


def claim_expired(model, row, new_owner: str | None) -> bool:
    """Take one expired row: only the process whose update matches wins."""
    key = model.id if model is Report else model.report_id
    match = [key == row.report_key, model.lease_expires_at == row.lease_expires_at]
    match.append(model.owner.is_(None) if row.owner is None else model.owner == row.owner)
    if model is ReportShard:
        match.append(model.shard == row.shard)
    claimed = db.session.execute(
        update(model)
        .where(*match, model.status.in_(ACTIVE_STATES))
        .values(
            status=ReportStatus.QUEUED,
            owner=new_owner,
            lease_expires_at=jobs.queued_lease(new_owner),
        )
    )
    db.session.commit()
    return claimed.rowcount == 1


def reports_waiting_for_assembly() -> list[str]:
    """Running reports whose shards are all Complete and that nobody is assembling."""
    now = utcnow()
    done = (
        select(func.count())
        .select_from(ReportShard)
        .where(ReportShard.report_id == Report.id, ReportShard.status == ReportStatus.COMPLETE)
        .scalar_subquery()
    )
    ids = list(
        db.session.scalars(
            select(Report.id).where(
                Report.status == ReportStatus.RUNNING,
                Report.shard_count == done,
                or_(Report.owner.is_(None), Report.lease_expires_at < now),
                Report.started_at < now - timedelta(seconds=lease_seconds()),
            )
        )
    )
    db.session.commit()
    return ids
