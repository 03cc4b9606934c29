"""Find input files and stream them as chunks of text columns with their line numbers.

A `Source` is one input: its kind, the file to read and the label messages name it by (the
path for files; an HTTP upload passes its temporary file with the label "request body"), so
every door into the loader reads through this one code path. Files are CSV, plain or gzip
(recognised by their first bytes), read a block of whole rows at a time and parsed by Arrow:
memory stays bounded whatever the size, and rows with the wrong number of fields are found on
whole columns, not one Python call each. An upload's body was decoded as its Content-Encoding
said and is never decompressed again: gzip bytes sent as plain text are just bytes (not
UTF-8, not CSV). NDJSON polls are read by `ndjson`.
"""

from __future__ import annotations

import array
import concurrent.futures
import contextlib
import csv
import ctypes
import gzip
import io
import threading
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from engine import arrays
from engine.timestamps import quoted
from loading.validation import (
    CLOSURES,
    GROUPS,
    HOURS,
    POLLS,
    REQUIRED_COLUMNS,
    TIMEZONES,
    Chunk,
    LoadError,
)

FILE_PATTERNS = {
    POLLS: ["store_status.csv", "store status.csv", "polls.csv"],
    HOURS: ["menu_hours.csv", "Menu hours.csv", "business_hours.csv"],
    TIMEZONES: ["timezones.csv", "store_timezone.csv", "store_timezones.csv", "bq-results-*.csv"],
    CLOSURES: ["closures.csv"],
    GROUPS: ["store_groups.csv"],
}
# Hours name their weekday column `dayOfWeek` (the original files) or `day`.
COLUMN_ALIASES = {HOURS: {"dayOfWeek": "day"}}
# Rows are read and parsed a block of about this size at a time: it bounds a load's memory.
BATCH_BYTES = 2 << 20
# A block grows beyond BATCH_BYTES only to end at a row's end (a quoted field may hold line
# ends), and never beyond this.
MAX_BLOCK_BYTES = 16 << 20
# A block also holds at most this many lines (unless one row spans more): a short bad row
# costs a hundred times its bytes once rejected, so bytes alone do not bound a block's memory.
# Real rows (40 to 60 bytes) fill BATCH_BYTES before this.
MAX_BLOCK_LINES = 1 << 16
HEADER_MAX_BYTES = 1 << 20
GZIP_MAGIC = b"\x1f\x8b"
# Rows with the wrong number of fields (in blocks with quotes) are handed over in batches of
# at most this size.
MALFORMED_BATCH_ROWS = 1_000
MALFORMED_BATCH_CHARS = 8 << 20


CSV, NDJSON = "csv", "ndjson"


@dataclass(frozen=True)
class Source:
    """One input: what it holds (`kind`), the file to read, and what messages call it.

    `format` is CSV, or NDJSON (polls pushed over HTTP). `gzip_by_content`: a file whose first
    bytes are gzip's is decompressed (``.csv.gz`` files); an upload's body, already decoded as
    its Content-Encoding said, is read as it is.
    """

    kind: str
    path: Path
    label: str
    format: str = CSV
    gzip_by_content: bool = True

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


RejectedCallback = Callable[[pa.Table], None]


def is_gzip(path: Path) -> bool:
    with open(path, "rb") as stream:
        return stream.read(2) == GZIP_MAGIC


def is_compressed(source: Source) -> bool:
    """Whether the source is read through gzip: a file that starts like one, never a body."""
    return source.gzip_by_content and is_gzip(source.path)


def open_decompressed(source: Source) -> BinaryIO:
    """Open a source for reading its bytes, decompressing it on the fly when it is gzip."""
    return gzip.open(source.path, "rb") if is_compressed(source) else open(source.path, "rb")


