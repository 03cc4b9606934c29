"""Uptime/downtime report engine: the pure computation behind every report (docs/spec.md).

Inputs are typed columns keyed by store: polls (epoch µs, active flag), weekly business hours
(weekday, seconds after local midnight), IANA zones and closures (local wall seconds). Output:
one row per store polled at or before `now`. No Flask, no database, no text parsing: numpy
and pandas on whole columns; the only Python loops run once per time zone.

Time inside the engine is counted in ticks of half a microsecond: the midpoint between two
polls is then an exact integer, and every length stays exact until the final half-up rounding.
Business intervals are built only where polls and windows need them, so the work depends on
the data, not on how far `now` lies from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from engine.arrays import (
    exclusive_group_cumsum,
    group_starts,
    grouped_searchsorted,
    merge_intervals,
    sort_order,
)
from engine.timestamps import SECONDS_PER_DAY, US_PER_DAY, US_PER_HOUR, US_PER_MINUTE

TICKS_PER_US = 2
DAY_TICKS = US_PER_DAY * TICKS_PER_US
DEFAULT_TIMEZONE = "America/Chicago"
END_OF_DAY_MARKER = SECONDS_PER_DAY - 1  # "23:59:59" means 24:00 (unless start is the same)
WINDOWS_US = {"hour": US_PER_HOUR, "day": US_PER_DAY, "week": 7 * US_PER_DAY}
UNIT_US = {"hour": US_PER_MINUTE, "day": US_PER_HOUR, "week": US_PER_HOUR}
UNIT_NAMES = {US_PER_MINUTE: "minutes", US_PER_HOUR: "hours"}
WINDOW_UNITS = {window: UNIT_NAMES[unit] for window, unit in UNIT_US.items()}
BASE_COLUMNS = [
    "store_id",
    "uptime_last_hour",
    "uptime_last_day",
    "uptime_last_week",
    "downtime_last_hour",
    "downtime_last_day",
    "downtime_last_week",
]
UNKNOWN_COLUMNS = ["unknown_last_hour", "unknown_last_day", "unknown_last_week"]
OUTAGE_COLUMNS = [
    "outages_last_hour",
    "outages_last_day",
    "outages_last_week",
    "longest_outage_last_day",
    "longest_outage_last_week",
]
_FAR = np.int64(2**62)  # beyond any instant: "everything before / after"


# --------------------------------------------------------------------------- inputs


def _column(values, dtype) -> np.ndarray:
    return np.asarray(values, dtype=dtype)


@dataclass(frozen=True)
class Polls:
    """Observations: store label (the database passes int64 keys), epoch µs, active flag."""

    store: np.ndarray
    ts_us: np.ndarray
    active: np.ndarray

    @classmethod
    def of(cls, store=(), ts_us=(), active=()) -> Polls:
        return cls(np.asarray(store), _column(ts_us, np.int64), _column(active, bool))


@dataclass(frozen=True)
class WeeklyHours:
    """Weekly opening periods: weekday (0 = Monday) and local seconds after midnight, as
    written (23:59:59 is 86399, 24:00 is 86400); the meaning is applied by the engine."""

    store: np.ndarray
    weekday: np.ndarray
    start_s: np.ndarray
    end_s: np.ndarray

    @classmethod
    def of(cls, store=(), weekday=(), start_s=(), end_s=()) -> WeeklyHours:
        return cls(
            np.asarray(store),
            _column(weekday, np.int64),
            _column(start_s, np.int64),
            _column(end_s, np.int64),
        )


@dataclass(frozen=True)
class StoreZones:
    """Each store's IANA zone name (stores without one are in America/Chicago)."""

    store: np.ndarray
    zone: np.ndarray

    @classmethod
    def of(cls, store=(), zone=()) -> StoreZones:
        return cls(np.asarray(store), np.asarray(zone, dtype=object))


@dataclass(frozen=True)
class Closures:
    """Planned closures [start, end) in local wall seconds since 1970-01-01 00:00."""

    store: np.ndarray
    start_local_s: np.ndarray
    end_local_s: np.ndarray

    @classmethod
    def of(cls, store=(), start_local_s=(), end_local_s=()) -> Closures:
        return cls(
            np.asarray(store), _column(start_local_s, np.int64), _column(end_local_s, np.int64)
        )


@dataclass(frozen=True)
class ReportInputs:
    polls: Polls
    hours: WeeklyHours = field(default_factory=WeeklyHours.of)
    zones: StoreZones = field(default_factory=StoreZones.of)
    closures: Closures = field(default_factory=Closures.of)


