"""Load polls, business hours and time zones from CSV: validated, all-or-nothing, idempotent.

One call to `load` is one database transaction: every row of every file is checked before it
commits, and any error (without `skip_invalid`) rolls everything back. Polls are appended
(duplicates of (store, instant) are skipped); hours and time zones replace the rows of the
stores present in the file. Files are streamed in Arrow record batches, so memory stays bounded.
"""

from __future__ import annotations

import csv
import gzip
import io
import logging
import os
import tempfile
import time
import zoneinfo
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from sqlalchemy import Connection, Engine, insert, select, update

import grouped
import timestamps
from models import (
    STORE_ID_MAX_LENGTH,
    BusinessHours,
    DataState,
    LoadBatch,
    Store,
    StoreTimezone,
    utcnow,
)

logger = logging.getLogger(__name__)

POLLS, HOURS, TIMEZONES = "polls", "hours", "timezones"
FILE_PATTERNS = {
    POLLS: ["store_status.csv", "store status.csv", "polls.csv"],
    HOURS: ["menu_hours.csv", "Menu hours.csv", "business_hours.csv"],
    TIMEZONES: ["timezones.csv", "store_timezone.csv", "store_timezones.csv", "bq-results-*.csv"],
}
REQUIRED_COLUMNS = {
    POLLS: ["store_id", "status", "timestamp_utc"],
    HOURS: ["store_id", "day", "start_time_local", "end_time_local"],
    TIMEZONES: ["store_id", "timezone_str"],
}
LOAD_ORDER = [TIMEZONES, HOURS, POLLS]
MAX_LISTED_ERRORS = 20
BATCH_BYTES = 8 << 20
POLL_BUFFER_ROWS = 4_000_000
EXECUTEMANY_ROWS = 200_000
VALID_ZONES = frozenset(zoneinfo.available_timezones()) | {"UTC"}
ProgressCallback = Callable[[str, int, int, int], None]


# --------------------------------------------------------------------------- errors


@dataclass(frozen=True)
class RowError:
    line: int
    column: str
    value: str
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}, column {self.column}: {self.reason} (value {self.value!r})"


class LoadError(Exception):
    """A file cannot be loaded; nothing was written. Names the file, lines, columns, values."""

    def __init__(
        self,
        path: Path | str,
        message: str,
        errors: list[RowError] | None = None,
        error_count: int = 0,
    ) -> None:
        self.path = str(path)
        self.message = message
        self.errors = errors or []
        self.error_count = max(error_count, len(self.errors))
        super().__init__(str(self))

    def __str__(self) -> str:
        lines = [f"{self.path}: {self.message}"]
        lines += [f"  {error}" for error in self.errors]
        hidden = self.error_count - len(self.errors)
        if hidden > 0:
            lines.append(f"  ... and {hidden} more invalid rows")
        return "\n".join(lines)


# --------------------------------------------------------------------------- summary


@dataclass
class FileSummary:
    kind: str
    path: str
    rows_read: int = 0
    loaded: int = 0
    duplicates: int = 0
    rejected: int = 0
    rejects_path: str | None = None

    def __str__(self) -> str:
        text = (
            f"{self.kind}: {self.path}: {self.rows_read} rows read, {self.loaded} loaded, "
            f"{self.duplicates} duplicates skipped, {self.rejected} rejected"
        )
        return text + (f" (see {self.rejects_path})" if self.rejects_path else "")


@dataclass
class LoadSummary:
    batch: int
    seconds: float = 0.0
    files: list[FileSummary] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [str(item) for item in self.files]
        return "\n".join([*lines, f"batch {self.batch} committed in {self.seconds:.1f} s"])


# --------------------------------------------------------------------------- finding files


def find_sources(folder: Path) -> dict[str, Path]:
    """Find the polls, hours and time-zone files in a folder (``.csv`` or ``.csv.gz``)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise LoadError(folder, "not a folder")
    found: dict[str, Path] = {}
    for kind, patterns in FILE_PATTERNS.items():
        matches = sorted(
            {
                path
                for pattern in patterns
                for suffix in ("", ".gz")
                for path in folder.glob(pattern + suffix)
            }
        )
        if len(matches) > 1:
            names = ", ".join(path.name for path in matches)
            raise LoadError(folder, f"more than one {kind} file: {names}")
        if matches:
            found[kind] = matches[0]
    if not found:
        expected = "; ".join(
            f"{kind}: {' or '.join(names)}" for kind, names in FILE_PATTERNS.items()
        )
        raise LoadError(folder, f"no input files found (expected {expected}, optionally .gz)")
    return found


# --------------------------------------------------------------------------- reading


@dataclass
class Chunk:
    """A batch of rows as text columns, with each row's line number in the file."""

    columns: dict[str, pa.Array]
    lines: np.ndarray
    bytes_read: int = 0  # of the file on disk (compressed, for .gz)

    def __len__(self) -> int:
        return self.lines.size