def read_header(source: Source) -> list[str]:
    """Read and check the header: empty file, encoding, delimiter and missing columns."""
    try:
        with open_decompressed(source) as stream:
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
    header = [aliases.get(name.strip(), name.strip()) for name in _header_fields(text)]
    missing = [name for name in REQUIRED_COLUMNS[source.kind] if name not in header]
    if missing:
        raise LoadError(source.label, _header_problem(source.kind, header, text, missing))
    if len(set(header)) != len(header):
        raise LoadError(
            source.label, f"line 1: duplicate column names in header {quoted(text.strip())}"
        )
    return header


def _header_fields(text: str) -> list[str]:
    """The header's names; a header the csv module refuses (a field beyond its 128 KB) is
    one name, which names no column."""
    try:
        return next(csv.reader([text]))
    except csv.Error:
        return [text]


def _header_problem(kind: str, header: list[str], text: str, missing: list[str]) -> str:
    """Say what is wrong with the header; quote it only when it looks like one of ours.

    A file that names none of the expected columns is something else (a mistyped path, a
    link to a system file): its first line may be private, so it is never echoed.
    """
    expected = ",".join(REQUIRED_COLUMNS[kind])
    if not _names_an_expected_column(kind, text):
        return f"line 1: not a CSV file of {kind}: expected the columns {expected}"
    got = quoted(text.strip())
    if len(header) == 1 and any(mark in text for mark in (";", "\t", "|")):
        return f"line 1: wrong delimiter: expected comma-separated columns {expected}, got {got}"
    if kind == HOURS and "day" in missing:
        missing = ["dayOfWeek (or day)" if name == "day" else name for name in missing]
    names = ", ".join(missing)
    return f"line 1: missing column(s) {names} (expected {expected}; header {got})"


def _names_an_expected_column(kind: str, text: str) -> bool:
    names = [*REQUIRED_COLUMNS[kind], *COLUMN_ALIASES.get(kind, {})]
    lowered = text.lower()
    return any(name.lower() in lowered for name in names)


# --------------------------------------------------------------------------- blocks of rows


T = TypeVar("T")


def stream_chunks(source: Source, on_rejected: RejectedCallback) -> Iterator[Chunk]:
    """Stream the file as text columns, a block of whole rows at a time; blank lines are
    skipped, rows with the wrong number of fields go to `on_rejected` (line, column `*`,
    value, reason)."""
    header = read_header(source)
    wanted = REQUIRED_COLUMNS[source.kind]
    with pa.OSFile(str(source.path), mode="r") as raw:
        stream = pa.CompressedInputStream(raw, "gzip") if is_compressed(source) else raw
        try:
            for block in row_blocks(stream):
                chunk = _read_block(source, header, wanted, block, on_rejected)
                chunk.bytes_read = raw.tell()
                if len(chunk):
                    yield chunk
        except (OSError, EOFError, pa.ArrowInvalid) as exc:
            raise LoadError(source.label, f"cannot read file: {exc}") from exc


@dataclass(frozen=True)
class RowBlock:
    """Whole rows of a file: their bytes, the number of the line they start on, and how many
    line ends they hold."""

    data: bytes
    first_line: int
    line_ends: int

    @property
    def lines(self) -> int:
        return self.line_ends + (not self.data.endswith(b"\n"))


def row_blocks(stream: pa.NativeFile | BinaryIO) -> Iterator[RowBlock]:
    """The rows after the header line in blocks of about BATCH_BYTES. A block ends at a line
    end outside quotes (a quoted field may hold line ends), so each block parses on its own;
    one never outgrows MAX_BLOCK_BYTES."""
    carry, line = _after_first_line(stream), 2
    for data in _read_ahead(stream):
        block = carry + data
        cut = _last_row_end(block)
        if cut == 0 and len(block) > MAX_BLOCK_BYTES:  # an unclosed quote, or no line end
            cut = block.rfind(b"\n") + 1 or len(block)
        for rows in _at_most_max_lines(block[:cut], line):
            yield rows
            line += rows.line_ends
        carry = block[cut:]
    yield from _at_most_max_lines(carry, line)


