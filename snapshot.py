"""Read what one report needs, from one consistent snapshot of the database.

Only polls that can matter are read: those in the week window, each store's latest poll
before it, and each store's latest poll inside business hours before it (searched backwards
in doubling spans only for stores that need it). Everything is read as integer columns.

Consistency: hours, time zones, the load watermark (`data_state.last_batch`) and the small
queries run in one transaction. The big window query may run on another connection (the Arrow
transport), so every poll query also keeps to `batch <= watermark`: loads take batch numbers
under a row lock and commit in order, so that is exactly the data committed at snapshot time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sqlalchemy import Connection, Engine, bindparam, text

import report

logger = logging.getLogger(__name__)

WEEK_US = report.WINDOWS_US["week"]
FIRST_LOOKBACK_US = report.US_PER_DAY
POLL_COLUMNS = ["store_id", "timestamp_utc", "status"]


@dataclass
class ReportInputs:
    """Engine-ready frames keyed by the compact store key, plus the key → external id map."""

    polls: pd.DataFrame
    hours: pd.DataFrame
    timezones: pd.DataFrame
    external_ids: pd.Series
    now_us: int | None
    batch: int


def read_inputs(engine: Engine, as_of_us: int | None = None) -> ReportInputs:
    """Read the snapshot a report as of `as_of_us` (default: latest poll) is computed from."""
    with engine.connect() as conn, conn.begin():
        batch = int(
            conn.execute(text("SELECT last_batch FROM data_state WHERE id = 1")).scalar_one()
        )
        now_us = as_of_us if as_of_us is not None else latest_poll_us(conn, batch)
        hours = read_hours(conn)
        timezones = read_timezones(conn)
        external_ids = read_store_ids(conn)
        if now_us is None:
            empty = pd.DataFrame({"store_id": [], "timestamp_utc": [], "status": []})
            return ReportInputs(empty, hours, timezones, external_ids, None, batch)
        window_start = now_us - WEEK_US
        window = read_window_polls(conn, batch, window_start, now_us)
        before = latest_polls_before(conn, batch, window_start)
        earlier = latest_evidence_before(conn, batch, before, hours, timezones, window_start)
    polls = pd.concat([window, before, earlier], ignore_index=True)
    return ReportInputs(polls, hours, timezones, external_ids, now_us, batch)


def latest_poll_us(conn: Connection, batch: int) -> int | None:
    """The latest poll instant among committed loads (each load records its span)."""
    query = text("SELECT MAX(max_ts_us) FROM load_batches WHERE id <= :batch")
    value = conn.execute(query, {"batch": batch}).scalar()
    return None if value is None else int(value)


def read_hours(conn: Connection) -> pd.DataFrame:
    query = text("SELECT store_key, day_of_week, start_s, end_s FROM business_hours")
    columns = ["store_id", "day", "start_time_local", "end_time_local"]
    return pd.DataFrame(_int_rows(conn, query, {}, 4), columns=columns)


def read_timezones(conn: Connection) -> pd.DataFrame:
    rows = conn.execute(
        text("SELECT store_key, timezone_str FROM store_timezones")
    ).cursor.fetchall()
    return pd.DataFrame(rows or None, columns=["store_id", "timezone_str"]).astype(
        {"store_id": "int64"}
    )


def read_store_ids(conn: Connection) -> pd.Series:
    rows = conn.execute(text("SELECT id, external_id FROM stores")).cursor.fetchall()
    frame = pd.DataFrame(rows or None, columns=["key", "external_id"])
    return pd.Series(
        frame["external_id"].to_numpy(dtype=object), index=frame["key"].to_numpy(dtype=np.int64)
    )


# --------------------------------------------------------------------------- polls

# One row per store, its polls packed as "ts_us*2+active" in one text value: a few thousand
# rows cross the driver instead of millions, so even a pure-Python driver reads fast.
WINDOW_QUERY = text(
    "SELECT store_key, COUNT(*), GROUP_CONCAT(ts_us * 2 + active) FROM polls "
    "WHERE ts_us >= :low AND ts_us <= :high AND batch <= :batch GROUP BY store_key"
)


def read_window_polls(conn: Connection, batch: int, low: int, high: int) -> pd.DataFrame:
    """All polls in [low, high], as integer columns."""
    if conn.dialect.name == "mysql":
        conn.execute(text("SET SESSION group_concat_max_len = 4294967295"))
    params = {"low": int(low), "high": int(high), "batch": int(batch)}
    rows = conn.execute(WINDOW_QUERY, params).cursor.fetchall()
    if not rows:
        return _poll_frame([], [], [])
    keys, counts, packed_lists = zip(*rows, strict=True)
    if isinstance(packed_lists[0], bytes | bytearray):
        packed_lists = [part.decode() for part in packed_lists]
    packed = np.fromstring(",".join(packed_lists), dtype=np.int64, sep=",")
    store_keys = np.repeat(np.array(keys, dtype=np.int64), np.array(counts, dtype=np.int64))
    return _poll_frame(store_keys, packed >> 1, packed & 1)


def _int_rows(conn: Connection, statement, params: dict, width: int) -> np.ndarray:
    """Fetch integer rows straight from the driver cursor (no per-row result objects)."""
    rows = conn.execute(statement, params).cursor.fetchall()
    return np.array(rows, dtype=np.int64).reshape(-1, width)


def _poll_frame(keys, instants, active) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "store_id": np.asarray(keys, dtype=np.int64),
            "timestamp_utc": np.asarray(instants, dtype=np.int64),
            "status": np.asarray(active).astype(bool),
        }
    )


BEFORE_QUERY = text(
    "SELECT s.id, (SELECT p.ts_us * 2 + p.active FROM polls p WHERE p.store_key = s.id "
    "AND p.ts_us < :low AND p.batch <= :batch ORDER BY p.ts_us DESC LIMIT 1) FROM stores s"
)


def latest_polls_before(conn: Connection, batch: int, low: int) -> pd.DataFrame:
    """Each store's latest poll before `low` (one index seek per store)."""
    rows = conn.execute(BEFORE_QUERY, {"low": low, "batch": batch}).cursor.fetchall()
    found = np.array([row for row in rows if row[1] is not None], dtype=np.int64).reshape(-1, 2)
    return _poll_frame(found[:, 0], found[:, 1] >> 1, found[:, 1] & 1)


