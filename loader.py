"""Load polls, hours, time zones, closures and store groups: validated, all-or-nothing, idempotent.

One load is one database transaction: every row of every input is checked before it commits,
and any error (without `skip_invalid`) rolls everything back. Polls are appended (the first
poll of a store at an instant is kept); hours, time zones and closures replace the rows of the
stores present in their file, as new versions, and store groups the members of the groups
present in theirs. The work is done by `sources` (reading),
`validation` (checks), `writing` (the database) and `rejects` (rows set aside); this module
runs a load through them and sums it up.

Two doors: `load` takes a folder and/or files (the command line); `load_sources` takes any
list of `Source`s and lets the caller keep rejected rows in memory (an HTTP upload).
"""

from __future__ import annotations

import collections
import contextlib
import enum
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
from sqlalchemy import Connection, Engine, create_engine, insert, inspect, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from loading import ndjson
from loading.compaction import Compaction, compact_polls_if_bloated
from loading.lock_waits import LockWaitTimeout, bounded_lock_wait, writers_in_turn
from loading.rejects import RejectsFile, RejectsInMemory, default_rejects_path
from loading.sources import (
    NDJSON,
    Chunk,
    Source,
    collect_sources,
    find_sources,
    stream_chunks,
    worked_ahead,
)
from loading.stores import StoreKeys, known_stores
from loading.validation import (
    CLOSURES,
    GROUPS,
    HOURS,
    MAX_COUNTED_ERRORS,
    MAX_LISTED_ERRORS,
    POLLS,
    REQUIRED_COLUMNS,
    TIMEZONES,
    LoadError,
    RowError,
    check_chunk,
    row_errors,
)
from loading.writing import PollWriter, VersionedRows, combined_summary, insert_rows
from models import (
    BatchPolls,
    BatchStore,
    BusinessHours,
    Closure,
    DataState,
    LoadBatch,
    StoreGroupMember,
    StoreTimezone,
    utcnow,
)

__all__ = [
    "FileSummary",
    "LoadError",
    "LoadSummary",
    "RejectsTo",
    "RowError",
    "Source",
    "find_sources",
    "load",
    "load_sources",
]

logger = logging.getLogger(__name__)

# Zones and hours first: a failure there is found before the long polls file is read.
LOAD_ORDER = [GROUPS, TIMEZONES, HOURS, CLOSURES, POLLS]
STORE_ROW_MODELS = {
    TIMEZONES: StoreTimezone,
    HOURS: BusinessHours,
    CLOSURES: Closure,
    GROUPS: StoreGroupMember,
}
NO_SCHEMA = "schema not initialised: run `flask --app app init-db` first"
LOCKED = "another load is writing; try again when it has finished"
# What a lock wait that ran out says: SQLite's busy timeout, MySQL/MariaDB error 1205.
LOCK_TIMEOUT_MESSAGES = ("database is locked", "Lock wait timeout exceeded")
ProgressCallback = Callable[[str, int, int, int], None]


class RejectsTo(enum.StrEnum):
    """Where `skip_invalid` puts rejected rows: a file next to the input, or the summary."""

    FILE = "file"
    MEMORY = "memory"


# --------------------------------------------------------------------------- summaries


@dataclass
class FileSummary:
    """What one input gave: rows read = loaded + unchanged + duplicates + rejected."""

    kind: str
    path: str  # the input's label
    rows_read: int = 0
    loaded: int = 0
    unchanged: int = 0  # rows of stores whose hours/zone/closures were already these
    duplicates: int = 0
    rejected: int = 0
    rejects_path: str | None = None
    rejected_rows: list[RowError] = field(default_factory=list)  # RejectsTo.MEMORY: the first

    def __str__(self) -> str:
        kept = f"{self.loaded} loaded, "
        if self.kind != POLLS:
            kept += f"{self.unchanged} unchanged, "
        text = (
            f"{self.kind}: {self.path}: {self.rows_read} rows read, {kept}"
            f"{self.duplicates} duplicates skipped, {self.rejected} rejected"
        )
        return text + (f" (see {self.rejects_path})" if self.rejects_path else "")