def _at_most_max_lines(rows: bytes, line: int) -> Iterator[RowBlock]:
    """Rows (starting on `line`) in blocks of at most MAX_BLOCK_LINES lines, each cut at a
    row's end (`line_limited_cuts`)."""
    start = 0
    for cut in line_limited_cuts(rows, quotes_join_lines=True):
        line_ends = rows.count(b"\n", start, cut)
        yield RowBlock(rows[start:cut], line, line_ends)
        start, line = cut, line + line_ends


def line_limited_cuts(data: bytes, quotes_join_lines: bool) -> list[int]:
    """Where to cut `data` (the end of each piece) so that a piece holds at most
    MAX_BLOCK_LINES lines and ends at a row's end: a line end, outside quotes when
    `quotes_join_lines` (CSV). A row that spans more lines than that is a piece up to its end.
    Line ends and quotes are found once, on the whole of `data`."""
    if data.count(b"\n") <= MAX_BLOCK_LINES:
        return [len(data)] if data else []
    bytes_ = np.frombuffer(data, dtype=np.uint8)
    line_ends = np.flatnonzero(bytes_ == ord("\n"))
    row_ends = line_ends
    if quotes_join_lines and b'"' in data:
        quotes_before = np.searchsorted(np.flatnonzero(bytes_ == ord('"')), line_ends)
        row_ends = line_ends[quotes_before % 2 == 0]
    cuts, start, lines_before = [], 0, 0
    while lines_before + MAX_BLOCK_LINES < line_ends.size:
        limit = line_ends[lines_before + MAX_BLOCK_LINES - 1]
        index = int(np.searchsorted(row_ends, limit, side="right")) - 1
        if index < 0 or row_ends[index] < start:  # one row spans all those lines: to its end
            index = int(np.searchsorted(row_ends, limit))
            if index == row_ends.size:
                break
        start = int(row_ends[index]) + 1
        cuts.append(start)
        lines_before = int(np.searchsorted(line_ends, start))
    return cuts if cuts and cuts[-1] == len(data) else [*cuts, len(data)]


def _read_ahead(stream: pa.NativeFile | BinaryIO) -> Iterator[bytes]:
    """The stream's bytes, BATCH_BYTES at a time, the next read (and its decompression, which
    lets go of the GIL) running in a thread of its own while the caller parses."""
    with ThreadPoolExecutor(1, thread_name_prefix="read-ahead") as reader:
        pending = reader.submit(stream.read, BATCH_BYTES)
        while data := pending.result():
            pending = reader.submit(stream.read, BATCH_BYTES)
            yield data


def worked_ahead(items: Generator[T, None, None]) -> Iterator[T]:
    """The items of a generator, each next one made in a thread of its own while the caller
    works on the current one: parsing and checking a chunk (Arrow and numpy, which let go of
    the GIL) overlap with writing the one before. At most one item waits; an error raised
    while making one is raised here; the generator is closed when the caller stops early."""
    done = object()
    with ThreadPoolExecutor(1, thread_name_prefix="work-ahead") as worker:
        try:
            pending = worker.submit(next, items, done)
            while (item := pending.result()) is not done:
                pending = worker.submit(next, items, done)
                yield item  # type: ignore[misc]
        finally:
            pending.cancel()
            concurrent.futures.wait([pending])
            items.close()


def _after_first_line(stream: pa.NativeFile | BinaryIO) -> bytes:
    """Read past the header line (checked already, however long); return what follows it."""
    while data := stream.read(BATCH_BYTES):
        end = data.find(b"\n")
        if end >= 0:
            return data[end + 1 :]
    return b""


def _last_row_end(block: bytes) -> int:
    """Where the last whole row of `block` ends (0: none): after its last line end that has
    an even number of quotes before it."""
    if b'"' not in block:
        return block.rfind(b"\n") + 1
    data = np.frombuffer(block, dtype=np.uint8)
    line_ends = np.flatnonzero(data == ord("\n"))
    quotes_before = np.searchsorted(np.flatnonzero(data == ord('"')), line_ends)
    outside = line_ends[quotes_before % 2 == 0]
    return int(outside[-1]) + 1 if outside.size else 0


