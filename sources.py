"""Find input files and stream them as chunks of text columns with their line numbers.

A `Source` is one input: its kind, the file to read and the label messages name it by (the
path for files; an HTTP upload passes its temporary file with the label "request body"), so
every door into the loader reads through this one code path. Files are CSV, plain or gzip
(recognised by their first bytes), streamed in Arrow record batches: memory stays bounded
whatever the size.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

import grouped
from validation import (
    CLOSURES,
    HOURS,
    POLLS,
    REQUIRED_COLUMNS,
    TIMEZONES,
    LoadError,
)

FILE_PATTERNS = {
    POLLS: ["store_status.csv", "store status.csv", "polls.csv"],
    HOURS: ["menu_hours.csv", "Menu hours.csv", "business_hours.csv"],
    TIMEZONES: ["timezones.csv", "store_timezone.csv", "store_timezones.csv", "bq-results-*.csv"],
    CLOSURES: ["closures.csv"],
}
# Hours name their weekday column `dayOfWeek` (the original files) or `day`.
COLUMN_ALIASES = {HOURS: {"dayOfWeek": "day"}}
# Arrow's streaming reader reads up to 32 blocks ahead in a background thread: the block size
# bounds a load's memory (32 x 2 MB), whatever the file's size, at no cost in speed.
BATCH_BYTES = 2 << 20
HEADER_MAX_BYTES = 1 << 20
GZIP_MAGIC = b"\x1f\x8b"
# Rows with the wrong number of fields are handed over in batches of at most this size.
MALFORMED_BATCH_ROWS = 10_000
MALFORMED_BATCH_CHARS = 8 << 20


@dataclass(frozen=True)
class Source:
    """One input: what it holds (`kind`), the file to read, and what messages call it."""

    kind: str
    path: Path
    label: str

    @classmethod
    def from_path(cls, kind: str, path: Path | str) -> Source:
        return cls(kind, Path(path), str(path))


def use_jemalloc_for_arrow() -> None:
    """Let Arrow allocate with jemalloc where the installed Arrow has it: it hands freed
    blocks back to the system sooner than the default mimalloc, which keeps a load's peak
    memory about 40 MB lower (measured on loop-full)."""
    with contextlib.suppress(NotImplementedError):  # else Arrow keeps its default
        pa.set_memory_pool(pa.jemalloc_memory_pool())


use_jemalloc_for_arrow()


# --------------------------------------------------------------------------- finding files


def find_sources(folder: Path | str) -> dict[str, Path]:
    """Find the input files of each kind in a folder (``.csv`` or ``.csv.gz``)."""
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


def collect_sources(folder: Path | str | None, files: dict[str, Path | str | None]) -> list[Source]:
    """The files found in `folder`, then the files named per kind (which take precedence)."""
    paths: dict[str, Path] = find_sources(folder) if folder is not None else {}
    paths.update({kind: Path(path) for kind, path in files.items() if path is not None})
    if not paths:
        options = "/".join(f"--{kind}" for kind in FILE_PATTERNS)
        raise LoadError(".", f"nothing to load: give a folder or {options}")
    return [Source.from_path(kind, path) for kind, path in paths.items()]


# --------------------------------------------------------------------------- reading


@dataclass
class Chunk:
    """A batch of rows as text columns, with each row's line number in the file."""

    columns: dict[str, pa.Array]
    lines: np.ndarray
    bytes_read: int = 0  # of the file on disk (compressed, for gzip)

    def __len__(self) -> int:
        return self.lines.size


def is_gzip(path: Path) -> bool:
    with open(path, "rb") as stream:
        return stream.read(2) == GZIP_MAGIC


def open_decompressed(path: Path) -> BinaryIO:
    """Open a file for reading its bytes, decompressing it on the fly when it is gzip."""
    return gzip.open(path, "rb") if is_gzip(path) else open(path, "rb")


