"""Evaluation: after every committed load (and at start-up), bring incidents up to date and
turn them into alert events, exactly once each.

Incidents are computed before the write lock (loads, triggers and uploads go on meanwhile);
then one evaluation at a time writes (a write to the `alerts` service lock row starts its
transaction), after checking that no other evaluation wrote since it planned (else it computes
again, under the lock). Incidents, events and the evaluated batch commit together, so a
process that dies mid-way leaves the work to the next evaluation. An event's row has a unique
key (rule, store, incident start, event) and is inserted with insert-or-ignore: however many
processes evaluate, however often, each event exists once.

A rule announces an incident (`incident.opened`) once it has held at least `after` of
business downtime, and its end (`incident.resolved`) once it is resolved. Incidents resolved
before the rule existed, or before the previous evaluation's `now` (history loaded late, or
loaded before any evaluation), are not announced.
"""

from __future__ import annotations

import json
import logging
import secrets
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import pandas as pd
from flask import Flask, current_app
from sqlalchemy import Connection, delete, select, text, update

import report
from engine import timestamps
from jobs import deliveries, incidents, last_evidence, snapshot, store_rows
from jobs.last_evidence import Ends
from jobs.options import scope_of
from loading import writing
from loading.lock_waits import bounded_lock_wait
from models import (
    ALERTS_LOCK,
    AlertEvent,
    AlertRule,
    AlertState,
    ApiKey,
    BatchPolls,
    BatchStore,
    DataState,
    DeliveryStatus,
    ServiceLock,
    db,
    utcnow,
)

logger = logging.getLogger(__name__)

OPENED, RESOLVED = "incident.opened", "incident.resolved"


@dataclass(frozen=True)
class Evaluation:
    """What one evaluation did."""

    batch: int
    now_us: int | None
    stores: int  # stores evaluated: read, computed from memory, or carried forward
    events: int
    carried: int = 0  # of those, carried forward (`incidents.carry_forward`)
    remembered: int = 0  # of those, computed from memory (`incidents.from_memory`)


def evaluate(clock: deliveries.Clock = utcnow) -> Evaluation:
    """Evaluate the stores that may have changed since the last evaluation; commit."""
    try:
        return _evaluate(clock)
    except BaseException:
        db.session.rollback()
        raise


@dataclass(frozen=True)
class Computed:
    """Incidents computed from one evaluated state, before they are written."""

    planned_from: tuple[int, int | None]  # the alert state (evaluated batch, now) read first
    fixed: snapshot.Snapshot
    readings: list[incidents.Reading]  # the stores read
    carried: np.ndarray  # the stores whose open incident was carried forward without reading
    stale_readings: list[incidents.Reading]  # what rules with `stale_after` read
    since: pd.Series  # where each store's history was read from
    by_stale: dict[int | None, pd.DataFrame]  # the incidents per `stale_after` (None: none)
    known_evidenced: np.ndarray  # `evidenced_stores` as read first
    evidenced: np.ndarray  # the stores read with a poll inside business hours
    remembered: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    remembered_open: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    ends: Ends | None = None  # how the stores' timelines end as of `fixed` (`last_evidence`)
    reshaped: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