def _read_block(
    source: Source,
    header: list[str],
    wanted: list[str],
    rows: RowBlock,
    on_rejected: RejectedCallback,
) -> Chunk:
    """The good rows of a block as text columns with their line numbers.

    The usual block is one good row a line: Arrow reads it as it is. Otherwise the fields of
    each line are counted on whole columns (commas + 1; with quotes, the csv module counts
    them, in C), the lines with the wrong count are handed over, and Arrow parses the good
    ones: the cost does not depend on how many are bad. A block whose rows span lines (a
    quoted line end, a lone \r) goes to Arrow's parser, which hands rows with the wrong
    number of fields to a callback, one by one.
    """
    block, first_line = rows.data, rows.first_line
    clean = _parsed_if_every_line_is_a_row(rows, header, wanted)
    if clean is not None:
        return Chunk(clean, first_line + np.arange(rows.lines))
    lines = BlockLines.of(block, first_line)
    fields = lines.fields(block) if b'"' not in block else _quoted_field_counts(block)
    lone_cr = b"\r" in block and block.count(b"\r") != block.count(b"\r\n")
    if fields is None or fields.size != lines.numbers.size or lone_cr:
        return _read_block_with_arrow(source, header, wanted, block, first_line, on_rejected)
    blank = lines.blank(block)
    good, bad = ~blank & (fields == len(header)), ~blank & (fields != len(header))
    try:
        table = _parse(lines.keep_bytes(block, good), header, wanted, invalid_row_handler=None)
    except pa.ArrowInvalid as exc:
        if b'"' in block:  # the csv module and Arrow disagree on a row: Arrow decides
            return _read_block_with_arrow(source, header, wanted, block, first_line, on_rejected)
        raise _decode_problem(source, block, first_line, exc) from exc
    if bad.any():
        on_rejected(_wrong_field_counts(lines, block, bad, fields, len(header)))
    return Chunk(
        {name: table.column(name).combine_chunks() for name in wanted}, lines.numbers[good]
    )


def _quoted_field_counts(block: bytes) -> np.ndarray | None:
    """The number of fields of each row of a block with quotes, counted by the csv module
    without a Python call per row (None if it refuses the block: a NUL, a huge field)."""
    text = io.StringIO(block.decode("utf-8", errors="replace"), newline="")
    try:
        return np.frombuffer(array.array("q", map(len, csv.reader(text))), dtype=np.int64)
    except csv.Error:
        return None


def _parsed_if_every_line_is_a_row(
    rows: RowBlock, header: list[str], wanted: list[str]
) -> dict[str, pa.Array] | None:
    """The block's columns when Arrow reads it without an error and one row a line (the
    usual block: nothing more to look at); None otherwise."""
    try:
        table = _parse(rows.data, header, wanted, invalid_row_handler=None)
    except pa.ArrowInvalid:  # a row with the wrong number of fields (or bytes not UTF-8)
        return None
    if table.num_rows != rows.lines:
        return None  # empty lines, which Arrow skips: line numbers need a closer look
    return {name: table.column(name).combine_chunks() for name in wanted}


