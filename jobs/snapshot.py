"""Read what one piece (shard) of a report needs, as of a fixed load watermark.

A report fixes two things when it starts: `now` and the load watermark W (the last committed
load batch). Every row a load writes carries its batch, and hours, zones and closures are
retired rather than deleted, so "the data as of W" is a plain filter any connection can apply
at any later time: polls with `batch <= W`, other rows with `batch <= W` and not retired by then.
Shards of a report may therefore read at different moments, on different machines, and still
see exactly the same snapshot.

Only polls that can matter are read: those in the week window, each store's latest poll
before it, and each store's latest poll inside business hours before it (searched backwards
in doubling spans only for stores that need it). Rows come back packed, one text value per
store (`GROUP_CONCAT`), so a few thousand rows cross the driver instead of millions and are
decoded by numpy in one call.

A scoped report (one covering the stores of some groups) reads only its stores: a shard first
reads which of its keys the groups held as of the report's batch, then every read names those
keys (index lookups: a key range holding 100 stores among 14,000 would be read whole), so its
rows for a store are the rows an unscoped report gives that store.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sqlalchemy import (
    Connection,
    CursorResult,
    Engine,
    Integer,
    TextClause,
    TextualSelect,
    bindparam,
    text,
)

import report
from engine import timestamps

logger = logging.getLogger(__name__)

WEEK_US = report.WINDOWS_US["week"]
FIRST_LOOKBACK_US = timestamps.US_PER_DAY
MAX_GROUP_CONCAT_BYTES = 4_294_967_295
KEYS_PER_QUERY = 500
# Stores of a scoped report's shard: each read names them all (SQLite binds at most 32,766).
MAX_SCOPED_SHARD_STORES = 4000
VERSION = "batch <= :batch AND (retired_batch IS NULL OR retired_batch > :batch)"


@dataclass(frozen=True)
class Snapshot:
    """What a report is fixed to when it starts: the load watermark and `now` (None when the
    database holds no polls and no `as_of` was asked for)."""

    batch: int
    now_us: int | None
    last_store_key: int


# The hours, zones and closures of a shard's stores, from memory (jobs.store_rows).
KeptRows = Callable[
    [int, int, list[int] | None], tuple[report.WeeklyHours, report.StoreZones, report.Closures]
]


@dataclass(frozen=True)
class ShardInputs:
    """Engine inputs keyed by compact store key, and the key → external id map; `unevidenced`:
    the stores with polls before `since_us`, none of them in business hours (their evidence
    before it is all of their polls, unless a later one is in business hours)."""

    inputs: report.ReportInputs
    external_ids: pd.Series
    unevidenced: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


def fix_snapshot(engine: Engine, as_of_us: int | None) -> Snapshot:
    """Take the watermark, `now` (as_of, else the latest committed poll) and the key range."""
    with engine.connect() as conn:
        batch = int(conn.execute(text("SELECT last_batch FROM data_state WHERE id = 1")).scalar())
        latest = conn.execute(
            text("SELECT MAX(max_ts_us) FROM load_batches WHERE id <= :batch"), {"batch": batch}
        ).scalar()
        last_key = conn.execute(text("SELECT COALESCE(MAX(id), 0) FROM stores")).scalar()
    now_us = as_of_us if as_of_us is not None else (None if latest is None else int(latest))
    return Snapshot(batch, now_us, int(last_key))


def read_shard(
    engine: Engine,
    snapshot: Snapshot,
    key_low: int,
    key_high: int,
    groups: tuple[str, ...] | None = None,
    since_us: int | None = None,
    store_keys: list[int] | None = None,
    kept_rows: KeptRows | None = None,
) -> ShardInputs:
    """Everything the engine needs for stores with keys in [key_low, key_high) (and, given
    `groups`, members of one of them as of the snapshot's batch; given `store_keys`, those
    stores only): polls from `since_us` (default: the week before `now`) to `now`, and the
    latest ones before. With `kept_rows` (incidents), the hours, zones and closures come from
    memory and no external ids are read."""
    keys: dict = {"batch": snapshot.batch, "low_key": key_low, "high_key": key_high}
    if store_keys is not None:
        keys["store_keys"] = store_keys
    with engine.connect() as conn, ThreadPoolExecutor(1) as background:
        prepare_session(conn)
        if groups is not None:
            members = shard_members(conn, keys, groups)
            keys["store_keys"] = sorted(set(members) & set(keys.get("store_keys", members)))
        window = None
        if snapshot.now_us is not None:  # the biggest query runs beside the others
            since_us = snapshot.now_us - WEEK_US if since_us is None else since_us
            window = background.submit(read_window, engine, keys, since_us, snapshot.now_us)
        if kept_rows is not None and groups is None:
            hours, zones, closures = kept_rows(key_low, key_high, store_keys)
            external_ids = pd.Series([], dtype=object)
        else:
            hours, zones, closures = (
                read_hours(conn, keys),
                read_zones(conn, keys),
                read_closures(conn, keys),
            )
            external_ids = read_store_ids(conn, keys)
        unevidenced = np.zeros(0, dtype=np.int64)
        if window is None:
            polls = report.Polls.of()
        else:
            earlier, unevidenced = read_earlier_polls(conn, keys, hours, zones, closures, since_us)
            polls = concat_polls([window.result(), *earlier])
    inputs = report.ReportInputs(polls, hours, zones, closures)
    return ShardInputs(inputs, external_ids, unevidenced)


def prepare_session(conn: Connection) -> None:
    """MySQL truncates GROUP_CONCAT at 1 KB unless told otherwise. MariaDB turns an IN list
    of 1,000 values or more into a join with a temporary table, which loses the loose index
    scan of each store's latest poll (0.9 s instead of 0.07 s for 4,000 stores): keep lists."""
    if conn.dialect.name != "mysql" or conn.info.get("prepared_for_reads"):
        return
    settings = f"group_concat_max_len = {MAX_GROUP_CONCAT_BYTES}"
    if getattr(conn.dialect, "is_mariadb", False):
        settings += ", in_predicate_conversion_threshold = 0"
    conn.execute(text(f"SET SESSION {settings}"))
    conn.info["prepared_for_reads"] = True  # the driver's connection keeps its settings


