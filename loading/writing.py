"""Write checked rows into the open load transaction: polls and versioned store rows.

Polls are only appended (a poll already present for its store and instant is skipped: the
first loaded is kept). Business hours, time zones and closures are versioned, never deleted by
a load: a store's current rows get `retired_batch` and its new rows are inserted with the
load's `batch`, unless they are exactly its current rows. Identical rows of a store are stored
once. `purge_retired` deletes old versions once no report can read them any more.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
from sqlalchemy import Connection, Subquery, delete, exists, func, select, update
from sqlalchemy.orm import aliased

from engine.timestamps import quoted
from loading.sorted_runs import SortedRuns, sorted_columns
from loading.validation import LoadError
from models import BusinessHours, Closure, Store, StoreGroupMember, StoreTimezone

POLL_BUFFER_ROWS = 1_000_000
EXECUTEMANY_ROWS = 50_000
ROWS_PER_STATEMENT = 100  # SQLite: rows of one INSERT (3-7 columns: far below its 32,766 values)
STATEMENT_BYTES = 1 << 20  # MySQL: characters of one INSERT of literals (≤ 4 MB; packets: 16 MB)
IN_LIST_SIZE = 500
# A load that sends polls of more stores than this records no summary of them (`BatchPolls`):
# its evaluation reads those stores' polls instead. It bounds the summary's memory (a 64 MB
# upload can name 1.7 M stores).
MAX_SUMMARIZED_STORES = 200_000
DUPLICATE_KEY = 1062  # MySQL/MariaDB warning: a row skipped by IGNORE for its key
SHOWN_WARNINGS = 5
VERSIONED_MODELS = (BusinessHours, StoreTimezone, Closure, StoreGroupMember)
VersionedModel = type[BusinessHours] | type[StoreTimezone] | type[Closure] | type[StoreGroupMember]


# --------------------------------------------------------------------------- polls


class PollWriter:
    """Buffers a load's polls and appends them in primary-key order, skipping ones present.

    The whole load is written in (store key, instant) order whatever its size, since a B-tree
    filled in key order is packed while one filled run after run splits the first run's pages
    where the next lands in its middle (MariaDB's `polls` grew 3.5× that way). The buffer
    bounds memory (about 25 bytes a poll): a load larger than it is sorted in runs spilled to
    temporary files and merged in blocks of the buffer's size (`sorted_runs`). Sorts and the
    merge are stable and duplicates are skipped by the database, so of two polls of a store at
    the same instant the earlier row (or load) is the one kept.
    """

    def __init__(self, conn: Connection, batch: int) -> None:
        self.conn, self.batch = conn, batch
        self.limit = POLL_BUFFER_ROWS
        self.parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.buffered = 0
        self.runs = SortedRuns()
        self.inserted = 0
        self.written = 0
        self.low: int | None = None
        self.high: int | None = None
        # Of each block written (`block_summary`); None once beyond MAX_SUMMARIZED_STORES.
        self.per_store: list[pd.DataFrame] | None = []
        self.summarized_rows = 0

    def add(self, keys: np.ndarray, instants: np.ndarray, active: np.ndarray) -> None:
        self.parts.append((keys, instants, active))
        self.buffered += keys.size
        low, high = int(instants.min()), int(instants.max())
        self.low = low if self.low is None else min(self.low, low)
        self.high = high if self.high is None else max(self.high, high)
        if self.buffered >= self.limit:
            self.runs.add_run(*self._take_buffer())

    def finish(self) -> None:
        """Write everything added, in key order; remove the spilled runs."""
        with self.runs:
            if not self.runs.runs:  # it all fits in the buffer: one sort, no files
                if self.buffered:
                    self._write(*sorted_columns(*self._take_buffer()))
                return
            if self.buffered:
                self.runs.add_run(*self._take_buffer())
            for block in self.runs.merged(self.limit):
                self._write(*block)

    def close(self) -> None:
        """Remove any spilled runs (a load that failed before `finish`)."""
        self.runs.close()

    def _take_buffer(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        columns = tuple(np.concatenate(column) for column in zip(*self.parts, strict=True))
        self.parts, self.buffered = [], 0
        return columns  # type: ignore[return-value]

    def _write(self, keys: np.ndarray, instants: np.ndarray, active: np.ndarray) -> None:
        """Insert rows already in key order (duplicates of stored keys are skipped)."""
        rows = pd.DataFrame(
            {"store_key": keys, "ts_us": instants, "active": active.astype(np.int8)}, copy=False
        )
        batch = {"batch": self.batch}  # one value for every row: written once in the statement
        self.inserted += bulk_insert(self.conn, "polls", rows, skip_duplicates=True, same=batch)
        self.written += keys.size
        self._summarize(keys, instants, active)

    def _summarize(self, keys: np.ndarray, instants: np.ndarray, active: np.ndarray) -> None:
        if self.per_store is None:
            return
        summary = block_summary(keys, instants, active)
        self.summarized_rows += len(summary)
        if self.summarized_rows > MAX_SUMMARIZED_STORES:
            self.per_store = None
        else:
            self.per_store.append(summary)

    def summary(self) -> pd.DataFrame | None:
        """Per store, what the load sent for its polls (`models.BatchPolls`); None for more
        than MAX_SUMMARIZED_STORES stores."""
        return None if self.per_store is None else combined_summary(self.per_store)


def combined_summary(blocks: list[pd.DataFrame]) -> pd.DataFrame:
    """Per store, the polls, first instant, least and most status of every block's polls (a
    store may span blocks)."""
    if not blocks:
        none = np.zeros(0, dtype=np.int64)
        return block_summary(none, none, none.astype(bool))
    return (
        pd.concat(blocks, ignore_index=True)
        .groupby("store_key", as_index=False, sort=True)
        .agg(
            polls=("polls", "sum"),
            first_ts_us=("first_ts_us", "min"),
            least_active=("least_active", "min"),
            most_active=("most_active", "max"),
        )
    )


def block_summary(keys: np.ndarray, instants: np.ndarray, active: np.ndarray) -> pd.DataFrame:
    """Per store of a block in key order: its polls, first instant, least and most status."""
    active = active.astype(bool)
    if not keys.size:
        least = most = active
        starts = np.zeros(0, dtype=np.int64)
    else:
        starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
        least, most = np.minimum.reduceat(active, starts), np.maximum.reduceat(active, starts)
    return pd.DataFrame(
        {
            "store_key": keys[starts].astype(np.int64),
            "polls": np.diff(np.r_[starts, keys.size]).astype(np.int64),
            "first_ts_us": instants[starts].astype(np.int64),
            "least_active": least,
            "most_active": most,
        }
    )


# --------------------------------------------------------------------------- bulk inserts


def bulk_insert(
    conn: Connection,
    table: str,
    rows: pd.DataFrame,
    skip_duplicates: bool = False,
    same: dict[str, int] | None = None,
) -> int:
    """Insert a frame the fastest way the engine offers; return the number of rows inserted.

    MySQL/MariaDB: LOAD DATA LOCAL INFILE from a temporary CSV, then a check that the server
    changed or dropped no row (it only warns). SQLite: executemany in the open transaction.
    With `skip_duplicates`, rows whose primary key exists are skipped. `same` gives integer
    columns whose value is the same in every row (sent once, not once a row).
    """
    if rows.empty:
        return 0
    if conn.dialect.name == "mysql":
        return _load_data_local(conn, table, rows, skip_duplicates, same or {})
    verb = "INSERT OR IGNORE" if skip_duplicates else "INSERT"
    return insert_rows(conn, table, rows, verb, same)


def insert_ignoring(conn: Connection) -> str:
    """The verb of an INSERT that skips rows whose unique key exists, in `conn`'s dialect."""
    return "INSERT OR IGNORE" if conn.dialect.name == "sqlite" else "INSERT IGNORE"