@dataclass(frozen=True)
class BlockLines:
    """Where each line of a block starts and ends (line end excluded), and its number."""

    starts: np.ndarray
    ends: np.ndarray
    numbers: np.ndarray

    @classmethod
    def of(cls, block: bytes, first_line: int) -> BlockLines:
        ends = np.flatnonzero(np.frombuffer(block, dtype=np.uint8) == ord("\n"))
        if not block.endswith(b"\n"):
            ends = np.append(ends, len(block))
        starts = np.concatenate([[0], ends[:-1] + 1])
        return cls(starts, ends, first_line + np.arange(ends.size))

    def fields(self, block: bytes) -> np.ndarray:
        """The number of fields of each line: its commas + 1 (a block without quotes)."""
        commas = np.flatnonzero(np.frombuffer(block, dtype=np.uint8) == ord(","))
        return np.searchsorted(commas, self.ends) - np.searchsorted(commas, self.starts) + 1

    def blank(self, block: bytes) -> np.ndarray:
        """Whether each line holds nothing but spaces, tabs and carriage returns."""
        data = np.frombuffer(block, dtype=np.uint8)
        spaces = (data == ord(" ")) | (data == ord("\t")) | (data == ord("\r"))
        printed = ~(spaces | (data == ord("\n")))
        return ~np.logical_or.reduceat(printed, self.starts)

    def keep_bytes(self, block: bytes, keep: np.ndarray) -> bytes:
        """The block with only the kept lines (each with its line end)."""
        spans = np.diff(np.append(self.starts, len(block)))
        return np.frombuffer(block, dtype=np.uint8)[np.repeat(keep, spans)].tobytes()

    def texts(self, block: bytes, rows: np.ndarray) -> pa.Array:
        """The text of the given lines, without line ends (bytes that are not UTF-8 shown as
        U+FFFD)."""
        text = block.decode("utf-8", errors="replace")
        lines = pc.split_pattern(pa.array([text], pa.large_string()), "\n").flatten()
        chosen = lines.take(pa.array(rows, type=pa.int64())).cast(pa.string())
        return pc.utf8_rtrim(chosen, characters="\r")


def _wrong_field_counts(
    lines: BlockLines, block: bytes, bad: np.ndarray, fields: np.ndarray, expected: int
) -> pa.Table:
    rows = np.flatnonzero(bad)
    found = pa.array(fields[rows]).cast(pa.string())
    return pa.table(
        {
            "line": pa.array(lines.numbers[rows], type=pa.int64()),
            "column": pa.repeat("*", rows.size),
            "value": lines.texts(block, rows),
            "reason": pc.binary_join_element_wise(f"expected {expected} fields, found ", found, ""),
        }
    )


def _read_block_with_arrow(
    source: Source,
    header: list[str],
    wanted: list[str],
    block: bytes,
    first_line: int,
    on_rejected: RejectedCallback,
) -> Chunk:
    """A block with quotes (or lone \r line ends): Arrow's parser, malformed rows handed
    over through its callback."""
    malformed = MalformedRows(on_rejected, first_line)
    try:
        table = _parse(block, header, wanted, invalid_row_handler=malformed)
    except pa.ArrowInvalid as exc:
        malformed.raise_failure()
        raise _decode_problem(source, block, first_line, exc) from exc
    malformed.raise_failure()
    lines = malformed.line_numbers(0, table.num_rows)
    return Chunk({name: table.column(name).combine_chunks() for name in wanted}, lines)


def _parse(
    rows: bytes, header: list[str], wanted: list[str], invalid_row_handler: MalformedRows | None
) -> pa.Table:
    """Arrow's CSV parser on a block of rows: every column as text."""
    if not rows or rows.isspace():
        return pa.table({name: pa.array([], pa.string()) for name in wanted})
    return pacsv.read_csv(
        pa.py_buffer(rows),
        read_options=pacsv.ReadOptions(
            column_names=header, block_size=max(len(rows), 1 << 16), use_threads=False
        ),
        parse_options=pacsv.ParseOptions(
            invalid_row_handler=invalid_row_handler, ignore_empty_lines=True
        ),
        convert_options=pacsv.ConvertOptions(
            column_types={name: pa.string() for name in header},
            include_columns=wanted,
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        ),
    )


def _decode_problem(source: Source, block: bytes, first_line: int, exc: Exception) -> LoadError:
    if "UTF8" not in str(exc) and "utf8" not in str(exc).lower():
        return LoadError(source.label, f"line {first_line} or after: cannot parse CSV: {exc}")
    for offset, line in enumerate(block.split(b"\n")):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as error:
            return LoadError(
                source.label,
                f"line {first_line + offset}: not UTF-8 text ({error.reason} at column "
                f"{error.start + 1})",
            )
    return LoadError(source.label, f"not UTF-8 text: {exc}")


