"""Store ids → compact keys: the stores a process remembers, and those a load looks up or creates.

Ids are compared exactly (Python string equality, the binary column in the database): `abc`,
`ABC` and `ábc` are three stores whatever the database's default collation. Memory is bounded
whatever the number of stores: a process remembers at most KNOWN_STORES_LIMIT ids of a
database, a load at most LOAD_STORES_LIMIT of its own; beyond them the database is asked.
"""

from __future__ import annotations

import sqlite3
import threading

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import Connection, func, select

from loading.validation import LoadError
from loading.writing import insert_rows
from models import Store

# Ids a process remembers of one database: far more than the stores of an hourly upload
# (14 k in the full data), so those cost no query. 200,000 ids of a few digits take about
# 35 MB (strings, keys, hash table), of 64 characters about 75 MB.
KNOWN_STORES_LIMIT = 200_000
# Databases a process remembers stores of (one in service; tests create many).
KNOWN_DATABASES = 4
# Ids a load remembers of those it looked up or created: a store repeated in later chunks
# costs no query; beyond it the database is asked (it sees the load's own inserts).
LOAD_STORES_LIMIT = 200_000
# Arrays of given keys a load keeps before merging them into one of distinct keys.
GIVEN_PARTS_MERGED = 64
# Ids looked up by one query (SQLite allows 32,766 parameters since 3.32).
LOOKUP_ROWS = 5_000


class KnownStores:
    """External id → key of at most `limit` stores, looked up for whole arrays at once.

    The ids are one Arrow string array: a lookup hashes bytes in C and makes no Python string
    (a load looks up every chunk's distinct ids). When remembering more would pass the limit,
    everything is forgotten and the newest ids kept: the stores of recent loads are the
    likeliest to come again.
    """

    def __init__(self, limit: int) -> None:
        self.limit = max(limit, 1)
        self.lock = threading.Lock()
        self.ids = pa.array([], type=pa.string())
        self.keys = np.zeros(0, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.ids)

    def lookup(self, ids: pa.Array | np.ndarray) -> np.ndarray:
        """Each id's key, or -1 when not known here."""
        with self.lock:
            known, keys = self.ids, self.keys
        if not len(known):
            return np.full(len(ids), -1, dtype=np.int64)
        position = _positions(_strings(ids), known)
        return np.where(position >= 0, keys[np.maximum(position, 0)], -1)

    def forget(self) -> None:
        with self.lock:
            self.ids, self.keys = pa.array([], type=pa.string()), np.zeros(0, dtype=np.int64)

    def forget_if_beyond(self, largest_key: int) -> None:
        """Forget everything if a remembered key is beyond the database's largest: the
        database was restored to an earlier state, and its keys may now mean other stores."""
        with self.lock:
            beyond = self.keys.size and int(self.keys.max()) > largest_key
        if beyond:
            self.forget()

    def remember(self, ids: pa.Array | np.ndarray, keys: np.ndarray) -> None:
        """Remember ids (distinct) with their keys, starting over when the limit is reached."""
        if len(ids) == 0:
            return
        ids = _strings(ids)
        with self.lock:
            fresh = _positions(ids, self.ids) < 0
            ids, keys = ids.filter(pa.array(fresh)), keys[fresh]
            known, known_keys = self.ids, self.keys
            if len(known) + len(ids) > self.limit:
                known, known_keys = pa.array([], type=pa.string()), np.zeros(0, dtype=np.int64)
                ids, keys = ids[-self.limit :], keys[-self.limit :]
            self.ids = pa.concat_arrays([known, ids])
            self.keys = np.concatenate([known_keys, keys])


def _strings(ids: pa.Array | pa.ChunkedArray | np.ndarray) -> pa.Array:
    """Ids as one Arrow string array (the type the remembered ids have)."""
    if isinstance(ids, pa.ChunkedArray):
        ids = ids.combine_chunks()
    if isinstance(ids, pa.Array):
        return ids.cast(pa.string())
    return pa.array(ids, type=pa.string())


def _positions(ids: pa.Array, known: pa.Array) -> np.ndarray:
    """Each id's position in `known` (byte-exact comparison), or -1."""
    if not len(known):
        return np.full(len(ids), -1, dtype=np.int64)
    found = pc.index_in(ids, value_set=known)
    return found.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)


_KNOWN: dict[str, KnownStores] = {}
_KNOWN_LOCK = threading.Lock()


