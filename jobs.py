"""Report jobs: one job code, persisted as rows, run by any executor in any process.

A report is a `reports` row (Queued → Running → Complete | Failed) split into shards, each a
`report_shards` row over a contiguous range of store keys. The steps:

1. `submit_report`: check room (Queued + Running reports, counted in the database), create
   the Queued row and hand `start_report` to the executor.
2. `start_report`: fix `now` and the load watermark once, create the shards, hand each to the
   executor.
3. `run_shard`: claim the shard (a conditional update only one process can win), compute it,
   store its result in the database. The process that completes the last shard assembles
   the report (`assemble_report`), whichever it is.

Every row being worked on carries its worker's lease, renewed while that process lives
(`leases.LeaseKeeper`); an expired lease is taken over by another process (`leases.sweep`).
Each step is idempotent: a step delivered twice does nothing the second time. A shard attempted
`REPORT_MAX_ATTEMPTS` times is Failed with a clear message, never re-run forever.
"""

from __future__ import annotations

import json
import logging
import random
import re
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any, Protocol

import pandas as pd
from flask import current_app
from sqlalchemy import Connection, and_, delete, func, insert, or_, select, update
from sqlalchemy.exc import DBAPIError, OperationalError

import report
import results
import snapshot
import timestamps
import writing
from locking import LockWaitTimeout, bounded_lock_wait, writers_in_turn
from models import (
    ACTIVE_STATES,
    LoadBatch,
    Report,
    ReportResult,
    ReportShard,
    ReportStatus,
    ServiceLock,
    db,
    utcnow,
)

logger = logging.getLogger(__name__)

REPORT_ID_PATTERN = re.compile(r"^[0-9a-f]{32}$")
TRIGGER_LOCK = "trigger"
WAIT_POLL_SECONDS = 0.5


class QueueFull(Exception):
    """More reports are queued or running than the service accepts."""


class ReportNotFound(Exception):
    """No report has this id (or the id is malformed)."""


class ServiceBusy(Exception):
    """The database's write lock or the task broker is not available right now."""


class BrokerUnavailable(ServiceBusy):
    """The task broker did not take a step within CELERY_CONNECT_TIMEOUT (tries included)."""


class Executor(Protocol):
    """Runs job steps: in this process (threads, or inline for tests) or on Celery workers."""

    owner: str | None  # the process that holds queued steps, None when a broker holds them

    def enqueue_start(self, report_id: str) -> None: ...

    def enqueue_shard(self, report_id: str, shard: int) -> None: ...


@dataclass(frozen=True)
class ReportRequest:
    """What a user asks for: an optional `as_of` and the report options."""

    as_of_us: int | None = None
    options: report.ReportOptions = field(default_factory=report.ReportOptions)


# --------------------------------------------------------------------------- ids and options


def new_report_id() -> str:
    """128 random bits as 32 hex digits: unguessable, and safe in a file name."""
    return secrets.token_hex(16)


def is_valid_report_id(report_id: str) -> bool:
    return bool(REPORT_ID_PATTERN.fullmatch(report_id))


def report_path(reports_dir: str | Path, report_id: str) -> Path:
    """Where a report's CSV lives; refuses any id that is not 32 hex digits."""
    if not is_valid_report_id(report_id):
        raise ReportNotFound(report_id)
    return Path(reports_dir) / f"report_{report_id}.csv"


def options_json(options: report.ReportOptions) -> str:
    return json.dumps({"stale_after_us": options.stale_after_us, "outages": options.outages})


def options_of(row: Report) -> report.ReportOptions:
    stored = json.loads(row.options or "{}")
    return report.ReportOptions(stored.get("stale_after_us"), bool(stored.get("outages")))


def describe_options(row: Report) -> dict[str, Any]:
    return options_as_written(options_of(row))


def options_as_written(options: report.ReportOptions) -> dict[str, Any]:
    """Options as a user writes them: `stale_after` as an ISO-8601 duration, `outages`."""
    stale = options.stale_after_us
    return {
        "stale_after": None if stale is None else timestamps.format_duration(stale),
        "outages": options.outages,
    }


