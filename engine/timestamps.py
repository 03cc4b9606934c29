"""Parse and format instants, local wall times and durations, on whole columns.

Shared by the loader (CSV and HTTP input), the API and the command line. Instants are int64
microseconds since the Unix epoch (UTC); wall times are seconds after local midnight; local
date-times are wall seconds since 1970-01-01 00:00 on the local clock (no zone applied yet,
negative before 1970). Digits, letters and separators are ASCII only: `٢h` or `２h` is no
duration. Time zones come from the pinned `tzdata` package only (see `use_pinned_time_zones`).
Pure: numpy, pandas, pyarrow and the standard library, nothing else.
"""

from __future__ import annotations

import importlib.resources
import re
import zoneinfo
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

US_PER_SECOND = 1_000_000
US_PER_MINUTE = 60 * US_PER_SECOND
US_PER_HOUR = 60 * US_PER_MINUTE
US_PER_DAY = 24 * US_PER_HOUR
SECONDS_PER_DAY = 86_400
# Instants outside [1970, 2100) are rejected by the parsers: they are typos, not polls.
MIN_VALID_US = 0
MAX_VALID_US = 4_102_444_800 * US_PER_SECOND
VALID_INSTANTS = "between 1970 and 2100"
# Closures are local date-times from 1900-01-01 00:00 to 2100-01-01 00:00 (wall seconds).
MIN_LOCAL_S = -2_208_988_800
MAX_LOCAL_S = 4_102_444_800
VALID_LOCAL_DATETIMES = "from 1900-01-01 00:00 to 2100-01-01 00:00"
# What parsers of never-negative values (instants, wall times) return for a value they refuse.
INVALID = -1
QUOTED_CHARS = 200  # of a value quoted in a message: an input may be a megabyte on one line

TextColumn = pd.Series | pa.Array | pa.ChunkedArray


def quoted(value: str, limit: int = QUOTED_CHARS) -> str:
    """`value` as a message quotes it, cut to `limit` characters (it may be huge)."""
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}... ({len(value)} characters)"


@dataclass(frozen=True)
class Parsed:
    """A parsed column: `values` where `valid`, and why the other rows are not.

    A mask, not a sentinel value: a closure before 1970 has negative wall seconds.
    """

    values: np.ndarray  # int64; meaningless where not valid
    malformed: np.ndarray  # not in the expected format (or no such date or time)
    out_of_range: np.ndarray  # well formed, outside the accepted range

    @property
    def valid(self) -> np.ndarray:
        return ~(self.malformed | self.out_of_range)


def parse_utc_instants(values: TextColumn) -> Parsed:
    """Parse poll timestamps to int64 epoch microseconds, valid from 1970 to 2100.

    Accepts ``2023-01-22 12:09:39.388884 UTC`` (0–6 fraction digits) and ISO-8601 with ``T``,
    ``Z`` or a numeric offset (naive means UTC). The common case is one vectorised Arrow cast;
    anything else goes through pandas' compiled ISO-8601 parser. Never per-element inference.
    """
    text = arrow_strings(values)
    try:
        with_zone = pc.replace_substring(text, " UTC", "Z")
        cast = pc.cast(with_zone, pa.timestamp("us", tz="UTC")).cast(pa.int64())
        malformed = cast.is_null().to_numpy(zero_copy_only=False)
        micros = pc.fill_null(cast, 0).to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        micros, malformed = _parse_timestamps_slowly(text)
    micros = np.array(micros, dtype=np.int64)
    out_of_range = ~malformed & ((micros < MIN_VALID_US) | (micros >= MAX_VALID_US))
    return Parsed(micros, malformed, out_of_range)


def parse_utc_timestamps(values: TextColumn) -> np.ndarray:
    """Parse poll timestamps to int64 epoch microseconds; unparseable or out of range → -1."""
    parsed = parse_utc_instants(values)
    return np.where(parsed.valid, parsed.values, INVALID)