def _evaluate(clock: deliveries.Clock) -> Evaluation:
    with db.engine.connect() as conn:
        planned_from = alert_state(conn)
    planned = compute(planned_from)  # no lock held: the long part
    session = db.session
    session.execute(
        update(ServiceLock).where(ServiceLock.name == ALERTS_LOCK).values(uses=ServiceLock.uses + 1)
    )
    conn = session.connection()
    state = session.get(AlertState, 1, populate_existing=True)
    if (state.evaluated_batch, state.now_us) != planned.planned_from:
        planned = compute((state.evaluated_batch, state.now_us))  # another one wrote meanwhile
    fixed, readings = planned.fixed, planned.readings
    if fixed.now_us is None:  # loads without polls: no incidents, nothing left to evaluate
        state.evaluated_batch = max(state.evaluated_batch, fixed.batch)
        session.commit()
        return Evaluation(fixed.batch, None, 0, 0)
    replaced_open = np.union1d(
        np.union1d(planned.carried, planned.remembered_open), planned.reshaped
    )
    incidents.save_incidents(
        conn, planned.by_stale[None], planned.since, replaced_open, planned.planned_from[1]
    )
    read = np.concatenate(
        [reading.store_keys for reading in readings] + [planned.remembered]
    ).astype(np.int64)
    incidents.save_evidenced(conn, planned.known_evidenced, read, planned.evidenced)
    bound_us = fixed.now_us if state.now_us is None else state.now_us
    events = fire_rules(conn, fixed, planned.stale_readings, planned.by_stale, bound_us, clock())
    store_count = int(read.size + planned.carried.size)
    state.evaluated_batch, state.now_us = fixed.batch, fixed.now_us
    ends_at = ends_key(conn, fixed.batch, fixed.now_us)
    session.commit()
    if planned.ends is not None:
        last_evidence.keep(*ends_at, planned.ends)
    logger.info(
        "alerts: batch %d evaluated (%d stores, %d of them carried forward, %d computed from "
        "memory, %d new events)",
        fixed.batch,
        store_count,
        planned.carried.size,
        planned.remembered.size,
        events,
    )
    return Evaluation(
        fixed.batch,
        fixed.now_us,
        store_count,
        events,
        int(planned.carried.size),
        int(planned.remembered.size),
    )


def evaluate_and_send(app: Flask | None = None, send: bool = True) -> Evaluation | None:
    """Evaluate, then (with `send`) have the new events sent; an error is logged, never
    raised (the load that called it has committed; the next evaluation covers its stores).

    A command leaves the sending to the serving processes (their lease keepers send what is
    due), so it does not wait on receivers."""
    app = app or current_app
    try:
        result = evaluate(app.extensions.get("alert_clock", utcnow))
    except Exception:
        logger.exception("alerts: evaluation failed; the next one covers its stores")
        return None
    if send:
        deliveries.kick(app)
    forget_evaluated_batches(result.batch)
    return result


FORGET_LOCK_WAIT_MS = 1000


def forget_evaluated_batches(evaluated_batch: int) -> None:
    """Drop the stores and poll summaries that batches up to `evaluated_batch` (committed as
    evaluated) wrote (`batch_stores`, `batch_polls`): an evaluation reads only those of batches
    after the one evaluated last, so they hold what is not yet evaluated, not two rows per
    store per load forever. Done after the events are on their way, in a transaction of its
    own (neither a load nor an evaluation waits on it). It waits at most FORGET_LOCK_WAIT_MS
    for a writer's lock, so that a long load never holds up the evaluation thread (nor a
    shutdown); a failure is logged, and the next evaluation drops them."""
    try:
        with (
            db.engine.connect() as conn,
            bounded_lock_wait(conn, FORGET_LOCK_WAIT_MS),
            conn.begin(),
        ):
            for table in (BatchStore.__table__, BatchPolls.__table__):
                conn.execute(delete(table).where(table.c.batch <= evaluated_batch))
    except Exception:
        logger.exception("alerts: could not drop what evaluated batches wrote; next time")


def unevaluated_loads() -> int:
    """How many committed loads no evaluation has covered yet: those of `flask load-data`,
    which leaves evaluating to the serving processes, or of a process that died before it."""
    evaluated = db.session.scalar(select(AlertState.evaluated_batch).where(AlertState.id == 1))
    committed = db.session.scalar(select(DataState.last_batch).where(DataState.id == 1))
    return max(0, (committed or 0) - (evaluated or 0))


def alert_state(conn: Connection) -> tuple[int, int | None]:
    row = conn.execute(select(AlertState.evaluated_batch, AlertState.now_us)).one()
    return int(row.evaluated_batch), None if row.now_us is None else int(row.now_us)