def settings() -> dict[str, Any]:
    return current_app.config


def executor() -> Executor:
    return current_app.extensions["report_executor"]


# --------------------------------------------------------------------------- 1. submit


def submit_report(request: ReportRequest, worker: Executor | None = None) -> str:
    """Create a Queued report if there is room, then hand its start to the executor (the
    app's, unless another is given: the `report` command runs the steps inline).

    QueueFull when `REPORT_WORKERS + REPORT_QUEUE` reports are already queued or running;
    ServiceBusy (nothing created) when the database is locked or the broker does not answer.
    """
    worker = worker or executor()
    report_id = create_queued_report(request, worker.owner)
    try:
        worker.enqueue_start(report_id)
    except Exception as exc:
        logger.warning("report %s: could not be queued: %s", report_id, exc)
        delete_reports([report_id])
        raise ServiceBusy("the task queue does not answer") from exc
    return report_id


BUSY_MESSAGE = "the database is busy with another write"


def create_queued_report(request: ReportRequest, owner: str | None) -> str:
    """Insert the Queued row after counting active reports, serialised by a lock row.

    A full queue is refused at once, from a read: under a storm of triggers most are refused,
    and those must not queue for SQLite's single writer. On SQLite the triggers of a process
    then take the write lock in turn, each waiting at most TRIGGER_LOCK_TIMEOUT_MS for it
    (whoever holds it: a load, report steps, another process) before ServiceBusy. On
    MySQL/MariaDB a deadlock with another transaction is tried again.
    """
    refuse_when_full()
    report_id = new_report_id()
    sqlite = db.engine.dialect.name == "sqlite"
    wait_ms = settings()["TRIGGER_LOCK_TIMEOUT_MS"] if sqlite else None
    for attempt in range(LOCK_RETRIES + 1):
        try:
            queued = time.monotonic()
            with writers_in_turn(db.engine, wait_ms):
                left_ms = None if wait_ms is None else time_left_ms(wait_ms, queued)
                with db.engine.connect() as conn, bounded_lock_wait(conn, left_ms), conn.begin():
                    insert_queued_report(conn, report_id, request, owner)
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


def active_reports(conn: Connection) -> int:
    query = select(func.count()).select_from(Report).where(Report.status.in_(ACTIVE_STATES))
    return conn.execute(query).scalar()


def refuse_when_full() -> None:
    """QueueFull when the queue is full as of now (a read: no lock taken, none waited for)."""
    with db.engine.connect() as conn:
        active = active_reports(conn)
    if active >= report_capacity():
        raise QueueFull(f"{active} reports are queued or running")


def insert_queued_report(
    conn: Connection, report_id: str, request: ReportRequest, owner: str | None
) -> None:
    """Count, then insert, in one transaction that starts with a write to the lock row."""
    conn.execute(
        update(ServiceLock)
        .where(ServiceLock.name == TRIGGER_LOCK)
        .values(uses=ServiceLock.uses + 1)
    )
    active = active_reports(conn)
    if active >= report_capacity():
        raise QueueFull(f"{active} reports are queued or running")
    conn.execute(
        insert(Report).values(
            id=report_id,
            status=ReportStatus.QUEUED,
            requested_as_of_us=request.as_of_us,
            options=options_json(request.options),
            created_at=utcnow(),
            owner=owner,
            lease_expires_at=queued_lease(owner),
        )
    )


SQLITE_BUSY_TIMEOUT_MS = 30_000


def lease_deadline() -> Any:
    return utcnow() + timedelta(seconds=settings()["REPORT_LEASE_SECONDS"])


def queued_lease(owner: str | None) -> Any:
    """A queued step's deadline: its owner's lease, or, when a broker holds it (no owner), the
    time after which a sweep sends it again."""
    seconds = settings()["REPORT_LEASE_SECONDS" if owner else "REPORT_REQUEUE_SECONDS"]
    return utcnow() + timedelta(seconds=seconds)


# --------------------------------------------------------------------------- 2. start