def insert_rows(
    conn: Connection,
    table: str,
    rows: pd.DataFrame,
    verb: str = "INSERT",
    same: dict[str, int] | None = None,
) -> int:
    """Plain INSERTs, rows in order (a duplicate key raises, unless `verb` ignores it).

    On SQLite, through the driver's executemany; integer rows go ROWS_PER_STATEMENT to a
    statement (`VALUES (…), (…), …`): a third of the time of one statement a row, whose cost is
    mostly the driver's per-statement work. On MySQL/MariaDB, as multi-row statements of
    literals (`literal_rows`).
    """
    if conn.dialect.name == "mysql":
        return _insert_literal_rows(conn, table, rows, verb, same or {})
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    same = same or {}
    names = ", ".join([*rows.columns, *same])
    row = "(" + ", ".join([mark] * rows.shape[1] + [str(int(v)) for v in same.values()]) + ")"
    cursor = conn.connection.driver_connection.cursor()
    grouped = conn.dialect.name == "sqlite" and all(
        pd.api.types.is_integer_dtype(dtype) for dtype in rows.dtypes
    )
    inserted = 0
    for start in range(0, len(rows), EXECUTEMANY_ROWS):  # bounds the Python objects alive
        part = rows.iloc[start : start + EXECUTEMANY_ROWS]
        whole = len(part) // ROWS_PER_STATEMENT * ROWS_PER_STATEMENT if grouped else 0
        if whole:
            values = ", ".join([row] * ROWS_PER_STATEMENT)
            flat = (
                part.iloc[:whole]
                .to_numpy(dtype=np.int64)
                .reshape(-1, ROWS_PER_STATEMENT * part.shape[1])
            )
            cursor.executemany(f"{verb} INTO {table} ({names}) VALUES {values}", flat.tolist())
            inserted += cursor.rowcount
        rest = part.iloc[whole:]
        if len(rest):
            cursor.executemany(
                f"{verb} INTO {table} ({names}) VALUES {row}",
                zip(*(rest[name].tolist() for name in rest.columns), strict=True),
            )
            inserted += cursor.rowcount
    return inserted


