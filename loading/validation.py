"""What each kind of input must hold, and the checks that find the rows that do not.

Checks work on whole columns of text (Arrow arrays): each returns the parsed values of a chunk
and, per problem, the column, the rows that have it and the reason. `check_chunk` keeps the
good rows and turns the others into rejected rows (line, column, value, reason and the row's
fields), each with its first problem only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine import timestamps
from models import GROUP_ID_MAX_LENGTH, STORE_ID_MAX_LENGTH

if TYPE_CHECKING:
    from collections.abc import Callable


POLLS, HOURS, TIMEZONES, CLOSURES, GROUPS = "polls", "hours", "timezones", "closures", "groups"
REQUIRED_COLUMNS = {
    POLLS: ["store_id", "status", "timestamp_utc"],
    HOURS: ["store_id", "day", "start_time_local", "end_time_local"],
    TIMEZONES: ["store_id", "timezone_str"],
    CLOSURES: ["store_id", "start_local", "end_local"],
    GROUPS: ["group_id", "store_id"],
}
GROUP_ID_PATTERN = rf"^[A-Za-z0-9._-]{{1,{GROUP_ID_MAX_LENGTH}}}$"
REJECTED_COLUMNS = ["line", "column", "value", "reason"]
MAX_LISTED_ERRORS = 20
# Without skip_invalid a load stops reading an input at this many invalid rows: the answer
# lists 20 anyway, and a body of millions of bad lines must not cost minutes of CPU.
MAX_COUNTED_ERRORS = 1000
MAX_VALUE_CHARS = 80  # of a value quoted in a message
ZONE_NAMES = pa.array(sorted(timestamps.pinned_zone_names()))
NOT_A_UTC_TIMESTAMP = (
    "not a UTC timestamp such as 2023-01-22 12:09:39.388884 UTC or ISO-8601 (2023-01-22T12:09:39Z)"
)
UTC_TIMESTAMP_OUT_OF_RANGE = (
    f"a UTC timestamp out of range: polls must be {timestamps.VALID_INSTANTS}"
)
NOT_A_LOCAL_DATETIME = "not a local date-time YYYY-MM-DD HH:MM[:SS]"
LOCAL_DATETIME_OUT_OF_RANGE = (
    f"a local date-time out of range: closures must be {timestamps.VALID_LOCAL_DATETIMES}"
)

Values = dict[str, np.ndarray | pa.Array]
Problem = tuple[str, np.ndarray, str]  # column, rows that have it, reason


# --------------------------------------------------------------------------- errors


@dataclass(frozen=True)
class RowError:
    """One rejected row: where it is, which value is wrong and why."""

    line: int
    column: str
    value: str
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}, column {self.column}: {self.reason} (value {self.value!r})"


class LoadError(Exception):
    """An input cannot be loaded; nothing was written. Names the input, lines, columns, values.

    `path` is the input's label: its path, or what an upload is called ("request body").
    """

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


@dataclass
class Chunk:
    """A batch of rows as text columns, with each row's line number in the file."""

    columns: dict[str, pa.Array]
    lines: np.ndarray
    bytes_read: int = 0  # of the file on disk (compressed, for gzip)

    def __len__(self) -> int:
        return self.lines.size


def row_errors(rejected: pa.Table, limit: int = MAX_LISTED_ERRORS) -> list[RowError]:
    """The first `limit` rejected rows as errors, values cut to a readable length."""
    return [
        RowError(
            int(row["line"]), row["column"], (row["value"] or "")[:MAX_VALUE_CHARS], row["reason"]
        )
        for row in rejected.select(REJECTED_COLUMNS).slice(0, limit).to_pylist()
    ]


# --------------------------------------------------------------------------- checks per kind


def trimmed(text: pa.Array) -> pa.Array:
    """Drop surrounding white space: ids and names are compared without it."""
    return pc.utf8_trim_whitespace(text)


def store_id_problems(store_ids: pa.Array) -> list[Problem]:
    lengths = pc.utf8_length(store_ids).to_numpy(zero_copy_only=False)
    control = pc.match_substring_regex(store_ids, r"[\x00-\x1f\x7f]").to_numpy(zero_copy_only=False)
    return [
        ("store_id", lengths == 0, "empty store_id"),
        (
            "store_id",
            lengths > STORE_ID_MAX_LENGTH,
            f"store_id longer than {STORE_ID_MAX_LENGTH} characters",
        ),
        ("store_id", control, "store_id contains control characters"),
    ]


def _as_bools(array: pa.Array) -> np.ndarray:
    return pc.fill_null(array, False).to_numpy(zero_copy_only=False)


def check_polls(columns: dict[str, pa.Array]) -> tuple[Values, list[Problem]]:
    """Status in any letter case, surrounding spaces ignored; instants in UTC."""
    store_ids = trimmed(columns["store_id"])
    status = pc.utf8_lower(trimmed(columns["status"]))
    known = _as_bools(pc.is_in(status, value_set=pa.array(["active", "inactive"])))
    instants = timestamps.parse_utc_instants(columns["timestamp_utc"])
    problems = [
        *store_id_problems(store_ids),
        ("status", ~known, "status is not 'active' or 'inactive'"),
        ("timestamp_utc", instants.malformed, NOT_A_UTC_TIMESTAMP),
        ("timestamp_utc", instants.out_of_range, UTC_TIMESTAMP_OUT_OF_RANGE),
    ]
    active = _as_bools(pc.equal(status, "active"))
    return {"store_id": store_ids, "ts_us": instants.values, "active": active}, problems