def start_report(report_id: str, owner: str, worker: Executor) -> None:
    """Fix the snapshot, create the shards and queue them on `worker` (idempotent)."""
    if not claim_report_start(report_id, owner):
        logger.info("report %s: already started or owned elsewhere", report_id)
        return
    row = fresh_report(report_id)
    requested, attempts = row.requested_as_of_us, row.attempts
    db.session.commit()  # end the read: on SQLite a write transaction must begin with a write
    if attempts > settings()["REPORT_MAX_ATTEMPTS"]:
        give_up(report_id, f"gave up after {attempts - 1} attempts to start it")
        return
    fixed = with_database_retries(lambda: snapshot.fix_snapshot(db.engine, requested), report_id)
    ranges = shard_ranges(fixed, settings()["REPORT_SHARD_STORES"])
    if not with_database_retries(
        lambda: plan_shards(report_id, owner, worker, fixed, ranges), report_id
    ):
        return
    logger.info(
        "report %s: running as of batch %d in %d shard(s)", report_id, fixed.batch, len(ranges)
    )
    if not ranges:
        maybe_assemble(report_id, owner)
    send_shards(report_id, worker, len(ranges))


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
            send_again_soon(report_id, range(number, count))
            return


def send_again_soon(report_id: str, shards: Iterable[int] | None = None) -> None:
    """Mark queued steps the broker did not take (the report's start, or `shards`) for the
    next sweep: their lease runs out now. Only steps still queued with no owner."""
    if shards is None:
        model, match = Report, [Report.id == report_id]
    else:
        model = ReportShard
        match = [ReportShard.report_id == report_id, ReportShard.shard.in_(list(shards))]
    expire = (
        update(model)
        .where(*match, model.status == ReportStatus.QUEUED, model.owner.is_(None))
        .values(lease_expires_at=utcnow())
    )
    with_database_retries(lambda: execute_and_commit(expire), report_id)


def plan_shards(
    report_id: str,
    owner: str,
    worker: Executor,
    fixed: snapshot.Snapshot,
    ranges: list[tuple[int, int]],
) -> bool:
    """Create the shards and mark the report Running, in one transaction (once)."""
    db.session.add_all(
        ReportShard(
            report_id=report_id,
            shard=number,
            key_low=low,
            key_high=high,
            status=ReportStatus.QUEUED,
            owner=worker.owner,
            lease_expires_at=queued_lease(worker.owner),
        )
        for number, (low, high) in enumerate(ranges)
    )
    planned = db.session.execute(
        update(Report)
        .where(Report.id == report_id, Report.owner == owner, Report.status == ReportStatus.QUEUED)
        .values(
            status=ReportStatus.RUNNING,
            as_of_us=fixed.now_us,
            batch=fixed.batch,
            shard_count=len(ranges),
            owner=None,
            lease_expires_at=None,
        )
    )
    if planned.rowcount != 1:
        db.session.rollback()
        return False
    db.session.commit()
    return True


def claim_report_start(report_id: str, owner: str) -> bool:
    """Take a Queued report for planning: only one process can win."""
    return with_database_retries(lambda: _claim_report_start(report_id, owner), report_id)


def _claim_report_start(report_id: str, owner: str) -> bool:
    now = utcnow()
    claim = (
        update(Report)
        .where(
            Report.id == report_id,
            Report.status == ReportStatus.QUEUED,
            free_for(Report, owner, now),
        )
        .values(
            owner=owner,
            lease_expires_at=lease_deadline(),
            attempts=Report.attempts + 1,
            started_at=now,
        )
    )
    return execute_and_commit(claim) == 1


def free_for(model, owner: str, now: datetime):
    """A row `owner` may take at `now`: nobody's, already its own, or its owner's lease ran out."""
    return or_(model.owner.is_(None), model.owner == owner, model.lease_expires_at < now)


def shard_ranges(fixed: snapshot.Snapshot, stores_per_shard: int) -> list[tuple[int, int]]:
    """Contiguous store-key ranges [low, high) of at most `stores_per_shard` keys."""
    if fixed.now_us is None or fixed.last_store_key == 0:
        return []
    bounds = [*range(1, fixed.last_store_key + 1, stores_per_shard), fixed.last_store_key + 1]
    return list(pairwise(bounds))