def compute(planned_from: tuple[int, int | None]) -> Computed:
    """Incidents of the stores that may have changed since `planned_from`'s batch, as of the
    latest committed load, and again for each `stale_after` the rules use."""
    fixed = snapshot.fix_snapshot(db.engine, None)
    none = np.zeros(0, dtype=np.int64)
    if fixed.now_us is None:
        empty = {None: incidents.empty_frame()}
        return Computed(planned_from, fixed, [], none, [], pd.Series(), empty, none, none)
    kept = store_rows.current(db.engine, fixed)
    with db.engine.connect() as conn:
        evidenced = incidents.evidenced_stores(conn)
        ends = None if kept is None else kept_ends(conn, planned_from)
        known = incidents.Known(planned_from[1], evidenced, kept, ends)
        plan = incidents.plan_readings(conn, planned_from[0], fixed.batch, fixed.now_us, known)
        stale_values = conn.scalars(
            select(AlertRule.stale_after_us).where(AlertRule.stale_after_us.is_not(None)).distinct()
        ).all()
    found = incidents.compute_readings(
        db.engine, fixed, plan.readings, report.ReportOptions(), kept
    )
    parts = [found]
    if kept is not None and plan.remembered.store_keys.size:
        parts.append(incidents.from_memory(plan.remembered, kept, fixed.now_us))
    frame = pd.concat([part.frame for part in parts], ignore_index=True)
    if not plan.carried.empty:  # only with a previous `now` and the rows kept (`carriable`)
        carried = incidents.carry_forward(plan.carried, kept, planned_from[1], fixed.now_us)
        frame = pd.concat([frame, carried], ignore_index=True)
    by_stale: dict[int | None, pd.DataFrame] = {None: frame}
    for stale_us in sorted(stale_values):
        by_stale[stale_us] = stale_incidents(fixed, plan.with_carried, stale_us, kept)
    return Computed(
        planned_from,
        fixed,
        plan.readings,
        carried=plan.carried["store_key"].to_numpy(np.int64),
        stale_readings=plan.with_carried,
        since=pd.concat([part.since for part in parts]).sort_index(),
        by_stale=by_stale,
        known_evidenced=evidenced,
        evidenced=np.unique(np.concatenate([part.evidenced for part in parts])),
        remembered=plan.remembered.store_keys,
        remembered_open=plan.remembered.open_keys,
        ends=None if kept is None else ends_after(ends, parts, plan.unread),
        reshaped=plan.reshaped,
    )


def ends_after(before: Ends | None, parts: list[incidents.Found], unread: incidents.Unread) -> Ends:
    """How the stores' timelines end after the evaluation: as found for the stores computed;
    for a store with one new poll that was not computed, as before but with that poll as its
    latest evidence when it is evidence for it (`last_evidence.Ends.advanced`; a store not
    kept whose poll is inside business hours and active is kept from now on: it has no open
    incident); stores that got several new polls and were not computed are no longer kept."""
    computed = np.concatenate([part.since.index.to_numpy(np.int64) for part in parts])
    before = before or Ends.empty()
    polls = unread.polls
    starting = unread.inside & polls.active & ~np.isin(polls.store, before.store)
    count = int(starting.sum())
    first_known = Ends(
        polls.store[starting].astype(np.int64),
        np.ones(count, dtype=bool),
        polls.ts_us[starting],
        np.ones(count, dtype=bool),
        np.full(count, last_evidence.NONE, dtype=np.int64),
        np.full(count, last_evidence.NONE, dtype=np.int64),
    )
    fresh = last_evidence.concat([part.ends for part in parts] + [first_known])
    return before.advanced(np.union1d(computed, unread.several), fresh, polls, unread.inside)


def evidence_state(conn: Connection, batch: int, now_us: int | None) -> last_evidence.State:
    """An alert state as `last_evidence` keeps it: with when its batch started (a database
    restored from a backup and loaded again reaches the same batch with other polls)."""
    started = conn.execute(
        text("SELECT started_at FROM load_batches WHERE id = :batch"), {"batch": batch}
    ).scalar()
    return batch, -1 if now_us is None else now_us, str(started)


def ends_key(conn: Connection, batch: int, now_us: int | None) -> tuple[str, last_evidence.State]:
    """The database and alert state that `last_evidence` keeps the stores' ends for."""
    return store_rows.database_identity(conn), evidence_state(conn, batch, now_us)


def kept_ends(conn: Connection, planned_from: tuple[int, int | None]) -> Ends | None:
    """How the stores' timelines ended as of `planned_from`, if this process keeps that."""
    return last_evidence.kept(*ends_key(conn, *planned_from))


