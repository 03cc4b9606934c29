"""Write checked rows into the open load transaction: stores, polls, versioned store rows.

Polls are only appended (a poll already present for its store and instant is skipped: the
first loaded is kept). Business hours, time zones and closures are versioned, never deleted by
a load: a store's current rows get `retired_batch` and its new rows are inserted with the
load's `batch`, unless they are exactly its current rows. `purge_retired` deletes old versions
once no report can read them any more.
"""

from __future__ import annotations

import os
import tempfile
import threading

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
from sqlalchemy import Connection, delete, func, select, update

import grouped
from models import BusinessHours, Closure, Store, StoreTimezone
from validation import LoadError

POLL_BUFFER_ROWS = 1_000_000
EXECUTEMANY_ROWS = 50_000
IN_LIST_SIZE = 500
DUPLICATE_KEY = 1062  # MySQL/MariaDB warning: a row skipped by IGNORE for its key
SHOWN_WARNINGS = 5
VERSIONED_MODELS = (BusinessHours, StoreTimezone, Closure)
VersionedModel = type[BusinessHours] | type[StoreTimezone] | type[Closure]


# --------------------------------------------------------------------------- stores


class KnownStores:
    """External id → key of the stores committed to one database, remembered by this process.

    A store's key never changes once committed, so a load needs to look up in the database only
    the ids this process has not seen: uploads of the same stores every hour then cost no query.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.index = pd.Index([], dtype=object)
        self.keys = np.zeros(0, dtype=np.int64)

    def lookup(self, ids: np.ndarray) -> np.ndarray:
        """Each id's key, or -1 when not known here."""
        with self.lock:
            index, keys = self.index, self.keys
        position = index.get_indexer(ids)
        return np.where(position >= 0, keys[np.maximum(position, 0)] if keys.size else -1, -1)

    def forget_if_beyond(self, largest_key: int) -> None:
        """Forget everything if a remembered key is beyond the database's largest: the
        database was restored to an earlier state, and its keys may now mean other stores."""
        with self.lock:
            if self.keys.size and int(self.keys.max()) > largest_key:
                self.index, self.keys = pd.Index([], dtype=object), np.zeros(0, dtype=np.int64)

    def remember(self, ids: np.ndarray, keys: np.ndarray) -> None:
        if ids.size == 0:
            return
        with self.lock:
            fresh = self.index.get_indexer(ids) < 0
            self.index = self.index.append(pd.Index(ids[fresh], dtype=object))
            self.keys = np.concatenate([self.keys, keys[fresh]])


_KNOWN: dict[str, KnownStores] = {}
_KNOWN_LOCK = threading.Lock()


def known_stores(database: str) -> KnownStores:
    """The remembered stores of the database named `database` (its `data_state.instance_id`)."""
    with _KNOWN_LOCK:
        return _KNOWN.setdefault(database, KnownStores())