# --------------------------------------------------------------------------- 3. shards


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
            release(report_id, owner)
        else:
            give_up(report_id, f"shard {work.label}: {short_reason(exc)}")
        return
    if store_shard_result(report_id, shard, owner, frame):
        maybe_assemble(report_id, owner)


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

    @property
    def label(self) -> str:
        return f"{self.shard + 1} of {self.shard_count}"


def shard_work(report_id: str, shard: int) -> ShardWork | None:
    """The claimed shard's work, or None if its report is no longer Running."""
    row = fresh_report(report_id)
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
        )
    db.session.commit()  # end the read: on SQLite a write transaction must begin with a write
    return work


def claim_shard(report_id: str, shard: int, owner: str, wait_for_owner: bool) -> bool:
    """Move a Queued shard (or one whose lease expired) to Running under `owner`."""
    deadline = time.monotonic() + 3 * settings()["REPORT_LEASE_SECONDS"]
    while True:
        now = utcnow()
        claimable = or_(
            and_(ReportShard.status == ReportStatus.QUEUED, free_for(ReportShard, owner, now)),
            and_(ReportShard.status == ReportStatus.RUNNING, ReportShard.lease_expires_at < now),
        )
        claim = (
            update(ReportShard)
            .where(ReportShard.report_id == report_id, ReportShard.shard == shard, claimable)
            .values(
                status=ReportStatus.RUNNING,
                owner=owner,
                lease_expires_at=lease_deadline(),
                attempts=ReportShard.attempts + 1,
                started_at=now,
            )
        )
        if with_database_retries(lambda claim=claim: execute_and_commit(claim), report_id) == 1:
            return True
        status = db.session.scalar(
            select(ReportShard.status).where(
                ReportShard.report_id == report_id, ReportShard.shard == shard
            )
        )
        db.session.commit()
        running_elsewhere = status == ReportStatus.RUNNING
        if not (wait_for_owner and running_elsewhere and time.monotonic() < deadline):
            return False
        time.sleep(WAIT_POLL_SECONDS)


def compute_shard(work: ShardWork) -> pd.DataFrame:
    """The report rows of the shard's stores, with their external ids."""
    fixed = snapshot.Snapshot(work.batch, work.now_us, work.key_high - 1)
    read = snapshot.read_shard(db.engine, fixed, work.key_low, work.key_high)
    frame = report.compute_report(read.inputs, work.now_us, work.options)
    if work.now_us is None or frame.empty:
        return frame
    keys = frame["store_id"].to_numpy()
    return frame.assign(store_id=read.external_ids.reindex(keys).to_numpy())


def store_shard_result(report_id: str, shard: int, owner: str, frame: pd.DataFrame) -> bool:
    """Record the result if this process still owns the shard; count it done once."""

    def store() -> bool:
        stored = db.session.execute(
            update(ReportShard)
            .where(
                ReportShard.report_id == report_id,
                ReportShard.shard == shard,
                ReportShard.owner == owner,
                ReportShard.status == ReportStatus.RUNNING,
            )
            .values(
                status=ReportStatus.COMPLETE,
                result=results.pack(frame),
                row_count=len(frame),
                finished_at=utcnow(),
                owner=None,
                lease_expires_at=None,
            )
        )
        if stored.rowcount == 1:
            db.session.execute(
                update(Report)
                .where(Report.id == report_id, Report.status == ReportStatus.RUNNING)
                .values(shards_done=Report.shards_done + 1)
            )
        db.session.commit()
        return stored.rowcount == 1

    return with_database_retries(store, report_id)


# --------------------------------------------------------------------------- 4. assemble