@dataclass
class LoadSummary:
    batch: int
    seconds: float = 0.0
    files: list[FileSummary] = field(default_factory=list)
    compaction: Compaction | None = None  # the polls table rebuilt after the commit

    def __str__(self) -> str:
        lines = [str(item) for item in self.files]
        lines.append(f"batch {self.batch} committed in {self.seconds:.1f} s")
        return "\n".join([*lines, *([str(self.compaction)] if self.compaction else [])])


# --------------------------------------------------------------------------- the doors


def load(
    engine: Engine,
    folder: Path | str | None = None,
    *,
    polls: Path | str | None = None,
    hours: Path | str | None = None,
    timezones: Path | str | None = None,
    closures: Path | str | None = None,
    groups: Path | str | None = None,
    skip_invalid: bool = False,
    progress: ProgressCallback | None = None,
    compact_every_seconds: float | None = None,
) -> LoadSummary:
    """Load a folder and/or single files in one transaction; raise LoadError and change nothing
    on invalid input (unless `skip_invalid`, which loads the valid rows and writes the others to
    a ``*.rejects.csv`` file next to the input)."""
    files = {
        POLLS: polls,
        HOURS: hours,
        TIMEZONES: timezones,
        CLOSURES: closures,
        GROUPS: groups,
    }
    return load_sources(
        engine,
        collect_sources(folder, files),
        skip_invalid=skip_invalid,
        rejects=RejectsTo.FILE,
        progress=progress,
        compact_every_seconds=compact_every_seconds,
    )


def load_sources(
    engine: Engine,
    sources: list[Source],
    *,
    skip_invalid: bool = False,
    rejects: RejectsTo = RejectsTo.FILE,
    progress: ProgressCallback | None = None,
    lock_wait_ms: int | None = None,
    check_first: bool = False,
    compact_every_seconds: float | None = None,
) -> LoadSummary:
    """Load inputs (at most one of each kind) in one transaction.

    Without `skip_invalid` any invalid row raises LoadError and nothing is written. With it,
    invalid rows are set aside: to a ``*.rejects.csv`` next to each input (`RejectsTo.FILE`),
    or, for inputs with no folder of their own, kept in the summary (`RejectsTo.MEMORY`: each
    file's first 10,000 rows in `rejected_rows`, all of them counted in `rejected`).
    Without `skip_invalid` an input is refused as soon as MAX_COUNTED_ERRORS invalid rows
    are counted (its size makes no difference to how long that takes).
    `lock_wait_ms` bounds the wait for another load's lock (then LoadError `LOCKED`);
    `check_first` reads and checks every input before taking the lock (and again, to write,
    under it): concurrent uploads then only queue for their writes.
    With `compact_every_seconds`, a MariaDB polls table bloated by appends is rebuilt after
    the commit, at most that often (`compaction`; the summary says what was done).
    """
    file_loads = [
        _FileLoad(source, _rejects_for(source, skip_invalid, rejects))
        for source in _in_load_order(sources)
    ]
    started, clock = utcnow(), time.perf_counter()
    try:
        for item in file_loads:
            item.open_rejects()
        batch = _write_all(engine, file_loads, started, progress, lock_wait_ms, check_first)
    except BaseException:
        for item in file_loads:
            item.discard()
        raise
    for item in file_loads:
        item.finish()
    summary = LoadSummary(batch, time.perf_counter() - clock, [item.summary for item in file_loads])
    logger.info("load committed: %s", summary)
    if compact_every_seconds is not None:
        summary.compaction = _compact_polls(engine, compact_every_seconds)
    return summary


def _compact_polls(engine: Engine, every_seconds: float) -> Compaction | None:
    """Compact the polls table if due; a failure is logged, never the committed load's."""
    try:
        return compact_polls_if_bloated(engine, every_seconds)
    except Exception:
        logger.exception("polls table: compaction failed (the load is committed)")
        return None