@dataclass(frozen=True)
class ReportOptions:
    """docs/spec.md §8 "Options": unknown time beyond `stale_after_us`, outage counts."""

    stale_after_us: int | None = None
    outages: bool = False

    def columns(self) -> list[str]:
        """The report's columns in the spec's order for these options."""
        columns = list(BASE_COLUMNS)
        if self.stale_after_us is not None:
            columns += UNKNOWN_COLUMNS
        if self.outages:
            columns += OUTAGE_COLUMNS
        return columns


def default_now(polls: Polls) -> int | None:
    """the spec's default `now`: the latest poll (None without polls)."""
    return int(polls.ts_us.max()) if polls.ts_us.size else None


# --------------------------------------------------------------------------- polls


@dataclass(frozen=True)
class StorePolls:
    """Polls at or before `now`, one per (store, instant), sorted by (store code, tick).

    Codes are positions in `stores` (the distinct labels, sorted)."""

    stores: np.ndarray
    codes: np.ndarray
    ticks: np.ndarray
    active: np.ndarray


def prepare_polls(polls: Polls, now_us: int) -> StorePolls:
    """Drop polls after `now`, code stores densely, sort, keep the first of equal instants."""
    keep = polls.ts_us <= now_us
    codes, stores = pd.factorize(polls.store[keep], sort=True)
    codes = codes.astype(np.int64)
    ticks = polls.ts_us[keep] * TICKS_PER_US
    active = polls.active[keep]
    order = sort_order(codes, ticks)
    if order is not None:
        codes, ticks, active = codes[order], ticks[order], active[order]
    first = np.ones(codes.size, dtype=bool)
    first[1:] = (codes[1:] != codes[:-1]) | (ticks[1:] != ticks[:-1])
    return StorePolls(np.asarray(stores), codes[first], ticks[first], active[first])


# --------------------------------------------------------------------------- business hours


@dataclass(frozen=True)
class Intervals:
    """Disjoint [start, end) intervals in ticks, sorted by (store code, start)."""

    codes: np.ndarray
    starts: np.ndarray
    ends: np.ndarray

    @classmethod
    def merged(cls, codes, starts, ends) -> Intervals:
        return cls(*merge_intervals(codes, starts, ends))

    def contains(self, codes: np.ndarray, ticks: np.ndarray) -> np.ndarray:
        """Whether each (store code, tick) lies inside an interval."""
        if self.codes.size == 0:
            return np.zeros(codes.size, dtype=bool)
        index = grouped_searchsorted(self.codes, self.starts, codes, ticks) - 1
        safe = np.maximum(index, 0)
        return (index >= 0) & (self.codes[safe] == codes) & (ticks < self.ends[safe])

    def clipped(self, low: int, high: int) -> Intervals:
        starts, ends = np.clip(self.starts, low, high), np.clip(self.ends, low, high)
        keep = ends > starts
        return Intervals(self.codes[keep], starts[keep], ends[keep])


@dataclass(frozen=True)
class DaySpans:
    """Ranges of UTC days [first, last] per store code where business time must be exact."""

    codes: np.ndarray
    first_day: np.ndarray
    last_day: np.ndarray


