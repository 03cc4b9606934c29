"""Incidents of stores, as of the latest committed poll, kept in the `incidents` table.

The engine (`report.find_incidents`) computes them from the same snapshot reads a report
makes. An evaluation reads only the stores that may have changed (those a load wrote rows for,
and those with an open incident, whose downtime grows as `now` moves) and only their recent
history: polls from a week before `now`, or from the oldest open incident's start if earlier.
A store whose read history begins inside an outage is read again further back (doubling the
span) until the outage's start is known, so a stored start is always exact.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from sqlalchemy import Connection, Engine, bindparam, insert, select, text

import report
from jobs import snapshot
from models import BatchStore, Incident

logger = logging.getLogger(__name__)

READ_BACK_US = snapshot.WEEK_US
KEYS_PER_STATEMENT = 500
INCIDENT_COLUMNS = [
    "store_key",
    "started_us",
    "first_poll_us",
    "resolved_us",
    "business_us",
    "is_open",
    "down_now",
]


def stores_to_evaluate(conn: Connection, after_batch: int, up_to_batch: int) -> np.ndarray:
    """Stores written by batches (after_batch, up_to_batch], and stores with an open incident."""
    written = conn.execute(
        select(BatchStore.store_key).where(
            BatchStore.batch > after_batch, BatchStore.batch <= up_to_batch
        )
    ).scalars()
    still_open = conn.execute(select(Incident.store_key).where(Incident.is_open)).scalars()
    keys = np.fromiter([*written, *still_open], dtype=np.int64)
    return np.unique(keys)


def earliest_open_start(conn: Connection) -> int | None:
    """The start of the oldest open incident (None when none is open)."""
    query = text("SELECT MIN(started_us) FROM incidents WHERE is_open = :yes")
    value = conn.execute(query, {"yes": True}).scalar()
    return None if value is None else int(value)


def compute_incidents(
    engine: Engine,
    fixed: snapshot.Snapshot,
    store_keys: np.ndarray,
    options: report.ReportOptions,
    since_us: int,
) -> tuple[pd.DataFrame, pd.Series]:
    """Incidents of `store_keys` as of the snapshot, and where each store's history was read
    from (its incidents from there on are all in the frame)."""
    oldest = oldest_poll_us(engine, fixed.batch)
    pending = np.unique(np.asarray(store_keys, dtype=np.int64))
    since = pd.Series(since_us, index=pending, dtype=np.int64)
    frames = []
    while pending.size and fixed.now_us is not None:
        frame = incidents_from(engine, fixed, pending, options, since_us)
        cut = frame["first_poll_us"] < since_us
        deeper = np.unique(frame["store_key"][cut]) if oldest < since_us else np.zeros(0)
        frames.append(frame[~frame["store_key"].isin(deeper)])
        pending = deeper.astype(np.int64)
        since_us = fixed.now_us - 2 * (fixed.now_us - since_us)
        since[pending] = since_us
    frame = pd.concat(frames, ignore_index=True) if frames else empty_frame()
    return frame, since


def incidents_from(
    engine: Engine,
    fixed: snapshot.Snapshot,
    store_keys: np.ndarray,
    options: report.ReportOptions,
    since_us: int,
) -> pd.DataFrame:
    """The engine's incidents of `store_keys`, reading their polls from `since_us`."""
    low, high = int(store_keys.min()), int(store_keys.max()) + 1
    read = snapshot.read_shard(engine, fixed, low, high, since_us)
    found = report.find_incidents(read.inputs, fixed.now_us, options)
    frame = pd.DataFrame(
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
    return frame[frame["store_key"].isin(store_keys)].reset_index(drop=True)


def empty_frame() -> pd.DataFrame:
    return pd.DataFrame({name: [] for name in INCIDENT_COLUMNS}, dtype=np.int64)


def oldest_poll_us(engine: Engine, batch: int) -> int:
    with engine.connect() as conn:
        query = text("SELECT MIN(min_ts_us) FROM load_batches WHERE id <= :b")
        value = conn.execute(query, {"b": batch}).scalar()
    return np.iinfo(np.int64).max if value is None else int(value)


# --------------------------------------------------------------------------- the table


def save_incidents(conn: Connection, frame: pd.DataFrame, since: pd.Series) -> None:
    """Replace each store's stored incidents from its `since` on with `frame`'s."""
    statement = text(
        "DELETE FROM incidents WHERE store_key IN :keys AND first_poll_us >= :since"
    ).bindparams(bindparam("keys", expanding=True))
    for since_us, part in since.groupby(since):
        keys = part.index.to_numpy(np.int64)
        for low in range(0, keys.size, KEYS_PER_STATEMENT):
            chunk = keys[low : low + KEYS_PER_STATEMENT].tolist()
            conn.execute(statement, {"keys": chunk, "since": int(since_us)})
    rows = table_rows(frame)
    if rows:
        conn.execute(insert(Incident), rows)


def table_rows(frame: pd.DataFrame) -> list[dict]:
    """The frame as rows of the `incidents` table (resolved: NULL while open)."""
    if frame.empty:
        return []
    rows = frame[INCIDENT_COLUMNS].astype(object)
    rows["resolved_us"] = rows["resolved_us"].where(~frame["is_open"], None)
    rows["is_open"] = frame["is_open"].astype(bool)
    rows["down_now"] = frame["down_now"].astype(bool)
    return rows.to_dict("records")