# --------------------------------------------------------------------------- malformed rows


_THREADS_KEPT: set[int] = set()
_THREADS_KEPT_LOCK = threading.Lock()


def keep_python_state_of_this_thread() -> None:
    """Keep the Python state of a thread Python did not start (one of Arrow's), for good.

    Arrow may call the malformed-row callback from its own threads. For a thread without a
    Python state, every call creates one and deletes it again: about 10 µs a call, 20 times
    the callback's own work (a body of 33 M malformed rows took minutes). One
    PyGILState_Ensure that is never released keeps the state alive (the C API's way for
    "non-Python created threads"), so the next calls cost what they cost on any Python
    thread. Arrow's pools hold a few long-lived threads: a few states are kept, once.
    """
    ident = threading.get_ident()
    if ident in _THREADS_KEPT:
        return
    with _THREADS_KEPT_LOCK:
        _THREADS_KEPT.add(ident)
    if isinstance(threading.current_thread(), threading._DummyThread):
        ctypes.pythonapi.PyGILState_Ensure()


class MalformedRows:
    """Arrow's callback for rows with the wrong number of fields, in one block of rows.

    It skips them, remembers where they were so that the good rows can be numbered, and hands
    them over as rejected rows (`on_rejected`) in batches of bounded size. The callback only
    keeps the row; the batch is worked on as whole columns. Skipped lines are kept as runs
    (the number of good rows before a run, its length). Arrow numbers lines from the block's
    start (1); `first_line` is that line's number in the file. Arrow may call it from one of
    its own threads, so the state is changed under a lock.
    """

    def __init__(self, on_rejected: RejectedCallback, first_line: int = 1) -> None:
        self.on_rejected = on_rejected
        self.line_offset = first_line - 1
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
            keep_python_state_of_this_thread()
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
            numbers = np.maximum(numbers, 1)  # -1: unknown
            self._remember_skips(numbers)
        texts = pa.array([row.text for row in rows], type=pa.string())
        found = pa.array([row.actual_columns for row in rows], type=pa.int64()).cast(pa.string())
        expected = f"expected {rows[0].expected_columns} fields, found "
        rejected = pa.table(
            {
                "line": pa.array(numbers + self.line_offset),
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
        # Good rows between the block's start and each skipped line.
        rows_before = numbers - 1 - (self.skipped + np.arange(numbers.size))
        self.skipped += numbers.size
        starts = np.flatnonzero(arrays.first_of_group(rows_before))
        values = rows_before[starts].tolist()
        lengths = np.diff(np.r_[starts, numbers.size]).tolist()
        if self.run_rows_before and self.run_rows_before[-1] == values[0]:
            self.run_lengths[-1] += lengths.pop(0)
            values.pop(0)
        self.run_rows_before += values
        self.run_lengths += lengths

    def line_numbers(self, first_row: int, count: int) -> np.ndarray:
        """Line numbers of good rows first_row.. of the block, then forget the runs of
        skipped lines before them. Rows still buffered are handed over first.

        Empty lines are skipped silently by the parser, so numbers are exact for blocks without
        blank lines (or quoted line ends) and close otherwise.
        """
        self.hand_over()
        with self.lock:
            return self._number_rows(first_row, count)

    def _number_rows(self, first_row: int, count: int) -> np.ndarray:
        rows = np.arange(first_row, first_row + count, dtype=np.int64)
        rows_before = np.asarray(self.run_rows_before, dtype=np.int64)
        skipped_up_to = np.concatenate([[0], np.cumsum(self.run_lengths, dtype=np.int64)])
        runs_before_row = np.searchsorted(rows_before, rows, side="right")
        skipped = self.skipped_before_numbered + skipped_up_to[runs_before_row]
        lines = rows + 1 + self.line_offset + skipped
        done = int(np.searchsorted(rows_before, first_row + count, side="left"))
        self.skipped_before_numbered += int(skipped_up_to[done])
        del self.run_rows_before[:done], self.run_lengths[:done]
        return lines
