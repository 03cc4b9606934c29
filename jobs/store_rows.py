"""Every store's weekly hours, time zone and closures, kept in memory between evaluations.

An evaluation after an upload of polls reads the new polls of the stores it wrote, but their
hours, zones and closures are the ones the previous evaluation read unless a load changed them:
reading them again was most of an evaluation's time. A process keeps them per database (the
latest CACHED_DATABASES) while no load has added or retired a row of those tables and no purge
has deleted one: their version (per table the largest `batch`, the largest `retired_batch` and
the number of rows, and when the latest of those batches started, which tells a database
restored from a backup and loaded again apart) is unchanged. Beyond STORES_LIMIT stores it
keeps nothing and the reads are a report shard's.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, fields

import numpy as np
import pandas as pd
from sqlalchemy import Connection, Engine, text

import report
from jobs import snapshot

CACHED_DATABASES = 4
STORES_LIMIT = 200_000  # hours rows ≈ 6 per store, 32 bytes each: tens of MB at most
VERSIONED_TABLES = ("business_hours", "store_timezones", "closures")


@dataclass(frozen=True)
class Version:
    """What the versioned tables hold, in a few numbers: equal versions, equal rows."""

    tables: tuple[tuple[int, int, int], ...]  # per table: latest batch, latest retired, rows
    last_change: int  # the latest batch that added or retired a row
    started: str  # when that batch started


@dataclass(frozen=True)
class StoreRows:
    """The rows of every store as of the tables' `version` (the same for any batch from the
    last that changed them on, until one changes them again)."""

    version: Version
    hours: report.WeeklyHours
    zones: report.StoreZones
    closures: report.Closures

    def of(
        self, key_low: int, key_high: int, store_keys: list[int] | None
    ) -> tuple[report.WeeklyHours, report.StoreZones, report.Closures]:
        """The rows of the stores a shard read names: a key range, and maybe a list of keys."""
        listed = None if store_keys is None else np.asarray(store_keys, dtype=np.int64)
        return (
            _rows_of(self.hours, key_low, key_high, listed),
            _rows_of(self.zones, key_low, key_high, listed),
            _rows_of(self.closures, key_low, key_high, listed),
        )

    def inputs(
        self, store_keys: np.ndarray, polls: report.Polls | None = None
    ) -> report.ReportInputs:
        """Engine inputs of `store_keys` (some): their rows, and `polls` (none by default)."""
        keys = np.asarray(store_keys, dtype=np.int64)
        hours, zones, closures = self.of(int(keys.min()), int(keys.max()) + 1, keys.tolist())
        return report.ReportInputs(
            report.Polls.of() if polls is None else polls, hours, zones, closures
        )


def _rows_of(part, key_low: int, key_high: int, listed: np.ndarray | None):
    stores = part.store.astype(np.int64, copy=False)
    keep = (stores >= key_low) & (stores < key_high)
    if listed is not None:
        keep &= np.isin(stores, listed)
    return type(part)(**{field.name: getattr(part, field.name)[keep] for field in fields(part)})


_CACHE: OrderedDict[str, StoreRows] = OrderedDict()
_LOCK = threading.Lock()


def current(engine: Engine, fixed: snapshot.Snapshot) -> StoreRows | None:
    """Every store's rows as of `fixed`, kept or read now; None when the snapshot is older
    than the tables' last change (it reads its own rows) or there are too many stores."""
    if fixed.last_store_key > STORES_LIMIT:
        return None
    with engine.connect() as conn:
        identity = database_identity(conn)
        version = tables_version(conn)
        if version.last_change > fixed.batch:
            return None
        with _LOCK:
            kept = _CACHE.get(identity)
        if kept is not None and kept.version == version:
            return kept
        read = read_all(conn, fixed, version)
        if tables_version(conn) != version:  # a load changed them while they were read
            return None
    _keep(_CACHE, identity, read)
    return read


def _keep(cache: OrderedDict, identity: str, value: object) -> None:
    """Keep `value` for the database `identity`, and the CACHED_DATABASES latest only."""
    with _LOCK:
        cache[identity] = value
        cache.move_to_end(identity)
        while len(cache) > CACHED_DATABASES:
            cache.popitem(last=False)


def read_all(conn: Connection, fixed: snapshot.Snapshot, version: Version) -> StoreRows:
    snapshot.prepare_session(conn)
    keys = {"batch": fixed.batch, "low_key": 0, "high_key": fixed.last_store_key + 1}
    return StoreRows(
        version,
        snapshot.read_hours(conn, keys),
        snapshot.read_zones(conn, keys),
        snapshot.read_closures(conn, keys),
    )


