"""Incidents of stores, as of the latest committed poll, kept in the `incidents` table.

The engine (`report.find_incidents`) computes them from the same snapshot reads a report
makes. An evaluation reads only the stores that may have changed (those a load wrote rows for,
and those with an open incident, whose downtime grows as `now` moves) and only the part of
their history that may have changed (`plan_readings`). A store whose read history begins inside
an outage is read again further back (doubling the span, at least the week) until the outage's
start is known, so a stored incident is always exact; incidents that begin before where a store
was read from are left as stored. A store whose first poll inside business hours arrives is read
again from its first poll: its evidence was all its polls until then (docs/spec.md). A store
whose new polls, after the previous `now`, are all no evidence or of the status it had then, is
not read at all when its evidence cannot change kind (`unaffected_by_new_polls`); if it had an
open incident, that incident is carried forward without reading: it only grows by the business
time since the previous `now` (`carry_forward`), as it does for a store that got no poll. A
store whose one new poll does change it (but is not its first inside business hours) is
computed from the polls the process keeps of how its timeline ended (`last_evidence`,
`remembered_polls`), when the process evaluated the previous state itself. What each load
sent per store (`batch_polls`) tells an evaluation what the new polls are, without reading
them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sqlalchemy import Connection, Engine, text

import report
from jobs import last_evidence, snapshot
from jobs.store_rows import StoreRows
from loading import writing
from models import EvidencedStore, Incident

logger = logging.getLogger(__name__)

READ_BACK_US = snapshot.WEEK_US
HOUR_US = 3_600_000_000
AGE_FACTOR = 8  # open incidents up to 8x apart in age share a reading
KEYS_PER_STATEMENT = 500
MAX_LISTED_KEYS = 5000  # far below SQLite's limit of bound values (32,766)
INCIDENT_COLUMNS = [
    "store_key",
    "started_us",
    "first_poll_us",
    "resolved_us",
    "business_us",
    "is_open",
    "down_now",
]


@dataclass(frozen=True)
class Reading:
    """Stores to evaluate, and from when their polls are read (older ones are unchanged)."""

    store_keys: np.ndarray
    since_us: int


@dataclass(frozen=True)
class Known:
    """What an evaluation knows of the stores before it reads them: the previous `now`, the
    stores with a poll inside business hours (`evidenced_stores`), and every store's hours,
    zone and closures. Without all three, every store that got polls is read. With `ends`
    (how the stores' timelines ended at the previous `now`, `last_evidence`), a store that got
    one new poll is computed from memory (`Remembered`)."""

    previous_now_us: int | None = None
    evidenced: np.ndarray | None = None
    kept: StoreRows | None = None
    ends: last_evidence.Ends | None = None


@dataclass(frozen=True)
class Remembered:
    """Stores computed from memory instead of read (`remembered`): the polls that give them
    the timeline their polls give from before their open incident on, their open incident's
    store (those whose stored open incident is replaced) and the earliest new poll."""

    polls: report.Polls
    store_keys: np.ndarray
    open_keys: np.ndarray
    first_new_us: int

    @classmethod
    def none(cls) -> Remembered:
        none = np.zeros(0, dtype=np.int64)
        return cls(report.Polls.of(), none, none, 0)


@dataclass(frozen=True)
class Unread:
    """Stores with new polls that an evaluation neither reads nor computes from memory (their
    polls change nothing): the one new poll of each that got one, and whether it is inside
    business hours; those that got several."""

    polls: report.Polls
    inside: np.ndarray
    several: np.ndarray

    @classmethod
    def none(cls) -> Unread:
        return cls(report.Polls.of(), np.zeros(0, dtype=bool), np.zeros(0, dtype=np.int64))


@dataclass(frozen=True)
class Plan:
    """What an evaluation reads: `readings` for its incidents, and `carried`, the open
    incidents it carries forward to `now` without reading their stores (`carry_forward`).
    `with_carried` also reads the carried stores (as before carrying existed): the readings of
    the rules with `stale_after`, whose incidents are not kept."""

    readings: list[Reading]
    carried: pd.DataFrame
    with_carried: list[Reading]
    remembered: Remembered = field(default_factory=lambda: Remembered.none())
    unread: Unread = field(default_factory=lambda: Unread.none())
    reshaped: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


def plan_readings(
    conn: Connection, after_batch: int, batch: int, now_us: int, known: Known | None = None
) -> Plan:
    """What an evaluation of batches (after_batch, batch] reads, store by store.

    - Stores whose hours, zone or closures changed: the week before `now` (and further back
      where an incident reaches past it), as everything about them may have changed; their
      stored open incident is replaced, however old (`reshaped`: it may be gone).
    - Stores with an open incident that got polls: from its start, in readings of stores whose
      incidents are of similar age. Those that got none, or none that changes their incidents
      (`unaffected_by_new_polls`), are carried forward (`carriable`).
    - Other stores that got polls: from the batches' earliest new poll. Older incidents of
      theirs cannot change, except one that still reaches it, which is read further back.
      Those the new polls cannot change at all are left out (`unaffected_by_new_polls`).
    """
    known = known or Known()
    none = np.zeros(0, dtype=np.int64)
    written = keys_of(conn, BATCH_STORES, {"after": after_batch, "batch": batch})
    reshaped = reshaped_stores(conn, after_batch, batch, known)
    open_rows = open_incidents(conn)
    first_new = conn.execute(
        text("SELECT MIN(min_ts_us) FROM load_batches WHERE id > :after AND id <= :batch"),
        {"after": after_batch, "batch": batch},
    ).scalar()
    week_ago = now_us - READ_BACK_US
    starts = open_rows[~open_rows["store_key"].isin(reshaped)].groupby("store_key")["started_us"]
    starts = np.minimum(starts.min(), now_us)
    if first_new is not None:
        starts = np.minimum(starts, int(first_new))
    open_keys = starts.index.to_numpy(np.int64)
    by_age = readings_by_age(open_keys, starts.to_numpy(np.int64), now_us)
    readings = [Reading(reshaped, week_ago)]
    polled = np.setdiff1d(written, reshaped)
    polled_open = np.intersect1d(polled, open_rows["store_key"])
    polled = np.setdiff1d(polled, polled_open)
    still_down, unchanged = none, none
    remembered, unread = Remembered.none(), Unread.none()
    if first_new is not None:
        new = new_polls(conn, after_batch, batch, (int(first_new), now_us), known.previous_now_us)
        unchanged = unaffected_by_new_polls(conn, polled, batch, new, known, down=False)
        still_down = unaffected_by_new_polls(conn, polled_open, batch, new, known, down=True)
        polled = np.setdiff1d(polled, unchanged)
        readings.append(Reading(polled, min(int(first_new), now_us)))
        changing = np.union1d(polled, np.setdiff1d(polled_open, still_down))
        remembered = remembered_polls(changing, open_rows, new, known)
        unread = unread_polls(np.union1d(unchanged, still_down), new, known)
    changed = np.union1d(np.setdiff1d(written, still_down), reshaped)
    carried = carriable(open_rows, changed, now_us, known)
    read_open = ~starts.index.isin(carried["store_key"]) & ~starts.index.isin(remembered.open_keys)
    kept_open = readings_by_age(open_keys[read_open], starts.to_numpy(np.int64)[read_open], now_us)
    to_read = [without(reading, remembered.store_keys) for reading in readings + kept_open]
    return Plan(
        [reading for reading in to_read if reading.store_keys.size],
        carried,
        [r for r in readings + by_age if r.store_keys.size],
        remembered,
        unread,
        reshaped,
    )


def without(reading: Reading, store_keys: np.ndarray) -> Reading:
    return Reading(np.setdiff1d(reading.store_keys, store_keys), reading.since_us)


def remembered_polls(
    changing: np.ndarray, open_rows: pd.DataFrame, new: NewPolls, known: Known
) -> Remembered:
    """The stores among `changing` (polled stores whose new polls change their incidents) that
    are computed from memory: one new poll, every new poll after the previous `now`, evidence
    of the same kind (`report.TimelineEnds.inside`) before and after it, and how their timeline
    ended kept (`known.ends`) and consistent with the stored open incident, if any
    (`last_evidence.timeline_polls`)."""
    ends = known.ends
    if ends is None or new.per_store is None or known.evidenced is None or known.kept is None:
        return Remembered.none()
    summary = new.per_store[np.isin(new.per_store[:, 0], changing) & (new.per_store[:, 1] == 1)]
    summary = summary[np.argsort(summary[:, 0])]
    kept = ends.of(summary[:, 0])
    summary = summary[np.isin(summary[:, 0], kept.store)]  # both sorted by store
    # A store's evidence stays of its kind: as `evidenced_stores` says, and a store without a
    # poll inside business hours gets none (its new poll is outside them).
    same_kind = kept.inside == np.isin(kept.store, known.evidenced)
    same_kind[~kept.inside] &= ~in_kept_hours(known.kept, one_poll_each(summary[~kept.inside]))
    kept, summary = kept.rows(same_kind), summary[same_kind]
    open_first = open_rows.drop_duplicates("store_key", keep=False).set_index("store_key")
    stored_first = open_first["first_poll_us"].reindex(kept.store).fillna(last_evidence.NONE)
    opened = kept.open_first_us != last_evidence.NONE
    usable = np.where(
        opened,
        (stored_first.to_numpy(np.int64) == kept.open_first_us) & ~kept.last_active,
        kept.last_active & ~np.isin(kept.store, open_rows["store_key"]),
    )
    kept, summary = kept.rows(usable), summary[usable]
    polls = last_evidence.timeline_polls(kept, one_poll_each(summary))
    return Remembered(polls, kept.store, kept.store[opened[usable]], new.first_new_us)


def one_poll_each(summary: np.ndarray) -> report.Polls:
    """The new poll of each store of `summary` (rows of `NewPolls.per_store` of one poll)."""
    return report.Polls.of(summary[:, 0], summary[:, 2], summary[:, 3].astype(bool))


def in_kept_hours(kept: StoreRows, polls: report.Polls) -> np.ndarray:
    """Whether each poll is inside its store's business hours minus closures."""
    if not polls.store.size:
        return np.zeros(0, dtype=bool)
    return report.in_business_hours(kept.inputs(polls.store), polls.store, polls.ts_us)


def unread_polls(unread: np.ndarray, new: NewPolls, known: Known) -> Unread:
    """The new polls of the stores that are not read (`Unread`), where known one by one (every
    new poll after the previous `now`: each store's one new poll is its latest)."""
    if new.per_store is None or known.kept is None or not unread.size:
        return Unread(report.Polls.of(), np.zeros(0, dtype=bool), unread)
    summary = new.per_store[np.isin(new.per_store[:, 0], unread)]
    one = summary[summary[:, 1] == 1]
    polls = one_poll_each(one)
    return Unread(polls, in_kept_hours(known.kept, polls), np.setdiff1d(unread, one[:, 0]))


def open_incidents(conn: Connection) -> pd.DataFrame:
    """The open incidents as stored: store, start, first poll and business time so far."""
    columns = ["store_key", "started_us", "first_poll_us", "business_us"]
    rows = snapshot.integer_table(conn, OPEN_ROWS, {"yes": True}, columns)
    return pd.DataFrame(rows, columns=columns)


@dataclass(frozen=True)
class NewPolls:
    """What the evaluated batches sent for polls (`models.BatchPolls`), per store summed over
    them: columns store_key, polls, first_ts_us, least_active, most_active; the earliest new
    poll, and `now`. `per_store` is None, and every polled store is read, when it does not say
    what is stored: when some new poll is not after the previous `now` (it may repeat a stored
    one), or some batch with polls has no rows (it was loaded before the table existed)."""

    per_store: np.ndarray | None
    first_new_us: int
    now_us: int


def new_polls(
    conn: Connection,
    after_batch: int,
    batch: int,
    new: tuple[int, int],
    previous_now_us: int | None,
) -> NewPolls:
    """The summary of the polls of batches (after_batch, batch] (`NewPolls`); `new`: the
    earliest new poll, and `now`."""
    first_new_us, now_us = new
    params = {"after": after_batch, "batch": batch}
    per_store = None
    all_later = previous_now_us is not None and first_new_us > previous_now_us
    if all_later and not conn.execute(text(UNSUMMARIZED_BATCHES), params).scalar():
        per_store = snapshot.integer_table(conn, NEW_POLLS, params, NEW_POLL_COLUMNS)
    return NewPolls(per_store, first_new_us, now_us)


def carriable(
    open_rows: pd.DataFrame, changed: np.ndarray, now_us: int, known: Known
) -> pd.DataFrame:
    """The open incidents that need no reading: those of stores with one open incident whose
    hours, zone and closures are unchanged and which got no poll, or none that changes their
    incidents (not in `changed`). A store's status at the previous `now` was inactive and
    stays so up to `now`: only its business time grows, by that of (previous `now`, `now`].
    Needs that `now` and every store's rows in memory; else none."""
    previous = known.previous_now_us
    if previous is None or known.kept is None or now_us < previous:
        return open_rows.iloc[0:0]
    single = ~open_rows["store_key"].duplicated(keep=False)
    return open_rows[single & ~open_rows["store_key"].isin(changed)]


def reshaped_stores(conn: Connection, after_batch: int, batch: int, known: Known) -> np.ndarray:
    """Stores whose hours, zone or closures batches (after_batch, batch] changed. None when the
    kept rows are of a version no later than `after_batch` (those tables hold no row added or
    retired since), else read (a scan of each table)."""
    if known.kept is not None and known.kept.version.last_change <= after_batch:
        return np.zeros(0, dtype=np.int64)
    params = {"after": after_batch, "batch": batch}
    return np.unique(np.concatenate([keys_of(conn, query, params) for query in CHANGED_STORE_ROWS]))


def readings_by_age(store_keys: np.ndarray, starts: np.ndarray, now_us: int) -> list[Reading]:
    """Stores with open incidents, read from their incident's start: stores whose starts lie
    within a factor AGE_FACTOR of each other (in hours before `now`) share a reading, so a store
    down for a week does not make the stores down for an hour read the week too."""
    hours = np.maximum(now_us - starts, HOUR_US) / HOUR_US
    buckets = np.floor(np.log(hours) / np.log(AGE_FACTOR)).astype(np.int64)
    return [
        Reading(store_keys[buckets == bucket], int(starts[buckets == bucket].min()))
        for bucket in np.unique(buckets)
    ]


def unaffected_by_new_polls(
    conn: Connection,
    store_keys: np.ndarray,
    batch: int,
    new: NewPolls,
    known: Known,
    down: bool,
) -> np.ndarray:
    """Stores whose new polls change none of their incidents (but an open one's growth).

    `down`: the stores have an open incident (their status at the previous `now` was
    inactive), else none (active, or no poll). When every new poll is after that `now`, a new
    poll changes nothing if it is no evidence (outside business hours, while the store has a
    poll inside them: `known.evidenced`) or has that same status: the timeline keeps its
    status from the previous `now` on. A store without a poll inside business hours has all
    its polls as evidence until one comes inside them, which changes every incident of it
    (docs/spec.md). What the new polls are comes from their summary (`new`); only the polls of
    stores that got several, of which some may be inside business hours, are read.
    """
    evidenced, kept = known.evidenced, known.kept
    if evidenced is None or kept is None or new.per_store is None:  # read every polled store
        return np.zeros(0, dtype=np.int64)
    # Every new poll is after the previous `now`, so the batches' polls repeat no older one:
    # one poll sent is the poll stored, and alike statuses sent are those stored.
    same = 0 if down else 1  # the status at the previous `now`
    summary = new.per_store[np.isin(new.per_store[:, 0], store_keys)]
    uniform = (summary[:, 3] == same) & (summary[:, 4] == same)
    has_evidence = np.isin(summary[:, 0], evidenced)
    settled = summary[uniform & has_evidence, 0]
    # Alike, but maybe a first poll inside business hours; or mixed, maybe all outside them.
    unsure = summary[uniform != has_evidence]
    if not unsure.size:
        return settled
    polls = snapshot.concat_polls(
        [
            one_poll_each(unsure[unsure[:, 1] == 1]),
            snapshot.polls_in_span(
                conn, batch, unsure[unsure[:, 1] > 1, 0], new.first_new_us, new.now_us + 1
            ),
        ]
    )
    unsure_keys = unsure[:, 0]
    inside = in_kept_hours(kept, polls)
    other = polls.active != bool(same)
    changing = (inside & other) | (~np.isin(polls.store, evidenced) & (inside | other))
    return np.union1d(settled, np.setdiff1d(unsure_keys, polls.store[changing])).astype(np.int64)


NEW_POLL_COLUMNS = ["store_key", "polls", "first_ts_us", "least_active", "most_active"]
NEW_POLLS = (
    "SELECT store_key, SUM(polls) AS polls, MIN(first_ts_us) AS first_ts_us, "
    "MIN(least_active) AS least_active, MAX(most_active) AS most_active FROM batch_polls "
    "WHERE batch > :after AND batch <= :batch GROUP BY store_key"
)
UNSUMMARIZED_BATCHES = (
    "SELECT COUNT(*) FROM load_batches l WHERE l.id > :after AND l.id <= :batch "
    "AND l.min_ts_us IS NOT NULL AND NOT EXISTS (SELECT 1 FROM batch_polls b WHERE b.batch = l.id)"
)


def key_chunks(store_keys: np.ndarray) -> list[np.ndarray]:
    return [
        store_keys[low : low + KEYS_PER_STATEMENT]
        for low in range(0, store_keys.size, KEYS_PER_STATEMENT)
    ]


OPEN_ROWS = (
    "SELECT store_key, started_us, first_poll_us, business_us FROM incidents WHERE is_open = :yes"
)
BATCH_STORES = "SELECT store_key FROM batch_stores WHERE batch > :after AND batch <= :batch"
CHANGED_STORE_ROWS = [
    f"SELECT DISTINCT store_key FROM {table} WHERE (batch > :after AND batch <= :batch) "
    "OR (retired_batch > :after AND retired_batch <= :batch)"
    for table in ("business_hours", "store_timezones", "closures")
]


def keys_of(conn: Connection, query: str, params: dict) -> np.ndarray:
    return np.unique(snapshot.integer_table(conn, query, params, ["store_key"]))


@dataclass(frozen=True)
class Found:
    """The incidents of the stores read, where each store's history was read from (its
    incidents from there on are all in `frame`), and those of the stores with a poll inside
    business hours."""

    frame: pd.DataFrame
    since: pd.Series
    evidenced: np.ndarray
    ends: last_evidence.Ends = field(default_factory=last_evidence.Ends.empty)


def compute_readings(
    engine: Engine,
    fixed: snapshot.Snapshot,
    readings: list[Reading],
    options: report.ReportOptions,
    kept: StoreRows | None = None,
) -> Found:
    """Incidents of every reading's stores as of the snapshot (with `kept`, their hours, zones
    and closures come from memory), in waves: the readings, then the stores to read again
    (`settle`), one reading per place to read from: a store's incidents depend only on its
    own rows and that place, never on the other stores read with it; and how the stores'
    timelines end (`last_evidence.ends_of`)."""
    none = np.zeros(0, dtype=np.int64)
    pending = [reading for reading in readings if reading.store_keys.size]
    if fixed.now_us is None or not pending:
        return Found(empty_frame(), pd.Series([], dtype=np.int64), none)
    oldest = oldest_poll_us(engine, fixed.batch)
    since = pd.concat([pd.Series(r.since_us, index=r.store_keys) for r in pending])
    frames, evidenced, ends = [], [none], [last_evidence.Ends.empty()]
    while pending:
        again: list[Reading] = []
        for reading in pending:
            settled = settle(engine, fixed, reading, options, kept, oldest)
            frames.append(settled.frame)
            evidenced.append(settled.evidenced)
            ends.append(settled.ends)
            again += settled.again
        pending = by_place(again)
        for reading in pending:
            since[reading.store_keys] = reading.since_us
    frame = pd.concat(frames, ignore_index=True) if frames else empty_frame()
    return Found(
        frame,
        since.sort_index(),
        np.unique(np.concatenate(evidenced)),
        last_evidence.concat(ends),
    )


@dataclass(frozen=True)
class Settled:
    """What one reading settles (`settle`), and what it leaves to read again."""

    frame: pd.DataFrame
    evidenced: np.ndarray
    ends: last_evidence.Ends
    again: list[Reading]


def settle(
    engine: Engine,
    fixed: snapshot.Snapshot,
    reading: Reading,
    options: report.ReportOptions,
    kept: StoreRows | None,
    oldest: int,
) -> Settled:
    """One reading's incidents of the stores it settles, the stores with a poll inside
    business hours, how the settled stores' timelines end, and what to read
    again: the stores whose history read begins inside an outage (twice as far back, at least
    the week: they are few, and a read costs mostly its fixed part), and those whose evidence
    changed kind (`newly_evidenced`: from the first poll)."""
    frame, flipped, inside, ends_found = incidents_from(
        engine, fixed, reading.store_keys, options, reading.since_us, kept
    )
    cut = frame["first_poll_us"] < reading.since_us
    deeper = np.unique(frame["store_key"][cut]) if oldest < reading.since_us else np.zeros(0)
    deeper = np.setdiff1d(deeper, flipped).astype(np.int64)
    again = np.union1d(deeper, flipped)
    settled = frame[~frame["store_key"].isin(again)]
    ends = last_evidence.ends_of(ends_found, np.setdiff1d(reading.store_keys, again))
    further = min(2 * reading.since_us - fixed.now_us, fixed.now_us - READ_BACK_US)
    return Settled(settled, inside, ends, [Reading(deeper, further), Reading(flipped, oldest)])


def by_place(readings: list[Reading]) -> list[Reading]:
    """The readings' stores, one reading per place to read from."""
    if not readings:
        return []
    keys = np.concatenate([reading.store_keys for reading in readings])
    starts = np.concatenate([np.full(r.store_keys.size, r.since_us) for r in readings])
    return [
        Reading(keys[starts == start].astype(np.int64), int(start)) for start in np.unique(starts)
    ]


def from_memory(remembered: Remembered, kept: StoreRows, now_us: int) -> Found:
    """The incidents of the stores computed from memory (`Remembered`): the engine's from
    their remembered polls, the same from before their open incident on as from all their
    polls. Each is read as from the earliest new poll (their older incidents stay), and
    their stored open incident is replaced (`save_incidents`)."""
    keys = remembered.store_keys
    if not keys.size:
        return Found(empty_frame(), pd.Series([], dtype=np.int64), keys)
    inputs = kept.inputs(keys, remembered.polls)
    found = report.find_incidents(inputs, now_us, report.ReportOptions())
    frame = engine_frame(found)
    ends = last_evidence.ends_of(found.ends, keys)
    since = pd.Series(remembered.first_new_us, index=keys, dtype=np.int64)
    return Found(frame, since, ends.store[ends.inside], ends)


def carry_forward(
    carried: pd.DataFrame, kept: StoreRows, previous_now_us: int, now_us: int
) -> pd.DataFrame:
    """The carried open incidents (`carriable`) as of `now`: their business time grown by
    that of (previous `now`, `now`], down now where `now` is inside business hours (the
    stores' other incidents stay as they are: `save_incidents`)."""
    keys = carried["store_key"].to_numpy(np.int64)
    if not keys.size:
        return empty_frame()
    grown, down_now = report.business_between(kept.inputs(keys), keys, previous_now_us, now_us)
    return pd.DataFrame(
        {
            "store_key": keys,
            "started_us": carried["started_us"].to_numpy(np.int64),
            "first_poll_us": carried["first_poll_us"].to_numpy(np.int64),
            "resolved_us": np.full(keys.size, -1, dtype=np.int64),
            "business_us": carried["business_us"].to_numpy(np.int64) + grown,
            "is_open": np.ones(keys.size, dtype=bool),
            "down_now": down_now,
        }
    )


def incidents_from(
    engine: Engine,
    fixed: snapshot.Snapshot,
    store_keys: np.ndarray,
    options: report.ReportOptions,
    since_us: int,
    kept: StoreRows | None = None,
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, report.TimelineEnds]:
    """The engine's incidents of `store_keys`, reading their polls from `since_us`; the stores
    among them whose evidence changed kind (`newly_evidenced`), those with a poll inside
    business hours (`with_evidence`), and how their timelines end (the engine's)."""
    low, high = int(store_keys.min()), int(store_keys.max()) + 1
    # A few stores spread over many keys are read by key; a dense set by its key range.
    listed = store_keys.tolist() if store_keys.size <= MAX_LISTED_KEYS else None
    if listed is not None and 2 * store_keys.size >= high - low:
        listed = None
    read = snapshot.read_shard(
        engine,
        fixed,
        low,
        high,
        since_us=since_us,
        store_keys=listed,
        kept_rows=None if kept is None else kept.of,
    )
    found = report.find_incidents(read.inputs, fixed.now_us, options)
    frame = engine_frame(found)
    flipped = np.intersect1d(newly_evidenced(read, since_us), store_keys)  # a range reads more
    inside = np.intersect1d(with_evidence(read, since_us, flipped), store_keys)
    mine = frame[frame["store_key"].isin(store_keys)].reset_index(drop=True)
    return mine, flipped, inside, found.ends


def engine_frame(found: report.Incidents) -> pd.DataFrame:
    """The engine's incidents as a frame of the table's columns."""
    return pd.DataFrame(
        {
            "store_key": found.stores.astype(np.int64),
            "started_us": found.started_us,
            "first_poll_us": found.first_poll_us,
            "resolved_us": found.resolved_us,
            "business_us": found.business_us,
            "is_open": found.is_open,
            "down_now": found.down_now,
        }
    )


def newly_evidenced(read: snapshot.ShardInputs, since_us: int) -> np.ndarray:
    """Stores whose polls before `since_us` were all outside business hours, and which have one
    inside them from `since_us` on. Until then all their polls were their evidence (docs/spec.md);
    from then on only those in business hours are: every incident of theirs may change."""
    polls = read.inputs.polls
    chosen = np.isin(polls.store, read.unevidenced) & (polls.ts_us >= since_us)
    if not chosen.any():
        return np.zeros(0, dtype=np.int64)
    store, ts_us = polls.store[chosen], polls.ts_us[chosen]
    return np.unique(store[report.in_business_hours(read.inputs, store, ts_us)]).astype(np.int64)


def with_evidence(read: snapshot.ShardInputs, since_us: int, flipped: np.ndarray) -> np.ndarray:
    """Stores of the read with a poll inside business hours: those with earlier polls, unless
    none of these is inside (the read found the latest one inside, if any), those whose first
    one inside came now (`flipped`), and those first polled now with one inside."""
    polls = read.inputs.polls
    had_earlier = np.unique(polls.store[polls.ts_us < since_us]).astype(np.int64)
    first = ~np.isin(polls.store, had_earlier)
    store, ts_us = polls.store[first], polls.ts_us[first]
    new_inside = store[report.in_business_hours(read.inputs, store, ts_us)].astype(np.int64)
    return np.union1d(np.union1d(np.setdiff1d(had_earlier, read.unevidenced), flipped), new_inside)


def empty_frame() -> pd.DataFrame:
    """No incidents, with the engine's column types (flags are booleans)."""
    flags = ("is_open", "down_now")
    return pd.DataFrame(
        {name: np.zeros(0, dtype=bool if name in flags else np.int64) for name in INCIDENT_COLUMNS}
    )


def oldest_poll_us(engine: Engine, batch: int) -> int:
    with engine.connect() as conn:
        query = text("SELECT MIN(min_ts_us) FROM load_batches WHERE id <= :b")
        value = conn.execute(query, {"b": batch}).scalar()
    return np.iinfo(np.int64).max if value is None else int(value)


# --------------------------------------------------------------------------- the tables


def evidenced_stores(conn: Connection) -> np.ndarray:
    sql = f"SELECT store_key FROM {EvidencedStore.__tablename__}"
    return snapshot.integer_table(conn, sql, {}, ["store_key"]).reshape(-1)


def save_evidenced(
    conn: Connection, known: np.ndarray, read: np.ndarray, evidenced: np.ndarray
) -> None:
    """Record which of the stores `read` have a poll inside business hours (`evidenced`): a
    store whose hours changed may have lost it. `known` (the table as the plan read it) only
    spares inserting rows that are there; the deletes do not trust it, since an evaluation
    that found nothing new may have added rows since without changing the alert state."""
    table = EvidencedStore.__tablename__
    for chunk in key_chunks(np.setdiff1d(read, evidenced)):
        snapshot.run(conn, f"DELETE FROM {table} WHERE store_key IN :keys", {"keys": chunk})
    added = np.setdiff1d(evidenced, known)
    if added.size:
        frame = pd.DataFrame({"store_key": added})
        writing.insert_rows(conn, table, frame, writing.insert_ignoring(conn))


def save_incidents(
    conn: Connection,
    frame: pd.DataFrame,
    since: pd.Series,
    replaced_open: np.ndarray | None = None,
    previous_now_us: int | None = None,
) -> None:
    """Replace each store's stored incidents from its `since` on, and the open incident of
    each store of `replaced_open` (carried forward, or computed from memory), with `frame`'s.
    A stored incident's first poll is at most the previous `now`: from a later `since` there
    is nothing to delete."""
    sql = "DELETE FROM incidents WHERE store_key IN :keys AND first_poll_us >= :since"
    for since_us, part in since.groupby(since):
        if previous_now_us is not None and since_us > previous_now_us:
            continue
        keys = part.index.to_numpy(np.int64)
        for chunk in key_chunks(keys):
            snapshot.run(conn, sql, {"keys": chunk, "since": int(since_us)})
    sql = "DELETE FROM incidents WHERE store_key IN :keys AND is_open = :yes"
    for chunk in key_chunks(replaced_open) if replaced_open is not None else []:
        snapshot.run(conn, sql, {"keys": chunk, "yes": True})
    insert_incidents(conn, frame)


def insert_incidents(conn: Connection, frame: pd.DataFrame) -> None:
    """Insert the frame's incidents as plain integer rows (booleans 0/1; `resolved_us` NULL
    while open): thousands of rows a statement."""
    if frame.empty:
        return
    rows = frame[INCIDENT_COLUMNS].astype(np.int64)
    is_open = frame["is_open"].astype(bool).to_numpy()
    writing.insert_rows(conn, Incident.__tablename__, rows[is_open].drop(columns="resolved_us"))
    writing.insert_rows(conn, Incident.__tablename__, rows[~is_open])
