"""Uptime/downtime report engine: the pure computation behind every report.

Implements the rules in README "What the numbers mean" on whole columns with numpy and pandas.
No Flask, no SQLAlchemy, no models: inputs are DataFrames, the output is a DataFrame.

Internally every instant is an int64 count of microseconds since the Unix epoch (UTC).
"""

from __future__ import annotations

import re
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
END_OF_DAY_MARKER = 23 * 3600 + 59 * 60 + 59  # "23:59:59" means 24:00
DEFAULT_TIMEZONE = "America/Chicago"
WINDOWS_US = {"hour": US_PER_HOUR, "day": US_PER_DAY, "week": 7 * US_PER_DAY}
REPORT_COLUMNS = [
    "store_id",
    "uptime_last_hour",
    "uptime_last_day",
    "uptime_last_week",
    "downtime_last_hour",
    "downtime_last_day",
    "downtime_last_week",
]
# Instants outside [1970, 2100) are rejected by the parsers: they are typos, not polls.
MIN_VALID_US = 0
MAX_VALID_US = 4_102_444_800 * US_PER_SECOND


# --------------------------------------------------------------------------- parsing


def parse_utc_timestamps(values: pd.Series | pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Parse poll timestamps to int64 epoch microseconds; unparseable or out of range → -1.

    Accepts ``2023-01-22 12:09:39.388884 UTC`` (0–6 fraction digits) and ISO-8601 with ``T``,
    ``Z`` or a numeric offset (naive means UTC). The common case is one vectorised Arrow cast;
    anything else goes through pandas' compiled ISO-8601 parser. Never per-element inference.
    """
    text = _arrow_strings(values)
    try:
        with_zone = pc.replace_substring(text, " UTC", "Z")
        cast = pc.cast(with_zone, pa.timestamp("us", tz="UTC"))
        micros = pc.fill_null(cast.cast(pa.int64()), -1).to_numpy()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        micros = _parse_timestamps_slowly(text)
    micros = np.array(micros, dtype=np.int64)
    micros[(micros < MIN_VALID_US) | (micros >= MAX_VALID_US)] = -1
    return micros


def _arrow_strings(values: pd.Series | pa.Array | pa.ChunkedArray) -> pa.Array:
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
    micros[np.isnat(naive)] = -1
    return micros


_TIME_PATTERN = r"^\s*(?P<h>\d{1,2}):(?P<m>\d{2})(?::(?P<s>\d{2}))?\s*$"


def parse_local_times(values: pd.Series) -> np.ndarray:
    """Parse ``HH:MM:SS`` or ``HH:MM`` wall times to seconds after midnight; invalid → -1."""
    parts = pc.extract_regex(_arrow_strings(values), _TIME_PATTERN)
    hours, minutes, seconds = (_field_as_int(parts, name) for name in ("h", "m", "s"))
    valid = (hours >= 0) & (hours <= 23) & (minutes >= 0) & (minutes <= 59) & (seconds <= 59)
    return np.where(valid, hours * 3600 + minutes * 60 + np.maximum(seconds, 0), -1)


def _field_as_int(parts: pa.Array, name: str) -> np.ndarray:
    """Return a regex group as int64 (absent or empty → -1)."""
    field = pc.struct_field(parts, name)
    field = pc.if_else(pc.equal(field, ""), None, field)
    return pc.fill_null(pc.cast(field, pa.int64()), -1).to_numpy(zero_copy_only=False)


def day_column(columns: pd.Index | list[str]) -> str | None:
    """Return the weekday column's name (``dayOfWeek`` or ``day``), or None if absent."""
    for name in ("dayOfWeek", "day"):
        if name in columns:
            return name
    return None


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


# --------------------------------------------------------------------------- grouped search


def grouped_searchsorted(
    sorted_codes: np.ndarray,
    sorted_values: np.ndarray,
    query_codes: np.ndarray,
    query_values: np.ndarray,
    side: str = "right",
) -> np.ndarray:
    """Search many per-group sorted arrays at once.

    ``(sorted_codes, sorted_values)`` is sorted by code, then value. Returns, for each query,
    the global insertion index among the rows of its own group (as ``np.searchsorted``).
    Packs (code, value) into one int64 when it fits, else ranks the values first.
    """
    all_values = np.concatenate([sorted_values, query_values])
    low = int(all_values.min()) if all_values.size else 0
    span = int(all_values.max()) - low + 1 if all_values.size else 1
    groups = int(max(sorted_codes.max(initial=0), query_codes.max(initial=0))) + 1
    if groups * span < 2**62:
        base = sorted_values - low
        query = query_values - low
    else:
        ranks = np.unique(all_values, return_inverse=True)[1]
        base, query = ranks[: sorted_values.size], ranks[sorted_values.size :]
        span = int(ranks.max(initial=0)) + 1
    packed = sorted_codes.astype(np.int64) * span + base
    packed_query = query_codes.astype(np.int64) * span + query
    if packed_query.size > 4 * packed.size and np.all(packed_query[1:] >= packed_query[:-1]):
        return _searchsorted_sorted_queries(packed, packed_query, side)
    return np.searchsorted(packed, packed_query, side=side)


def _searchsorted_sorted_queries(base: np.ndarray, queries: np.ndarray, side: str) -> np.ndarray:
    """``np.searchsorted(base, queries, side)`` for sorted queries much longer than base.

    Searches each base value among the queries instead (m log n, not n log m, and cache
    friendly), then counts: the answer for query j is how many base values sort before it.
    """
    first_query = np.searchsorted(queries, base, side="left" if side == "right" else "right")
    return np.cumsum(np.bincount(first_query, minlength=queries.size + 1)[: queries.size])


def group_starts(sorted_codes: np.ndarray, group_count: int) -> np.ndarray:
    """Return the first row of each group 0..group_count in codes sorted ascending."""
    return np.searchsorted(sorted_codes, np.arange(group_count + 1), side="left")


# --------------------------------------------------------------------------- business hours


@dataclass(frozen=True)
class BusinessIntervals:
    """Merged business periods as UTC instants, sorted by (store code, start).

    Stores with no hours rows carry one period spanning the whole range asked for (24×7).
    """

    codes: np.ndarray
    starts: np.ndarray
    ends: np.ndarray


def weekly_hours_seconds(hours: pd.DataFrame) -> pd.DataFrame:
    """Normalise hours rows to (store_id, day, start, end) in seconds, end > start.

    end ≤ start crosses midnight (end + 24 h); start = end is 24 hours; 23:59:59 is 24:00.
    Accepts already-parsed integer seconds or ``HH:MM[:SS]`` strings.
    """
    day_name = day_column(hours.columns) or "day"
    start = _as_seconds(hours["start_time_local"])
    end = _as_seconds(hours["end_time_local"])
    end = np.where((end == END_OF_DAY_MARKER) & (start != end), SECONDS_PER_DAY, end)
    end = np.where(end <= start, end + SECONDS_PER_DAY, end)
    return pd.DataFrame(
        {
            "store_id": hours["store_id"].to_numpy(),
            "day": hours[day_name].to_numpy(dtype="int64"),
            "start": start,
            "end": end,
        }
    )


def _as_seconds(values: pd.Series) -> np.ndarray:
    if pd.api.types.is_integer_dtype(values.dtype):
        return values.to_numpy(dtype="int64")
    return parse_local_times(values)


def business_intervals(
    hours: pd.DataFrame,
    timezones: pd.DataFrame,
    store_ids: pd.Index,
    start_us: int | np.ndarray,
    end_us: int,
) -> BusinessIntervals:
    """Expand weekly local hours to merged UTC intervals covering [start_us, end_us].

    Store codes are positions in ``store_ids``; rows of other stores are ignored. `start_us`
    may differ per store (an array indexed by code), so one store's old poll does not make
    every store's range long.
    """
    starts_by_code = np.broadcast_to(np.asarray(start_us, dtype=np.int64), (len(store_ids),))
    weekly = weekly_hours_seconds(hours)
    weekly["code"] = store_ids.get_indexer(weekly["store_id"])
    weekly = weekly[weekly["code"] >= 0]
    zone_by_code = _zones_by_code(timezones, store_ids)
    row_starts = starts_by_code[weekly["code"].to_numpy()]
    local = _expand_local_dates(weekly, row_starts, end_us)
    starts, ends = _local_to_utc(local, zone_by_code)
    with_hours = np.zeros(len(store_ids), dtype=bool)
    with_hours[weekly["code"].to_numpy()] = True
    always_open = np.flatnonzero(~with_hours)
    codes = np.concatenate([local["code"].to_numpy(dtype="int64"), always_open])
    starts = np.concatenate([starts, starts_by_code[always_open] - US_PER_DAY])
    ends = np.concatenate([ends, np.full(always_open.size, end_us + US_PER_DAY)])
    return _merge_intervals(codes, starts, ends)


def _zones_by_code(timezones: pd.DataFrame, store_ids: pd.Index) -> np.ndarray:
    zones = np.full(len(store_ids), DEFAULT_TIMEZONE, dtype=object)
    codes = store_ids.get_indexer(timezones["store_id"])
    known = codes >= 0
    zones[codes[known]] = timezones["timezone_str"].to_numpy(dtype=object)[known]
    return zones


def _expand_local_dates(
    weekly: pd.DataFrame, row_starts_us: np.ndarray, end_us: int
) -> pd.DataFrame:
    """Repeat each weekly row on every local date of its weekday that can touch its range.

    Local dates run from two days before to one day after the range in UTC: every zone is
    within ±14 h of UTC and a period lasts at most 24 h.
    """
    first_day = row_starts_us // US_PER_DAY - 2
    last_day = end_us // US_PER_DAY + 1
    weekday_of_first = (first_day + 3) % 7  # 1970-01-01 (day 0) was a Thursday (weekday 3)
    offset = (weekly["day"].to_numpy() - weekday_of_first) % 7
    weeks = np.maximum((last_day - first_day - offset) // 7 + 1, 0)
    row = np.repeat(np.arange(len(weekly)), weeks)
    week_index = np.arange(row.size) - np.repeat(np.cumsum(weeks) - weeks, weeks)
    days = first_day[row] + offset[row] + 7 * week_index
    return pd.DataFrame(
        {
            "code": weekly["code"].to_numpy()[row],
            "local_start_s": days * SECONDS_PER_DAY + weekly["start"].to_numpy()[row],
            "local_end_s": days * SECONDS_PER_DAY + weekly["end"].to_numpy()[row],
        }
    )


def _local_to_utc(local: pd.DataFrame, zone_by_code: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Convert local wall-clock seconds to UTC microseconds, zone by zone.

    A wall time in a spring-forward gap moves to the first instant after the gap; one that
    occurs twice (fall-back) takes its first occurrence.
    """
    starts = np.empty(len(local), dtype=np.int64)
    ends = np.empty(len(local), dtype=np.int64)
    zones = zone_by_code[local["code"].to_numpy()]
    for zone in pd.unique(zones):
        rows = np.flatnonzero(zones == zone)
        starts[rows] = _wall_seconds_to_utc_us(local["local_start_s"].to_numpy()[rows], zone)
        ends[rows] = _wall_seconds_to_utc_us(local["local_end_s"].to_numpy()[rows], zone)
    return starts, ends


def _wall_seconds_to_utc_us(wall_seconds: np.ndarray, zone: str) -> np.ndarray:
    """Localise wall times; gaps resolved by walking forward a minute at a time.

    pandas' own ``nonexistent="shift_forward"`` assumes one-hour gaps and is wrong for
    30-minute ones (Australia/Lord_Howe), so gap rows (rare) are resolved here instead.
    """
    utc = _localize_or_nat(wall_seconds, zone)
    in_gap = np.flatnonzero(utc == _NAT)
    probe = wall_seconds[in_gap] // 60 * 60
    for _ in range(_MAX_GAP_MINUTES):
        if in_gap.size == 0:
            break
        probe += 60
        found = _localize_or_nat(probe, zone)
        done = found != _NAT
        utc[in_gap[done]] = found[done]
        in_gap, probe = in_gap[~done], probe[~done]
    return utc


_NAT = np.iinfo(np.int64).min
_MAX_GAP_MINUTES = 26 * 60  # the largest gaps skip a whole calendar day


def _localize_or_nat(wall_seconds: np.ndarray, zone: str) -> np.ndarray:
    """Wall seconds → UTC µs; the first occurrence when ambiguous, NaT (int64 min) in a gap."""
    naive = pd.DatetimeIndex(wall_seconds.astype("datetime64[s]"))
    first_occurrence = np.ones(naive.size, dtype=bool)  # the DST side is the earlier instant
    aware = naive.tz_localize(zone, ambiguous=first_occurrence, nonexistent="NaT")
    return aware.as_unit("us").asi8.copy()


def _merge_intervals(codes: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> BusinessIntervals:
    """Merge overlapping or touching intervals of the same store."""
    if codes.size == 0:
        return BusinessIntervals(codes, starts, ends)
    order = sort_order(codes, starts)
    if order is not None:
        codes, starts, ends = codes[order], starts[order], ends[order]
    running_end = pd.Series(ends).groupby(codes).cummax().to_numpy()
    new_store = np.r_[True, codes[1:] != codes[:-1]]
    opens_new = new_store | np.r_[True, starts[1:] > running_end[:-1]]
    last_of_group = np.r_[opens_new[1:], True]
    merged_ends = running_end[last_of_group]
    return BusinessIntervals(codes[opens_new], starts[opens_new], merged_ends)


def in_business_hours(
    intervals: BusinessIntervals, codes: np.ndarray, instants: np.ndarray
) -> np.ndarray:
    """Tell for each (store code, instant) whether it lies in a business interval [start, end)."""
    if intervals.codes.size == 0:
        return np.zeros(codes.size, dtype=bool)
    index = grouped_searchsorted(intervals.codes, intervals.starts, codes, instants) - 1
    safe = np.maximum(index, 0)
    return (index >= 0) & (intervals.codes[safe] == codes) & (instants < intervals.ends[safe])


# --------------------------------------------------------------------------- polls


@dataclass(frozen=True)
class SortedPolls:
    """Polls at or before `now`, one per (store, instant), sorted by (store code, instant)."""

    store_ids: pd.Index
    codes: np.ndarray
    instants: np.ndarray
    active: np.ndarray


def prepare_polls(polls: pd.DataFrame, now_us: int) -> SortedPolls:
    """Drop polls after `now`, code stores densely (sorted ids), sort and drop duplicates."""
    instants = instants_us(polls["timestamp_utc"])
    active = status_is_active(polls["status"])
    keep = instants <= now_us
    codes, store_ids = pd.factorize(polls["store_id"].to_numpy()[keep], sort=True)
    instants, active = instants[keep], active[keep]
    order = sort_order(codes, instants)
    if order is not None:
        codes, instants, active = codes[order], instants[order], active[order]
    first = np.ones(codes.size, dtype=bool)
    first[1:] = (codes[1:] != codes[:-1]) | (instants[1:] != instants[:-1])
    return SortedPolls(pd.Index(store_ids), codes[first], instants[first], active[first])


def instants_us(values: pd.Series) -> np.ndarray:
    """Return instants as int64 epoch µs from integers, datetimes (naive = UTC) or text."""
    if pd.api.types.is_integer_dtype(values.dtype):
        return values.to_numpy(dtype="int64")
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        series = pd.Series(values)
        if series.dt.tz is not None:
            series = series.dt.tz_convert("UTC").dt.tz_localize(None)
        return series.to_numpy(dtype="datetime64[us]").astype("int64")
    return parse_utc_timestamps(values)


def status_is_active(values: pd.Series) -> np.ndarray:
    """Return True where a status is ``active`` (booleans and 0/1 pass through)."""
    if pd.api.types.is_bool_dtype(values.dtype) or pd.api.types.is_integer_dtype(values.dtype):
        return values.to_numpy(dtype=bool)
    return (pd.Series(values, dtype="string").str.strip().str.lower() == "active").to_numpy(
        dtype=bool, na_value=False
    )


def sort_order(codes: np.ndarray, instants: np.ndarray) -> np.ndarray | None:
    """Return the stable sort order by (code, instant), or None when already sorted.

    Sorts one packed int64 key when (code, instant) fits in it: several times faster than
    ``np.lexsort`` on two keys.
    """
    if codes.size == 0:
        return None
    low = int(instants.min())
    span = int(instants.max()) - low + 1
    if (int(codes.max()) + 1) * span < 2**62:
        packed = codes.astype(np.int64) * span + (instants - low)
        if np.all(packed[1:] >= packed[:-1]):
            return None
        return np.argsort(packed, kind="stable")
    return np.lexsort((instants, codes))


def evidence_mask(polls: SortedPolls, intervals: BusinessIntervals) -> np.ndarray:
    """Mark each store's evidence: its polls in business hours, or all its polls if none are."""
    inside = in_business_hours(intervals, polls.codes, polls.instants)
    any_inside = np.zeros(len(polls.store_ids), dtype=bool)
    any_inside[polls.codes[inside]] = True
    return inside | ~any_inside[polls.codes]


# --------------------------------------------------------------------------- windows


@dataclass(frozen=True)
class BusinessClock:
    """Cumulative business time per store on [start, end]: answers "how much before t"."""

    intervals: BusinessIntervals  # clipped to [start, end]
    before: np.ndarray  # business time of the store before each interval

    def until(self, codes: np.ndarray, instants: np.ndarray) -> np.ndarray:
        """Business time of each store from the clock's start up to each instant."""
        iv = self.intervals
        if iv.codes.size == 0:
            return np.zeros(codes.size, dtype=np.int64)
        index = grouped_searchsorted(iv.codes, iv.starts, codes, instants) - 1
        safe = np.maximum(index, 0)
        found = (index >= 0) & (iv.codes[safe] == codes)
        inside = np.clip(instants - iv.starts[safe], 0, iv.ends[safe] - iv.starts[safe])
        return np.where(found, self.before[safe] + inside, 0)


def business_clock(intervals: BusinessIntervals, start: int, end: int) -> BusinessClock:
    """Clip the intervals to [start, end] and prefix-sum their lengths per store."""
    starts = np.clip(intervals.starts, start, end)
    ends = np.clip(intervals.ends, start, end)
    keep = ends > starts
    clipped = BusinessIntervals(intervals.codes[keep], starts[keep], ends[keep])
    return BusinessClock(clipped, _exclusive_group_cumsum(clipped.codes, ends[keep] - starts[keep]))


@dataclass(frozen=True)
class ActiveClock:
    """Cumulative active business time per store on [start, end].

    Each evidence poll owns the time nearer to it than to its neighbours (split at midpoints);
    the first owns everything before it, the last everything after it.
    """

    business: BusinessClock
    codes: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    active: np.ndarray
    active_until_end: np.ndarray  # active business time up to each segment's end

    def until(self, codes: np.ndarray, instants: np.ndarray) -> np.ndarray:
        """Active business time of each store from the clock's start up to each instant."""
        index = grouped_searchsorted(self.codes, self.starts, codes, instants) - 1
        safe = np.maximum(index, 0)
        found = (index >= 0) & (self.codes[safe] == codes)
        segment_end = self.ends[safe]
        rest = self.business.until(codes, segment_end) - self.business.until(
            codes, np.minimum(instants, segment_end)
        )
        return np.where(
            found, self.active_until_end[safe] - np.where(self.active[safe], rest, 0), 0
        )


def active_clock(
    polls: SortedPolls, evidence: np.ndarray, business: BusinessClock, start: int, end: int
) -> ActiveClock:
    """Build the status segments of the evidence polls and prefix-sum their active time."""
    codes, starts, ends, active = _status_segments(polls, evidence, start, end)
    owned = business.until(codes, ends) - business.until(codes, starts)
    active_owned = np.where(active, owned, 0)
    until_end = _exclusive_group_cumsum(codes, active_owned) + active_owned
    return ActiveClock(business, codes, starts, ends, active, until_end)


def _exclusive_group_cumsum(codes: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Sum of the earlier values of the same group (codes sorted)."""
    total = np.cumsum(values) - values
    if codes.size == 0:
        return total
    first = np.r_[True, codes[1:] != codes[:-1]]
    group_sizes = np.diff(np.r_[np.flatnonzero(first), codes.size])
    return total - np.repeat(total[first], group_sizes)


def _status_segments(
    polls: SortedPolls, evidence: np.ndarray, start: int, end: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return (code, start, end, active) of the time each evidence poll owns, clipped."""
    codes = polls.codes[evidence]
    instants = polls.instants[evidence]
    next_same = np.r_[codes[1:] == codes[:-1], False]
    midpoints = np.r_[instants[:-1] + (instants[1:] - instants[:-1]) // 2, 0]
    ends = np.where(next_same, midpoints, end)
    previous_same = np.r_[False, next_same[:-1]]
    starts = np.where(previous_same, np.r_[0, ends[:-1]], start)
    return codes, np.clip(starts, start, end), np.clip(ends, start, end), polls.active[evidence]


# --------------------------------------------------------------------------- the report


def round_half_up(micros: np.ndarray, unit_us: int) -> np.ndarray:
    """Convert µs to `unit_us` units rounded half-up to 2 decimals, exactly (integer maths)."""
    hundredths = (micros * 100 + unit_us // 2) // unit_us
    return hundredths / 100


def compute_report(
    polls: pd.DataFrame,
    hours: pd.DataFrame,
    timezones: pd.DataFrame,
    now: int | pd.Timestamp | None = None,
) -> pd.DataFrame:
    """Compute the uptime/downtime report as of `now` (default: the latest poll).

    polls: store_id, timestamp_utc (text, datetime or epoch µs), status (text or bool).
    hours: store_id, dayOfWeek or day, start_time_local, end_time_local.
    timezones: store_id, timezone_str. Returns one row per store with a poll at or before now.
    """
    now_us = _now_us(polls, now)
    prepared = prepare_polls(polls, now_us)
    if prepared.codes.size == 0:
        return pd.DataFrame({name: [] for name in REPORT_COLUMNS})
    week_start = now_us - WINDOWS_US["week"]
    first_poll = prepared.instants[group_starts(prepared.codes, len(prepared.store_ids))[:-1]]
    first = np.minimum(first_poll, week_start)
    intervals = business_intervals(hours, timezones, prepared.store_ids, first, now_us)
    evidence = evidence_mask(prepared, intervals)
    business = business_clock(intervals, week_start, now_us)
    active = active_clock(prepared, evidence, business, week_start, now_us)
    return report_frame(active, prepared.store_ids, now_us)


def _now_us(polls: pd.DataFrame, now: int | pd.Timestamp | None) -> int:
    if now is None:
        instants = instants_us(polls["timestamp_utc"])
        return int(instants.max()) if instants.size else 0
    if isinstance(now, (int, np.integer)):
        return int(now)
    return int(instants_us(pd.Series([pd.Timestamp(now)]))[0])


def report_frame(clock: ActiveClock, store_ids: pd.Index, now_us: int) -> pd.DataFrame:
    """Evaluate the three rolling windows ending at now for every store."""
    codes = np.arange(len(store_ids))
    at_now = np.full(codes.size, now_us, dtype=np.int64)
    business_now = clock.business.until(codes, at_now)
    active_now = clock.until(codes, at_now)
    uptime_columns: dict[str, np.ndarray] = {}
    downtime_columns: dict[str, np.ndarray] = {}
    for name, length in WINDOWS_US.items():
        window_start = np.full(codes.size, now_us - length, dtype=np.int64)
        business = business_now - clock.business.until(codes, window_start)
        uptime = active_now - clock.until(codes, window_start)
        unit = US_PER_MINUTE if name == "hour" else US_PER_HOUR
        uptime_columns[f"uptime_last_{name}"] = round_half_up(uptime, unit)
        downtime_columns[f"downtime_last_{name}"] = round_half_up(business - uptime, unit)
    frame = {"store_id": store_ids.to_numpy(), **uptime_columns, **downtime_columns}
    return pd.DataFrame(frame, columns=REPORT_COLUMNS)