MEMBERS = (
    "SELECT g.store_key FROM store_groups g WHERE g.group_id IN :groups "
    "AND g.batch <= :batch AND (g.retired_batch IS NULL OR g.retired_batch > :batch)"
)


def in_shard(keys: dict, column: str = "store_key") -> str:
    """The condition on `column` for the shard's stores: its key range, and for a scoped
    report, the keys of its stores."""
    where = f"{column} >= :low_key AND {column} < :high_key"
    if "store_keys" in keys:
        where += f" AND {column} IN :store_keys"
    return where


def statement(sql: str) -> TextClause:
    """A text query whose `:groups` list expands to its values (integer key lists are written
    into the SQL by `run`)."""
    query = text(sql)
    return query.bindparams(bindparam("groups", expanding=True)) if ":groups" in sql else query


def run(conn: Connection, sql: str, params: dict) -> CursorResult:
    """Execute a text query whose integer key lists (`:keys`, `:store_keys`) are written into
    it as literals (hundreds of keys a statement: binding each costs more than the query's
    work) and whose `:groups` expands to its values."""
    for name in INTEGER_LISTS:
        if f":{name}" in sql:
            sql = sql.replace(f":{name}", integer_list(params[name]))
    bound = {name: value for name, value in params.items() if name not in INTEGER_LISTS}
    return conn.execute(statement(sql), bound)


INTEGER_LISTS = ("keys", "store_keys")


def integer_list(values: Iterable[int]) -> str:
    """`(1,2,3)` for an IN condition (`(NULL)`, which matches nothing, when empty); each value
    is made an int, so nothing but digits reaches the SQL."""
    written = ",".join(map(str, map(int, values)))
    return f"({written or 'NULL'})"


def shard_members(conn: Connection, keys: dict, groups: tuple[str, ...]) -> list[int]:
    """The keys in the shard's range of the stores of `groups` as of its batch (at most
    MAX_SCOPED_SHARD_STORES: the shards of a scoped report are planned so)."""
    sql = (
        f"SELECT DISTINCT store_key FROM ({MEMBERS}) members "
        "WHERE store_key >= :low_key AND store_key < :high_key"
    )
    rows = conn.execute(statement(sql), {**keys, "groups": list(groups)}).all()
    return sorted(int(row[0]) for row in rows)


