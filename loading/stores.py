"""Store ids → compact keys: the stores a process remembers, and those a load looks up or creates.

Ids are compared exactly (Python string equality, the binary column in the database): `abc`,
`ABC` and `ábc` are three stores whatever the database's default collation.
"""

from __future__ import annotations

import threading

import numpy as np
import pandas as pd
import pyarrow as pa
from sqlalchemy import Connection, func, select

from loading.validation import LoadError
from loading.writing import insert_rows
from models import Store

IN_LIST_SIZE = 500


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