def open_text_bytes(path: Path) -> io.BufferedIOBase:
    return gzip.open(path, "rb") if str(path).endswith(".gz") else open(path, "rb")


def read_header(path: Path, kind: str) -> list[str]:
    """Read and check the header: empty file, encoding, delimiter and missing columns."""
    try:
        with open_text_bytes(path) as stream:
            first = stream.readline()
    except (OSError, EOFError) as exc:
        raise LoadError(path, f"cannot read file: {exc}") from exc
    if not first.strip():
        raise LoadError(path, "file is empty (no header line)")
    try:
        text = first.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise LoadError(path, f"line 1: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    header = [name.strip() for name in next(csv.reader([text]))]
    if "dayOfWeek" in header and kind == HOURS:
        header = ["day" if name == "dayOfWeek" else name for name in header]
    missing = [name for name in REQUIRED_COLUMNS[kind] if name not in header]
    if missing:
        raise LoadError(path, _header_problem(kind, header, text, missing))
    if len(set(header)) != len(header):
        raise LoadError(path, f"line 1: duplicate column names in header {text.strip()!r}")
    return header


def _header_problem(kind: str, header: list[str], text: str, missing: list[str]) -> str:
    expected = ",".join(REQUIRED_COLUMNS[kind])
    if len(header) == 1 and any(mark in text for mark in (";", "\t", "|")):
        got = text.strip()
        return f"line 1: wrong delimiter: expected comma-separated columns {expected}, got {got!r}"
    if kind == HOURS and "day" in missing:
        missing = ["dayOfWeek (or day)" if name == "day" else name for name in missing]
    names = ", ".join(missing)
    return f"line 1: missing column(s) {names} (expected {expected}; header {text.strip()!r})"


class _BadRows:
    """Collects rows with the wrong number of fields, reported by the CSV parser."""

    def __init__(self) -> None:
        self.lines: list[int] = []
        self.errors: list[RowError] = []

    def __call__(self, row: pacsv.InvalidRow) -> str:
        line = (row.number or 0) if row.number is not None else 0
        self.lines.append(line)
        if row.text.strip():
            reason = f"expected {row.expected_columns} fields, found {row.actual_columns}"
            self.errors.append(RowError(line, "*", row.text[:80], reason))
        return "skip"


def iter_chunks(path: Path, kind: str, bad_rows: _BadRows) -> Iterator[Chunk]:
    """Stream the file as text columns; empty lines are skipped, malformed rows collected."""
    header = read_header(path, kind)
    wanted = REQUIRED_COLUMNS[kind]
    with pa.OSFile(str(path), mode="r") as raw:
        source = pa.CompressedInputStream(raw, "gzip") if str(path).endswith(".gz") else raw
        rows_before = 0
        try:
            for batch in _csv_reader(source, header, wanted, bad_rows):
                lines = _line_numbers(rows_before, len(batch), bad_rows.lines)
                rows_before += len(batch)
                yield Chunk({name: batch.column(name) for name in wanted}, lines, raw.tell())
        except (pa.ArrowInvalid, OSError, EOFError) as exc:
            raise _decode_problem(path, exc) from exc


def _csv_reader(source, header: list[str], wanted: list[str], bad_rows: _BadRows):
    """Arrow's streaming CSV reader: every column as text, the header already read."""
    return pacsv.open_csv(
        source,
        read_options=pacsv.ReadOptions(
            column_names=header, skip_rows=1, block_size=BATCH_BYTES, use_threads=False
        ),
        parse_options=pacsv.ParseOptions(invalid_row_handler=bad_rows, ignore_empty_lines=True),
        convert_options=pacsv.ConvertOptions(
            column_types={name: pa.string() for name in header},
            include_columns=wanted,
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        ),
    )


def _line_numbers(first_row: int, count: int, skipped_lines: list[int]) -> np.ndarray:
    """Line numbers of data rows, given the lines the parser skipped (header is line 1).

    Empty lines are skipped silently by the parser, so numbers are exact for files without
    blank lines and close otherwise.
    """
    rows = np.arange(first_row, first_row + count)
    skipped = np.sort(np.asarray(skipped_lines, dtype=np.int64))
    valid_before_skip = skipped - 2 - np.arange(skipped.size)
    return rows + 2 + np.searchsorted(valid_before_skip, rows, side="right")


def _decode_problem(path: Path, exc: Exception) -> LoadError:
    if "UTF8" not in str(exc) and "utf8" not in str(exc).lower():
        return LoadError(path, f"cannot parse CSV: {exc}")
    with open_text_bytes(path) as stream:
        for number, line in enumerate(stream, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as error:
                return LoadError(
                    path,
                    f"line {number}: not UTF-8 text ({error.reason} at column {error.start + 1})",
                )
    return LoadError(path, f"not UTF-8 text: {exc}")


# --------------------------------------------------------------------------- validation


@dataclass
class Checked:
    """Parsed columns of the valid rows of a chunk, and the errors of the others."""

    values: dict[str, np.ndarray]
    errors: list[RowError]
    rejected: pd.DataFrame


def _trimmed(array: pa.Array) -> pa.Array:
    return pc.utf8_trim_whitespace(array)


def store_id_problems(store_ids: pa.Array) -> list[tuple[np.ndarray, str]]:
    lengths = pc.utf8_length(store_ids).to_numpy(zero_copy_only=False)
    control = pc.match_substring_regex(store_ids, r"[\x00-\x1f\x7f]").to_numpy(zero_copy_only=False)
    return [
        (lengths == 0, "empty store_id"),
        (lengths > STORE_ID_MAX_LENGTH, f"store_id longer than {STORE_ID_MAX_LENGTH} characters"),
        (control, "store_id contains control characters"),
    ]


def check_polls(chunk: Chunk) -> tuple[dict[str, np.ndarray], list[tuple[str, np.ndarray, str]]]:
    store_ids = _trimmed(chunk.columns["store_id"])
    status = pc.utf8_lower(_trimmed(chunk.columns["status"]))
    known = pc.is_in(status, value_set=pa.array(["active", "inactive"])).to_numpy(
        zero_copy_only=False
    )
    instants = timestamps.parse_utc_timestamps(chunk.columns["timestamp_utc"])
    problems = [("store_id", mask, reason) for mask, reason in store_id_problems(store_ids)]
    problems += [
        ("status", ~known, "status is not 'active' or 'inactive'"),
        ("timestamp_utc", instants < 0, "not a UTC timestamp between 1970 and 2100"),
    ]
    active = pc.equal(status, "active").to_numpy(zero_copy_only=False)
    return {"store_id": store_ids, "ts_us": instants, "active": active}, problems


def check_hours(chunk: Chunk) -> tuple[dict[str, np.ndarray], list[tuple[str, np.ndarray, str]]]:
    store_ids = _trimmed(chunk.columns["store_id"])
    day_text = _trimmed(chunk.columns["day"])
    day_ok = pc.match_substring_regex(day_text, r"^[0-6]$").to_numpy(zero_copy_only=False)
    days = np.where(
        day_ok,
        pc.fill_null(pc.utf8_slice_codeunits(day_text, 0, 1), "0").to_numpy(zero_copy_only=False),
        "0",
    )
    starts = timestamps.parse_local_times(chunk.columns["start_time_local"])
    ends = timestamps.parse_local_times(chunk.columns["end_time_local"])
    problems = [("store_id", mask, reason) for mask, reason in store_id_problems(store_ids)]
    problems += [
        ("day", ~day_ok, "day of week is not an integer 0 (Monday) to 6 (Sunday)"),
        ("start_time_local", starts < 0, "not a time HH:MM[:SS]"),
        ("end_time_local", ends < 0, "not a time HH:MM[:SS]"),
    ]
    values = {
        "store_id": store_ids,
        "day": days.astype(np.int64),
        "start_s": starts,
        "end_s": ends,
    }
    return values, problems


def check_timezones(
    chunk: Chunk,
) -> tuple[dict[str, np.ndarray], list[tuple[str, np.ndarray, str]]]:
    store_ids = _trimmed(chunk.columns["store_id"])
    zones = _trimmed(chunk.columns["timezone_str"])
    known = pc.is_in(zones, value_set=pa.array(sorted(VALID_ZONES))).to_numpy(zero_copy_only=False)
    problems = [("store_id", mask, reason) for mask, reason in store_id_problems(store_ids)]
    problems.append(("timezone_str", ~known, "unknown IANA time zone name"))
    return {"store_id": store_ids, "timezone_str": _as_objects(zones)}, problems


CHECKS = {POLLS: check_polls, HOURS: check_hours, TIMEZONES: check_timezones}


def _as_objects(array: pa.Array) -> np.ndarray:
    return np.asarray(array.to_numpy(zero_copy_only=False), dtype=object)


def check_chunk(kind: str, chunk: Chunk) -> Checked:
    """Validate a chunk: parsed values of good rows, errors (first problem per row), bad rows."""
    values, problems = CHECKS[kind](chunk)
    bad = np.zeros(len(chunk), dtype=bool)
    reasons = np.full(len(chunk), "", dtype=object)
    errors: list[RowError] = []
    for column, mask, reason in problems:
        new = mask & ~bad
        for row in np.flatnonzero(new)[:MAX_LISTED_ERRORS]:
            errors.append(
                RowError(int(chunk.lines[row]), column, _text(chunk, column, row), reason)
            )
        reasons[new] = f"{column}: {reason}"
        bad |= mask
    errors.sort(key=lambda error: error.line)
    if not bad.any():
        return Checked(values, errors, pd.DataFrame())
    rejected = pd.DataFrame(
        {name: column.to_numpy(zero_copy_only=False)[bad] for name, column in chunk.columns.items()}
    )
    rejected.insert(0, "line", chunk.lines[bad])
    rejected["reason"] = reasons[bad]
    keep = ~bad
    good = {name: _take(array, keep) for name, array in values.items()}
    return Checked(good, errors, rejected)


def _take(values: np.ndarray | pa.Array, keep: np.ndarray) -> np.ndarray | pa.Array:
    return values.filter(pa.array(keep)) if isinstance(values, pa.Array) else values[keep]


def _text(chunk: Chunk, column: str, row: int) -> str:
    source = chunk.columns.get(column)
    return "" if source is None else str(source[row].as_py())[:80]


# --------------------------------------------------------------------------- writing


class StoreKeys:
    """Maps external store ids to compact keys, creating stores as new ids appear."""

    def __init__(self, conn: Connection) -> None:
        rows = conn.execute(select(Store.id, Store.external_id)).all()
        self.conn = conn
        self.index = pd.Index([row.external_id for row in rows], dtype=object)
        self.keys = np.array([row.id for row in rows], dtype=np.int64)
        self.next_key = int(self.keys.max(initial=0)) + 1

    def keys_for(self, store_ids: pa.Array | np.ndarray) -> np.ndarray:
        """Keys of the given ids (an Arrow or object array), creating unknown stores."""
        encoded = pa.array(store_ids, type=pa.string()).dictionary_encode()
        distinct = np.asarray(encoded.dictionary.to_numpy(zero_copy_only=False), dtype=object)
        position = self.index.get_indexer(distinct)
        if (position < 0).any():
            self._add(distinct[position < 0])
            position = self.index.get_indexer(distinct)
        return self.keys[position][encoded.indices.to_numpy(zero_copy_only=False)]

    def _add(self, new_ids: np.ndarray) -> None:
        keys = np.arange(self.next_key, self.next_key + new_ids.size, dtype=np.int64)
        new_rows = pd.DataFrame({"id": keys, "external_id": new_ids.astype(str)})
        bulk_insert(self.conn, Store.__tablename__, new_rows)
        self.index = self.index.append(pd.Index(new_ids, dtype=object))
        self.keys = np.concatenate([self.keys, keys])
        self.next_key += new_ids.size


class PollWriter:
    """Buffers polls and appends them in primary-key order, skipping ones already present.

    Sorted input is what both engines insert fastest; the buffer bounds memory (about 25 bytes
    a poll), so a file larger than it is written as several sorted runs.
    """

    def __init__(self, conn: Connection, batch: int, limit: int = POLL_BUFFER_ROWS) -> None:
        self.conn, self.batch, self.limit = conn, batch, limit
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
        if order is None:
            order = slice(None)
        rows = pd.DataFrame(
            {
                "store_key": keys[order],
                "ts_us": instants[order],
                "active": active[order].astype(np.int8),
                "batch": np.full(keys.size, self.batch, dtype=np.int32),
            }
        )
        self.inserted += bulk_insert(self.conn, "polls", rows, skip_duplicates=True)
        self.written += keys.size


def bulk_insert(
    conn: Connection, table: str, rows: pd.DataFrame, skip_duplicates: bool = False
) -> int:
    """Insert a frame the fastest way the engine offers; return the number of rows inserted.

    MySQL/MariaDB: LOAD DATA LOCAL INFILE from a temporary CSV. SQLite: executemany in the
    open transaction. With `skip_duplicates`, rows whose primary key exists are skipped.
    """
    if rows.empty:
        return 0
    if conn.dialect.name == "mysql":
        return _load_data_local(conn, table, rows, skip_duplicates)
    verb = "INSERT OR IGNORE" if skip_duplicates else "INSERT"
    marks = ", ".join(["?"] * rows.shape[1])
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
        return cursor.rowcount
    finally:
        os.unlink(temp_path)


def replace_rows(conn: Connection, model, rows: pd.DataFrame, batch: int) -> None:
    """Retire the current rows of the stores in `rows` (kept for reports reading an earlier
    batch), then insert `rows` as written by `batch`."""
    unique_keys = np.unique(rows["store_key"].to_numpy()).tolist()
    for start in range(0, len(unique_keys), 500):
        conn.execute(
            update(model)
            .where(model.store_key.in_(unique_keys[start : start + 500]))
            .where(model.retired_batch.is_(None))
            .values(retired_batch=batch)
        )
    bulk_insert(conn, model.__tablename__, rows.assign(batch=batch))


# --------------------------------------------------------------------------- the load


@dataclass
class _FileLoad:
    """State of one file while it streams: summary, errors and rejects."""

    kind: str
    path: Path
    skip_invalid: bool
    rejects_path: Path | None
    summary: FileSummary = field(init=False)
    errors: list[RowError] = field(default_factory=list)
    error_count: int = 0
    rejects_written: bool = False

    def __post_init__(self) -> None:
        self.summary = FileSummary(self.kind, str(self.path))

    def record(self, checked: Checked) -> None:
        self.error_count += len(checked.rejected)
        self.errors = sorted(self.errors + checked.errors, key=lambda e: e.line)[:MAX_LISTED_ERRORS]
        self.summary.rejected += len(checked.rejected)
        if self.skip_invalid and len(checked.rejected):
            self._write_rejects(checked.rejected)

    @property
    def _partial_rejects(self) -> Path | None:
        """Rejects are written here first and renamed when the load commits."""
        return (
            None
            if self.rejects_path is None
            else self.rejects_path.with_name(self.rejects_path.name + ".part")
        )

    def _write_rejects(self, rejected: pd.DataFrame) -> None:
        assert self._partial_rejects is not None
        rejected.to_csv(
            self._partial_rejects,
            mode="a" if self.rejects_written else "w",
            header=not self.rejects_written,
            index=False,
        )
        self.rejects_written = True

    def finish(self) -> None:
        if self.rejects_written and self.rejects_path is not None:
            os.replace(self._partial_rejects, self.rejects_path)
            self.summary.rejects_path = str(self.rejects_path)

    def discard(self) -> None:
        if self._partial_rejects is not None:
            self._partial_rejects.unlink(missing_ok=True)


def default_rejects_path(path: Path) -> Path:
    """Next to the input when that folder is writable, else in the current directory."""
    name = path.name.removesuffix(".gz").removesuffix(".csv") + ".rejects.csv"
    folder = path.parent if os.access(path.parent, os.W_OK) else Path.cwd()
    return folder / name


def load(
    engine: Engine,
    folder: Path | str | None = None,
    *,
    polls: Path | str | None = None,
    hours: Path | str | None = None,
    timezones: Path | str | None = None,
    skip_invalid: bool = False,
    progress: ProgressCallback | None = None,
) -> LoadSummary:
    """Load a folder and/or single files in one transaction; raise LoadError and change nothing
    on invalid input (unless `skip_invalid`, which loads the valid rows and writes the others to
    a ``*.rejects.csv`` file next to the input)."""
    sources = find_sources(Path(folder)) if folder is not None else {}
    for kind, path in ((POLLS, polls), (HOURS, hours), (TIMEZONES, timezones)):
        if path is not None:
            sources[kind] = Path(path)
    if not sources:
        raise LoadError(".", "nothing to load: give a folder or --polls/--hours/--timezones")
    for path in sources.values():
        if not path.is_file():
            raise LoadError(path, "no such file")
    started, clock = utcnow(), time.perf_counter()
    file_loads = [
        _FileLoad(
            kind,
            sources[kind],
            skip_invalid,
            default_rejects_path(sources[kind]) if skip_invalid else None,
        )
        for kind in LOAD_ORDER
        if kind in sources
    ]
    try:
        with engine.begin() as conn:
            batch = _next_batch(conn)
            keys = StoreKeys(conn)
            span = [_load_file(conn, item, keys, batch, progress) for item in file_loads]
            _record_batch(conn, batch, started, file_loads, span)
    except BaseException:
        for item in file_loads:
            item.discard()
        raise
    for item in file_loads:
        item.finish()
    summary = LoadSummary(batch, time.perf_counter() - clock, [item.summary for item in file_loads])
    logger.info("load committed: %s", summary)
    return summary


def _next_batch(conn: Connection) -> int:
    """Take the load lock (the data-state row) and the next batch number."""
    updated = conn.execute(
        update(DataState).where(DataState.id == 1).values(last_batch=DataState.last_batch + 1)
    )
    if updated.rowcount != 1:
        raise LoadError("database", "schema not initialised: run `flask --app app init-db` first")
    return int(conn.execute(select(DataState.last_batch).where(DataState.id == 1)).scalar_one())


def _load_file(
    conn: Connection,
    item: _FileLoad,
    keys: StoreKeys,
    batch: int,
    progress: ProgressCallback | None,
) -> tuple[int | None, int | None]:
    """Stream one file into the open transaction; return the (min, max) poll instant."""
    size = max(item.path.stat().st_size, 1)
    bad_rows = _BadRows()
    collected: list[dict[str, np.ndarray]] = []
    writer = PollWriter(conn, batch)
    for chunk in iter_chunks(item.path, item.kind, bad_rows):
        checked = check_chunk(item.kind, chunk)
        item.summary.rows_read += len(chunk)
        if progress:
            progress(f"{item.kind}: reading", chunk.bytes_read, size, item.summary.rows_read)
        item.record(checked)
        if item.error_count and not item.skip_invalid:
            continue  # keep validating to report every error; nothing will commit
        values = checked.values
        if item.kind == POLLS and values["ts_us"].size:
            writer.add(keys.keys_for(values["store_id"]), values["ts_us"], values["active"])
        elif item.kind != POLLS:
            collected.append(values)
    _record_bad_rows(item, bad_rows)
    if item.error_count and not item.skip_invalid:
        raise LoadError(
            item.path,
            f"{item.error_count} invalid rows; nothing was loaded",
            item.errors,
            item.error_count,
        )
    if item.kind != POLLS:
        _replace_store_rows(conn, item, keys, collected, batch)
        return None, None
    if progress:
        progress(f"{item.kind}: writing", size, size, item.summary.rows_read)
    writer.flush()
    item.summary.loaded += writer.inserted
    item.summary.duplicates += writer.written - writer.inserted
    return writer.low, writer.high


def _record_bad_rows(item: _FileLoad, bad_rows: _BadRows) -> None:
    if not bad_rows.errors:
        return
    rejected = pd.DataFrame(
        {
            "line": [e.line for e in bad_rows.errors],
            "text": [e.value for e in bad_rows.errors],
            "reason": [e.reason for e in bad_rows.errors],
        }
    )
    item.summary.rows_read += len(rejected)
    item.record(Checked({}, bad_rows.errors, rejected))


def _replace_store_rows(
    conn: Connection, item: _FileLoad, keys: StoreKeys, collected: list[dict], batch: int
) -> None:
    """Hours and time zones: the file's stores get exactly the file's rows."""
    if not collected:
        return
    store_ids = pa.concat_arrays([part.pop("store_id") for part in collected])
    frame = pd.DataFrame(
        {name: np.concatenate([part[name] for part in collected]) for name in collected[0]}
    )
    frame["store_key"] = keys.keys_for(store_ids)
    if item.kind == TIMEZONES:
        rows = frame.drop_duplicates("store_key", keep="last")
        model, columns = StoreTimezone, ["store_key", "timezone_str"]
    else:
        rows = frame.rename(columns={"day": "day_of_week"})
        model, columns = BusinessHours, ["store_key", "day_of_week", "start_s", "end_s"]
    replace_rows(conn, model, rows[columns], batch)
    item.summary.loaded += len(rows)
    item.summary.duplicates += len(frame) - len(rows)


def _record_batch(
    conn: Connection, batch: int, started, file_loads: list[_FileLoad], spans
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
            sources="; ".join(str(item.path) for item in file_loads),
            polls_loaded=polls_summary.loaded,
            polls_duplicate=polls_summary.duplicates,
            rows_rejected=sum(item.summary.rejected for item in file_loads),
            min_ts_us=min(lows) if lows else None,
            max_ts_us=max(highs) if highs else None,
        )
    )