def _in_load_order(sources: list[Source]) -> list[Source]:
    """Refuse unknown kinds, two inputs of a kind and missing files; order by LOAD_ORDER."""
    if not sources:
        raise LoadError(".", "nothing to load")
    seen: set[str] = set()
    for source in sources:
        if source.kind not in LOAD_ORDER:
            raise LoadError(source.label, f"unknown kind of input {source.kind!r}")
        if source.kind in seen:
            raise LoadError(source.label, f"more than one {source.kind} input")
        if not source.path.is_file():
            raise LoadError(source.label, "no such file")
        seen.add(source.kind)
    return sorted(sources, key=lambda source: LOAD_ORDER.index(source.kind))


def _rejects_for(
    source: Source, skip_invalid: bool, rejects: RejectsTo
) -> RejectsFile | RejectsInMemory | None:
    if not skip_invalid:
        return None
    if rejects == RejectsTo.MEMORY:
        return RejectsInMemory()
    return RejectsFile(default_rejects_path(source.path), REQUIRED_COLUMNS[source.kind])


# --------------------------------------------------------------------------- one input


class _FileLoad:
    """One input while it streams: its summary, its first errors and its rejected rows."""

    def __init__(self, source: Source, rejects: RejectsFile | RejectsInMemory | None) -> None:
        self.source = source
        self.kind = source.kind
        self.rejects = rejects
        self.summary = FileSummary(source.kind, source.label)
        self.errors: list[RowError] = []

    @property
    def refused(self) -> bool:
        """Whether the input has invalid rows and the load may not skip them."""
        return self.rejects is None and self.summary.rejected > 0

    def open_rejects(self) -> None:
        if self.rejects is not None:
            self.rejects.open()

    def record(self, rejected: pa.Table) -> None:
        """Count rejected rows, keep the first errors, and pass the rows to the rejects;
        refuse the input once there are too many to be worth counting."""
        self.summary.rejected += rejected.num_rows
        merged = self.errors + row_errors(rejected)
        self.errors = sorted(merged, key=lambda error: error.line)[:MAX_LISTED_ERRORS]
        if self.rejects is not None:
            self.rejects.add(rejected)
        elif self.summary.rejected >= MAX_COUNTED_ERRORS:
            count = self.summary.rejected
            raise LoadError(
                self.source.label,
                f"at least {count} invalid rows (reading stopped there); nothing was loaded",
                self.errors,
                count,
            )

    def record_malformed(self, rejected: pa.Table) -> None:
        """Rows the parser skipped are rows read too."""
        self.summary.rows_read += rejected.num_rows
        self.record(rejected)

    def raise_if_refused(self) -> None:
        if self.refused:
            count = self.summary.rejected
            raise LoadError(
                self.source.label, f"{count} invalid rows; nothing was loaded", self.errors, count
            )

    def finish(self) -> None:
        if isinstance(self.rejects, RejectsFile):
            self.summary.rejects_path = self.rejects.commit()
        elif isinstance(self.rejects, RejectsInMemory):
            self.summary.rejected_rows = self.rejects.rows

    def discard(self) -> None:
        if self.rejects is not None:
            self.rejects.discard()


# --------------------------------------------------------------------------- the transaction


_LOADING_ENGINES: dict[str, Engine] = {}
_LOADING_ENGINES_LOCK = threading.Lock()


def loading_engine(engine: Engine) -> Engine:
    """The engine loads write through. On MySQL/MariaDB its connections allow
    `LOAD DATA LOCAL INFILE` (the fastest bulk insert), which the app's own connections do not:
    a server can ask such a connection for any file, so only loads hold them."""
    if engine.dialect.name != "mysql":
        return engine
    key = engine.url.render_as_string(hide_password=False)
    with _LOADING_ENGINES_LOCK:
        if key not in _LOADING_ENGINES:
            _LOADING_ENGINES[key] = create_engine(
                engine.url,
                poolclass=NullPool,  # a connection per load, closed after it: none left open
                connect_args={"local_infile": True, "charset": "utf8mb4"},
            )
        return _LOADING_ENGINES[key]