def known_stores(database: str) -> KnownStores:
    """The remembered stores of the database named `database` (its `data_state.instance_id`);
    only the KNOWN_DATABASES most recently asked for are kept."""
    with _KNOWN_LOCK:
        known = _KNOWN.pop(database, None)
        if known is None:  # (an empty one is falsy: it has a length)
            known = KnownStores(KNOWN_STORES_LIMIT)
        _KNOWN[database] = known  # the most recently asked for last
        while len(_KNOWN) > KNOWN_DATABASES:
            del _KNOWN[next(iter(_KNOWN))]
        return known


class StoreKeys:
    """Maps external store ids to compact keys within one load, creating stores as new ids
    appear; `remember()` after the commit makes this load's stores known to the process.

    An id is looked up in the process's known stores, then in this load's own, then in the
    database (set-based, LOOKUP_ROWS at a time), and created only when it is in none: the
    load's transaction sees its own inserts, so an id never gets two keys even once this
    load has forgotten it.
    """

    def __init__(self, conn: Connection, known: KnownStores) -> None:
        self.conn = conn
        largest = int(conn.execute(select(func.max(Store.id))).scalar() or 0)
        self.known = known
        self.known.forget_if_beyond(largest)
        self.seen = KnownStores(LOAD_STORES_LIMIT)  # looked up or created by this load
        self.next_key = largest + 1
        self.given: list[np.ndarray] = []  # the distinct keys of each call: the load's stores

    def keys_for(self, store_ids: pa.Array | np.ndarray) -> np.ndarray:
        """Keys of the given ids (an Arrow or object array), creating unknown stores."""
        encoded = pa.array(store_ids, type=pa.string()).dictionary_encode()
        distinct = encoded.dictionary
        keys = self.known.lookup(distinct)
        unknown = np.flatnonzero(keys < 0)
        if unknown.size:
            keys[unknown] = self.seen.lookup(distinct.take(pa.array(unknown)))
            unknown = unknown[keys[unknown] < 0]
        if unknown.size:
            new_ids = distinct.take(pa.array(unknown)).to_numpy(zero_copy_only=False)
            keys[unknown] = self._look_up_or_create(np.asarray(new_ids, dtype=object))
        self._note_given(keys)
        return keys[encoded.indices.to_numpy(zero_copy_only=False)]

    def used_keys(self) -> np.ndarray:
        """Every key this load gave out (its stores), distinct and sorted."""
        return np.unique(np.concatenate([np.zeros(0, dtype=np.int64), *self.given]))

    def _note_given(self, keys: np.ndarray) -> None:
        """Keep the load's keys, merged once they pile up: a store repeated in many chunks
        is kept once (memory grows with the load's stores, not its chunks)."""
        self.given.append(keys.copy())
        if len(self.given) > GIVEN_PARTS_MERGED:
            self.given = [self.used_keys()]

    def remember(self) -> None:
        """After the commit: this load's stores are committed, the process may keep them."""
        self.known.remember(self.seen.ids, self.seen.keys)

    def _look_up_or_create(self, ids: np.ndarray) -> np.ndarray:
        """Keys of distinct ids unknown here: stored ones found, the others created."""
        keys = self._stored_keys(ids)
        new = keys < 0
        if new.any():
            keys[new] = self._add(ids[new])
        self.seen.remember(ids, keys)
        return keys

    def _stored_keys(self, ids: np.ndarray) -> np.ndarray:
        """Each id's key in the database (seen by this transaction), or -1."""
        keys = np.full(ids.size, -1, dtype=np.int64)
        step = self._lookup_rows()
        mark = "?" if self.conn.dialect.paramstyle == "qmark" else "%s"
        for start in range(0, ids.size, step):
            part = ids[start : start + step]
            sql = (
                f"SELECT id, external_id FROM {Store.__tablename__} "
                f"WHERE external_id IN ({', '.join([mark] * part.size)})"
            )
            rows = self.conn.exec_driver_sql(sql, tuple(part.tolist())).all()
            if rows:
                found_keys, found_ids = zip(*rows, strict=True)
                # byte for byte, whatever the column compares
                position = pd.Index(found_ids, dtype=object).get_indexer(part)
                keys[start : start + step] = np.where(
                    position >= 0, np.asarray(found_keys, dtype=np.int64)[position], -1
                )
        return keys

    def _lookup_rows(self) -> int:
        if self.conn.dialect.name != "sqlite":
            return LOOKUP_ROWS
        driver = self.conn.connection.driver_connection
        return min(LOOKUP_ROWS, driver.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER))

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