def maybe_assemble(report_id: str, owner: str) -> None:
    """Assemble the report if every shard is done and no live process is assembling it."""
    row = fresh_report(report_id)
    if row is None or row.status != ReportStatus.RUNNING:
        db.session.commit()
        return
    done = db.session.scalar(
        select(func.count())
        .select_from(ReportShard)
        .where(ReportShard.report_id == report_id, ReportShard.status == ReportStatus.COMPLETE)
    )
    db.session.commit()
    if done < (row.shard_count or 0) or not claim_assembly(report_id, owner):
        return
    try:
        with_database_retries(lambda: assemble_report(report_id, owner), report_id)
    except Exception as exc:
        logger.exception("report %s: assembly failed", report_id)
        give_up(report_id, f"could not assemble the report: {short_reason(exc)}")


def fresh_report(report_id: str) -> Report | None:
    """The report row as the database has it now (not as this session last saw it)."""
    query = select(Report).where(Report.id == report_id)
    return db.session.execute(query.execution_options(populate_existing=True)).scalar_one_or_none()


def claim_assembly(report_id: str, owner: str) -> bool:
    now = utcnow()
    claim = (
        update(Report)
        .where(
            Report.id == report_id,
            Report.status == ReportStatus.RUNNING,
            free_for(Report, owner, now),
        )
        .values(owner=owner, lease_expires_at=lease_deadline())
    )
    return with_database_retries(lambda: execute_and_commit(claim), report_id) == 1


def execute_and_commit(statement) -> int:
    """Run one write in a transaction of its own; return the number of rows it changed."""
    changed = db.session.execute(statement).rowcount
    db.session.commit()
    return changed


def assemble_report(report_id: str, owner: str) -> None:
    """Join the shards, then store the table and mark the report Complete in one transaction
    (once), then write this machine's CSV copy.

    Everything that can fail with the table (joining, packing, the CSV text) happens before
    that transaction, so a report is never Complete without its stored result; the file is a
    copy of it, and failing to write it (a full disk) leaves the report Complete and served.
    """
    columns = options_of(fresh_report(report_id)).columns()
    parts = db.session.scalars(
        select(ReportShard.result)
        .where(ReportShard.report_id == report_id)
        .order_by(ReportShard.shard)
    ).all()
    db.session.commit()  # end the read: on SQLite a write transaction must begin with a write
    table = results.assemble([results.unpack(part) for part in parts if part], columns)
    packed, csv = results.pack(table), results.csv_bytes(table)
    if not complete_report(report_id, owner, len(table), packed):
        return
    drop_shard_results(report_id)
    write_local_copy(report_id, csv)
    logger.info("report %s: complete, %d stores", report_id, len(table))
    after_report()


def complete_report(report_id: str, owner: str, row_count: int, packed: bytes) -> bool:
    """Store the table and mark the report Complete, if `owner` still assembles it. A short
    transaction: everything it writes is ready before it begins."""
    completed = db.session.execute(
        update(Report)
        .where(Report.id == report_id, Report.owner == owner, Report.status == ReportStatus.RUNNING)
        .values(
            status=ReportStatus.COMPLETE,
            row_count=row_count,
            file_name=f"report_{report_id}.csv",
            finished_at=utcnow(),
            owner=None,
            lease_expires_at=None,
        )
    )
    if completed.rowcount != 1:
        db.session.rollback()
        return False
    db.session.execute(delete(ReportResult).where(ReportResult.report_id == report_id))
    db.session.execute(insert(ReportResult).values(report_id=report_id, data=packed))
    db.session.commit()
    return True


def drop_shard_results(report_id: str) -> None:
    """The shards' tables are not needed once the report's is stored: free their space, in a
    transaction of its own (rewriting those rows is the slowest write of a report)."""
    try:
        drop = update(ReportShard).where(ReportShard.report_id == report_id).values(result=None)
        with_database_retries(lambda: execute_and_commit(drop), report_id)
    except Exception as exc:  # never fails the report; the rows go when the report does
        logger.warning(
            "report %s: its shards' results stay until it is removed (%s)",
            report_id,
            short_reason(exc),
        )


def write_local_copy(report_id: str, csv: bytes) -> None:
    """Write this machine's CSV copy; when it cannot be written, say so and go on (the report
    is served from the database's table)."""
    try:
        results.write_atomically(csv, report_path(settings()["REPORTS_DIR"], report_id))
    except OSError as exc:
        logger.warning(
            "report %s: this machine's CSV copy could not be written (%s); it is served from "
            "the database",
            report_id,
            exc,
        )


