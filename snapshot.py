"""Read what one report needs, from one consistent snapshot of the database.

Only polls that can matter are read: those in the week window, each store's latest poll
before it, and each store's latest poll inside business hours before it (searched backwards
in doubling spans only for stores that need it). Everything is read as integer columns.

Consistency: hours, time zones, the load watermark (`data_state.last_batch`) and the small
queries run in one transaction. The big window query runs at the same time on a second
connection, so every poll query also keeps to `batch <= watermark`: loads take batch numbers
under a row lock and commit in order, so that is exactly the data committed at snapshot time.

Speed: integer rows come back packed, one text value per store (`GROUP_CONCAT`), so a few
thousand rows cross the driver instead of millions and are decoded by numpy in one call.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import pandas as pd
from sqlalchemy import Connection, Engine, bindparam, text

import report

logger = logging.getLogger(__name__)

WEEK_US = report.WINDOWS_US["week"]
FIRST_LOOKBACK_US = report.US_PER_DAY
MAX_GROUP_CONCAT_BYTES = 4_294_967_295
# Parallel connections reading the week window: SQLite's C driver releases the GIL while it
# scans, so two parts use both cores; PyMySQL decodes in Python, so one part is faster there.
WINDOW_PARTS = {"sqlite": 2}


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
    with engine.connect() as conn, conn.begin(), ThreadPoolExecutor(2) as background:
        prepare_session(conn)
        batch = int(
            conn.execute(text("SELECT last_batch FROM data_state WHERE id = 1")).scalar_one()
        )
        now_us = as_of_us if as_of_us is not None else latest_poll_us(conn, batch)
        window = []
        if now_us is not None:
            for keys in store_key_ranges(conn, WINDOW_PARTS.get(conn.dialect.name, 1)):
                window.append(
                    background.submit(
                        read_window_polls, engine, batch, now_us - WEEK_US, now_us, keys
                    )
                )
        hours, timezones, external_ids = (
            read_hours(conn, batch),
            read_timezones(conn, batch),
            read_store_ids(conn),
        )
        if not window:
            return ReportInputs(poll_frame([], [], []), hours, timezones, external_ids, None, batch)
        before = latest_polls_before(conn, batch, now_us - WEEK_US)
        earlier = latest_evidence_before(conn, batch, before, hours, timezones, now_us - WEEK_US)
        polls = pd.concat([part.result() for part in window] + [before, earlier], ignore_index=True)
    return ReportInputs(polls, hours, timezones, external_ids, now_us, batch)


def prepare_session(conn: Connection) -> None:
    """MySQL truncates GROUP_CONCAT at 1 KB unless told otherwise."""
    if conn.dialect.name == "mysql":
        conn.execute(text(f"SET SESSION group_concat_max_len = {MAX_GROUP_CONCAT_BYTES}"))


def latest_poll_us(conn: Connection, batch: int) -> int | None:
    """The latest poll instant among committed loads (each load records its span)."""
    query = text("SELECT MAX(max_ts_us) FROM load_batches WHERE id <= :batch")
    value = conn.execute(query, {"batch": batch}).scalar()
    return None if value is None else int(value)


VERSION = "batch <= {batch} AND (retired_batch IS NULL OR retired_batch > {batch})"


def read_hours(conn: Connection, batch: int) -> pd.DataFrame:
    columns = ["store_key", "day_of_week", "start_s", "end_s"]
    matrix = integer_rows(conn, "business_hours", columns, VERSION.format(batch=int(batch)))
    return pd.DataFrame(matrix, columns=["store_id", "day", "start_time_local", "end_time_local"])


def read_timezones(conn: Connection, batch: int) -> pd.DataFrame:
    query = text(
        "SELECT store_key, timezone_str FROM store_timezones WHERE "
        + VERSION.format(batch=int(batch))
    )
    rows = conn.execute(query).cursor.fetchall()
    frame = pd.DataFrame(rows or None, columns=["store_id", "timezone_str"])
    return frame.astype({"store_id": "int64", "timezone_str": object})


def read_store_ids(conn: Connection) -> pd.Series:
    rows = conn.execute(text("SELECT id, external_id FROM stores")).cursor.fetchall()
    frame = pd.DataFrame(rows or None, columns=["key", "external_id"])
    keys = frame["key"].to_numpy(dtype=np.int64)
    return pd.Series(frame["external_id"].to_numpy(dtype=object), index=keys)


# --------------------------------------------------------------------------- packed reads


def integer_rows(conn: Connection, table: str, columns: list[str], where: str) -> np.ndarray:
    """All rows of integer columns of a table as a matrix.

    On MySQL one packed text value per store crosses the (pure-Python) driver; SQLite's C
    driver is faster with plain rows. `table` and `columns` are fixed strings of this module.
    """
    if conn.dialect.name != "mysql":
        sql = f"SELECT {', '.join(columns)} FROM {table} WHERE {where}"
        rows = conn.execute(text(sql)).cursor.fetchall()
        return np.array(rows, dtype=np.int64).reshape(-1, len(columns))
    row_text = f"CONCAT_WS(',', {', '.join(columns)})"
    sql = f"SELECT GROUP_CONCAT({row_text}) FROM {table} WHERE {where} GROUP BY store_key"
    values = [row[0] for row in conn.execute(text(sql)).cursor.fetchall()]
    return decode_integers(values).reshape(-1, len(columns))


def decode_integers(values: list[str | bytes]) -> np.ndarray:
    """Comma-separated integers (str or bytes, as drivers return them) → one int64 array."""
    if not values:
        return np.zeros(0, dtype=np.int64)
    if isinstance(values[0], bytes | bytearray):
        values = [value.decode() for value in values]
    return np.fromstring(",".join(values), dtype=np.int64, sep=",")


def poll_frame(keys, instants, active) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "store_id": np.asarray(keys, dtype=np.int64),
            "timestamp_utc": np.asarray(instants, dtype=np.int64),
            "status": np.asarray(active).astype(bool),
        }
    )


def _polls(conn: Connection, where: str, params: dict) -> pd.DataFrame:
    """Matching polls: per store its key, count and instants packed as ts_us * 2 + active."""
    sql = (
        "SELECT store_key, COUNT(*), GROUP_CONCAT(ts_us * 2 + active) FROM polls "
        f"WHERE {where} GROUP BY store_key"
    )
    statement = text(sql)
    if "IN :keys" in where:
        statement = statement.bindparams(bindparam("keys", expanding=True))
    rows = conn.execute(statement, params).cursor.fetchall()
    if not rows:
        return poll_frame([], [], [])
    keys, counts, packed_lists = zip(*rows, strict=True)
    packed = decode_integers(list(packed_lists))
    store_keys = np.repeat(np.array(keys, dtype=np.int64), np.array(counts, dtype=np.int64))
    return poll_frame(store_keys, packed >> 1, packed & 1)


# --------------------------------------------------------------------------- polls


def store_key_ranges(conn: Connection, parts: int) -> list[tuple[int, int]]:
    """Split the store keys into `parts` ranges [first, last) that cover every key."""
    largest = int(conn.execute(text("SELECT COALESCE(MAX(id), 0) FROM stores")).scalar_one())
    bounds = [0] + [largest * n // parts + 1 for n in range(1, parts)] + [2**31]
    return list(pairwise(bounds))


def read_window_polls(
    engine: Engine, batch: int, low: int, high: int, keys: tuple[int, int]
) -> pd.DataFrame:
    """Committed polls in [low, high] of stores with keys in [first, last), on a connection of
    its own: the parts run in parallel with each other and with the rest of the read."""
    with engine.connect() as conn:
        prepare_session(conn)
        where = (
            "store_key >= :first AND store_key < :last "
            "AND ts_us >= :low AND ts_us <= :high AND batch <= :batch"
        )
        params = {
            "first": keys[0],
            "last": keys[1],
            "low": int(low),
            "high": int(high),
            "batch": int(batch),
        }
        return _polls(conn, where, params)


BEFORE_QUERY = text(
    "SELECT s.id, (SELECT p.ts_us * 2 + p.active FROM polls p WHERE p.store_key = s.id "
    "AND p.ts_us < :low AND p.batch <= :batch ORDER BY p.ts_us DESC LIMIT 1) FROM stores s"
)


def latest_polls_before(conn: Connection, batch: int, low: int) -> pd.DataFrame:
    """Each store's latest poll before `low` (one index seek per store)."""
    rows = conn.execute(BEFORE_QUERY, {"low": low, "batch": batch}).cursor.fetchall()
    table = np.array(rows, dtype=object).reshape(-1, 2)
    polled = table[:, 1] != None  # noqa: E711 - elementwise test for SQL NULL
    keys, packed = table[polled, 0].astype(np.int64), table[polled, 1].astype(np.int64)
    return poll_frame(keys, packed >> 1, packed & 1)


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
    pending = np.unique(before["store_id"].to_numpy()[outside_hours(before, hours, timezones)])
    oldest = _oldest_poll_us(conn, batch)
    found: list[pd.DataFrame] = []
    high, span = low, FIRST_LOOKBACK_US
    while pending.size and oldest is not None and high > oldest:
        rows = _polls_in_span(conn, batch, pending, high - span, high)
        inside = rows[~outside_hours(rows, hours, timezones)]
        latest = inside.sort_values("timestamp_utc").drop_duplicates("store_id", keep="last")
        found.append(latest)
        pending = np.setdiff1d(pending, latest["store_id"].to_numpy())
        high, span = high - span, span * 2
    return pd.concat(found, ignore_index=True) if found else poll_frame([], [], [])