class StoreKeys:
    """Maps external store ids to compact keys within one load, creating stores as new ids
    appear; `remember()` after the commit makes this load's stores known to the process.

    Ids are compared exactly (Python string equality, the binary column in the database):
    `abc`, `ABC` and `ábc` are three stores whatever the database's default collation.
    """

    def __init__(self, conn: Connection, known: KnownStores) -> None:
        self.conn = conn
        largest = int(conn.execute(select(func.max(Store.id))).scalar() or 0)
        self.known = known
        self.known.forget_if_beyond(largest)
        self.seen = KnownStores()  # looked up or created by this load, not yet committed
        self.next_key = largest + 1

    def keys_for(self, store_ids: pa.Array | np.ndarray) -> np.ndarray:
        """Keys of the given ids (an Arrow or object array), creating unknown stores."""
        encoded = pa.array(store_ids, type=pa.string()).dictionary_encode()
        distinct = np.asarray(encoded.dictionary.to_numpy(zero_copy_only=False), dtype=object)
        keys = self.known.lookup(distinct)
        unknown = keys < 0
        keys[unknown] = self.seen.lookup(distinct[unknown])
        if (keys < 0).any():
            self._look_up_or_create(distinct[keys < 0])
            keys[keys < 0] = self.seen.lookup(distinct[keys < 0])
        return keys[encoded.indices.to_numpy(zero_copy_only=False)]

    def remember(self) -> None:
        """After the commit: this load's stores are committed, the process may keep them."""
        self.known.remember(self.seen.index.to_numpy(dtype=object), self.seen.keys)

    def _look_up_or_create(self, ids: np.ndarray) -> None:
        found_ids, found_keys = self._stored(ids)
        self.seen.remember(found_ids, found_keys)
        new_ids = ids[pd.Index(found_ids, dtype=object).get_indexer(ids) < 0]
        if new_ids.size:
            self.seen.remember(new_ids, self._add(new_ids))

    def _stored(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Those of `ids` already in the database, with their keys (exact comparison)."""
        found_ids, found_keys = [], []
        for start in range(0, ids.size, IN_LIST_SIZE):
            chunk = ids[start : start + IN_LIST_SIZE].tolist()
            rows = self.conn.execute(
                select(Store.id, Store.external_id).where(Store.external_id.in_(chunk))
            ).all()
            wanted = set(chunk)
            for key, external_id in rows:
                if external_id in wanted:  # byte for byte, whatever the column compares
                    found_ids.append(external_id)
                    found_keys.append(key)
        return np.array(found_ids, dtype=object), np.array(found_keys, dtype=np.int64)

    def _add(self, new_ids: np.ndarray) -> np.ndarray:
        """Insert new stores with plain INSERTs: a duplicate id fails loudly, never silently
        (LOAD DATA LOCAL would skip it with a warning and leave polls without a store)."""
        keys = np.arange(self.next_key, self.next_key + new_ids.size, dtype=np.int64)
        new_rows = pd.DataFrame({"id": keys, "external_id": new_ids.astype(str)})
        try:
            insert_rows(self.conn, Store.__tablename__, new_rows)
        except self.conn.dialect.loaded_dbapi.IntegrityError as exc:
            raise LoadError(
                "database",
                f"a new store id equals one already stored ({exc}): the stores.external_id "
                "column must compare bytes exactly; nothing was loaded",
            ) from exc
        self.next_key += new_ids.size
        return keys


# --------------------------------------------------------------------------- polls


class PollWriter:
    """Buffers polls and appends them in primary-key order, skipping ones already present.

    Sorted input is what both engines insert fastest; the buffer bounds memory (about 25 bytes
    a poll), so a file larger than it is written as several sorted runs. The sort is stable and
    duplicates are skipped by the database, so of two polls of a store at the same instant the
    earlier row (or the earlier run, or load) is the one kept.
    """

    def __init__(self, conn: Connection, batch: int) -> None:
        self.conn, self.batch = conn, batch
        self.limit = POLL_BUFFER_ROWS
        self.parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.buffered = 0
        self.inserted = 0
        self.written = 0
        self.low: int | None = None
        self.high: int | None = None

    def add(self, keys: np.ndarray, instants: np.ndarray, active: np.ndarray) -> None:
        self.parts.append((keys, instants, active))
        self.buffered += keys.size
        low, high = int(instants.min()), int(instants.max())
        self.low = low if self.low is None else min(self.low, low)
        self.high = high if self.high is None else max(self.high, high)
        if self.buffered >= self.limit:
            self.flush()

    def flush(self) -> None:
        if not self.parts:
            return
        keys, instants, active = (
            np.concatenate(column) for column in zip(*self.parts, strict=True)
        )
        self.parts, self.buffered = [], 0
        order = grouped.sort_order(keys, instants)
        if order is not None:  # reorder, keeping one copy of each column alive at a time
            keys, instants, active = keys[order], instants[order], active[order]
            del order
        count = keys.size
        columns = {
            "store_key": keys,
            "ts_us": instants,
            "active": active.astype(np.int8),
            "batch": np.full(count, self.batch, dtype=np.int32),
        }
        del keys, instants, active
        rows = pd.DataFrame(columns, copy=False)
        del columns
        self.inserted += bulk_insert(self.conn, "polls", rows, skip_duplicates=True)
        self.written += count


# --------------------------------------------------------------------------- bulk inserts


def bulk_insert(
    conn: Connection, table: str, rows: pd.DataFrame, skip_duplicates: bool = False
) -> int:
    """Insert a frame the fastest way the engine offers; return the number of rows inserted.

    MySQL/MariaDB: LOAD DATA LOCAL INFILE from a temporary CSV, then a check that the server
    changed or dropped no row (it only warns). SQLite: executemany in the open transaction.
    With `skip_duplicates`, rows whose primary key exists are skipped.
    """
    if rows.empty:
        return 0
    if conn.dialect.name == "mysql":
        return _load_data_local(conn, table, rows, skip_duplicates)
    return insert_rows(conn, table, rows, "INSERT OR IGNORE" if skip_duplicates else "INSERT")


def insert_rows(conn: Connection, table: str, rows: pd.DataFrame, verb: str = "INSERT") -> int:
    """Plain INSERTs through the driver's executemany (a duplicate key raises)."""
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    marks = ", ".join([mark] * rows.shape[1])
    sql = f"{verb} INTO {table} ({', '.join(rows.columns)}) VALUES ({marks})"
    cursor = conn.connection.driver_connection.cursor()
    inserted = 0
    for start in range(0, len(rows), EXECUTEMANY_ROWS):  # bounds the Python objects alive
        part = rows.iloc[start : start + EXECUTEMANY_ROWS]
        cursor.executemany(sql, zip(*(part[name].tolist() for name in part.columns), strict=True))
        inserted += cursor.rowcount
    return inserted


def _load_data_local(
    conn: Connection, table: str, rows: pd.DataFrame, skip_duplicates: bool
) -> int:
    with tempfile.NamedTemporaryFile(suffix=".csv", delete=False) as handle:
        temp_path = handle.name
    try:
        options = pacsv.WriteOptions(include_header=False, quoting_style="needed")
        pacsv.write_csv(
            pa.Table.from_pandas(rows, preserve_index=False), temp_path, write_options=options
        )
        cursor = conn.connection.driver_connection.cursor()
        ignore = "IGNORE" if skip_duplicates else ""
        cursor.execute(
            f"LOAD DATA LOCAL INFILE %s {ignore} INTO TABLE {table} CHARACTER SET utf8mb4 "
            "FIELDS TERMINATED BY ',' OPTIONALLY ENCLOSED BY '\"' ESCAPED BY '' "
            f"LINES TERMINATED BY '\\n' ({', '.join(rows.columns)})",
            (temp_path,),
        )
        inserted = cursor.rowcount
        _refuse_changed_rows(cursor, table, len(rows), inserted)
        return inserted
    finally:
        os.unlink(temp_path)


def _refuse_changed_rows(cursor, table: str, sent: int, inserted: int) -> None:
    """Raise unless every row sent was inserted or skipped as a duplicate key.

    LOAD DATA LOCAL turns every error into a warning (a value out of range is clipped, a NULL
    becomes a default, a duplicate is skipped) and reports success. A skipped duplicate costs
    exactly one warning (1062), so any further warning is a row the server changed or dropped.
    `@@warning_count` counts them all (the OK packet's count stops at 65535).
    """
    cursor.execute("SELECT @@warning_count")
    warnings = int(cursor.fetchone()[0])
    if warnings == sent - inserted:
        return
    cursor.execute(f"SHOW WARNINGS LIMIT {SHOWN_WARNINGS + 64}")
    shown = [f"{code} {text}" for _, code, text in cursor.fetchall() if code != DUPLICATE_KEY]
    raise LoadError(
        "database",
        f"the database changed or dropped rows while writing {table} ({warnings} warnings for "
        f"{sent - inserted} duplicates): {'; '.join(shown[:SHOWN_WARNINGS]) or 'see SHOW WARNINGS'}"
        "; nothing was loaded",
    )


# --------------------------------------------------------------------------- versioned rows


def replace_store_rows(
    conn: Connection, model: VersionedModel, rows: pd.DataFrame, batch: int
) -> int:
    """Give each store in `rows` exactly its rows there, as versions written by `batch`.

    `rows` holds `store_key` and the model's value columns. A store whose rows are already
    its current rows (the same multiset) is left alone; the others' current rows are retired
    (kept for reports reading an earlier batch) and their new rows inserted. Returns the
    number of rows inserted; the rest are unchanged.
    """
    current = _current_rows(conn, model, list(rows.columns))
    changed = _changed_stores(rows, current)
    retired = np.intersect1d(changed, current["store_key"].to_numpy())
    for start in range(0, retired.size, IN_LIST_SIZE):
        conn.execute(
            update(model)
            .where(model.store_key.in_(retired[start : start + IN_LIST_SIZE].tolist()))
            .where(model.retired_batch.is_(None))
            .values(retired_batch=batch)
        )
    fresh = rows[rows["store_key"].isin(changed)]
    bulk_insert(conn, model.__tablename__, fresh.assign(batch=batch))
    return len(fresh)


def _current_rows(conn: Connection, model: VersionedModel, columns: list[str]) -> pd.DataFrame:
    query = select(*(getattr(model, name) for name in columns)).where(model.retired_batch.is_(None))
    return pd.DataFrame(conn.execute(query).all(), columns=columns)


def _changed_stores(new: pd.DataFrame, current: pd.DataFrame) -> np.ndarray:
    """Keys of the stores in `new` whose rows differ from their current rows (as multisets)."""
    columns = list(new.columns)
    current = current[current["store_key"].isin(new["store_key"])].astype(new.dtypes.to_dict())
    counts = pd.concat(
        [new.value_counts(columns).rename("new"), current.value_counts(columns).rename("now")],
        axis=1,
    ).fillna(0)
    differs = counts["new"] != counts["now"]
    return np.unique(counts.index[differs.to_numpy()].get_level_values("store_key"))


def purge_retired(conn: Connection, before_batch: int) -> int:
    """Delete hours, time zones and closures retired by batch `before_batch` or earlier.

    Call it only with a batch no report still reads as of (a report reading batch W needs the
    rows retired after W). Returns the number of rows deleted.
    """
    deleted = 0
    for model in VERSIONED_MODELS:
        result = conn.execute(delete(model).where(model.retired_batch <= before_batch))
        deleted += result.rowcount
    return deleted