def _insert_literal_rows(
    conn: Connection, table: str, rows: pd.DataFrame, verb: str, same: dict[str, int]
) -> int:
    names = ", ".join([*rows.columns, *same])
    cursor = conn.connection.driver_connection.cursor()
    inserted = 0
    for values in literal_rows(conn, rows, same):
        cursor.execute(f"{verb} INTO {table} ({names}) VALUES {values}")
        inserted += cursor.rowcount
    return inserted


def literal_rows(conn: Connection, rows: pd.DataFrame, same: dict[str, int]) -> Iterator[str]:
    """The rows as SQL literals `(…),(…),…`, about STATEMENT_BYTES at a time.

    PyMySQL binds nothing on the server: its executemany writes each value into the statement
    too, through its converters, several calls a value. Here a column is written at once:
    integers and booleans as digits, text through the driver's own `escape` (what its
    executemany calls), each distinct value once (`_literal`)."""
    driver = conn.connection.driver_connection
    columns = [_literals(rows[name], driver) for name in rows.columns]
    suffix = "".join(f",{int(value)}" for value in same.values()) + ")"
    group: list[str] = []
    size = 0
    for values in zip(*columns, strict=True):
        row = "(" + ",".join(values) + suffix
        group.append(row)
        size += len(row) + 1
        if size >= STATEMENT_BYTES:
            yield ",".join(group)
            group, size = [], 0
    if group:
        yield ",".join(group)


def _literals(column: pd.Series, driver) -> list[str]:
    if pd.api.types.is_bool_dtype(column.dtype):
        return np.where(column.to_numpy(bool), "1", "0").tolist()
    if pd.api.types.is_integer_dtype(column.dtype):
        return list(map(str, column.to_numpy(np.int64).tolist()))
    codes, values = pd.factorize(column)  # each distinct value written once; a missing one: -1
    written = _text_literals(values, driver)
    if written is None:
        written = [_literal(value, driver) for value in values]
    return np.array([*written, "NULL"], dtype=object)[codes].tolist()


TEXT_SEPARATOR = "\x1e"  # no escaping changes it


def _text_literals(values: np.ndarray, driver) -> list[str] | None:
    """Texts escaped by the driver in one call (thousands of event bodies: one call a value
    cost more than the server's insert), or None when a value is no text or holds the
    separator."""
    if pd.api.types.infer_dtype(values, skipna=False) != "string":
        return None
    joined = TEXT_SEPARATOR.join(values.tolist())
    if joined.count(TEXT_SEPARATOR) != max(len(values) - 1, 0):
        return None
    escaped = driver.escape(joined)[1:-1].split(TEXT_SEPARATOR)
    return [f"'{text}'" for text in escaped] if len(values) else []


def _literal(value: object, driver) -> str:
    """Text through the driver's escaping (which follows NO_BACKSLASH_ESCAPES), integers and
    booleans as digits, a date and time without zone as its ISO text; nothing else."""
    if isinstance(value, str):
        return driver.escape(value)
    if isinstance(value, bool | np.bool_):
        return "1" if value else "0"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, datetime) and value.tzinfo is None:
        return f"'{value.isoformat(sep=' ')}'"
    raise TypeError(f"no SQL literal for a {type(value).__name__}")


