"""Parse and format instants, local wall times and durations, on whole columns.

Shared by the loader (CSV and HTTP input), the API and the command line. Instants are int64
microseconds since the Unix epoch (UTC); wall times are seconds after local midnight; local
date-times are wall seconds since 1970-01-01 00:00 on the local clock (no zone applied yet).
Pure: numpy, pandas and pyarrow, nothing else.
"""

from __future__ import annotations

import re

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
INVALID = -1

TextColumn = pd.Series | pa.Array | pa.ChunkedArray


def parse_utc_timestamps(values: TextColumn) -> np.ndarray:
    """Parse poll timestamps to int64 epoch microseconds; unparseable or out of range → -1.

    Accepts ``2023-01-22 12:09:39.388884 UTC`` (0–6 fraction digits) and ISO-8601 with ``T``,
    ``Z`` or a numeric offset (naive means UTC). The common case is one vectorised Arrow cast;
    anything else goes through pandas' compiled ISO-8601 parser. Never per-element inference.
    """
    text = arrow_strings(values)
    try:
        with_zone = pc.replace_substring(text, " UTC", "Z")
        cast = pc.cast(with_zone, pa.timestamp("us", tz="UTC"))
        micros = pc.fill_null(cast.cast(pa.int64()), INVALID).to_numpy()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        micros = _parse_timestamps_slowly(text)
    micros = np.array(micros, dtype=np.int64)
    micros[(micros < MIN_VALID_US) | (micros >= MAX_VALID_US)] = INVALID
    return micros


def arrow_strings(values: TextColumn) -> pa.Array:
    """Any text column as one Arrow string array (nulls stay null)."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if isinstance(values, pa.Array):
        return values.cast(pa.string())
    return pa.array(pd.Series(values).to_numpy(dtype=object), type=pa.string(), from_pandas=True)


def _parse_timestamps_slowly(text: pa.Array) -> np.ndarray:
    """Parse mixed or irregular stamps with pandas (still compiled, still vectorised)."""
    series = pd.Series(text.to_pandas(), dtype="string").str.strip()
    series = series.str.removesuffix(" UTC").str.removesuffix("UTC")
    parsed = pd.to_datetime(series, format="ISO8601", utc=True, errors="coerce")
    naive = parsed.dt.tz_localize(None).to_numpy(dtype="datetime64[us]")
    micros = naive.view("int64").copy()
    micros[np.isnat(naive)] = INVALID
    return micros


_TIME_PATTERN = r"^\s*(?P<h>\d{1,2}):(?P<m>\d{2})(?::(?P<s>\d{2}))?\s*$"


def parse_local_times(values: TextColumn, end_of_day: bool = False) -> np.ndarray:
    """Parse ``HH:MM:SS`` or ``HH:MM`` wall times to seconds after midnight; invalid → -1.

    With `end_of_day`, ``24:00`` and ``24:00:00`` are accepted as 86400 (the end of the day):
    SPEC allows them for the end of a business period only.
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
    r"^\s*(?P<date>\d{4}-\d{2}-\d{2})[ T](?P<h>\d{2}):(?P<m>\d{2})(?::(?P<s>\d{2}))?\s*$"
)


def parse_local_datetimes(values: TextColumn) -> np.ndarray:
    """Parse ``YYYY-MM-DD HH:MM[:SS]`` local wall date-times to wall seconds since 1970-01-01.

    No zone is applied: the engine converts them with the store's zone. Invalid dates or times,
    or years outside 1970–2099, → -1.
    """
    parts = pc.extract_regex(arrow_strings(values), _LOCAL_DATETIME_PATTERN)
    dates = pc.struct_field(parts, "date")
    parsed = pc.strptime(dates, format="%Y-%m-%d", unit="s", error_is_null=True)
    # strptime rolls 2023-02-30 over to March: a date is valid only if it formats back as given.
    exact = pc.equal(pc.strftime(parsed, format="%Y-%m-%d"), dates)
    days = pc.if_else(pc.fill_null(exact, False), pc.cast(parsed, pa.int64()), None)
    day_seconds = pc.fill_null(days, INVALID).to_numpy(zero_copy_only=False)
    hours, minutes, seconds = (_field_as_int(parts, name) for name in ("h", "m", "s"))
    valid = (
        (day_seconds >= 0)
        & (day_seconds < MAX_VALID_US // US_PER_SECOND)
        & (hours >= 0)
        & (hours <= 23)
        & (minutes >= 0)
        & (minutes <= 59)
        & (seconds <= 59)
    )
    wall = day_seconds + hours * 3600 + minutes * 60 + np.maximum(seconds, 0)
    return np.where(valid, wall, INVALID)


def parse_iso_instant(text: str) -> int:
    """Parse one ISO-8601 instant (naive means UTC) to epoch microseconds; ValueError if bad."""
    if not isinstance(text, str) or not re.match(r"^\d{4}-\d{2}-\d{2}", text.strip()):
        raise ValueError(f"not an ISO-8601 instant: {text!r}")
    micros = parse_utc_timestamps(pd.Series([text]))[0]
    if micros < 0:
        raise ValueError(f"not an ISO-8601 instant between 1970 and 2100: {text!r}")
    return int(micros)


def format_instant(micros: int) -> str:
    """Format epoch microseconds as ISO-8601 UTC with a ``Z``."""
    return pd.Timestamp(micros, unit="us", tz="UTC").strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_SHORT_DURATION = re.compile(r"^(?P<amount>\d{1,9})(?P<unit>[smhd])$")
_ISO_DURATION = re.compile(
    r"^P(?:(?P<d>\d{1,9})D)?(?:T(?:(?P<h>\d{1,9})H)?(?:(?P<m>\d{1,9})M)?(?:(?P<s>\d{1,9})S)?)?$"
)
_UNIT_US = {"s": US_PER_SECOND, "m": US_PER_MINUTE, "h": US_PER_HOUR, "d": US_PER_DAY}
MAX_DURATION_US = 366 * US_PER_DAY


def parse_duration(text: str) -> int:
    """Parse a positive duration to microseconds: ``90s``, ``30m``, ``2h``, ``1d`` or ISO-8601
    (``PT2H``, ``PT90M``, ``P1DT2H``). ValueError with the reason for anything else."""
    if not isinstance(text, str):
        raise ValueError("a duration must be a string such as '2h' or 'PT2H'")
    value = text.strip()
    short = _SHORT_DURATION.fullmatch(value)
    iso = _ISO_DURATION.fullmatch(value.upper())
    if short:
        micros = int(short["amount"]) * _UNIT_US[short["unit"]]
    elif iso and value.upper() not in ("P", "PT") and not value.upper().endswith("T"):
        parts = {unit: int(iso[unit] or 0) for unit in "dhms"}
        micros = sum(amount * _UNIT_US[unit] for unit, amount in parts.items())
    else:
        raise ValueError(
            f"not a duration: {text!r} (use 90s, 30m, 2h, 1d or ISO-8601 such as PT2H, PT90M)"
        )
    if micros <= 0:
        raise ValueError(f"a duration must be greater than zero: {text!r}")
    if micros > MAX_DURATION_US:
        raise ValueError(f"a duration must be at most 366 days: {text!r}")
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