def stale_incidents(
    fixed: snapshot.Snapshot,
    readings: list[incidents.Reading],
    stale_us: int,
    kept: store_rows.StoreRows | None = None,
) -> pd.DataFrame:
    """The readings' incidents for rules with `stale_after` (unknown time ends an outage)."""
    options = report.ReportOptions(stale_after_us=stale_us)
    return incidents.compute_readings(db.engine, fixed, readings, options, kept).frame


def behind() -> bool:
    return unevaluated_loads() > 0


def evaluate_soon(app: Flask | None = None) -> None:
    """Have the committed loads evaluated (and their events sent) by this app's evaluator."""
    (app or current_app).extensions["alert_evaluator"].kick()


class InlineEvaluation:
    """Evaluates at once in the caller's thread (tests: the upload's answer follows it)."""

    def __init__(self, app: Flask) -> None:
        self.app = app

    def kick(self) -> None:
        with self.app.app_context():
            evaluate_and_send(self.app)

    def shutdown(self) -> None:
        pass


# --------------------------------------------------------------------------- rules → events


def fire_rules(
    conn: Connection,
    fixed: snapshot.Snapshot,
    readings: list[incidents.Reading],
    by_stale: dict[int | None, pd.DataFrame],
    bound_us: int,
    now: datetime,
) -> int:
    """Insert the events every rule owes for the evaluated stores; return how many are new.
    `by_stale` holds the incidents per `stale_after` (those of a rule added since are computed
    here)."""
    rules = active_rules()
    by_scope: dict[tuple[str, ...], np.ndarray] = {}
    created = 0
    for rule in rules:
        if rule.stale_after_us not in by_stale:  # a rule added since the incidents were computed
            by_stale[rule.stale_after_us] = stale_incidents(fixed, readings, rule.stale_after_us)
        frame = in_scope(by_stale[rule.stale_after_us], scope_of(rule), fixed, by_scope)
        since = bound_us if rule.created_now_us is None else max(bound_us, rule.created_now_us)
        created += fire_rule(conn, rule, frame, since, fixed, now)
    return created


def active_rules() -> list[AlertRule]:
    """The rules to fire: all but those of keys revoked since (their owner is gone)."""
    revoked = select(ApiKey.name).where(ApiKey.revoked_at.is_not(None))
    query = select(AlertRule).where(
        AlertRule.created_by.is_(None) | AlertRule.created_by.not_in(revoked)
    )
    return list(db.session.scalars(query.order_by(AlertRule.id)))


def in_scope(
    frame: pd.DataFrame,
    groups: tuple[str, ...] | None,
    fixed: snapshot.Snapshot,
    known: dict[tuple[str, ...], np.ndarray],
) -> pd.DataFrame:
    """The incidents of the stores a rule watches: those of its groups as of the evaluated
    batch, read as a scoped report reads them (`known` keeps each scope's stores once)."""
    if groups is None:
        return frame
    if groups not in known:
        known[groups] = snapshot.scope_store_keys(db.engine, fixed.batch, groups)
    return frame[frame["store_key"].isin(known[groups])]


def owed(frame: pd.DataFrame, after_us: int, since_us: int) -> pd.DataFrame:
    """Incidents a rule announces: at least `after_us` of business downtime, and open or
    resolved after `since_us`."""
    recent = frame["is_open"] | (frame["resolved_us"] > since_us)
    return frame[(frame["business_us"] >= after_us) & recent]


def fire_rule(
    conn: Connection,
    rule: AlertRule,
    frame: pd.DataFrame,
    since_us: int,
    fixed: snapshot.Snapshot,
    now: datetime,
) -> int:
    """Insert-or-ignore the rule's events: every opened one before any resolved one, so a
    store's events are numbered in the order they happened. Events already made are skipped
    first (the unique key still decides when two processes make one at once)."""
    due = owed(frame, rule.after_us, since_us)
    if due.empty:
        return 0
    made = existing_events(conn, rule.id, due["store_key"].to_numpy(np.int64))
    created = 0
    for event, incidents_due in ((OPENED, due), (RESOLVED, due[~due["is_open"]])):
        key = pd.MultiIndex.from_arrays([incidents_due["store_key"], incidents_due["started_us"]])
        fresh = incidents_due[~key.isin(made.get(event, []))]
        if not fresh.empty:
            rows = event_rows(conn, rule, fresh, event, fixed, now)
            created += writing.insert_rows(
                conn, AlertEvent.__tablename__, rows, writing.insert_ignoring(conn)
            )
    return created