def _load_data_local(
    conn: Connection, table: str, rows: pd.DataFrame, skip_duplicates: bool, same: dict[str, int]
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
        settings = ", ".join(f"{name} = {int(value)}" for name, value in same.items())
        cursor.execute(
            f"LOAD DATA LOCAL INFILE %s {ignore} INTO TABLE {table} CHARACTER SET utf8mb4 "
            "FIELDS TERMINATED BY ',' OPTIONALLY ENCLOSED BY '\"' ESCAPED BY '' "
            f"LINES TERMINATED BY '\\n' ({', '.join(rows.columns)})"
            + (f" SET {settings}" if settings else ""),
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

# Hours rows or closures of one store: more is no business week, but a broken or hostile input
# (each would be stored and read by every report).
MAX_ROWS_PER_STORE = 1000
# Stores of one group: every store of loop-full ten times over.
MAX_STORES_PER_GROUP = 200_000


@dataclass
class VersionCounts:
    """What an input's versioned rows came to: inserted + unchanged + duplicates = received."""

    inserted: int = 0
    unchanged: int = 0  # rows of stores whose rows were already exactly these
    duplicates: int = 0  # repeats of a row of the same store (zones: earlier rows of a store)


class VersionedRows:
    """Writes one input's hours, zones, closures or group memberships as versions of `batch`,
    in bounded memory.

    Rows are versioned per owner: a store (hours, zones, closures) or a group (`VERSIONED_BY`
    of the model names the column); "store" below means that owner.

    Each chunk is inserted as it comes, each row once: repeats within the chunk are dropped,
    and so are rows already inserted by an earlier chunk (looked up for the stores seen
    before; a zone replaces its store's earlier one). Only the keys of the stores seen are
    kept. `settle()` then finishes in the database, on whole sets: a store beyond
    MAX_ROWS_PER_STORE refuses the load, the new rows of a store that are exactly its current
    rows are deleted again (the store is left alone), and the current rows of every other
    store in the input are retired.
    """

    def __init__(
        self, conn: Connection, model: VersionedModel, batch: int, label: str, last_wins: bool
    ) -> None:
        self.conn, self.model, self.batch, self.label = conn, model, batch, label
        self.owner = owner_column(model)
        names = [column.name for column in model.__table__.columns]
        self.values = [name for name in names if name not in (*_VERSION_COLUMNS, self.owner)]
        self.key = [self.owner] if last_wins else [self.owner, *self.values]
        self.last_wins = last_wins
        self.limit = 1 if last_wins else _row_limit(model)
        self.stores = np.zeros(0, dtype=object)  # owners with rows of this batch, sorted
        self.spanning = False  # whether a store's rows came in more than one chunk
        self.received = 0
        self.kept = 0  # rows of this batch in the table

    def add(self, rows: pd.DataFrame) -> None:
        """Insert a chunk of rows (`store_key` and the model's value columns)."""
        self.received += len(rows)
        fresh = rows.drop_duplicates(self.key, keep="last")
        per_store = fresh.groupby(self.owner).size()
        if len(per_store) and per_store.max() > self.limit:
            self._refuse(per_store.idxmax())
        seen = fresh[self.owner].isin(self.stores).to_numpy()
        if seen.any():
            self.spanning = True
            fresh = self._without_earlier_rows(fresh, seen)
        owners = fresh[self.owner].to_numpy(dtype=object)
        self.stores = np.union1d(self.stores, owners).astype(object)
        self.kept += bulk_insert(
            self.conn, self.model.__tablename__, fresh.assign(batch=self.batch)
        )

    def _without_earlier_rows(self, fresh: pd.DataFrame, seen: np.ndarray) -> pd.DataFrame:
        """The chunk's rows but those an earlier chunk inserted; a zone instead deletes its
        store's earlier zone (the last row of a store wins)."""
        earlier = self._batch_rows(np.unique(fresh[self.owner].to_numpy(dtype=object)[seen]))
        if self.last_wins:
            for start in range(0, len(earlier), IN_LIST_SIZE):
                ids = earlier["id"].iloc[start : start + IN_LIST_SIZE].tolist()
                self.conn.execute(delete(self.model).where(self.model.id.in_(ids)))
            self.kept -= len(earlier)
            return fresh
        known = fresh.merge(earlier[self.key], on=self.key, how="left", indicator=True)
        return fresh[(known["_merge"] == "left_only").to_numpy()]

    def _batch_rows(self, store_keys: np.ndarray) -> pd.DataFrame:
        """The rows this batch inserted for the given stores: id, key and values."""
        model, owner = self.model, getattr(self.model, self.owner)
        columns = [model.id, *(getattr(model, name) for name in [self.owner, *self.values])]
        found = []
        for start in range(0, store_keys.size, IN_LIST_SIZE):
            keys = store_keys[start : start + IN_LIST_SIZE].tolist()
            query = select(*columns).where(model.batch == self.batch, owner.in_(keys))
            found += self.conn.execute(query).cursor.fetchall()  # plain tuples: fast to frame
        return pd.DataFrame(found, columns=[column.key for column in columns])

    def settle(self) -> VersionCounts:
        """Finish the input's versions in the database; return what its rows came to."""
        model, batch, owner = self.model, self.batch, getattr(self.model, self.owner)
        if self.spanning and not self.last_wins:  # each chunk was checked on its own
            self._refuse_crowded_stores()
        unchanged = self.conn.execute(
            delete(model).where(
                model.batch == batch, owner.in_(select(self._unchanged_stores().c.key))
            )
        ).rowcount
        replaced = select(owner.label("owner")).where(model.batch == batch).group_by(owner)
        self.conn.execute(
            update(model)
            .where(model.retired_batch.is_(None), model.batch < batch)
            .where(owner.in_(select(replaced.subquery("replaced").c.owner)))
            .values(retired_batch=batch)
        )
        return VersionCounts(self.kept - unchanged, unchanged, self.received - self.kept)

    def _unchanged_stores(self) -> Subquery:
        """Stores whose new rows (a set, once repeats are gone) are exactly their current
        rows: as many current rows as new ones, and every new one among them."""
        model, batch, name = self.model, self.batch, self.owner
        new, current = aliased(model), aliased(model)
        same_row = exists().where(
            getattr(current, name) == getattr(new, name),
            current.batch < batch,
            current.retired_batch.is_(None),
            *(getattr(current, name) == getattr(new, name) for name in self.values),
        )
        new_owner, owner = getattr(new, name).label("owner"), getattr(model, name)
        counted = {
            "new_rows": select(new_owner, func.count().label("rows")).where(new.batch == batch),
            "current_rows": select(owner.label("owner"), func.count().label("rows")).where(
                model.batch < batch,
                model.retired_batch.is_(None),
                owner.in_(select(getattr(new, name)).where(new.batch == batch)),
            ),
            "found_rows": select(new_owner, func.count().label("rows")).where(
                new.batch == batch, same_row
            ),
        }
        new_rows, now_rows, found_rows = (
            query.group_by(query.selected_columns[0]).subquery(label)
            for label, query in counted.items()
        )
        return (
            select(new_rows.c.owner.label("key"))
            .join(now_rows, now_rows.c.owner == new_rows.c.owner)
            .join(found_rows, found_rows.c.owner == new_rows.c.owner)
            .where(now_rows.c.rows == new_rows.c.rows, found_rows.c.rows == new_rows.c.rows)
            .subquery("unchanged")
        )

    def _refuse_crowded_stores(self) -> None:
        model = self.model
        owner = getattr(model, self.owner)
        crowded = self.conn.execute(
            select(owner)
            .where(model.batch == self.batch)
            .group_by(owner)
            .having(func.count() > self.limit)
            .limit(1)
        ).scalar()
        if crowded is not None:
            self._refuse(crowded)

    def _refuse(self, owner: object) -> None:
        what = _ROWS_CALLED[self.model.__tablename__]
        if self.owner != "store_key":
            raise LoadError(
                self.label,
                f"group {quoted(str(owner))} has more than {self.limit} {what}, the most a "
                "group may have; nothing was loaded",
            )
        external_id = self.conn.scalar(select(Store.external_id).where(Store.id == int(owner)))
        raise LoadError(
            self.label,
            f"store {quoted(str(external_id))} has more than {self.limit} {what}, the most a "
            "store may have; nothing was loaded",
        )


_VERSION_COLUMNS = ("id", "batch", "retired_batch")
_ROWS_CALLED = {
    BusinessHours.__tablename__: "different business-hours rows",
    Closure.__tablename__: "different closures",
    StoreTimezone.__tablename__: "time zone",
    StoreGroupMember.__tablename__: "stores",
}


def owner_column(model: VersionedModel) -> str:
    """The column whose rows are replaced together: a store's, or a group's."""
    return getattr(model, "VERSIONED_BY", "store_key")


def _row_limit(model: VersionedModel) -> int:
    return MAX_STORES_PER_GROUP if model is StoreGroupMember else MAX_ROWS_PER_STORE


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
