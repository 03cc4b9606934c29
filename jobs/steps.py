"""The steps of a report job: submit, start, run a shard, assemble. Any process runs any step.

A report is a `reports` row split into shards, each a `report_shards` row over a contiguous
range of store keys (for a report scoped to groups, a range holding at most
REPORT_SHARD_STORES of the groups' stores, and only those are read); every change of their
state is a transition of `jobs.states`.

1. `submit_report`: check room (queued + running reports, counted in the database), create the
   Queued row and hand `start_report` to the executor.
2. `start_report`: fix `now` and the load watermark once, plan the shards, hand each to the
   executor.
3. `run_shard`: claim the shard (only one process can win), compute it, store its result. The
   process that completes the last shard assembles the report, whichever it is.
4. `assemble`: join the shards' results, store the table and mark the report Complete in one
   transaction, then write this machine's CSV copy.

Every row being worked on carries its worker's lease, renewed while that process lives
(`jobs.leases`); an expired lease is taken over by another process. Each step is idempotent:
delivered twice, it does nothing the second time. A step attempted REPORT_MAX_ATTEMPTS times
fails the report with a clear reason, never runs forever.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from itertools import pairwise
from typing import Any, Protocol

import numpy as np
import pandas as pd
from flask import current_app
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

import report
from jobs import housekeeping, results, snapshot, states
from jobs.errors import BrokerUnavailable, QueueFull, ServiceBusy
from jobs.options import ReportRequest, new_report_id, options_of, scope_of
from jobs.retries import LOCK_RETRIES, short_reason, transient_kind, with_database_retries
from loading.lock_waits import LockWaitTimeout, bounded_lock_wait, writers_in_turn
from models import ReportShard, ReportStatus, db

logger = logging.getLogger(__name__)

WAIT_POLL_SECONDS = 0.5
BUSY_MESSAGE = "the database is busy with another write"


class Executor(Protocol):
    """Runs job steps: in this process (threads, or inline for tests) or on Celery workers."""

    owner: str | None  # the process that holds queued steps, None when a broker holds them

    def enqueue_start(self, report_id: str) -> None: ...

    def enqueue_shard(self, report_id: str, shard: int) -> None: ...


def settings() -> Any:
    return current_app.config


def app_executor() -> Executor:
    return current_app.extensions["report_executor"]


# --------------------------------------------------------------------------- 1. submit


def submit_report(request: ReportRequest, worker: Executor | None = None) -> str:
    """Create a Queued report if there is room, then hand its start to the executor (the
    app's, unless another is given: the `report` command runs the steps inline).

    QueueFull when `REPORT_WORKERS + REPORT_QUEUE` reports are already queued or running, or
    REPORT_QUEUE_PER_KEY of the asking key's;
    ServiceBusy (nothing created) when the database is locked or the broker does not answer.
    """
    worker = worker or app_executor()
    report_id = create_queued_report(request, worker.owner)
    try:
        worker.enqueue_start(report_id)
    except Exception as exc:
        logger.warning("report %s: could not be queued: %s", report_id, exc)
        housekeeping.delete_reports([report_id])
        raise ServiceBusy("the task queue does not answer") from exc
    return report_id


def create_queued_report(request: ReportRequest, owner: str | None) -> str:
    """Insert the Queued row after counting active reports, serialised by a lock row.

    A full queue is refused at once, from a read: under a storm of triggers most are refused,
    and those must not queue for SQLite's single writer. On SQLite the triggers of a process
    then take the write lock in turn, each waiting at most TRIGGER_LOCK_TIMEOUT_MS for it
    (whoever holds it: a load, report steps, another process) before ServiceBusy. On
    MySQL/MariaDB a deadlock with another transaction is tried again.
    """
    refuse_when_full(request.created_by)
    report_id = new_report_id()
    sqlite = db.engine.dialect.name == "sqlite"
    wait_ms = settings()["TRIGGER_LOCK_TIMEOUT_MS"] if sqlite else None
    for attempt in range(LOCK_RETRIES + 1):
        try:
            queued = time.monotonic()
            with writers_in_turn(db.engine, wait_ms):
                left_ms = None if wait_ms is None else time_left_ms(wait_ms, queued)
                with db.engine.connect() as conn, bounded_lock_wait(conn, left_ms), conn.begin():
                    states.create_report(
                        conn, report_id, request, owner, report_capacity(), per_key_limit()
                    )
            return report_id
        except LockWaitTimeout as exc:
            raise ServiceBusy(BUSY_MESSAGE) from exc
        except OperationalError as exc:
            if sqlite or transient_kind(exc) != "lock" or attempt == LOCK_RETRIES:
                raise ServiceBusy(BUSY_MESSAGE) from exc
    raise AssertionError("unreachable")


def time_left_ms(budget_ms: int, since: float) -> int:
    """What is left (at least 1 ms) of a wait of `budget_ms` begun at `since`: the process's
    turn and SQLite's lock share one TRIGGER_LOCK_TIMEOUT_MS."""
    return max(int(budget_ms - (time.monotonic() - since) * 1000), 1)


def report_capacity() -> int:
    return settings()["REPORT_WORKERS"] + settings()["REPORT_QUEUE"]


def per_key_limit() -> int:
    return settings()["REPORT_QUEUE_PER_KEY"]


def refuse_when_full(key_name: str | None = None) -> None:
    """QueueFull when the queue, or the asking key's share of it, is full as of now (a read:
    no lock taken, none waited for)."""
    with db.engine.connect() as conn:
        active = states.active_reports(conn)
        if active >= report_capacity():
            raise QueueFull(f"{active} reports are queued or running")
        states.refuse_beyond_key_limit(conn, key_name, per_key_limit())


# --------------------------------------------------------------------------- 2. start


def start_report(report_id: str, owner: str, worker: Executor) -> None:
    """Fix the snapshot, plan the shards and queue them on `worker` (idempotent)."""
    if not states.claim_start(report_id, owner):
        logger.info("report %s: already started or owned elsewhere", report_id)
        return
    row = states.fresh_report(report_id)
    requested, attempts, groups = row.requested_as_of_us, row.attempts, scope_of(row)
    db.session.commit()  # end the read: on SQLite a write transaction must begin with a write
    if attempts > settings()["REPORT_MAX_ATTEMPTS"]:
        give_up(report_id, f"gave up after {attempts - 1} attempts to start it")
        return
    fixed = with_database_retries(lambda: snapshot.fix_snapshot(db.engine, requested), report_id)
    per_shard = settings()["REPORT_SHARD_STORES"]
    if groups is None:
        ranges = shard_ranges(fixed, per_shard)
    else:
        members = with_database_retries(
            lambda: snapshot.scope_store_keys(db.engine, fixed.batch, groups), report_id
        )
        ranges = scope_ranges(fixed, members, min(per_shard, snapshot.MAX_SCOPED_SHARD_STORES))
    if not states.plan_shards(report_id, owner, worker.owner, (fixed.now_us, fixed.batch), ranges):
        return
    logger.info(
        "report %s: running as of batch %d in %d shard(s)", report_id, fixed.batch, len(ranges)
    )
    if not ranges:
        maybe_assemble(report_id, owner)
    send_shards(report_id, worker, len(ranges))


def shard_ranges(fixed: snapshot.Snapshot, stores_per_shard: int) -> list[tuple[int, int]]:
    """Contiguous store-key ranges [low, high) of at most `stores_per_shard` keys."""
    if fixed.now_us is None or fixed.last_store_key == 0:
        return []
    bounds = [*range(1, fixed.last_store_key + 1, stores_per_shard), fixed.last_store_key + 1]
    return list(pairwise(bounds))


def scope_ranges(
    fixed: snapshot.Snapshot, members: np.ndarray, stores_per_shard: int
) -> list[tuple[int, int]]:
    """Store-key ranges [low, high) each holding at most `stores_per_shard` of the scope's
    stores (sorted keys `members`): a shard reads only those."""
    if fixed.now_us is None or members.size == 0:
        return []
    firsts = members[::stores_per_shard]
    lasts = members[stores_per_shard - 1 :: stores_per_shard]
    highs = [*(int(key) + 1 for key in lasts), int(members[-1]) + 1][: firsts.size]
    return [(int(low), high) for low, high in zip(firsts, highs, strict=True)]


def send_shards(report_id: str, worker: Executor, count: int) -> None:
    """Queue the planned shards. The plan is committed already: when the broker does not take
    a shard (it tried again within CELERY_CONNECT_TIMEOUT), that one and the rest are left for
    the next sweep to send at once, instead of after REPORT_REQUEUE_SECONDS."""
    for number in range(count):
        try:
            worker.enqueue_shard(report_id, number)
        except BrokerUnavailable as exc:
            logger.warning(
                "report %s: the broker took %d of %d shards (%s); the next sweep sends the rest",
                report_id,
                number,
                count,
                exc,
            )
            states.send_again_soon(report_id, list(range(number, count)))
            return


# --------------------------------------------------------------------------- 3. shards


@dataclass(frozen=True)
class ShardWork:
    """What computing one shard needs, read once from its rows."""

    report_id: str
    shard: int
    shard_count: int
    key_low: int
    key_high: int
    batch: int
    now_us: int | None
    options: report.ReportOptions
    attempts: int
    groups: tuple[str, ...] | None = None

    @property
    def label(self) -> str:
        return f"{self.shard + 1} of {self.shard_count}"


def run_shard(
    report_id: str,
    shard: int,
    owner: str,
    wait_for_owner: bool = False,
    retry_elsewhere: bool = False,
) -> None:
    """Compute one shard and store its result; assemble the report if it was the last.

    With `wait_for_owner` (a broker may deliver a step twice), a shard another live process
    is running is waited for until it completes or its lease expires. With `retry_elsewhere`
    (executors with other workers and a sweep), a shard that fails is let go for another
    attempt until REPORT_MAX_ATTEMPTS; else (inline) the report fails at once.
    """
    if not claim_shard(report_id, shard, owner, wait_for_owner):
        maybe_assemble(report_id, owner)
        return
    work = shard_work(report_id, shard)
    if work is None:
        return
    if work.attempts > settings()["REPORT_MAX_ATTEMPTS"]:
        give_up(
            report_id,
            f"gave up after {work.attempts - 1} attempts at shard {work.label}: "
            "the process computing it stopped each time",
        )
        return
    try:
        frame = with_database_retries(lambda: compute_shard(work), report_id)
    except Exception as exc:
        logger.exception("report %s: shard %d failed (attempt %d)", report_id, shard, work.attempts)
        if retry_elsewhere and work.attempts < settings()["REPORT_MAX_ATTEMPTS"]:
            states.release(report_id, owner)
        else:
            give_up(report_id, f"shard {work.label}: {short_reason(exc)}")
        return
    if states.complete_shard(report_id, shard, owner, results.pack(frame), len(frame)):
        maybe_assemble(report_id, owner)


def claim_shard(report_id: str, shard: int, owner: str, wait_for_owner: bool) -> bool:
    """Claim the shard; with `wait_for_owner`, while another live process runs it, wait (up to
    three leases) until it completes or its lease runs out."""
    deadline = time.monotonic() + 3 * settings()["REPORT_LEASE_SECONDS"]
    while True:
        if states.claim_shard(report_id, shard, owner):
            return True
        status = db.session.scalar(
            select(ReportShard.status).where(*ReportShard.step_is(report_id, shard))
        )
        db.session.commit()
        running_elsewhere = status == ReportStatus.RUNNING
        if not (wait_for_owner and running_elsewhere and time.monotonic() < deadline):
            return False
        time.sleep(WAIT_POLL_SECONDS)


def shard_work(report_id: str, shard: int) -> ShardWork | None:
    """The claimed shard's work, or None if its report is no longer Running."""
    row = states.fresh_report(report_id)
    piece = db.session.get(ReportShard, (report_id, shard), populate_existing=True)
    work = None
    if row is not None and row.status == ReportStatus.RUNNING:
        work = ShardWork(
            report_id,
            shard,
            row.shard_count,
            piece.key_low,
            piece.key_high,
            row.batch,
            row.as_of_us,
            options_of(row),
            piece.attempts,
            scope_of(row),
        )
    db.session.commit()  # end the read: on SQLite a write transaction must begin with a write
    return work


def compute_shard(work: ShardWork) -> pd.DataFrame:
    """The report rows of the shard's stores, with their external ids."""
    fixed = snapshot.Snapshot(work.batch, work.now_us, work.key_high - 1)
    read = snapshot.read_shard(db.engine, fixed, work.key_low, work.key_high, work.groups)
    frame = report.compute_report(read.inputs, work.now_us, work.options)
    if work.now_us is None or frame.empty:
        return frame
    keys = frame["store_id"].to_numpy()
    return frame.assign(store_id=read.external_ids.reindex(keys).to_numpy())


# --------------------------------------------------------------------------- 4. assemble


def maybe_assemble(report_id: str, owner: str) -> None:
    """Assemble the report if every shard is done and no live process is assembling it."""
    row = states.fresh_report(report_id)
    running = row is not None and row.status == ReportStatus.RUNNING
    shard_count = (row.shard_count or 0) if running else 0
    db.session.commit()
    if not running or states.shards_complete(report_id) < shard_count:
        return
    if not states.claim_assembly(report_id, owner):
        return
    try:
        assemble(report_id, owner)
    except Exception as exc:
        logger.exception("report %s: assembly failed", report_id)
        give_up(report_id, f"could not assemble the report: {short_reason(exc)}")


def assemble(report_id: str, owner: str) -> None:
    """Join the shards, then store the table and mark the report Complete in one transaction
    (once), then write this machine's CSV copy.

    Everything that can fail with the table (joining, packing, the CSV text) happens before
    that transaction, so a report is never Complete without its stored result; the file is a
    copy of it, and failing to write it (a full disk) leaves the report Complete and served.
    """

    def read_parts() -> list[bytes]:
        parts = db.session.scalars(
            select(ReportShard.result)
            .where(ReportShard.report_id == report_id)
            .order_by(ReportShard.shard)
        ).all()
        db.session.commit()  # end the read: on SQLite a write transaction must begin with one
        return [part for part in parts if part]

    columns = options_of(states.fresh_report(report_id)).columns()
    parts = with_database_retries(read_parts, report_id)
    table = results.assemble([results.unpack(part) for part in parts], columns)
    packed, csv = results.pack(table), results.csv_bytes(table)
    if not states.complete_report(report_id, owner, len(table), packed):
        return
    results.drop_shard_results(report_id)
    results.write_local_copy(report_id, csv)
    logger.info("report %s: complete, %d stores", report_id, len(table))
    housekeeping.after_report()


# --------------------------------------------------------------------------- failures


def give_up(report_id: str, reason: str) -> bool:
    """Fail the report with a short reason for the client; False (and nothing said about
    failing) when it had already finished."""
    if not states.fail_report(report_id, reason):
        logger.info("report %s: had already finished (not failed: %s)", report_id, reason)
        return False
    logger.warning("report %s: failed: %s", report_id, reason)
    return True