def arrow_strings(values: TextColumn) -> pa.Array:
    """Any text column as one Arrow string array (nulls stay null)."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if isinstance(values, pa.Array):
        return values.cast(pa.string())
    return pa.array(pd.Series(values).to_numpy(dtype=object), type=pa.string(), from_pandas=True)


def _parse_timestamps_slowly(text: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Parse mixed or irregular stamps with pandas (still compiled, still vectorised); return
    the microseconds and which stamps could not be parsed."""
    series = pd.Series(text.to_pandas(), dtype="string").str.strip()
    series = series.str.removesuffix(" UTC").str.removesuffix("UTC")
    parsed = pd.to_datetime(series, format="ISO8601", utc=True, errors="coerce")
    naive = parsed.dt.tz_localize(None).to_numpy(dtype="datetime64[us]")
    malformed = np.isnat(naive)
    micros = np.where(malformed, 0, naive.view("int64"))
    return micros, malformed


# RE2 (Arrow's regular expressions) reads \s as ASCII white space; digits are spelled [0-9].
_TIME_PATTERN = r"^\s*(?P<h>[0-9]{1,2}):(?P<m>[0-9]{2})(?::(?P<s>[0-9]{2}))?\s*$"


def parse_local_times(values: TextColumn, end_of_day: bool = False) -> np.ndarray:
    """Parse ``HH:MM:SS`` or ``HH:MM`` wall times to seconds after midnight; invalid → -1.

    With `end_of_day`, ``24:00`` and ``24:00:00`` are accepted as 86400 (the end of the day):
    docs/spec.md allows them for the end of a business period only.
    """
    parts = pc.extract_regex(arrow_strings(values), _TIME_PATTERN)
    hours, minutes, seconds = (_field_as_int(parts, name) for name in ("h", "m", "s"))
    valid = (hours >= 0) & (hours <= 23) & (minutes >= 0) & (minutes <= 59) & (seconds <= 59)
    parsed = np.where(valid, hours * 3600 + minutes * 60 + np.maximum(seconds, 0), INVALID)
    if end_of_day:
        midnight = (hours == 24) & (minutes == 0) & (seconds <= 0)
        parsed = np.where(midnight, SECONDS_PER_DAY, parsed)
    return parsed


def _field_as_int(parts: pa.Array, name: str) -> np.ndarray:
    """Return a regex group as int64 (absent or empty → -1)."""
    field = pc.struct_field(parts, name)
    field = pc.if_else(pc.equal(field, ""), None, field)
    return pc.fill_null(pc.cast(field, pa.int64()), INVALID).to_numpy(zero_copy_only=False)


_LOCAL_DATETIME_PATTERN = (
    r"^\s*(?P<date>[0-9]{4}-[0-9]{2}-[0-9]{2})[ T]"
    r"(?P<h>[0-9]{2}):(?P<m>[0-9]{2})(?::(?P<s>[0-9]{2}))?\s*$"
)


def parse_local_datetimes(values: TextColumn) -> Parsed:
    """Parse ``YYYY-MM-DD HH:MM[:SS]`` local wall date-times to wall seconds since 1970-01-01,
    valid from 1900-01-01 00:00 to 2100-01-01 00:00 (before 1970: negative).

    No zone is applied: the engine converts them with the store's zone. A date that does not
    exist (2023-02-30) or a time beyond 23:59:59 is malformed.
    """
    parts = pc.extract_regex(arrow_strings(values), _LOCAL_DATETIME_PATTERN)
    dates = pc.struct_field(parts, "date")
    parsed = pc.strptime(dates, format="%Y-%m-%d", unit="s", error_is_null=True)
    # strptime rolls 2023-02-30 over to March: a date is valid only if it formats back as given.
    exact = pc.fill_null(pc.equal(pc.strftime(parsed, format="%Y-%m-%d"), dates), False)
    day_seconds = pc.fill_null(pc.cast(parsed, pa.int64()), 0).to_numpy(zero_copy_only=False)
    hours, minutes, seconds = (_field_as_int(parts, name) for name in ("h", "m", "s"))
    clock = (hours >= 0) & (hours <= 23) & (minutes >= 0) & (minutes <= 59) & (seconds <= 59)
    malformed = ~(exact.to_numpy(zero_copy_only=False) & clock)
    wall = np.where(malformed, 0, day_seconds + hours * 3600 + minutes * 60 + seconds.clip(0))
    out_of_range = ~malformed & ((wall < MIN_LOCAL_S) | (wall > MAX_LOCAL_S))
    return Parsed(wall, malformed, out_of_range)