def outside_hours(polls: pd.DataFrame, hours: pd.DataFrame, timezones: pd.DataFrame) -> np.ndarray:
    """Mark the polls that fall outside their store's business hours."""
    if polls.empty:
        return np.zeros(0, dtype=bool)
    store_ids = pd.Index(pd.unique(polls["store_id"]))
    codes = store_ids.get_indexer(polls["store_id"])
    instants = polls["timestamp_utc"].to_numpy()
    starts = np.full(len(store_ids), instants.min(), dtype=np.int64)
    intervals = report.business_intervals(hours, timezones, store_ids, starts, int(instants.max()))
    return ~report.in_business_hours(intervals, codes, instants)


def _oldest_poll_us(conn: Connection, batch: int) -> int | None:
    query = text("SELECT MIN(min_ts_us) FROM load_batches WHERE id <= :b")
    value = conn.execute(query, {"b": batch}).scalar()
    return None if value is None else int(value)


def _polls_in_span(
    conn: Connection, batch: int, keys: np.ndarray, low: int, high: int
) -> pd.DataFrame:
    where = "store_key IN :keys AND ts_us >= :low AND ts_us < :high AND batch <= :batch"
    parts = [
        _polls(
            conn,
            where,
            {"keys": keys[i : i + 500].tolist(), "low": low, "high": high, "batch": batch},
        )
        for i in range(0, keys.size, 500)
    ]
    return pd.concat(parts, ignore_index=True) if parts else poll_frame([], [], [])
