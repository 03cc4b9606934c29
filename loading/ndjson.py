"""Read NDJSON polls (one JSON object a line) as chunks of text columns with their line numbers.

Pollers send `{"store_id": "...", "status": "...", "timestamp_utc": "..."}` a line (an integer
store_id is kept exactly, as its digits). The body is read in blocks of whole lines and each
block is worked on as whole columns: the usual line (those keys in this order, strings without
escapes) is read by one regular expression; a line that cannot hold the three fields (shorter
than the shortest such object, or not starting with `{`) and a line that is not UTF-8 are
refused without parsing. Only the remaining lines (other key orders, escapes) are parsed one
by one by `json`, and each of them is at least `MIN_RECORD_CHARS` long: however a body is
made, its per-line Python work is bounded by its size / 45, and its memory by a block (at most
BLOCK_BYTES and MAX_BLOCK_LINES lines).

Lines are numbered as sent (1 = the first line); blank lines are skipped and count for
nothing. Refused lines are handed to `on_rejected` as a table (line, column `*`, value, reason).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from loading.sources import line_limited_cuts
from loading.validation import POLLS, REQUIRED_COLUMNS, Chunk

COLUMNS = REQUIRED_COLUMNS[POLLS]
BLOCK_BYTES = 2 << 20
MAX_LINE_BYTES = 1 << 20
SHOWN_CHARS = 200  # of a refused line, as its value
NOT_AN_OBJECT = "not a JSON object with string fields store_id, status and timestamp_utc"
NOT_UTF8 = "not UTF-8 text"
LONE_SURROGATE = "not valid Unicode: a lone surrogate (\\ud800-\\udfff) in a field"
TOO_LONG = f"line longer than {MAX_LINE_BYTES} bytes"
REASONS = [NOT_UTF8, NOT_AN_OBJECT, LONE_SURROGATE, TOO_LONG]
GOOD = -1  # the reason code of a line that is read
# The shortest line that can hold the three fields: {"store_id":1,"status":"","timestamp_utc":""}
MIN_RECORD_CHARS = len(json.dumps(dict.fromkeys(COLUMNS, ""), separators=(",", ":"))) - 1
_SPACE = "[ \\t\\r]*"  # JSON white space within a line
_STRING = '"[^"\\\\\\x00-\\x1f]*"'  # a JSON string without escapes
_INTEGER = "0|-?[1-9][0-9]*"


def _usual_line(order: tuple[str, ...]) -> str:
    """A line holding exactly the three fields in this order, strings without escapes."""
    fields = [
        f'"{name}"{_SPACE}:{_SPACE}(?P<{name}>{_STRING}'
        + (f"|{_INTEGER})" if name == "store_id" else ")")
        for name in order
    ]
    return f"^\\{{{_SPACE}" + f"{_SPACE},{_SPACE}".join(fields) + f"{_SPACE}\\}}$"


# The order pollers write (json.dumps of a dict built in the spec's order) first, then the others
# (a serializer that sorts keys writes status, store_id, timestamp_utc).
USUAL_LINES = [_usual_line(order) for order in itertools.permutations(COLUMNS)]
RejectedCallback = Callable[[pa.Table], None]


def stream_chunks(path: Path, on_rejected: RejectedCallback) -> Iterator[Chunk]:
    """Stream an NDJSON file of polls as chunks of text columns (the polls CSV's columns)."""
    with open(path, "rb") as stream:
        for first_line, block in line_blocks(stream, on_rejected):
            chunk = _read_block(block, first_line, on_rejected)
            chunk.bytes_read = stream.tell()
            if len(chunk):
                yield chunk


def line_blocks(stream, on_rejected: RejectedCallback) -> Iterator[tuple[int, bytes]]:
    """Blocks of whole lines (at most BLOCK_BYTES and MAX_BLOCK_LINES) and the number of
    each block's first line.

    A line longer than MAX_LINE_BYTES is refused (its start shown) and skipped to its end,
    so no line is ever held whole beyond that size.
    """
    line, carry, skipping = 1, b"", False
    while data := stream.read(BLOCK_BYTES):
        if skipping:
            end = data.find(b"\n")
            if end < 0:
                continue
            data, skipping, line = data[end + 1 :], False, line + 1
        block = carry + data
        cut = block.rfind(b"\n") + 1
        block, carry = block[:cut], block[cut:]
        start = 0  # at most MAX_BLOCK_LINES lines a block: a refused line costs ~150 bytes
        for cut in line_limited_cuts(block, quotes_join_lines=False):
            yield line, block[start:cut]
            start, line = cut, line + block.count(b"\n", start, cut)
        if len(carry) > MAX_LINE_BYTES:
            shown = [carry[:SHOWN_CHARS].decode(errors="replace")]
            on_rejected(_refused(np.array([line]), shown, np.array([REASONS.index(TOO_LONG)])))
            carry, skipping = b"", True
    if carry and not skipping:
        yield line, carry


def _read_block(block: bytes, first_line: int, on_rejected: RejectedCallback) -> Chunk:
    """The polls of a block of whole lines; refused lines go to `on_rejected`."""
    text = block.decode("utf-8", errors="replace")
    lines = pc.split_pattern(pa.array([text], pa.large_string()), "\n").flatten()
    if text.endswith("\n"):
        lines = lines.slice(0, len(lines) - 1)
    numbers = np.arange(first_line, first_line + len(lines), dtype=np.int64)
    trimmed = pc.utf8_trim(lines, characters=" \t\r").cast(pa.string())
    reason = np.full(len(lines), GOOD, dtype=np.int8)
    reason[_not_utf8(block, lines)] = REASONS.index(NOT_UTF8)
    too_short = _bools(pc.less(pc.utf8_length(trimmed), MIN_RECORD_CHARS))
    no_object = too_short | ~_bools(pc.starts_with(trimmed, "{"))
    blank = _bools(pc.equal(trimmed, ""))
    reason[no_object & ~blank & (reason == GOOD)] = REASONS.index(NOT_AN_OBJECT)
    candidates = np.flatnonzero(~blank & (reason == GOOD))
    columns, read = _read_usual_lines(trimmed, candidates)
    unusual = np.setdiff1d(candidates, read, assume_unique=True)
    parsed, reason[unusual] = _parse_one_by_one(trimmed.take(pa.array(unusual, pa.int64())))
    refused = np.flatnonzero(reason != GOOD)
    if refused.size:
        shown = pc.utf8_slice_codeunits(trimmed.take(pa.array(refused)), 0, SHOWN_CHARS)
        on_rejected(_refused(numbers[refused], shown, reason[refused]))
    columns.append({name: pa.array(values, pa.string()) for name, values in parsed.items()})
    read = np.concatenate([read, unusual[reason[unusual] == GOOD]])
    return _in_line_order(columns, numbers[read])


def _read_usual_lines(trimmed: pa.Array, candidates: np.ndarray) -> tuple[list, np.ndarray]:
    """Read the lines of the usual shapes (whole columns, one regular expression per order of
    the keys): their fields (a dict of columns per shape) and which lines they are."""
    found_columns, found_rows = [], []
    remaining = candidates
    for pattern in USUAL_LINES:
        if not remaining.size:
            break
        fields = pc.extract_regex(trimmed.take(pa.array(remaining, pa.int64())), pattern)
        matched = _bools(fields.is_valid())
        found_columns.append(_unquoted(fields.filter(pa.array(matched))))
        found_rows.append(remaining[matched])
        remaining = remaining[~matched]
    return found_columns, np.concatenate([np.zeros(0, np.int64), *found_rows])


def _bools(array: pa.Array) -> np.ndarray:
    return pc.fill_null(array, False).to_numpy(zero_copy_only=False)


def _not_utf8(block: bytes, lines: pa.Array) -> np.ndarray:
    """Lines whose bytes were not UTF-8: decoding put U+FFFD in them.

    When the block also holds a real U+FFFD (rare), the lines showing one are decoded again
    one by one, from their own bytes.
    """
    try:
        block.decode("utf-8")
    except UnicodeDecodeError:
        pass
    else:
        return np.zeros(len(lines), dtype=bool)
    replaced = _bools(pc.match_substring(lines, "\ufffd"))
    if "\ufffd".encode() not in block:
        return replaced
    ends = np.flatnonzero(np.frombuffer(block, dtype=np.uint8) == ord("\n"))
    ends = np.r_[ends, len(block)][: len(lines)]
    starts = np.r_[0, ends[:-1] + 1]
    for index in np.flatnonzero(replaced):
        replaced[index] = not _is_utf8(block[starts[index] : ends[index]])
    return replaced


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _parse_one_by_one(texts: pa.Array) -> tuple[dict[str, list[str]], np.ndarray]:
    """Parse the unusual lines with `json`: the fields of the good ones, and a reason code
    per line (GOOD for the good ones)."""
    rows: list[list[str]] = []
    codes = np.full(len(texts), GOOD, dtype=np.int8)
    for index, text in enumerate(texts.to_pylist()):
        values = _record_fields(text)
        if isinstance(values, int):
            codes[index] = values
        else:
            rows.append(values)
    fields = {name: [row[position] for row in rows] for position, name in enumerate(COLUMNS)}
    return fields, codes


def _record_fields(text: str) -> list[str] | int:
    """The three fields of one line, or why there are none (a code of REASONS). An integer
    store_id is kept as its digits; any other value that is not a string is refused."""
    try:
        record = _DECODER.decode(text)
    except (ValueError, RecursionError):
        return _NOT_AN_OBJECT
    if type(record) is not dict or not record.keys() >= _NAMES:
        return _NOT_AN_OBJECT
    values = [record[name] for name in COLUMNS]
    if type(values[0]) is int:  # not a bool
        values[0] = str(values[0])
    if not all(type(value) is str for value in values):
        return _NOT_AN_OBJECT
    try:
        "".join(values).encode("utf-8")
    except UnicodeEncodeError:  # "\ud800" is valid JSON but no text: it cannot be stored
        return REASONS.index(LONE_SURROGATE)
    return values


_DECODER = json.JSONDecoder()
_NAMES = frozenset(COLUMNS)
_NOT_AN_OBJECT = REASONS.index(NOT_AN_OBJECT)


def _refused(numbers: np.ndarray, values, codes: np.ndarray) -> pa.Table:
    """Refused lines as rejected rows: line, column `*`, the line (cut) and why (a code of
    REASONS)."""
    reasons = pa.DictionaryArray.from_arrays(pa.array(codes, pa.int8()), pa.array(REASONS))
    return pa.table(
        {
            "line": pa.array(numbers, type=pa.int64()),
            "column": pa.repeat("*", len(numbers)),
            "value": pa.array(values, type=pa.string()),
            "reason": reasons.dictionary_decode(),
        }
    )


def _unquoted(fields: pa.StructArray) -> dict[str, pa.Array]:
    """The fields of matched lines: quotes taken off strings, integers as written."""
    columns = {}
    for name in COLUMNS:
        column = pc.struct_field(fields, name)
        is_string = pc.starts_with(column, '"')
        columns[name] = pc.if_else(is_string, pc.utf8_slice_codeunits(column, 1, -1), column)
    return columns


def _in_line_order(parts: list[dict[str, pa.Array]], lines: np.ndarray) -> Chunk:
    """One chunk of the parts' polls in line order (`lines`: their line numbers, part after
    part): of two polls of a store at one instant, the earlier line is the one kept."""
    order = np.argsort(lines, kind="stable")
    columns = {
        name: pa.concat_arrays([part[name] for part in parts]).take(pa.array(order))
        for name in COLUMNS
    }
    return Chunk(columns, lines[order])