def existing_events(
    conn: Connection, rule_id: int, store_keys: np.ndarray
) -> dict[str, list[tuple[int, int]]]:
    """The (store, incident start) pairs the rule already has an event for, per event."""
    sql = (
        "SELECT store_key, started_us, CASE WHEN event = :resolved THEN 1 ELSE 0 END AS resolved "
        "FROM alert_events WHERE rule_id = :rule AND store_key IN :keys"
    )
    params = {"rule": rule_id, "resolved": RESOLVED}
    columns = ["store_key", "started_us", "resolved"]
    made: dict[str, list[tuple[int, int]]] = {}
    for chunk in incidents.key_chunks(np.unique(store_keys)):
        rows = snapshot.integer_table(conn, sql, {**params, "keys": chunk}, columns)
        for store_key, started_us, resolved in rows.tolist():
            made.setdefault(RESOLVED if resolved else OPENED, []).append((store_key, started_us))
    return made


def instants(micros: pd.Series) -> np.ndarray:
    """ISO-8601 UTC texts of epoch µs, as `timestamps.format_instant` writes them."""
    values = micros.to_numpy(np.int64).astype("datetime64[us]")
    return np.char.add(np.datetime_as_string(values, unit="us"), "Z")


def event_rows(
    conn: Connection,
    rule: AlertRule,
    due: pd.DataFrame,
    event: str,
    fixed: snapshot.Snapshot,
    now: datetime,
) -> pd.DataFrame:
    """Event rows with the exact bodies they will send (retries send the same bytes). The
    values alike in every row are converted once, as their columns convert them."""
    event_ids = [secrets.token_hex(16) for _ in range(len(due))]
    bodies = event_bodies(conn, due, event, event_ids, timestamps.format_instant(fixed.now_us))
    same = {
        "rule_id": rule.id,
        "event": event,
        "created_at": now,
        "status": DeliveryStatus.PENDING,
        "attempts": 0,
        "next_attempt_at": now,
    }
    rows = pd.DataFrame(
        {
            "event_id": event_ids,
            "store_key": due["store_key"].to_numpy(np.int64),
            "started_us": due["started_us"].to_numpy(np.int64),
            "body": bodies,
        }
    )
    return rows.assign(**{name: bound(conn, name, value) for name, value in same.items()})


def event_bodies(
    conn: Connection, due: pd.DataFrame, event: str, event_ids: list[str], now_text: str
) -> list[str]:
    """The JSON bodies, byte for byte as `json.dumps(body, separators=(",", ":"))` writes
    them, filled into one template (thousands of events: no dict and encoder per event)."""
    store_ids = store_rows.external_ids(conn.engine, due["store_key"].to_numpy(np.int64))
    started = instants(due["started_us"]).tolist()
    resolved = [f'"{text}"' for text in instants(due["resolved_us"]).tolist()]
    ends = np.where(due["is_open"].to_numpy(bool), "null", np.array(resolved, dtype=object))
    seconds = (due["business_us"].to_numpy(np.int64) / 1_000_000).tolist()
    template = (
        '{"id":"%s","event":' + json.dumps(event) + ',"store_id":%s,"started_at":"%s",'
        '"resolved_at":%s,"business_downtime_seconds":%r,"now":' + json.dumps(now_text) + "}"
    )
    return [
        template % (event_id, json.dumps(store_id), start, end, second)
        for event_id, store_id, start, end, second in zip(
            event_ids, store_ids, started, ends.tolist(), seconds, strict=True
        )
    ]


def bound(conn: Connection, column: str, value: object) -> object:
    """`value` as the column's type sends it to `conn`'s database."""
    column_type = AlertEvent.__table__.c[column].type.dialect_impl(conn.dialect)
    to_db = column_type.bind_processor(conn.dialect)
    return value if to_db is None else to_db(value)