def check_hours(columns: dict[str, pa.Array]) -> tuple[Values, list[Problem]]:
    """Weekday 0–6; a period may end at 24:00 (the end of the day) but not start there."""
    store_ids = trimmed(columns["store_id"])
    day_text = trimmed(columns["day"])
    day_ok = _as_bools(pc.match_substring_regex(day_text, r"^[0-6]$"))
    first_digit = pc.fill_null(pc.utf8_slice_codeunits(day_text, 0, 1), "0")
    days = np.where(day_ok, first_digit.to_numpy(zero_copy_only=False), "0").astype(np.int64)
    starts = timestamps.parse_local_times(columns["start_time_local"])
    ends = timestamps.parse_local_times(columns["end_time_local"], end_of_day=True)
    problems = [
        *store_id_problems(store_ids),
        ("day", ~day_ok, "day of week is not an integer 0 (Monday) to 6 (Sunday)"),
        ("start_time_local", starts < 0, "not a time HH:MM[:SS] from 00:00 to 23:59:59"),
        ("end_time_local", ends < 0, "not a time HH:MM[:SS] from 00:00 to 24:00"),
    ]
    values = {"store_id": store_ids, "day_of_week": days, "start_s": starts, "end_s": ends}
    return values, problems


def check_timezones(columns: dict[str, pa.Array]) -> tuple[Values, list[Problem]]:
    store_ids = trimmed(columns["store_id"])
    zones = trimmed(columns["timezone_str"])
    known = _as_bools(pc.is_in(zones, value_set=ZONE_NAMES))
    problems = [
        *store_id_problems(store_ids),
        ("timezone_str", ~known, "unknown IANA time zone name"),
    ]
    zone_names = np.asarray(zones.to_numpy(zero_copy_only=False), dtype=object)
    return {"store_id": store_ids, "timezone_str": zone_names}, problems


def check_closures(columns: dict[str, pa.Array]) -> tuple[Values, list[Problem]]:
    """Local wall date-times from 1900 to 2100; a closure must end after it starts."""
    store_ids = trimmed(columns["store_id"])
    starts = timestamps.parse_local_datetimes(columns["start_local"])
    ends = timestamps.parse_local_datetimes(columns["end_local"])
    problems = [
        *store_id_problems(store_ids),
        ("start_local", starts.malformed, NOT_A_LOCAL_DATETIME),
        ("start_local", starts.out_of_range, LOCAL_DATETIME_OUT_OF_RANGE),
        ("end_local", ends.malformed, NOT_A_LOCAL_DATETIME),
        ("end_local", ends.out_of_range, LOCAL_DATETIME_OUT_OF_RANGE),
        ("end_local", ends.values <= starts.values, "end_local is not after start_local"),
    ]
    values = {"store_id": store_ids, "start_local_s": starts.values, "end_local_s": ends.values}
    return values, problems


def check_groups(columns: dict[str, pa.Array]) -> tuple[Values, list[Problem]]:
    """A group id is 1–64 letters, digits, `-`, `_` or `.` (it appears in URLs and keys)."""
    group_ids = trimmed(columns["group_id"])
    store_ids = trimmed(columns["store_id"])
    valid = _as_bools(pc.match_substring_regex(group_ids, GROUP_ID_PATTERN))
    problems = [
        (
            "group_id",
            ~valid,
            f"group_id is not 1 to {GROUP_ID_MAX_LENGTH} letters, digits, '-', '_' or '.'",
        ),
        *store_id_problems(store_ids),
    ]
    names = np.asarray(group_ids.to_numpy(zero_copy_only=False), dtype=object)
    return {"store_id": store_ids, "group_id": names}, problems


CHECKS: dict[str, Callable[[dict[str, pa.Array]], tuple[Values, list[Problem]]]] = {
    POLLS: check_polls,
    HOURS: check_hours,
    TIMEZONES: check_timezones,
    CLOSURES: check_closures,
    GROUPS: check_groups,
}


# --------------------------------------------------------------------------- a whole chunk


@dataclass
class Checked:
    """The parsed values of a chunk's good rows, and its rejected rows (None when all good)."""

    values: Values
    rejected: pa.Table | None


def check_chunk(kind: str, chunk: Chunk) -> Checked:
    """Validate a chunk: parsed values of the good rows, the others as rejected rows."""
    values, problems = CHECKS[kind](chunk.columns)
    first_problem = np.full(len(chunk), -1, dtype=np.int64)
    for index, (_, rows, _) in enumerate(problems):
        first_problem[rows & (first_problem < 0)] = index
    bad = first_problem >= 0
    if not bad.any():
        return Checked(values, None)
    keep = ~bad
    good = {name: _take(column, keep) for name, column in values.items()}
    return Checked(good, _rejected_rows(chunk, problems, first_problem, bad))


def _rejected_rows(
    chunk: Chunk, problems: list[Problem], first_problem: np.ndarray, bad: np.ndarray
) -> pa.Table:
    """Line, column, value and reason of each bad row's first problem, then the row's fields.

    Built in Arrow: a million bad rows make no million Python strings.
    """
    which = pa.array(first_problem[bad], type=pa.int32())
    fields = {name: _take(column, bad) for name, column in chunk.columns.items()}

    def per_problem(texts: list[str]) -> pa.Array:
        return pa.DictionaryArray.from_arrays(which, pa.array(texts)).dictionary_decode()

    return pa.table(
        {
            "line": pa.array(chunk.lines[bad], type=pa.int64()),
            "column": per_problem([column for column, _, _ in problems]),
            "value": pc.choose(which, *(fields[column] for column, _, _ in problems)),
            "reason": per_problem([reason for _, _, reason in problems]),
            **fields,
        }
    )


def _take(values: np.ndarray | pa.Array, keep: np.ndarray) -> np.ndarray | pa.Array:
    return values.filter(pa.array(keep)) if isinstance(values, pa.Array) else values[keep]