def read_header(source: Source) -> list[str]:
    """Read and check the header: empty file, encoding, delimiter and missing columns."""
    try:
        with open_decompressed(source.path) as stream:
            first = stream.readline(HEADER_MAX_BYTES)
    except (OSError, EOFError) as exc:
        raise LoadError(source.label, f"cannot read file: {exc}") from exc
    if not first.strip():
        raise LoadError(source.label, "file is empty (no header line)")
    try:
        text = first.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        reason = f"line 1: not UTF-8 text ({exc.reason} at byte {exc.start})"
        raise LoadError(source.label, reason) from exc
    aliases = COLUMN_ALIASES.get(source.kind, {})
    header = [aliases.get(name.strip(), name.strip()) for name in next(csv.reader([text]))]
    missing = [name for name in REQUIRED_COLUMNS[source.kind] if name not in header]
    if missing:
        raise LoadError(source.label, _header_problem(source.kind, header, text, missing))
    if len(set(header)) != len(header):
        raise LoadError(source.label, f"line 1: duplicate column names in header {text.strip()!r}")
    return header


def _header_problem(kind: str, header: list[str], text: str, missing: list[str]) -> str:
    """Say what is wrong with the header; quote it only when it looks like one of ours.

    A file that names none of the expected columns is something else (a mistyped path, a
    link to a system file): its first line may be private, so it is never echoed.
    """
    expected = ",".join(REQUIRED_COLUMNS[kind])
    if not _names_an_expected_column(kind, text):
        return f"line 1: not a CSV file of {kind}: expected the columns {expected}"
    if len(header) == 1 and any(mark in text for mark in (";", "\t", "|")):
        got = text.strip()
        return f"line 1: wrong delimiter: expected comma-separated columns {expected}, got {got!r}"
    if kind == HOURS and "day" in missing:
        missing = ["dayOfWeek (or day)" if name == "day" else name for name in missing]
    names = ", ".join(missing)
    return f"line 1: missing column(s) {names} (expected {expected}; header {text.strip()!r})"


def _names_an_expected_column(kind: str, text: str) -> bool:
    names = [*REQUIRED_COLUMNS[kind], *COLUMN_ALIASES.get(kind, {})]
    lowered = text.lower()
    return any(name.lower() in lowered for name in names)


class MalformedRows:
    """The parser's callback for rows with the wrong number of fields.

    It skips them, remembers where they were so that the good rows can be numbered, and hands
    them over as rejected rows (`on_rejected`) in batches of bounded size: a file of millions
    of them costs no more memory than a few thousand. The callback only keeps the row; the
    batch is worked on as whole columns. Skipped lines are kept as runs (the number of good
    rows before a run, its length), so their memory is bounded by the good rows the parser
    has read ahead, not by the bad ones. Arrow may call it from one of its own threads (while
    `open_csv` looks for a first chunk), so the state is changed under a lock.
    """

    def __init__(self, on_rejected: Callable[[pa.Table], None]) -> None:
        self.on_rejected = on_rejected
        self.rows: list[pacsv.InvalidRow] = []
        self.buffered_chars = 0
        self.skipped = 0  # lines skipped so far
        self.skipped_before_numbered = 0  # of them, those before the rows numbered so far
        self.run_rows_before: list[int] = []
        self.run_lengths: list[int] = []
        self.failure: BaseException | None = None
        self.lock = threading.RLock()

    def __call__(self, row: pacsv.InvalidRow) -> str:
        # Arrow swallows a callback's exception and quotes the row instead: keep it for later.
        try:
            with self.lock:
                self.rows.append(row)
                self.buffered_chars += len(row.text)
                if (
                    len(self.rows) >= MALFORMED_BATCH_ROWS
                    or self.buffered_chars >= MALFORMED_BATCH_CHARS
                ):
                    self.hand_over()
        except BaseException as exc:  # re-raised by `raise_failure` once the parser returns
            self.failure = exc
            return "error"
        return "skip"

    def raise_failure(self) -> None:
        if self.failure is not None:
            raise self.failure

    def hand_over(self) -> None:
        """Note where the buffered rows were, and pass those that are not blank to
        `on_rejected` as one table (line, column, value, reason)."""
        with self.lock:
            if not self.rows:
                return
            rows, self.rows, self.buffered_chars = self.rows, [], 0
            numbers = np.fromiter((row.number or 0 for row in rows), np.int64, count=len(rows))
            numbers = np.maximum(numbers, 0)  # -1: unknown
            self._remember_skips(numbers)
        texts = pa.array([row.text for row in rows], type=pa.string())
        found = pa.array([row.actual_columns for row in rows], type=pa.int64()).cast(pa.string())
        expected = f"expected {rows[0].expected_columns} fields, found "
        rejected = pa.table(
            {
                "line": pa.array(numbers),
                "column": pa.repeat("*", len(rows)),
                "value": texts,
                "reason": pc.binary_join_element_wise(expected, found, ""),
            }
        )
        # A line of blanks is an empty line, not a bad row.
        rejected = rejected.filter(pc.not_equal(pc.utf8_trim_whitespace(texts), ""))
        if rejected.num_rows:
            self.on_rejected(rejected)

    def _remember_skips(self, numbers: np.ndarray) -> None:
        """Add skipped lines (ascending) to the runs of skipped lines."""
        # Good rows between the header and each skipped line.
        rows_before = numbers - 2 - (self.skipped + np.arange(numbers.size))
        self.skipped += numbers.size
        starts = np.flatnonzero(grouped.first_of_group(rows_before))
        values = rows_before[starts].tolist()
        lengths = np.diff(np.r_[starts, numbers.size]).tolist()
        if self.run_rows_before and self.run_rows_before[-1] == values[0]:
            self.run_lengths[-1] += lengths.pop(0)
            values.pop(0)
        self.run_rows_before += values
        self.run_lengths += lengths

    def line_numbers(self, first_row: int, count: int) -> np.ndarray:
        """Line numbers of good rows first_row.. (header is line 1), then forget the runs of
        skipped lines before them. Rows still buffered are handed over first.

        Empty lines are skipped silently by the parser, so numbers are exact for files without
        blank lines and close otherwise.
        """
        self.hand_over()
        with self.lock:
            return self._number_rows(first_row, count)

    def _number_rows(self, first_row: int, count: int) -> np.ndarray:
        rows = np.arange(first_row, first_row + count, dtype=np.int64)
        rows_before = np.asarray(self.run_rows_before, dtype=np.int64)
        skipped_up_to = np.concatenate([[0], np.cumsum(self.run_lengths, dtype=np.int64)])
        runs_before_row = np.searchsorted(rows_before, rows, side="right")
        lines = rows + 2 + self.skipped_before_numbered + skipped_up_to[runs_before_row]
        done = int(np.searchsorted(rows_before, first_row + count, side="left"))
        self.skipped_before_numbered += int(skipped_up_to[done])
        del self.run_rows_before[:done], self.run_lengths[:done]
        return lines