def scope_members(groups: tuple[str, ...], batch: int) -> TextualSelect:
    """The keys of the stores in any of `groups` as of `batch` (repeated when in several):
    what a scope covers, for reports, incidents and alert rules alike. A query, so that a
    listing may filter by it (a group may hold more stores than one statement binds)."""
    query = statement(MEMBERS).bindparams(groups=list(groups), batch=batch)
    return query.columns(store_key=Integer)


def scope_store_keys(engine: Engine, batch: int, groups: tuple[str, ...]) -> np.ndarray:
    """The sorted keys of the stores in any of `groups` as of `batch`."""
    with engine.connect() as conn:
        rows = conn.execute(scope_members(groups, batch)).all()
    return np.unique(np.array([row[0] for row in rows], dtype=np.int64))


def read_hours(conn: Connection, keys: dict) -> report.WeeklyHours:
    columns = ["store_key", "day_of_week", "start_s", "end_s"]
    matrix = integer_rows(conn, "business_hours", columns, f"{in_shard(keys)} AND {VERSION}", keys)
    return report.WeeklyHours.of(matrix[:, 0], matrix[:, 1], matrix[:, 2], matrix[:, 3])


def read_closures(conn: Connection, keys: dict) -> report.Closures:
    columns = ["store_key", "start_local_s", "end_local_s"]
    matrix = integer_rows(conn, "closures", columns, f"{in_shard(keys)} AND {VERSION}", keys)
    return report.Closures.of(matrix[:, 0], matrix[:, 1], matrix[:, 2])


def read_zones(conn: Connection, keys: dict) -> report.StoreZones:
    sql = (
        f"SELECT store_key, timezone_str FROM store_timezones WHERE {in_shard(keys)} AND {VERSION}"
    )
    rows = run(conn, sql, keys).all()
    return report.StoreZones.of(
        np.array([row[0] for row in rows], dtype=np.int64), [row[1] for row in rows]
    )


def read_store_ids(conn: Connection, keys: dict) -> pd.Series:
    rows = run(conn, f"SELECT id, external_id FROM stores WHERE {in_shard(keys, 'id')}", keys).all()
    return pd.Series(
        np.array([row[1] for row in rows], dtype=object),
        index=np.array([row[0] for row in rows], dtype=np.int64),
    )


# --------------------------------------------------------------------------- packed reads


def integer_rows(
    conn: Connection, table: str, columns: list[str], where: str, params: dict
) -> np.ndarray:
    """Rows of integer columns of a table as a matrix (`integer_table`). `table`, `columns`
    and `where` are fixed strings of this module; values are bound parameters."""
    sql = f"SELECT {', '.join(columns)} FROM {table} WHERE {where}"
    return integer_table(conn, sql, params, columns)


def integer_table(conn: Connection, sql: str, params: dict, columns: list[str]) -> np.ndarray:
    """The rows of a query of integer columns (named `columns`, never NULL; the first a store
    key) as a matrix.

    On MySQL they cross the (pure-Python) driver packed, a text value per PACKED_STORES stores
    (10,000 rows of two columns: 4 ms instead of 35 ms), each far below the server's packet
    limit; a value cut short raises. Integer key lists are written as `run` writes them."""
    if conn.dialect.name != "mysql":
        rows = run(conn, sql, params).cursor.fetchall()
        return np.array(rows, dtype=np.int64).reshape(-1, len(columns))
    prepare_session(conn)
    packed_sql = (
        f"SELECT COUNT(*), GROUP_CONCAT(CONCAT_WS(',', {', '.join(columns)})) "
        f"FROM ({sql}) AS rows_ GROUP BY {columns[0]} DIV {PACKED_STORES}"
    )
    groups = run(conn, packed_sql, params).cursor.fetchall()
    lost = RuntimeError(f"a packed read lost values: {sql[:60]}")
    try:
        values = decode_integers([packed for _, packed in groups])
    except ValueError as error:  # cut inside a number
        raise lost from error
    if values.size != sum(int(count) for count, _ in groups) * len(columns):
        raise lost
    return values.reshape(-1, len(columns))


PACKED_STORES = 4096  # a few hundred kB of text a value


def decode_integers(values: list[str | bytes]) -> np.ndarray:
    """Comma-separated integers (str or bytes, as drivers return them) → one int64 array."""
    if not values:
        return np.zeros(0, dtype=np.int64)
    if isinstance(values[0], bytes | bytearray):
        values = [value.decode() for value in values]
    return np.fromstring(",".join(values), dtype=np.int64, sep=",")