def tables_version(conn: Connection) -> Version:
    """Per table: the latest batch that added a row, the latest that retired one, the rows.
    A load that changes what a store has adds or retires rows; a purge deletes some."""
    tables = tuple(
        tuple(int(value) for value in conn.execute(text(TABLE_VERSION.format(table=table))).one())
        for table in VERSIONED_TABLES
    )
    last = max((max(added, retired) for added, retired, _ in tables), default=0)
    started = conn.execute(
        text("SELECT started_at FROM load_batches WHERE id = :batch"), {"batch": last}
    ).scalar()
    return Version(tables, last, str(started))  # type: ignore[arg-type]


TABLE_VERSION = (
    "SELECT COALESCE(MAX(batch), 0), COALESCE(MAX(retired_batch), 0), COUNT(*) FROM {table}"
)


def database_identity(conn: Connection) -> str:
    """The database a process keeps things for: its address and random id."""
    return f"{conn.engine.url}#{database_instance(conn)}"


def database_instance(conn: Connection) -> str:
    """The database's random id: tells a database recreated at the same address apart."""
    return str(conn.execute(text("SELECT instance_id FROM data_state WHERE id = 1")).scalar())


def forget() -> None:
    """Drop every kept database's rows and ids (tests)."""
    with _LOCK:
        _CACHE.clear()
        _IDS.clear()


# --------------------------------------------------------------------------- external ids


# External ids by key (None where no store has that key), per database. A store's key and id
# never change and stores are never deleted, so only newer keys are ever read; the id of the
# last key is checked each time, which tells a database restored from a backup.
_IDS: OrderedDict[str, np.ndarray] = OrderedDict()


def external_ids(engine: Engine, store_keys: np.ndarray) -> np.ndarray:
    """The external id of each of `store_keys` (all of them stores), kept per database. Read
    on a connection of its own: an id never changes once committed, and a transaction that
    began before a store was committed would not see it."""
    keys = np.asarray(store_keys, dtype=np.int64)
    if not keys.size:
        return np.zeros(0, dtype=object)
    with engine.connect() as conn:
        found = _read_ids(conn, keys) if int(keys.max()) > STORES_LIMIT else _kept_ids(conn, keys)
    if pd.isna(found).any():
        raise LookupError("an evaluated store has no row in `stores`")
    return found


def _kept_ids(conn: Connection, keys: np.ndarray) -> np.ndarray:
    identity = database_identity(conn)
    with _LOCK:
        ids = _IDS.get(identity, _NO_IDS)
    if not _still_valid(conn, ids):
        ids = _NO_IDS
    if int(keys.max()) >= ids.size:
        ids = _extended(conn, ids)
        _keep(_IDS, identity, ids)
    found = np.full(keys.size, None, dtype=object)
    known = keys < ids.size
    found[known] = ids[keys[known]]
    return found


_NO_IDS = np.zeros(0, dtype=object)


def _still_valid(conn: Connection, ids: np.ndarray) -> bool:
    if not ids.size:
        return True
    query = text("SELECT external_id FROM stores WHERE id = :key")
    return conn.execute(query, {"key": ids.size - 1}).scalar() == ids[-1]


def _extended(conn: Connection, ids: np.ndarray) -> np.ndarray:
    """`ids` and the ids of the keys after its end, up to the last store's."""
    rows = conn.execute(
        text("SELECT id, external_id FROM stores WHERE id >= :low"), {"low": ids.size}
    ).all()
    grown = np.full(max([ids.size - 1, *(int(row[0]) for row in rows)]) + 1, None, dtype=object)
    grown[: ids.size] = ids
    for key, external_id in rows:
        grown[int(key)] = str(external_id)
    return grown


def _read_ids(conn: Connection, keys: np.ndarray) -> np.ndarray:
    sql = "SELECT id, external_id FROM stores WHERE id IN :keys"
    unique = np.unique(keys)
    found: dict[int, str] = {}
    for low in range(0, unique.size, snapshot.KEYS_PER_QUERY):
        chunk = unique[low : low + snapshot.KEYS_PER_QUERY]
        found.update({int(key): str(ext) for key, ext in snapshot.run(conn, sql, {"keys": chunk})})
    return np.array([found.get(int(key)) for key in keys], dtype=object)