_ISO_DATE_START = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def parse_iso_instant(text: str) -> int:
    """Parse one ISO-8601 instant (naive means UTC) to epoch microseconds; ValueError if bad."""
    if not isinstance(text, str) or not text.isascii() or not _ISO_DATE_START.match(text.strip()):
        shown = quoted(text) if isinstance(text, str) else repr(text)
        raise ValueError(f"not an ISO-8601 instant: {shown}")
    parsed = parse_utc_instants(pd.Series([text]))
    if parsed.malformed[0]:
        raise ValueError(f"not an ISO-8601 instant: {quoted(text)}")
    if parsed.out_of_range[0]:
        raise ValueError(f"not an ISO-8601 instant {VALID_INSTANTS}: {quoted(text)}")
    return int(parsed.values[0])


def format_instant(micros: int) -> str:
    """Format epoch microseconds as ISO-8601 UTC with a ``Z``."""
    return pd.Timestamp(micros, unit="us", tz="UTC").strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_SHORT_DURATION = re.compile(r"(?P<amount>[0-9]{1,9})(?P<unit>[smhd])")
_ISO_DURATION = re.compile(
    r"P(?:(?P<d>[0-9]{1,9})D)?"
    r"(?:T(?:(?P<h>[0-9]{1,9})H)?(?:(?P<m>[0-9]{1,9})M)?(?:(?P<s>[0-9]{1,9})S)?)?"
)
_UNIT_US = {"s": US_PER_SECOND, "m": US_PER_MINUTE, "h": US_PER_HOUR, "d": US_PER_DAY}
MAX_DURATION_US = 366 * US_PER_DAY


def parse_duration(text: str) -> int:
    """Parse a positive duration to microseconds: ``90s``, ``30m``, ``2h``, ``1d`` or ISO-8601
    (``PT2H``, ``PT90M``, ``P1DT2H``). ValueError with the reason for anything else."""
    if not isinstance(text, str):
        raise ValueError("a duration must be a string such as '2h' or 'PT2H'")
    value = text.strip()
    # ASCII first: str.upper() turns the long s `ſ` into `S`, and `\d` would read `٢` or `２`.
    short = _SHORT_DURATION.fullmatch(value) if value.isascii() else None
    iso = _ISO_DURATION.fullmatch(value.upper()) if value.isascii() else None
    if short:
        micros = int(short["amount"]) * _UNIT_US[short["unit"]]
    elif iso and value.upper() not in ("P", "PT") and not value.upper().endswith("T"):
        parts = {unit: int(iso[unit] or 0) for unit in "dhms"}
        micros = sum(amount * _UNIT_US[unit] for unit, amount in parts.items())
    else:
        raise ValueError(
            f"not a duration: {quoted(text)} (use 90s, 30m, 2h, 1d or ISO-8601 such as PT2H, PT90M)"
        )
    if micros <= 0:
        raise ValueError(f"a duration must be greater than zero: {quoted(text)}")
    if micros > MAX_DURATION_US:
        raise ValueError(f"a duration must be at most 366 days: {quoted(text)}")
    return micros


def format_duration(micros: int) -> str:
    """Format microseconds as an ISO-8601 duration (``PT2H``, ``PT1H30M``, ``P1D``)."""
    seconds = micros // US_PER_SECOND
    days, rest = divmod(seconds, SECONDS_PER_DAY)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    time = "".join(
        f"{amount}{unit}"
        for amount, unit in ((hours, "H"), (minutes, "M"), (seconds, "S"))
        if amount
    )
    return "P" + (f"{days}D" if days else "") + (f"T{time}" if time else "")


# --------------------------------------------------------------------------- time zones


def pinned_zone_names() -> frozenset[str]:
    """The IANA zone names of the pinned `tzdata` package: the same list on every machine
    (the system's list also holds `localtime`, a link to whatever the machine is set to)."""
    listing = importlib.resources.files("tzdata").joinpath("zones").read_text(encoding="utf-8")
    return frozenset(listing.split())


def use_pinned_time_zones() -> None:
    """Read every zone of this process from the pinned `tzdata` package, not the system's.

    `zoneinfo` looks in the system's folders first; their rules differ between machines (and
    `localtime` there means the machine's own zone), so two machines would compute different
    reports. With an empty search path it reads the package, which is what pandas uses too.
    """
    zoneinfo.reset_tzpath([])
    zoneinfo.ZoneInfo.clear_cache()


use_pinned_time_zones()