def needed_days(polls: StorePolls, low_tick: int, high_tick: int) -> DaySpans:
    """The windows [low, high] of every store, and the days around each poll before them.

    A period can start up to two local dates before the UTC day it covers (zones are within
    ±14 h, a period lasts at most 25 h), hence the margins.
    """
    store_count = polls.stores.size
    early = polls.ticks < low_tick
    codes = np.concatenate([np.arange(store_count), polls.codes[early]])
    low_days = np.concatenate(
        [np.full(store_count, low_tick // DAY_TICKS), polls.ticks[early] // DAY_TICKS]
    )
    high_days = np.concatenate(
        [np.full(store_count, high_tick // DAY_TICKS), polls.ticks[early] // DAY_TICKS]
    )
    codes, first, after_last = merge_intervals(codes, low_days - 2, high_days + 2)
    return DaySpans(codes, first, after_last - 1)


def business_intervals(inputs: ReportInputs, stores: np.ndarray, spans: DaySpans) -> Intervals:
    """Business hours minus closures as merged UTC intervals (ticks), exact on every span."""
    zone_by_code = _zones_by_code(inputs.zones, stores)
    weekly = _weekly_rows(inputs.hours, stores)
    has_hours = np.zeros(stores.size, dtype=bool)
    has_hours[weekly["code"]] = True
    local = _expand_over_spans(weekly, spans)
    starts, ends = _local_to_utc_ticks(local["code"], local["start"], local["end"], zone_by_code)
    always = ~has_hours[spans.codes]
    codes = np.concatenate([local["code"], spans.codes[always]])
    starts = np.concatenate([starts, spans.first_day[always] * DAY_TICKS])
    ends = np.concatenate([ends, (spans.last_day[always] + 1) * DAY_TICKS])
    open_hours = Intervals.merged(codes, starts, ends)
    return subtract(open_hours, closure_intervals(inputs.closures, stores, zone_by_code))


def _zones_by_code(zones: StoreZones, stores: np.ndarray) -> np.ndarray:
    by_code = np.full(stores.size, DEFAULT_TIMEZONE, dtype=object)
    codes = pd.Index(stores).get_indexer(zones.store)
    known = codes >= 0
    by_code[codes[known]] = zones.zone[known]
    return by_code


def _weekly_rows(hours: WeeklyHours, stores: np.ndarray) -> dict[str, np.ndarray]:
    """Hours rows of the given stores, sorted by code, with the spec's end-of-period rules.

    start = end (as written) is 24 hours; otherwise an end of 23:59:59 or 24:00 is the end of
    the day; an end before the start crosses midnight.
    """
    codes = pd.Index(stores).get_indexer(hours.store).astype(np.int64)
    keep = codes >= 0
    codes, weekday = codes[keep], hours.weekday[keep]
    start, end = hours.start_s[keep], hours.end_s[keep]
    same = start == end
    end = np.where(~same & (end >= END_OF_DAY_MARKER), SECONDS_PER_DAY, end)
    end = np.where(same | (end < start), end + SECONDS_PER_DAY, end)
    order = np.argsort(codes, kind="stable")
    return {
        "code": codes[order],
        "weekday": weekday[order],
        "start": start[order],
        "end": end[order],
    }


def _expand_over_spans(weekly: dict[str, np.ndarray], spans: DaySpans) -> dict[str, np.ndarray]:
    """Repeat each weekly row of a store on every local date of its weekday in the store's
    spans; return local wall seconds since 1970-01-01 of each period's start and end."""
    row_bounds = group_starts(weekly["code"], int(spans.codes.max(initial=-1)) + 1)
    first_row = row_bounds[spans.codes]
    rows_per_span = row_bounds[spans.codes + 1] - first_row
    span = np.repeat(np.arange(spans.codes.size), rows_per_span)
    row = np.repeat(first_row, rows_per_span) + _position_in_run(rows_per_span)
    first_day, last_day = spans.first_day[span], spans.last_day[span]
    weekday_of_first = (first_day + 3) % 7  # 1970-01-01 (day 0) was a Thursday (weekday 3)
    offset = (weekly["weekday"][row] - weekday_of_first) % 7
    weeks = np.maximum((last_day - first_day - offset) // 7 + 1, 0)
    pair = np.repeat(np.arange(row.size), weeks)
    days = first_day[pair] + offset[pair] + 7 * _position_in_run(weeks)
    period = row[pair]
    return {
        "code": weekly["code"][period],
        "start": days * SECONDS_PER_DAY + weekly["start"][period],
        "end": days * SECONDS_PER_DAY + weekly["end"][period],
    }


def _position_in_run(run_lengths: np.ndarray) -> np.ndarray:
    """0, 1, ..., n-1 for each run of the given lengths, concatenated."""
    total = int(run_lengths.sum())
    return np.arange(total) - np.repeat(np.cumsum(run_lengths) - run_lengths, run_lengths)


def closure_intervals(
    closures: Closures, stores: np.ndarray, zone_by_code: np.ndarray
) -> Intervals:
    """Closures of the given stores as merged UTC intervals (ticks)."""
    codes = pd.Index(stores).get_indexer(closures.store).astype(np.int64)
    keep = codes >= 0
    starts, ends = _local_to_utc_ticks(
        codes[keep], closures.start_local_s[keep], closures.end_local_s[keep], zone_by_code
    )
    valid = ends > starts
    return Intervals.merged(codes[keep][valid], starts[valid], ends[valid])


def subtract(base: Intervals, removed: Intervals) -> Intervals:
    """base minus removed, per store, on whole columns (a sweep over sorted boundaries)."""
    if removed.codes.size == 0 or base.codes.size == 0:
        return base
    codes = np.concatenate([base.codes, base.codes, removed.codes, removed.codes])
    ticks = np.concatenate([base.starts, base.ends, removed.starts, removed.ends])
    n, m = base.codes.size, removed.codes.size
    open_step = np.concatenate([np.ones(n), -np.ones(n), np.zeros(2 * m)]).astype(np.int64)
    closed_step = np.concatenate([np.zeros(2 * n), np.ones(m), -np.ones(m)]).astype(np.int64)
    order = sort_order(codes, ticks)
    if order is not None:
        codes, ticks = codes[order], ticks[order]
        open_step, closed_step = open_step[order], closed_step[order]
    is_open = np.cumsum(open_step) > 0  # each store's steps sum to zero: no carry-over
    is_closed = np.cumsum(closed_step) > 0
    same_store_next = np.r_[codes[1:] == codes[:-1], False]
    next_tick = np.r_[ticks[1:], 0]
    keep = is_open & ~is_closed & same_store_next & (next_tick > ticks)
    return Intervals.merged(codes[keep], ticks[keep], next_tick[keep])


def _local_to_utc_ticks(
    codes: np.ndarray, local_start: np.ndarray, local_end: np.ndarray, zone_by_code: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Convert local wall seconds to UTC ticks, zone by zone.

    A wall time in a spring-forward gap moves to the first instant after the gap; one that
    occurs twice (fall-back) takes its first occurrence.
    """
    walls = np.concatenate([local_start, local_end]).astype(np.int64)
    utc = np.empty(walls.size, dtype=np.int64)
    zones = zone_by_code[codes] if codes.size else np.zeros(0, dtype=object)
    zone_codes, zone_names = pd.factorize(zones)
    zone_codes = np.concatenate([zone_codes, zone_codes])
    order = np.argsort(zone_codes, kind="stable")  # one conversion per zone, starts and ends
    bounds = group_starts(zone_codes[order], len(zone_names))
    for code, zone in enumerate(zone_names):
        rows = order[bounds[code] : bounds[code + 1]]
        utc[rows] = _wall_seconds_to_utc_us(walls[rows], zone) * TICKS_PER_US
    return utc[: codes.size], utc[codes.size :]


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


def in_business_hours(inputs: ReportInputs, store: np.ndarray, ts_us: np.ndarray) -> np.ndarray:
    """Whether each (store, instant) lies in its store's business hours minus closures."""
    if ts_us.size == 0:
        return np.zeros(0, dtype=bool)
    codes, stores = pd.factorize(np.asarray(store), sort=True)
    codes = codes.astype(np.int64)
    ticks = np.asarray(ts_us, dtype=np.int64) * TICKS_PER_US
    days = ticks // DAY_TICKS
    span_codes, first, after_last = merge_intervals(codes, days - 2, days + 2)
    spans = DaySpans(span_codes, first, after_last - 1)
    return business_intervals(inputs, np.asarray(stores), spans).contains(codes, ticks)


def business_between(
    inputs: ReportInputs, stores: np.ndarray, low_us: int, high_us: int
) -> tuple[np.ndarray, np.ndarray]:
    """Each store's business time (hours minus closures) in [low, high), in µs, and whether
    `high` lies inside it (`stores`: distinct). Exact: interval bounds are whole µs."""
    codes = np.arange(stores.size, dtype=np.int64)
    low, high = low_us * TICKS_PER_US, high_us * TICKS_PER_US
    first_day = np.full(stores.size, low // DAY_TICKS - 2, dtype=np.int64)
    last_day = np.full(stores.size, high // DAY_TICKS + 2, dtype=np.int64)
    business = business_intervals(inputs, stores, DaySpans(codes, first_day, last_day))
    lows, highs = np.full(stores.size, low), np.full(stores.size, high)
    held = BusinessClock.over(business, low, high).between(codes, lows, highs)
    return held // TICKS_PER_US, business.contains(codes, highs)


# --------------------------------------------------------------------------- status


@dataclass(frozen=True)
class Evidence:
    """Evidence polls (sorted) and the time each owns: the part nearer to it than to its
    neighbours, cut to at most `stale_after` away from it when that option is set."""

    codes: np.ndarray
    ticks: np.ndarray
    active: np.ndarray
    known_starts: np.ndarray
    known_ends: np.ndarray
    inside: np.ndarray  # per store code: its evidence is its polls inside business hours


def select_evidence(polls: StorePolls, business: Intervals, stale_ticks: int | None) -> Evidence:
    """The spec's rules 1 and 2: polls inside business hours (all polls if a store has none there),
    each owning the time up to the midpoints with its neighbours."""
    inside = business.contains(polls.codes, polls.ticks)
    any_inside = np.zeros(polls.stores.size, dtype=bool)
    any_inside[polls.codes[inside]] = True
    chosen = inside | ~any_inside[polls.codes]
    codes, ticks, active = polls.codes[chosen], polls.ticks[chosen], polls.active[chosen]
    next_same = np.r_[codes[1:] == codes[:-1], False]
    midpoints = np.r_[(ticks[:-1] + ticks[1:]) // 2, 0]  # ticks are even: exact
    ends = np.where(next_same, midpoints, _FAR)
    starts = np.where(np.r_[False, next_same[:-1]], np.r_[0, ends[:-1]], -_FAR)
    if stale_ticks is not None:
        starts = np.maximum(starts, ticks - stale_ticks)
        ends = np.minimum(ends, ticks + stale_ticks)
    return Evidence(codes, ticks, active, starts, ends, any_inside)


# --------------------------------------------------------------------------- clocks


@dataclass(frozen=True)
class BusinessClock:
    """Cumulative business time per store on [start, end]: answers "how much before t"."""

    intervals: Intervals  # clipped to [start, end]
    before: np.ndarray  # business time of the store before each interval
    start: int
    end: int

    @classmethod
    def over(cls, business: Intervals, start: int, end: int) -> BusinessClock:
        clipped = business.clipped(start, end)
        lengths = clipped.ends - clipped.starts
        return cls(clipped, exclusive_group_cumsum(clipped.codes, lengths), start, end)

    def until(self, codes: np.ndarray, ticks: np.ndarray) -> np.ndarray:
        """Business time of each store from the clock's start up to each tick."""
        iv = self.intervals
        if iv.codes.size == 0:
            return np.zeros(codes.size, dtype=np.int64)
        index = grouped_searchsorted(iv.codes, iv.starts, codes, ticks) - 1
        safe = np.maximum(index, 0)
        found = (index >= 0) & (iv.codes[safe] == codes)
        inside = np.clip(ticks - iv.starts[safe], 0, iv.ends[safe] - iv.starts[safe])
        return np.where(found, self.before[safe] + inside, 0)

    def between(self, codes: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
        """Business time of each store in [low, high) (0 when high ≤ low)."""
        return np.maximum(self.until(codes, high) - self.until(codes, low), 0)


@dataclass(frozen=True)
class SegmentClock:
    """Cumulative business time per store inside chosen disjoint segments (sorted)."""

    business: BusinessClock
    codes: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    before: np.ndarray  # chosen business time of the store before each segment

    @classmethod
    def over(cls, business: BusinessClock, evidence: Evidence, chosen: np.ndarray):
        codes = evidence.codes[chosen]
        # Only the clock's range matters; clipping keeps every instant a small number.
        starts = np.clip(evidence.known_starts[chosen], business.start, business.end)
        ends = np.clip(evidence.known_ends[chosen], business.start, business.end)
        owned = business.between(codes, starts, ends)
        return cls(business, codes, starts, ends, exclusive_group_cumsum(codes, owned))

    def until(self, codes: np.ndarray, ticks: np.ndarray) -> np.ndarray:
        """Chosen business time of each store from the clock's start up to each tick."""
        if self.codes.size == 0:
            return np.zeros(codes.size, dtype=np.int64)
        index = grouped_searchsorted(self.codes, self.starts, codes, ticks) - 1
        safe = np.maximum(index, 0)
        found = (index >= 0) & (self.codes[safe] == codes)
        start = self.starts[safe]
        partial = self.business.between(codes, start, np.clip(ticks, start, self.ends[safe]))
        return np.where(found, self.before[safe] + partial, 0)


# --------------------------------------------------------------------------- outages


@dataclass(frozen=True)
class Outages:
    """Maximal inactive stretches of the status timeline (closed hours included), in ticks."""

    codes: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    first_polls: np.ndarray  # tick of each outage's first evidence poll


def continues_outage(evidence: Evidence, stale_ticks: int | None) -> np.ndarray:
    """Per evidence poll: whether it is inactive and goes on its store's outage of the poll
    before (inactive too, and not more than twice `stale_after` away)."""
    inactive, codes, ticks = ~evidence.active, evidence.codes, evidence.ticks
    continues = np.r_[False, (codes[1:] == codes[:-1]) & inactive[1:] & inactive[:-1]]
    if stale_ticks is not None:
        continues &= np.r_[False, ticks[1:] - ticks[:-1] <= 2 * stale_ticks]
    return continues


def find_outages(evidence: Evidence, stale_ticks: int | None) -> Outages:
    """Join consecutive inactive evidence polls of a store into outages.

    Two neighbours' owned time touches at their midpoint, unless `stale_after` leaves unknown
    time between them (they are more than twice `stale_after` apart): that ends an outage.
    """
    inactive = ~evidence.active
    codes, ticks = evidence.codes, evidence.ticks
    continues = continues_outage(evidence, stale_ticks)
    starts_run = inactive & ~continues
    ends_run = inactive & ~np.r_[continues[1:], False]
    return Outages(
        codes[starts_run],
        evidence.known_starts[starts_run],
        evidence.known_ends[ends_run],
        ticks[starts_run],
    )


# --------------------------------------------------------------------------- incidents


@dataclass(frozen=True)
class Incidents:
    """Every outage of the data seen as an incident at `now` (docs/spec.md), in µs.

    `started_us` is where the outage starts, or its first poll when nothing is known before
    that poll (the first poll owns all earlier time); `resolved_us` is where it ends (-1 while
    open); `business_us` is its business time up to its end or `now`; `down_now` marks an open
    incident whose store is inside business hours (minus closures) at `now`. Sorted by store
    code, then start.
    """

    stores: np.ndarray
    started_us: np.ndarray
    resolved_us: np.ndarray
    first_poll_us: np.ndarray
    business_us: np.ndarray
    is_open: np.ndarray
    down_now: np.ndarray
    ends: TimelineEnds


@dataclass(frozen=True)
class TimelineEnds:
    """How each store's timeline ends at `now`, in µs: whether its evidence is its polls inside
    business hours (else all its polls), its latest evidence poll, and, when that poll is
    inactive, the first poll of the inactive run it ends and the evidence poll before that run
    (-1: none). With `stale_after`, a run is any inactive stretch, unknown time ignored."""

    stores: np.ndarray
    inside: np.ndarray
    last_us: np.ndarray
    last_active: np.ndarray
    run_first_us: np.ndarray
    before_run_us: np.ndarray


def timeline_ends(state_polls: StorePolls, evidence: Evidence) -> TimelineEnds:
    """The timeline ends (`TimelineEnds`) from the evidence polls, sorted by store and time."""
    codes, ticks, active = evidence.codes, evidence.ticks, evidence.active
    if not codes.size:
        none = np.zeros(0, dtype=np.int64)
        flags = none.astype(bool)
        return TimelineEnds(state_polls.stores[none], flags, none, flags, none, none)
    position = np.arange(codes.size)
    same_store = np.r_[False, codes[1:] == codes[:-1]]
    run_starts = ~active & ~continues_outage(evidence, None)
    run_start = np.maximum.accumulate(np.where(run_starts, position, 0))
    last = np.flatnonzero(np.r_[codes[1:] != codes[:-1], True])
    down = ~active[last]
    first = np.where(down, run_start[last], last)
    has_before = down & same_store[first]
    none = np.int64(-1)
    return TimelineEnds(
        state_polls.stores[codes[last]],
        evidence.inside[codes[last]],
        ticks[last] // TICKS_PER_US,
        active[last],
        np.where(down, ticks[first] // TICKS_PER_US, none),
        np.where(has_before, ticks[np.maximum(first - 1, 0)] // TICKS_PER_US, none),
    )


def find_incidents(
    inputs: ReportInputs, now_us: int, options: ReportOptions | None = None
) -> Incidents:
    """The report's outages (`outages` option, with the same `stale_after`) as incidents.

    An incident is open while the status at `now` is inactive: its outage reaches past `now`.
    Business time is counted on business hours built over each incident's own days, so an
    incident longer than the report's week is measured exactly too.
    """
    options = options or ReportOptions()
    state = build_state(inputs, now_us, options)
    outages = find_outages(state.evidence, _stale_ticks(options))
    codes = outages.codes
    starts = np.where(outages.starts <= -_FAR, outages.first_polls, outages.starts)
    is_open = outages.ends > state.now_tick
    until = np.minimum(outages.ends, state.now_tick)
    business = _incident_business(inputs, state.polls.stores, codes, starts, until)
    held = np.zeros(codes.size, dtype=np.int64)
    if codes.size:
        clock = BusinessClock.over(business, int(starts.min()), state.now_tick)
        held = clock.between(codes, starts, until)
    at_now = np.full(codes.size, state.now_tick, dtype=np.int64)
    return Incidents(
        stores=state.polls.stores[codes],
        started_us=starts // TICKS_PER_US,
        resolved_us=np.where(is_open, -1, outages.ends // TICKS_PER_US),
        first_poll_us=outages.first_polls // TICKS_PER_US,
        business_us=held // TICKS_PER_US,
        is_open=is_open,
        down_now=is_open & business.contains(codes, at_now),
        ends=timeline_ends(state.polls, state.evidence),
    )


def _incident_business(
    inputs: ReportInputs, stores: np.ndarray, codes: np.ndarray, starts, until
) -> Intervals:
    """Business hours minus closures over the days of each [start, until] (with SPEC's
    two-day margins, as `needed_days`)."""
    span_codes, first, after_last = merge_intervals(
        codes, starts // DAY_TICKS - 2, until // DAY_TICKS + 2
    )
    return business_intervals(inputs, stores, DaySpans(span_codes, first, after_last - 1))


# --------------------------------------------------------------------------- the report


def round_half_up(ticks: np.ndarray, unit_us: int) -> np.ndarray:
    """Convert ticks to `unit_us` units rounded half-up to 2 decimals, exactly."""
    unit = unit_us * TICKS_PER_US
    hundredths = (np.asarray(ticks, dtype=np.int64) * 100 + unit // 2) // unit
    return hundredths / 100


@dataclass(frozen=True)
class StoreState:
    """Everything the report and the timeline derive from one snapshot."""

    polls: StorePolls
    business: Intervals
    evidence: Evidence
    clock: BusinessClock
    now_tick: int
    week_start_tick: int


def build_state(inputs: ReportInputs, now_us: int, options: ReportOptions) -> StoreState:
    """Run the spec's rules up to the status timeline and the week's business clock."""
    polls = prepare_polls(inputs.polls, now_us)
    now_tick = now_us * TICKS_PER_US
    week_start = now_tick - WINDOWS_US["week"] * TICKS_PER_US
    spans = needed_days(polls, week_start, now_tick)
    business = business_intervals(inputs, polls.stores, spans)
    evidence = select_evidence(polls, business, _stale_ticks(options))
    clock = BusinessClock.over(business, week_start, now_tick)
    return StoreState(polls, business, evidence, clock, now_tick, week_start)


def _stale_ticks(options: ReportOptions) -> int | None:
    if options.stale_after_us is None:
        return None
    return options.stale_after_us * TICKS_PER_US


def compute_report(
    inputs: ReportInputs, now_us: int | None = None, options: ReportOptions | None = None
) -> pd.DataFrame:
    """The report as of `now_us` (default: the latest poll), columns per `options`."""
    options = options or ReportOptions()
    now_us = default_now(inputs.polls) if now_us is None else now_us
    if now_us is None:
        return pd.DataFrame({name: [] for name in options.columns()})
    state = build_state(inputs, now_us, options)
    return report_frame(state, options)


def report_frame(state: StoreState, options: ReportOptions) -> pd.DataFrame:
    """Evaluate the three rolling windows ending at `now` for every store."""
    store_count = state.polls.stores.size
    codes = np.arange(store_count)
    at_now = np.full(store_count, state.now_tick, dtype=np.int64)
    active = SegmentClock.over(state.clock, state.evidence, state.evidence.active)
    stale = options.stale_after_us is not None
    if stale:  # without unknown time, downtime is simply the rest of business time
        inactive = SegmentClock.over(state.clock, state.evidence, ~state.evidence.active)
    columns: dict[str, np.ndarray] = {"store_id": state.polls.stores}
    for name, length_us in WINDOWS_US.items():
        start = at_now - length_us * TICKS_PER_US
        business = state.clock.between(codes, start, at_now)
        up = active.until(codes, at_now) - active.until(codes, start)
        down = (
            inactive.until(codes, at_now) - inactive.until(codes, start) if stale else business - up
        )
        columns[f"uptime_last_{name}"] = round_half_up(up, UNIT_US[name])
        columns[f"downtime_last_{name}"] = round_half_up(down, UNIT_US[name])
        if stale:
            columns[f"unknown_last_{name}"] = round_half_up(business - up - down, UNIT_US[name])
    if options.outages:
        columns.update(outage_columns(state, _stale_ticks(options)))
    return pd.DataFrame(columns, columns=options.columns())


def outage_columns(state: StoreState, stale_ticks: int | None) -> dict[str, np.ndarray]:
    """Per window: how many outages have business time in it, and the longest (docs/spec.md)."""
    outages = find_outages(state.evidence, stale_ticks)
    recent = outages.ends > state.week_start_tick
    codes, starts, ends = outages.codes[recent], outages.starts[recent], outages.ends[recent]
    store_count = state.polls.stores.size
    columns: dict[str, np.ndarray] = {}
    for name, length_us in WINDOWS_US.items():
        window_start = state.now_tick - length_us * TICKS_PER_US
        inside = state.clock.between(
            codes, np.maximum(starts, window_start), np.minimum(ends, state.now_tick)
        )
        counted = inside > 0
        columns[f"outages_last_{name}"] = np.bincount(codes[counted], minlength=store_count)
        if name != "hour":
            longest = np.zeros(store_count, dtype=np.int64)
            np.maximum.at(longest, codes[counted], inside[counted])
            columns[f"longest_outage_last_{name}"] = round_half_up(longest, UNIT_US[name])
    return columns


# --------------------------------------------------------------------------- one store, drawn


STATUSES = ("active", "inactive", "unknown")  # a timeline segment's status is an index here
ACTIVE, INACTIVE, UNKNOWN = range(3)


@dataclass(frozen=True)
class Spans:
    """Disjoint [start, end) pieces of one store's week in ticks, sorted by start; `status`
    (segments only) indexes STATUSES."""

    starts: np.ndarray
    ends: np.ndarray
    status: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.starts.size)


@dataclass(frozen=True)
class WeekPolls:
    """A store's polls in the week (ticks), their status, and which are evidence."""

    ticks: np.ndarray
    active: np.ndarray
    evidence: np.ndarray


@dataclass(frozen=True)
class Timeline:
    """What a store's week looks like: the pieces the report's numbers are made of, as arrays
    in ticks (a midpoint between two polls may fall on half a microsecond), within
    [week_start, now]. Arrays, not lists: a store polled every second has 600,000 polls."""

    week_start: int
    now: int
    business: Spans
    closures: Spans
    polls: WeekPolls
    segments: Spans  # maximal runs of one status, tiling [week_start, now)
    outages: Spans
    row: dict[str, object]


def store_timeline(
    inputs: ReportInputs, store, now_us: int, options: ReportOptions | None = None
) -> Timeline | None:
    """The week ending at `now_us` of one store (None if it has no poll at or before now)."""
    options = options or ReportOptions()
    state = build_state(inputs, now_us, options)
    code = np.flatnonzero(state.polls.stores == store)
    if code.size == 0:
        return None
    code = int(code[0])
    low, high = state.week_start_tick, state.now_tick
    row = report_frame(state, options).iloc[[code]].to_dict("records")[0]  # keeps int counts
    zone_by_code = _zones_by_code(inputs.zones, state.polls.stores)
    closures = closure_intervals(inputs.closures, state.polls.stores, zone_by_code)
    return Timeline(
        week_start=low,
        now=high,
        business=_pieces(state.clock.intervals, code, low, high),
        closures=_pieces(closures, code, low, high),
        polls=_week_polls(state, code, low, high),
        segments=_status_segments(state, code, low, high),
        outages=_pieces(find_outages(state.evidence, _stale_ticks(options)), code, low, high),
        row=row,
    )


def _pieces(intervals, code: int, low: int, high: int) -> Spans:
    mine = intervals.codes == code
    starts = np.clip(intervals.starts[mine], low, high)
    ends = np.clip(intervals.ends[mine], low, high)
    keep = ends > starts
    return Spans(starts[keep], ends[keep])


def _week_polls(state: StoreState, code: int, low: int, high: int) -> WeekPolls:
    polls, evidence = state.polls, state.evidence
    mine = (polls.codes == code) & (polls.ticks >= low) & (polls.ticks <= high)
    ticks = polls.ticks[mine]
    evidence_ticks = evidence.ticks[evidence.codes == code]  # sorted, one per instant
    return WeekPolls(ticks, polls.active[mine], np.isin(ticks, evidence_ticks))


def _status_segments(state: StoreState, code: int, low: int, high: int) -> Spans:
    """Status over [low, high): each evidence poll's known time, unknown time between them,
    and neighbours of the same status joined.

    Known times of a store are disjoint and in order (each ends at most at the midpoint with
    the next poll), so the unknown piece before poll i runs from the end of poll i - 1's."""
    evidence = state.evidence
    mine = evidence.codes == code
    known_starts = np.clip(evidence.known_starts[mine], low, high)
    known_ends = np.clip(evidence.known_ends[mine], low, high)
    gap_starts, gap_ends = np.r_[low, known_ends], np.r_[known_starts, high]
    # Interleaved in time order: gap 0, known 0, gap 1, known 1, ..., last gap.
    starts = np.r_[np.column_stack([gap_starts[:-1], known_starts]).ravel(), gap_starts[-1]]
    ends = np.r_[np.column_stack([gap_ends[:-1], known_ends]).ravel(), gap_ends[-1]]
    known_status = np.where(evidence.active[mine], ACTIVE, INACTIVE)
    status = np.r_[
        np.column_stack([np.full(known_status.size, UNKNOWN), known_status]).ravel(), UNKNOWN
    ]
    keep = ends > starts
    starts, ends, status = starts[keep], ends[keep], status[keep]
    first = np.r_[True, status[1:] != status[:-1]]
    last = np.r_[first[1:], True]
    return Spans(starts[first], ends[last], status[first].astype(np.int8))