def packed_polls(conn: Connection, where: str, params: dict) -> report.Polls:
    """Matching polls: per store its key, count and instants packed as ts_us * 2 + active."""
    sql = (
        "SELECT store_key, COUNT(*), GROUP_CONCAT(ts_us * 2 + active) FROM polls "
        f"WHERE {where} GROUP BY store_key"
    )
    rows = run(conn, sql, params).cursor.fetchall()
    if not rows:
        return report.Polls.of()
    keys, counts, packed_lists = zip(*rows, strict=True)
    packed = decode_integers(list(packed_lists))
    store_keys = np.repeat(np.array(keys, dtype=np.int64), np.array(counts, dtype=np.int64))
    return report.Polls.of(store_keys, packed >> 1, (packed & 1).astype(bool))


def concat_polls(parts: list[report.Polls]) -> report.Polls:
    parts = [part for part in parts if part.ts_us.size] or [report.Polls.of()]
    return report.Polls.of(
        np.concatenate([p.store.astype(np.int64) for p in parts]),
        np.concatenate([p.ts_us for p in parts]),
        np.concatenate([p.active for p in parts]),
    )


# --------------------------------------------------------------------------- polls


def read_window(engine: Engine, keys: dict, since_us: int, now_us: int) -> report.Polls:
    """The polls from `since_us` to `now_us` (a report: the week), on a connection of its own
    (it runs beside the other reads).

    Asked for by lists of store keys: each key is then a range of the primary key bounded in
    time too, so only those rows are read (a range of stores would read each store's polls
    from its first, whatever the history's length).
    """
    where = "store_key IN :keys AND ts_us >= :low AND ts_us <= :high AND batch <= :batch"
    bounds = {"batch": keys["batch"], "low": since_us, "high": now_us}
    with engine.connect() as conn:
        prepare_session(conn)
        return concat_polls(
            [
                packed_polls(conn, where, {**bounds, "keys": store_keys})
                for store_keys in key_lists(keys)
            ]
        )


def key_lists(keys: dict) -> list[list[int]]:
    """The shard's store keys in lists of at most KEYS_PER_QUERY: a scoped shard's own keys,
    else every key of [low_key, high_key) (store keys are dense: each may have polls)."""
    low_key, high_key = keys["low_key"], keys["high_key"]
    if "store_keys" in keys:
        members = np.asarray(keys["store_keys"], dtype=np.int64)
        members = members[(members >= low_key) & (members < high_key)].tolist()
        return [members[i : i + KEYS_PER_QUERY] for i in range(0, len(members), KEYS_PER_QUERY)]
    return [
        list(range(start, min(start + KEYS_PER_QUERY, high_key)))
        for start in range(low_key, high_key, KEYS_PER_QUERY)
    ]


def read_earlier_polls(
    conn: Connection,
    keys: dict,
    hours: report.WeeklyHours,
    zones: report.StoreZones,
    closures: report.Closures,
    low: int,
) -> tuple[list[report.Polls], np.ndarray]:
    """Each store's latest poll before `low`, and its latest evidence before `low`; and the
    stores with polls before `low`, none of them in business hours."""
    before = latest_polls_before(conn, keys, low)
    context = report.ReportInputs(report.Polls.of(), hours, zones, closures)
    evidence, unevidenced = latest_evidence_before(conn, keys, before, context, low)
    return [before, evidence], unevidenced


BEFORE_QUERY = (
    "SELECT s.id, (SELECT p.ts_us * 2 + p.active FROM polls p WHERE p.store_key = s.id "
    "AND p.ts_us < :low AND p.batch <= :batch ORDER BY p.ts_us DESC LIMIT 1) "
    "FROM stores s WHERE "
)
# MySQL/MariaDB: each store's latest poll before `low` in any batch, found by a loose index
# scan (one seek per store), with its batch. Its correlated form above walks back through the
# whole week of each store there (an index "ref" on the store, not a range).
LATEST_BEFORE_ANY_BATCH = (
    "SELECT p.store_key AS store_key, p.ts_us * 2 + p.active AS packed, p.batch AS batch "
    "FROM polls p JOIN "
    "(SELECT store_key, MAX(ts_us) AS ts_us FROM polls WHERE {shard} "
    "AND ts_us < :low GROUP BY store_key) latest "
    "ON p.store_key = latest.store_key AND p.ts_us = latest.ts_us"
)