def _write_all(
    engine: Engine,
    file_loads: list[_FileLoad],
    started: datetime,
    progress: ProgressCallback | None,
    lock_wait_ms: int | None,
    check_first: bool,
) -> int:
    """Run every input in one transaction; return its batch number.

    With `check_first` (uploads), every input is read and checked in a first pass that keeps
    only counts, the first errors and the rejected rows' summary, before the transaction takes
    the load lock; under the lock the inputs are read again and written. Otherwise inputs
    stream through the open transaction once. Either way memory is bounded by a chunk.
    """
    if check_first:
        for item in file_loads:  # counts and the first errors only: no chunk is kept
            collections.deque(_checked_values(item, progress), maxlen=0)
    try:
        with (
            writers_in_turn(engine, lock_wait_ms),
            loading_engine(engine).connect() as conn,
            bounded_lock_wait(conn, lock_wait_ms),
            conn.begin(),
        ):
            batch, database = _next_batch(conn)
            keys = StoreKeys(conn, known_stores(f"{engine.url}#{database}"))
            spans, poll_summaries = [], []
            for item in file_loads:
                # A command's load checks the next chunk in a thread while it writes one; an
                # upload (checked in a first pass already) reads one chunk at a time, so that
                # its memory stays that of one chunk whatever its body. Closed whatever
                # happens: the thread and the open input end with the write.
                values = (
                    _valid_values(item)
                    if check_first
                    else worked_ahead(_checked_values(item, progress))
                )
                with contextlib.closing(values) as checked:
                    spans.append(_load_file(conn, item, keys, batch, checked, poll_summaries))
            _record_batch(conn, batch, started, file_loads, spans)
            _record_batch_stores(conn, batch, keys)
            _record_batch_polls(conn, batch, poll_summaries)
        keys.remember()
    except LockWaitTimeout as exc:
        raise LoadError("database", LOCKED) from exc
    except Exception as exc:
        if _is_lock_timeout(exc):
            raise LoadError("database", LOCKED) from exc
        raise
    return batch


def _is_lock_timeout(exc: Exception) -> bool:
    return any(message in str(exc) for message in LOCK_TIMEOUT_MESSAGES)


def _next_batch(conn: Connection) -> tuple[int, str]:
    """Take the load lock (the data-state row); return the next batch number and the
    database's instance id (which store keys this process may remember).

    The transaction's first statement is this write: on SQLite a transaction that reads first
    cannot wait for the write lock later (it fails at once when another load committed).
    """
    try:
        updated = conn.execute(
            update(DataState).where(DataState.id == 1).values(last_batch=DataState.last_batch + 1)
        )
    except DBAPIError as exc:
        if not inspect(conn).has_table(DataState.__tablename__):
            raise LoadError("database", NO_SCHEMA) from exc
        raise
    if updated.rowcount != 1:
        raise LoadError("database", NO_SCHEMA)
    row = conn.execute(
        select(DataState.last_batch, DataState.instance_id).where(DataState.id == 1)
    ).one()
    return int(row.last_batch), str(row.instance_id)


def _chunks(source: Source, on_rejected: Callable[[pa.Table], None]) -> Iterator[Chunk]:
    """Stream an input (CSV or NDJSON) as chunks; rows it cannot read go to `on_rejected`."""
    if source.format == NDJSON:
        return ndjson.stream_chunks(source.path, on_rejected)
    return stream_chunks(source, on_rejected)


def _checked_values(item: _FileLoad, progress: ProgressCallback | None) -> Iterator[dict]:
    """Stream one input and check it: yield the values of its valid rows, chunk by chunk
    (nothing once a row is refused), and record the others; refuse at the end if must."""
    size = max(item.source.path.stat().st_size, 1)
    for chunk in _chunks(item.source, item.record_malformed):
        checked = check_chunk(item.kind, chunk)
        item.summary.rows_read += len(chunk)
        if progress:
            progress(f"{item.kind}: reading", chunk.bytes_read, size, item.summary.rows_read)
        if checked.rejected is not None:
            item.record(checked.rejected)
        if not item.refused:  # else keep validating to count every error; nothing will commit
            yield checked.values
    item.raise_if_refused()
    if progress:
        progress(f"{item.kind}: writing", size, size, item.summary.rows_read)


