"""Every change of state of a report and its shards: one function per transition.

Each transition is one conditional update (or insert) in a transaction of its own, matching
only the rows it may change, so that of two processes attempting the same transition exactly
one wins (`True`) and the other changes nothing (`False`). Nothing else writes `status`,
`owner` or `lease_expires_at`.

    transition         rows                      from                        to
    -----------------  ------------------------  --------------------------  ---------------------
    create_report      report                    -                           Queued
    claim_start        report                    Queued, free for caller     Queued, caller's
    plan_shards        report + new shards       Queued, caller's            Running, no owner;
                                                                             shards Queued
    claim_shard        shard                     Queued and free for caller, Running, caller's
                                                 or Running, lease run out
    complete_shard     shard (+ report count)    Running, caller's           Complete
    claim_assembly     report                    Running, free for caller    Running, caller's
    complete_report    report (+ its result)     Running, caller's           Complete
    fail_report        report + active shards    Queued or Running           Failed (a reason)
    release            report and shards         active, caller's            same state, nobody's,
                                                                             lease ends now
    send_again_soon    report or shards          Queued, nobody's            lease ends now
    take_over          one report or shard       swept state, lease run out  Queued, taker's
                                                 or owner dead               (or the broker's)
    renew              the caller's rows         active, caller's            lease pushed back

"Free for caller": nobody's, already the caller's, or its owner's lease ran out. A Running
report has no owner of its own while its shards run: they hold the leases. A sweep
(`jobs.leases`) takes over steps whose lease ran out, and sends the assembly of a report
whose shards are all done but that nobody assembles.

Invariants (checked by tests/jobcheck.py): Complete ⇔ no error and a stored result; Failed ⇔ a
short reason; a Running shard has an owner and a lease.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from flask import current_app
from sqlalchemy import Connection, and_, delete, func, insert, or_, select, update

from jobs.errors import QueueFull
from jobs.options import ReportRequest, options_json, scope_json
from jobs.retries import with_database_retries
from models import (
    ACTIVE_STATES,
    STEP_MODELS,
    TRIGGER_LOCK,
    JobStep,
    Report,
    ReportGroup,
    ReportResult,
    ReportShard,
    ReportStatus,
    ServiceLock,
    db,
    utcnow,
)

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- leases


def lease_deadline() -> datetime:
    """When a lease taken or renewed now runs out."""
    return utcnow() + timedelta(seconds=current_app.config["REPORT_LEASE_SECONDS"])


def queued_lease(owner: str | None) -> datetime:
    """A queued step's deadline: its owner's lease, or, when a broker holds it (no owner), the
    time after which a sweep sends it again."""
    seconds = current_app.config["REPORT_LEASE_SECONDS" if owner else "REPORT_REQUEUE_SECONDS"]
    return utcnow() + timedelta(seconds=seconds)


def free_for(model: type[JobStep], owner: str, now: datetime) -> Any:
    """A row `owner` may take at `now`: nobody's, already its own, or its owner's lease ran out."""
    return or_(model.owner.is_(None), model.owner == owner, model.lease_expires_at < now)


def execute_and_commit(statement) -> int:
    """Run one write in a transaction of its own; return the number of rows it changed."""
    changed = db.session.execute(statement).rowcount
    db.session.commit()
    return changed


def changed_one(statement, report_id: str) -> bool:
    """Run one conditional update (trying again when a lock was in the way): did it match?"""
    return with_database_retries(lambda: execute_and_commit(statement), report_id) == 1


# --------------------------------------------------------------------------- reports


def active_reports(conn: Connection) -> int:
    """Reports queued or running, counted on `conn`."""
    query = select(func.count()).select_from(Report).where(Report.status.in_(ACTIVE_STATES))
    return conn.execute(query).scalar()


def active_reports_of(conn: Connection, key_name: str) -> int:
    """Reports queued or running that the key named `key_name` asked for."""
    query = (
        select(func.count())
        .select_from(Report)
        .where(Report.status.in_(ACTIVE_STATES), Report.created_by == key_name)
    )
    return conn.execute(query).scalar()


def create_report(
    conn: Connection,
    report_id: str,
    request: ReportRequest,
    owner: str | None,
    capacity: int,
    per_key: int | None = None,
) -> None:
    """— → Queued, if fewer than `capacity` reports are active, and fewer than `per_key` of
    the asking key's (QueueFull otherwise), with its groups.

    On `conn`, in the caller's transaction, which starts with a write to the trigger lock row:
    two triggers count one after the other, never both below the limit at once.
    """
    conn.execute(
        update(ServiceLock)
        .where(ServiceLock.name == TRIGGER_LOCK)
        .values(uses=ServiceLock.uses + 1)
    )
    active = active_reports(conn)
    if active >= capacity:
        raise QueueFull(f"{active} reports are queued or running")
    refuse_beyond_key_limit(conn, request.created_by, per_key)
    conn.execute(
        insert(Report).values(
            id=report_id,
            status=ReportStatus.QUEUED,
            requested_as_of_us=request.as_of_us,
            options=options_json(request.options),
            created_at=utcnow(),
            owner=owner,
            lease_expires_at=queued_lease(owner),
            scope=scope_json(request.groups),
            created_by=request.created_by,
        )
    )
    for group in sorted(set(request.groups or ())):
        conn.execute(insert(ReportGroup).values(report_id=report_id, group_id=group))


def refuse_beyond_key_limit(conn: Connection, key_name: str | None, per_key: int | None) -> None:
    """QueueFull when the key already has `per_key` reports queued or running."""
    if key_name is None or per_key is None:
        return
    mine = active_reports_of(conn, key_name)
    if mine >= per_key:
        raise QueueFull(f"key {key_name!r} has {mine} reports queued or running")


def claim_start(report_id: str, owner: str) -> bool:
    """Queued → Queued, owned by `owner` for planning (an attempt counted)."""
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
    return changed_one(claim, report_id)


def plan_shards(
    report_id: str,
    owner: str,
    shard_owner: str | None,
    fixed: tuple[int | None, int],
    ranges: list[tuple[int, int]],
) -> bool:
    """Queued (owned by `owner`) → Running, with its shards Queued, in one transaction.

    `fixed` is the snapshot (`now`, load batch) every shard will read; `shard_owner` is the
    process that holds the queued shards (None: a broker holds them).
    """
    now_us, batch = fixed

    def plan() -> bool:
        db.session.add_all(
            ReportShard(
                report_id=report_id,
                shard=number,
                key_low=low,
                key_high=high,
                status=ReportStatus.QUEUED,
                owner=shard_owner,
                lease_expires_at=queued_lease(shard_owner),
            )
            for number, (low, high) in enumerate(ranges)
        )
        planned = db.session.execute(
            update(Report)
            .where(
                Report.id == report_id,
                Report.owner == owner,
                Report.status == ReportStatus.QUEUED,
            )
            .values(
                status=ReportStatus.RUNNING,
                as_of_us=now_us,
                batch=batch,
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

    return with_database_retries(plan, report_id)


def claim_assembly(report_id: str, owner: str) -> bool:
    """Running → Running, owned by `owner` while it assembles the report."""
    claim = (
        update(Report)
        .where(
            Report.id == report_id,
            Report.status == ReportStatus.RUNNING,
            free_for(Report, owner, utcnow()),
        )
        .values(owner=owner, lease_expires_at=lease_deadline())
    )
    return changed_one(claim, report_id)


def complete_report(report_id: str, owner: str, row_count: int, packed: bytes) -> bool:
    """Running (assembled by `owner`) → Complete, storing its table in the same transaction: a
    Complete report always has its result. Short: everything it writes is ready before."""

    def complete() -> bool:
        completed = db.session.execute(
            update(Report)
            .where(
                Report.id == report_id,
                Report.owner == owner,
                Report.status == ReportStatus.RUNNING,
            )
            .values(
                status=ReportStatus.COMPLETE,
                row_count=row_count,
                file_name=f"report_{report_id}.csv",
                finished_at=utcnow(),
                owner=None,
                lease_expires_at=None,
                error=None,
            )
        )
        if completed.rowcount != 1:
            db.session.rollback()
            return False
        db.session.execute(delete(ReportResult).where(ReportResult.report_id == report_id))
        db.session.execute(insert(ReportResult).values(report_id=report_id, data=packed))
        db.session.commit()
        return True

    return with_database_retries(complete, report_id)


def fail_report(report_id: str, reason: str) -> bool:
    """Queued or Running → Failed with `reason` (short, for the client), and its unfinished
    shards with it; False when it had already finished."""

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

    return with_database_retries(fail, report_id)


# --------------------------------------------------------------------------- shards


def claim_shard(report_id: str, shard: int, owner: str) -> bool:
    """Queued (free for `owner`), or Running whose lease ran out → Running, owned by `owner`
    (an attempt counted)."""
    now = utcnow()
    claimable = or_(
        and_(ReportShard.status == ReportStatus.QUEUED, free_for(ReportShard, owner, now)),
        and_(ReportShard.status == ReportStatus.RUNNING, ReportShard.lease_expires_at < now),
    )
    claim = (
        update(ReportShard)
        .where(*ReportShard.step_is(report_id, shard), claimable)
        .values(
            status=ReportStatus.RUNNING,
            owner=owner,
            lease_expires_at=lease_deadline(),
            attempts=ReportShard.attempts + 1,
            started_at=now,
        )
    )
    return changed_one(claim, report_id)


def complete_shard(report_id: str, shard: int, owner: str, packed: bytes, row_count: int) -> bool:
    """Running (owned by `owner`) → Complete with its result; the report counts it done once."""

    def complete() -> bool:
        stored = db.session.execute(
            update(ReportShard)
            .where(
                *ReportShard.step_is(report_id, shard),
                ReportShard.owner == owner,
                ReportShard.status == ReportStatus.RUNNING,
            )
            .values(
                status=ReportStatus.COMPLETE,
                result=packed,
                row_count=row_count,
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

    return with_database_retries(complete, report_id)


# --------------------------------------------------------------------------- any step


def release(report_id: str, owner: str) -> None:
    """Let go of a report's rows after a step stopped unexpectedly: they lose their owner and
    their lease ends now (this process no longer renews them), so the next sweep, in any
    process, queues them again and counts an attempt. Never left Running with a dead owner."""

    def expire() -> None:
        for model in STEP_MODELS:
            db.session.execute(
                update(model)
                .where(
                    model.report_key() == report_id,
                    model.owner == owner,
                    model.status.in_(ACTIVE_STATES),
                )
                .values(owner=None, lease_expires_at=utcnow())
            )
        db.session.commit()

    with_database_retries(expire, report_id)


def send_again_soon(report_id: str, shards: list[int] | None = None) -> None:
    """Mark queued steps the broker did not take (the report's start, or `shards`) for the
    next sweep: their lease runs out now. Only steps still queued with no owner."""
    if shards is None:
        model, match = Report, Report.step_is(report_id)
    else:
        model = ReportShard
        match = [ReportShard.report_id == report_id, ReportShard.shard.in_(shards)]
    expire = (
        update(model)
        .where(*match, model.status == ReportStatus.QUEUED, model.owner.is_(None))
        .values(lease_expires_at=utcnow())
    )
    with_database_retries(lambda: execute_and_commit(expire), report_id)


def renew(owner: str) -> None:
    """Push back the deadline of every active row `owner` holds."""
    deadline = lease_deadline()
    for model in STEP_MODELS:
        db.session.execute(
            update(model)
            .where(model.owner == owner, model.status.in_(ACTIVE_STATES))
            .values(lease_expires_at=deadline)
        )
    db.session.commit()


def expired_steps(model: type[JobStep], dead_owners: set[str]) -> list:
    """Rows of `model` in a swept state whose lease ran out or whose owner is dead: their
    (report_id, shard, owner, lease_expires_at), shard None for a report."""
    stale = or_(model.lease_expires_at < utcnow(), model.owner.in_(dead_owners))
    query = select(*model.step_columns(), model.owner, model.lease_expires_at).where(
        model.status.in_(model.SWEPT_STATES), stale
    )
    rows = db.session.execute(query).all()
    db.session.commit()
    return rows


def take_over(model: type[JobStep], row, new_owner: str | None) -> bool:
    """An expired step (a row of `expired_steps`) → Queued, held by `new_owner` (None: the
    broker). It matches only if nobody changed the row since it was read."""
    owner_was = model.owner.is_(None) if row.owner is None else model.owner == row.owner
    claim = (
        update(model)
        .where(
            *model.step_is(row.report_id, row.shard),
            model.lease_expires_at == row.lease_expires_at,
            owner_was,
            model.status.in_(ACTIVE_STATES),
        )
        .values(
            status=ReportStatus.QUEUED, owner=new_owner, lease_expires_at=queued_lease(new_owner)
        )
    )
    return execute_and_commit(claim) == 1


# --------------------------------------------------------------------------- reads


def fresh_report(report_id: str) -> Report | None:
    """The report row as the database has it now (not as this session last saw it)."""
    query = select(Report).where(Report.id == report_id)
    return db.session.execute(query.execution_options(populate_existing=True)).scalar_one_or_none()


def active_owners() -> set[str]:
    """The owners of active reports and shards."""
    owners: set[str] = set()
    for model in STEP_MODELS:
        owners.update(
            db.session.scalars(
                select(model.owner)
                .where(model.status.in_(ACTIVE_STATES), model.owner.is_not(None))
                .distinct()
            )
        )
    db.session.commit()
    return owners


def shards_complete(report_id: str) -> int:
    query = select(func.count()).where(
        ReportShard.report_id == report_id, ReportShard.status == ReportStatus.COMPLETE
    )
    done = db.session.scalar(query)
    db.session.commit()
    return int(done or 0)


def reports_waiting_for_assembly(grace_seconds: float) -> list[str]:
    """Running reports whose shards are all Complete, that nobody is assembling, and that
    started more than `grace_seconds` ago (the last shard's process assembles them first)."""
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
                Report.started_at < now - timedelta(seconds=grace_seconds),
            )
        )
    )
    db.session.commit()
    return ids