def latest_polls_before(conn: Connection, keys: dict, low: int) -> report.Polls:
    """Each store's latest poll before `low` as of the snapshot's batch.

    SQLite seeks each store's with the correlated query. MySQL/MariaDB takes each store's
    latest of any batch (a loose index scan) and asks the correlated query only for the stores
    whose latest came in a load after the snapshot's batch.
    """
    if conn.dialect.name != "mysql":
        return _correlated_latest_before(conn, keys, low, in_shard(keys, "s.id"))
    sql = LATEST_BEFORE_ANY_BATCH.format(shard=in_shard(keys))
    table = integer_table(conn, sql, {**keys, "low": low}, ["store_key", "packed", "batch"])
    seen = table[:, 2] <= keys["batch"]
    found = report.Polls.of(table[seen, 0], table[seen, 1] >> 1, (table[seen, 1] & 1).astype(bool))
    later = np.unique(table[~seen, 0])
    if later.size == 0:
        return found
    return concat_polls(
        [found]
        + [
            _correlated_latest_before(conn, {**keys, "keys": part.tolist()}, low, "s.id IN :keys")
            for part in np.array_split(later, -(-later.size // KEYS_PER_QUERY))
        ]
    )


def _correlated_latest_before(
    conn: Connection, params: dict, low: int, stores: str
) -> report.Polls:
    """Each store's latest poll before `low` with `batch <= :batch` (one index seek per store)."""
    rows = run(conn, BEFORE_QUERY + stores, {**params, "low": low}).cursor.fetchall()
    table = np.array(rows, dtype=object).reshape(-1, 2)
    polled = table[:, 1] != None  # noqa: E711 - elementwise test for SQL NULL
    store_keys, packed = table[polled, 0].astype(np.int64), table[polled, 1].astype(np.int64)
    return report.Polls.of(store_keys, packed >> 1, (packed & 1).astype(bool))


def latest_evidence_before(
    conn: Connection, keys: dict, before: report.Polls, context: report.ReportInputs, low: int
) -> tuple[report.Polls, np.ndarray]:
    """For stores whose latest earlier poll is outside business hours, find their latest
    earlier poll inside business hours, looking back 1, 2, 4, ... days; and the stores that
    have none."""
    outside = ~report.in_business_hours(context, before.store, before.ts_us)
    pending = np.unique(before.store[outside])
    oldest = _oldest_poll_us(conn, keys["batch"])
    found: list[report.Polls] = []
    high, span = low, FIRST_LOOKBACK_US
    while pending.size and oldest is not None and high > oldest:
        rows = polls_in_span(conn, keys["batch"], pending, high - span, high)
        inside = report.in_business_hours(context, rows.store, rows.ts_us)
        latest = _latest_per_store(rows, inside)
        found.append(latest)
        pending = np.setdiff1d(pending, latest.store)
        high, span = high - span, span * 2
    return concat_polls(found), pending.astype(np.int64)


def _latest_per_store(polls: report.Polls, chosen: np.ndarray) -> report.Polls:
    frame = pd.DataFrame({"store": polls.store[chosen], "ts": polls.ts_us[chosen]})
    frame["active"] = polls.active[chosen]
    latest = frame.sort_values("ts").drop_duplicates("store", keep="last")
    return report.Polls.of(latest["store"].to_numpy(np.int64), latest["ts"], latest["active"])


def _oldest_poll_us(conn: Connection, batch: int) -> int | None:
    query = text("SELECT MIN(min_ts_us) FROM load_batches WHERE id <= :b")
    value = conn.execute(query, {"b": batch}).scalar()
    return None if value is None else int(value)


def polls_in_span(
    conn: Connection, batch: int, store_keys: np.ndarray, low: int, high: int
) -> report.Polls:
    """The polls of `store_keys` in [low, high) as of `batch`."""
    where = "store_key IN :keys AND ts_us >= :low AND ts_us < :high AND batch <= :batch"
    return concat_polls(
        [
            packed_polls(
                conn,
                where,
                {
                    "keys": store_keys[i : i + KEYS_PER_QUERY].tolist(),
                    "low": low,
                    "high": high,
                    "batch": batch,
                },
            )
            for i in range(0, store_keys.size, KEYS_PER_QUERY)
        ]
    )