def _valid_values(item: _FileLoad) -> Iterator[dict]:
    """The values of an input's valid rows again, chunk by chunk: a first pass through
    `_checked_values` has counted and recorded everything else."""
    for chunk in _chunks(item.source, lambda _rejected: None):
        yield check_chunk(item.kind, chunk).values


def _load_file(
    conn: Connection,
    item: _FileLoad,
    keys: StoreKeys,
    batch: int,
    values: Iterable[dict],
    poll_summaries: list[pd.DataFrame | None],
) -> tuple[int | None, int | None]:
    """Write one input's checked values into the open transaction; return the (min, max)
    poll instant (and add what polls it sent per store to `poll_summaries`)."""
    if item.kind != POLLS:
        _write_store_rows(conn, item, keys, values, batch)
        return None, None
    writer = PollWriter(conn, batch)
    try:
        for part in values:
            if part["ts_us"].size:
                writer.add(keys.keys_for(part["store_id"]), part["ts_us"], part["active"])
        writer.finish()
        poll_summaries.append(writer.summary())
    finally:
        writer.close()
    item.summary.loaded += writer.inserted
    item.summary.duplicates += writer.written - writer.inserted
    return writer.low, writer.high


def _write_store_rows(
    conn: Connection, item: _FileLoad, keys: StoreKeys, values: Iterable[dict], batch: int
) -> None:
    """Hours, time zones, closures: the input's stores get exactly its rows, each distinct
    row once (one zone per store: the last row of a store wins); store groups: the input's
    groups get exactly its stores (a store with no data yet is created, as a poll would)."""
    model = STORE_ROW_MODELS[item.kind]
    rows = VersionedRows(conn, model, batch, item.source.label, last_wins=item.kind == TIMEZONES)
    for part in values:
        store_ids = part.pop("store_id")
        if len(store_ids):
            frame = pd.DataFrame(part)
            frame.insert(0, "store_key", keys.keys_for(store_ids))
            rows.add(frame)
    counts = rows.settle()
    item.summary.loaded += counts.inserted
    item.summary.unchanged += counts.unchanged
    item.summary.duplicates += counts.duplicates


def _record_batch_stores(conn: Connection, batch: int, keys: StoreKeys) -> None:
    """Which stores this batch wrote rows for: the ones whose incidents may have changed."""
    store_keys = keys.used_keys()
    for low in range(0, store_keys.size, BATCH_STORES_PER_INSERT):
        rows = [
            {"batch": batch, "store_key": int(key)}
            for key in store_keys[low : low + BATCH_STORES_PER_INSERT]
        ]
        conn.execute(insert(BatchStore), rows)


BATCH_STORES_PER_INSERT = 10_000


def _record_batch_polls(conn: Connection, batch: int, summaries: list[pd.DataFrame | None]) -> None:
    """What this batch sent for each store's polls (`models.BatchPolls`); nothing when an input
    named too many stores to summarise (`writing.MAX_SUMMARIZED_STORES`): the evaluation of a
    batch without these rows reads its stores' polls."""
    if any(summary is None for summary in summaries):
        return
    rows = combined_summary(summaries)
    if not rows.empty:
        insert_rows(conn, BatchPolls.__tablename__, rows, same={"batch": batch})


def _record_batch(
    conn: Connection,
    batch: int,
    started: datetime,
    file_loads: list[_FileLoad],
    spans: list[tuple[int | None, int | None]],
) -> None:
    lows = [low for low, _ in spans if low is not None]
    highs = [high for _, high in spans if high is not None]
    polls_summary = next(
        (item.summary for item in file_loads if item.kind == POLLS), FileSummary(POLLS, "")
    )
    conn.execute(
        insert(LoadBatch).values(
            id=batch,
            started_at=started,
            finished_at=utcnow(),
            sources="; ".join(item.source.label for item in file_loads),
            polls_loaded=polls_summary.loaded,
            polls_duplicate=polls_summary.duplicates,
            rows_rejected=sum(item.summary.rejected for item in file_loads),
            min_ts_us=min(lows) if lows else None,
            max_ts_us=max(highs) if highs else None,
        )
    )