# --------------------------------------------------------------------------- failures


def give_up(report_id: str, reason: str) -> bool:
    """Mark the report (and its unfinished shards) Failed with a short reason for the client;
    False (and nothing said about failing) when it had already finished."""

    def fail() -> bool:
        db.session.rollback()
        db.session.execute(  # shards, then the report: the lock order of every step
            update(ReportShard)
            .where(ReportShard.report_id == report_id, ReportShard.status.in_(ACTIVE_STATES))
            .values(status=ReportStatus.FAILED, owner=None, lease_expires_at=None)
        )
        failed = db.session.execute(
            update(Report)
            .where(Report.id == report_id, Report.status.in_(ACTIVE_STATES))
            .values(
                status=ReportStatus.FAILED,
                error=reason,
                finished_at=utcnow(),
                owner=None,
                lease_expires_at=None,
            )
        )
        db.session.commit()
        return failed.rowcount == 1

    if not with_database_retries(fail, report_id):
        logger.info("report %s: had already finished (not failed: %s)", report_id, reason)
        return False
    logger.warning("report %s: failed: %s", report_id, reason)
    return True


def short_reason(exc: Exception) -> str:
    """What the client is told: no SQL text, no server paths (the log keeps the details)."""
    if isinstance(exc, DBAPIError):
        code = getattr(exc.orig, "args", [None])[0]
        return f"the database failed ({type(exc.orig).__name__}{f' {code}' if code else ''})"
    if isinstance(exc, MemoryError):
        return "out of memory"
    if isinstance(exc, OSError):
        return "could not write the report file"
    return f"internal error ({type(exc).__name__})"


# MySQL/MariaDB codes worth trying again: a lock wait timeout or a deadlock (another
# transaction was in the way: try again at once), and a lost or refused connection (wait, open
# a new one). SQLite says "database is locked".
LOCK_CODES = {1205, 1213}
CONNECTION_CODES = {2002, 2003, 2006, 2013, 2055}
LOCK_RETRIES = 6


def transient_kind(exc: Exception) -> str | None:
    """ "lock", "connection" or None (not worth trying again)."""
    if not isinstance(exc, DBAPIError):
        return None
    if exc.connection_invalidated:
        return "connection"
    code = (getattr(exc.orig, "args", None) or [None])[0]
    if code in LOCK_CODES or (isinstance(exc, OperationalError) and "locked" in str(exc.orig)):
        return "lock"
    return "connection" if code in CONNECTION_CODES else None


def with_database_retries(step: Callable[[], Any], report_id: str) -> Any:
    """Run a step; when a lock was in the way try again soon (up to LOCK_RETRIES times), when the
    connection was lost try again on a new one (REPORT_DB_RETRIES times, waiting 1, 2, 4… s);
    then let the error through."""
    tries = {"lock": 0, "connection": 0}
    limits = {"lock": LOCK_RETRIES, "connection": settings()["REPORT_DB_RETRIES"]}
    while True:
        try:
            return step()
        except Exception as exc:
            db.session.rollback()
            kind = transient_kind(exc)
            if kind is None or tries[kind] >= limits[kind]:
                raise
            tries[kind] += 1
            logger.warning(
                "report %s: database %s error, try %d of %d: %s",
                report_id,
                kind,
                tries[kind],
                limits[kind],
                short_reason(exc),
            )
            if kind == "connection":
                db.engine.dispose()  # drop pooled connections that may be dead too
                time.sleep(min(2 ** (tries[kind] - 1), 8))
            else:
                time.sleep(0.05 * 2 ** tries[kind] * (1 + random.random()))


def release(report_id: str, owner: str) -> None:
    """Let go of a report's rows after a step stopped unexpectedly: they lose their owner and
    their lease ends now (this process no longer renews them), so the next sweep, in any
    process, queues them again and counts an attempt. Never left Running."""

    def expire() -> None:
        for model, key in ((ReportShard, ReportShard.report_id), (Report, Report.id)):
            db.session.execute(
                update(model)
                .where(key == report_id, model.owner == owner, model.status.in_(ACTIVE_STATES))
                .values(owner=None, lease_expires_at=utcnow())
            )
        db.session.commit()

    with_database_retries(expire, report_id)