SPAN_QUERY = text(
    "SELECT store_key, ts_us, active FROM polls WHERE store_key IN :keys "
    "AND ts_us >= :low AND ts_us < :high AND batch <= :batch"
).bindparams(bindparam("keys", expanding=True))


def latest_evidence_before(
    conn: Connection,
    batch: int,
    before: pd.DataFrame,
    hours: pd.DataFrame,
    timezones: pd.DataFrame,
    low: int,
) -> pd.DataFrame:
    """For stores whose latest earlier poll is outside business hours, find their latest
    earlier poll inside business hours, looking back 1, 2, 4, ... days."""
    pending = _outside_hours(before, hours, timezones, low)
    oldest = _oldest_poll_us(conn, batch)
    found: list[pd.DataFrame] = []
    high, span = low, FIRST_LOOKBACK_US
    while pending.size and oldest is not None and high > oldest:
        rows = _polls_in_span(conn, batch, pending, high - span, high)
        inside = rows[~_outside_hours(rows, hours, timezones, high, keys_only=False)]
        latest = inside.sort_values("timestamp_utc").drop_duplicates("store_id", keep="last")
        found.append(latest)
        pending = np.setdiff1d(pending, latest["store_id"].to_numpy())
        high, span = high - span, span * 2
    return pd.concat(found, ignore_index=True) if found else _poll_frame([], [], [])


def _outside_hours(polls: pd.DataFrame, hours, timezones, end_us: int, keys_only: bool = True):
    """Which polls fall outside their store's business hours (store keys, or a row mask)."""
    if polls.empty:
        return np.array([], dtype=np.int64) if keys_only else np.zeros(0, dtype=bool)
    store_ids = pd.Index(pd.unique(polls["store_id"]))
    codes = store_ids.get_indexer(polls["store_id"])
    instants = polls["timestamp_utc"].to_numpy()
    starts = np.full(len(store_ids), instants.min(), dtype=np.int64)
    intervals = report.business_intervals(hours, timezones, store_ids, starts, end_us)
    outside = ~report.in_business_hours(intervals, codes, instants)
    return np.unique(polls["store_id"].to_numpy()[outside]) if keys_only else outside


def _oldest_poll_us(conn: Connection, batch: int) -> int | None:
    value = conn.execute(
        text("SELECT MIN(min_ts_us) FROM load_batches WHERE id <= :b"), {"b": batch}
    ).scalar()
    return None if value is None else int(value)


def _polls_in_span(
    conn: Connection, batch: int, keys: np.ndarray, low: int, high: int
) -> pd.DataFrame:
    parts = [
        _int_rows(
            conn,
            SPAN_QUERY,
            {"keys": keys[start : start + 500].tolist(), "low": low, "high": high, "batch": batch},
            3,
        )
        for start in range(0, keys.size, 500)
    ]
    rows = np.concatenate(parts) if parts else np.zeros((0, 3), dtype=np.int64)
    return _poll_frame(rows[:, 0], rows[:, 1], rows[:, 2])