def stream_chunks(source: Source, malformed: MalformedRows) -> Iterator[Chunk]:
    """Stream the file as text columns; empty lines are skipped, malformed rows handed over."""
    header = read_header(source)
    wanted = REQUIRED_COLUMNS[source.kind]
    with pa.OSFile(str(source.path), mode="r") as raw:
        stream = pa.CompressedInputStream(raw, "gzip") if is_gzip(source.path) else raw
        rows_before = 0
        try:
            for batch in _csv_reader(stream, header, wanted, malformed):
                malformed.raise_failure()
                lines = malformed.line_numbers(rows_before, len(batch))
                rows_before += len(batch)
                yield Chunk({name: batch.column(name) for name in wanted}, lines, raw.tell())
        except (pa.ArrowInvalid, OSError, EOFError) as exc:
            malformed.raise_failure()
            raise _decode_problem(source, exc) from exc
    malformed.raise_failure()
    malformed.hand_over()


def _csv_reader(
    stream: pa.NativeFile, header: list[str], wanted: list[str], malformed: MalformedRows
) -> pacsv.CSVStreamingReader:
    """Arrow's streaming CSV reader: every column as text, the header already read."""
    return pacsv.open_csv(
        stream,
        read_options=pacsv.ReadOptions(
            column_names=header, skip_rows=1, block_size=BATCH_BYTES, use_threads=False
        ),
        parse_options=pacsv.ParseOptions(invalid_row_handler=malformed, ignore_empty_lines=True),
        convert_options=pacsv.ConvertOptions(
            column_types={name: pa.string() for name in header},
            include_columns=wanted,
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        ),
    )


def _decode_problem(source: Source, exc: Exception) -> LoadError:
    if "UTF8" not in str(exc) and "utf8" not in str(exc).lower():
        return LoadError(source.label, f"cannot parse CSV: {exc}")
    with open_decompressed(source.path) as stream:
        for number, line in enumerate(stream, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as error:
                return LoadError(
                    source.label,
                    f"line {number}: not UTF-8 text ({error.reason} at column {error.start + 1})",
                )
    return LoadError(source.label, f"not UTF-8 text: {exc}")