# --------------------------------------------------------------------------- housekeeping


def after_report() -> None:
    """Retention and old versions, after each finished report (never fails the report)."""
    try:
        remove_expired(settings()["REPORTS_DIR"], settings()["REPORT_TTL_DAYS"])
        remove_beyond_count(settings()["REPORTS_DIR"], settings()["REPORT_MAX_COUNT"])
        purge_retired_versions()
    except Exception:
        db.session.rollback()
        logger.exception("housekeeping after a report failed; it will run again later")


def delete_reports(report_ids: list[str], reports_dir: str | None = None) -> None:
    """Delete reports with their shards, stored results and files."""
    for start in range(0, len(report_ids), 500):
        chunk = report_ids[start : start + 500]
        for model, column in (
            (ReportShard, ReportShard.report_id),
            (ReportResult, ReportResult.report_id),
            (Report, Report.id),
        ):
            db.session.execute(delete(model).where(column.in_(chunk)))
        db.session.commit()
        if reports_dir:
            for report_id in chunk:
                report_path(reports_dir, report_id).unlink(missing_ok=True)


def remove_expired(reports_dir: str, ttl_days: float) -> int:
    """Delete finished reports older than the retention period, with their files."""
    cutoff = utcnow() - timedelta(days=ttl_days)
    finished_before = Report.status.not_in(ACTIVE_STATES) & (Report.created_at < cutoff)
    expired = list(db.session.scalars(select(Report.id).where(finished_before)))
    db.session.commit()
    delete_reports(expired, reports_dir)
    return len(expired)


def remove_beyond_count(reports_dir: str, keep: int) -> int:
    """Keep at most `keep` finished reports: the oldest go first."""
    finished = select(Report.id).where(Report.status.not_in(ACTIVE_STATES))
    surplus = list(db.session.scalars(finished.order_by(Report.created_at.desc()).offset(keep)))
    db.session.commit()
    delete_reports(surplus, reports_dir)
    return len(surplus)


def purge_retired_versions() -> int:
    """Delete hours, zones and closures rows no retained report can still read.

    A report reading as of batch W needs rows retired after W. Kept: everything retired after
    the oldest retained report's batch, and after any load that finished within the last
    hour (a report being planned right now may not have recorded its batch yet).
    """
    oldest_report = db.session.scalar(select(func.min(Report.batch)))
    grace = utcnow() - timedelta(hours=1)
    settled = db.session.scalar(select(func.max(LoadBatch.id)).where(LoadBatch.finished_at < grace))
    db.session.commit()
    limits = [value for value in (oldest_report, settled) if value is not None]
    if settled is None or not limits:
        return 0
    with db.engine.begin() as conn:
        return writing.purge_retired(conn, min(limits))


PARTIAL_FILE_AGE_SECONDS = 3600


def remove_partial_files(reports_dir: str) -> int:
    """Delete temporary files a dead process left half-written (never served anyway); only
    old ones: another process sharing the folder may be writing a young one right now."""
    cutoff = time.time() - PARTIAL_FILE_AGE_SECONDS
    stale = [p for p in Path(reports_dir).glob(".report_*.tmp") if p.stat().st_mtime < cutoff]
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)


# --------------------------------------------------------------------------- serving


def finished_table(row: Report) -> pd.DataFrame:
    """A Complete report's table, from the database."""
    stored = db.session.get(ReportResult, row.id)
    if stored is None:
        raise ReportNotFound(row.id)
    return results.unpack(stored.data)


def local_csv(row: Report) -> Path:
    """The report's CSV on this machine, re-created from the database if this machine lacks it."""
    path = report_path(settings()["REPORTS_DIR"], row.id)
    if not path.is_file():
        results.write_atomically(results.csv_bytes(finished_table(row)), path)
    return path
