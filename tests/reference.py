"""A slow, obviously-correct reference for the report: plain Python, one store at a time.

It shares no code with report.py: zoneinfo instead of pandas for time zones, exact fractions
for midpoints, explicit lists of intervals for every measure, and its own interval arithmetic
(subtraction of closures, merging of outages) written the plain way.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction
from zoneinfo import ZoneInfo

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
US = 1_000_000
MINUTE = 60 * US
HOUR = 3600 * US
DAY = 24 * HOUR
WINDOWS = {"hour": HOUR, "day": DAY, "week": 7 * DAY}
UNITS = {"hour": MINUTE, "day": HOUR, "week": HOUR}
NEVER = 10**20  # beyond any instant


def to_us(moment: datetime) -> int:
    """Epoch microseconds of an aware datetime."""
    delta = moment - EPOCH
    return (delta.days * 86400 + delta.seconds) * US + delta.microseconds


def local_to_utc_us(wall: datetime, zone: ZoneInfo) -> int:
    """Wall time → UTC; a gap moves forward to its end, an overlap takes its first occurrence."""
    candidate = wall.replace(tzinfo=zone, fold=0)
    if candidate.astimezone(UTC).astimezone(zone).replace(tzinfo=None) == wall:
        return to_us(candidate)
    probe = wall.replace(second=0, microsecond=0)
    while True:  # inside a spring-forward gap: walk to the first wall time that exists
        probe += timedelta(minutes=1)
        aware = probe.replace(tzinfo=zone, fold=0)
        if aware.astimezone(UTC).astimezone(zone).replace(tzinfo=None) == probe:
            return to_us(aware)


def parse_hms(text: str) -> int:
    parts = [int(p) for p in text.split(":")]
    while len(parts) < 3:
        parts.append(0)
    return parts[0] * 3600 + parts[1] * 60 + parts[2]


def period_seconds(start_text: str, end_text: str) -> tuple[int, int]:
    """docs/spec.md: start = end as written is 24 h; else 23:59:59/24:00 end the day; end < start
    crosses midnight."""
    start, end = parse_hms(start_text), parse_hms(end_text)
    if start == end:
        return start, start + 86400
    if end in (86399, 86400):
        return start, 86400
    if end < start:
        return start, end + 86400
    return start, end


def merge(intervals: list) -> list[list]:
    merged: list[list] = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return merged


def minus(intervals: list, holes: list) -> list[list]:
    """Each interval with every hole cut out of it."""
    result = []
    for start, end in intervals:
        pieces = [(start, end)]
        for hole_start, hole_end in holes:
            cut = []
            for low, high in pieces:
                if hole_end <= low or hole_start >= high:
                    cut.append((low, high))
                    continue
                if low < hole_start:
                    cut.append((low, hole_start))
                if hole_end < high:
                    cut.append((hole_end, high))
            pieces = cut
        result.extend(list(piece) for piece in pieces)
    return merge(result)


def store_intervals(rows, zone: ZoneInfo, first: date, last: date):
    """Merged UTC business intervals for local dates first..last; None means open 24×7."""
    if not rows:
        return None
    raw = []
    day = first
    while day <= last:
        for weekday, start_text, end_text in rows:
            if day.weekday() != weekday:
                continue
            start, end = period_seconds(start_text, end_text)
            midnight = datetime.combine(day, time())
            raw.append(
                (
                    local_to_utc_us(midnight + timedelta(seconds=start), zone),
                    local_to_utc_us(midnight + timedelta(seconds=end), zone),
                )
            )
        day += timedelta(days=1)
    return merge(raw)


def closure_intervals(closures, zone: ZoneInfo) -> list[list]:
    """Closures given as ('YYYY-MM-DD HH:MM[:SS]', same) local wall times → UTC intervals."""
    converted = []
    for start_text, end_text in closures:
        start = datetime.fromisoformat(start_text)
        end = datetime.fromisoformat(end_text)
        converted.append((local_to_utc_us(start, zone), local_to_utc_us(end, zone)))
    return merge([c for c in converted if c[1] > c[0]])


def overlap(a, b):
    low, high = max(a[0], b[0]), min(a[1], b[1])
    return (low, high) if high > low else None


def measure(pieces, business) -> Fraction:
    """Length of (union of pieces) ∩ business; pieces are disjoint."""
    total = Fraction(0)
    for piece in pieces:
        for interval in business:
            common = overlap(piece, interval)
            if common:
                total += common[1] - common[0]
    return total


def timeline(evidence, stale_after_us):
    """(start, end, status) pieces of known time: each poll owns up to the midpoints."""
    pieces = []
    for index, (instant, active) in enumerate(evidence):
        start = -NEVER if index == 0 else Fraction(evidence[index - 1][0] + instant, 2)
        last = index == len(evidence) - 1
        end = NEVER if last else Fraction(instant + evidence[index + 1][0], 2)
        if stale_after_us is not None:
            start = max(start, instant - stale_after_us)
            end = min(end, instant + stale_after_us)
        pieces.append((start, end, active))
    return pieces


def outages_of(pieces) -> list[tuple]:
    """Maximal inactive stretches: inactive pieces that touch are one outage."""
    outages: list[list] = []
    for start, end, active in pieces:
        if active:
            continue
        if outages and outages[-1][1] == start:
            outages[-1][1] = end
        else:
            outages.append([start, end])
    return [tuple(outage) for outage in outages]


def reference_store(
    polls, rows, zone_name, now_us: int, closures=(), stale_after_us=None
) -> dict[str, object]:
    """Exact measures (µs as Fractions) of one store. polls: [(µs, active)]."""
    zone = ZoneInfo(zone_name)
    polls = sorted({p[0]: p for p in reversed(polls)}.values())  # first row wins a tie
    polls = [p for p in polls if p[0] <= now_us]
    first_day = datetime.fromtimestamp(min(polls[0][0], now_us - 7 * DAY) / US - 3 * 86400, UTC)
    last_day = datetime.fromtimestamp(now_us / US + 2 * 86400, UTC)
    intervals = store_intervals(rows, zone, first_day.date(), last_day.date())
    if intervals is None:
        intervals = [[-NEVER, NEVER]]
    intervals = minus(intervals, closure_intervals(closures, zone))

    def in_hours(instant: int) -> bool:
        return any(start <= instant < end for start, end in intervals)

    evidence = [p for p in polls if in_hours(p[0])] or polls
    pieces = timeline(evidence, stale_after_us)
    outages = outages_of(pieces)
    result: dict[str, object] = {}
    for name, length in WINDOWS.items():
        window = (now_us - length, now_us)
        business = [c for c in (overlap(window, tuple(i)) for i in intervals) if c]
        up = measure([(s, e) for s, e, a in pieces if a], business)
        down = measure([(s, e) for s, e, a in pieces if not a], business)
        result[f"business_{name}"] = measure([window], business)
        result[f"uptime_{name}"], result[f"downtime_{name}"] = up, down
        lengths = [measure([outage], business) for outage in outages]
        counted = [length for length in lengths if length > 0]
        result[f"outages_{name}"] = len(counted)
        result[f"longest_{name}"] = max(counted, default=Fraction(0))
    return result


def round_units(micros: Fraction, unit: int) -> float:
    value = Decimal(micros.numerator) / Decimal(micros.denominator) / Decimal(unit)
    return float(value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def report_row(measures: dict, stale_after_us=None, outages=False) -> tuple:
    """The report row in the spec's column order for these options."""
    row = [round_units(measures[f"uptime_{n}"], UNITS[n]) for n in WINDOWS]
    row += [round_units(measures[f"downtime_{n}"], UNITS[n]) for n in WINDOWS]
    if stale_after_us is not None:
        row += [
            round_units(
                measures[f"business_{n}"] - measures[f"uptime_{n}"] - measures[f"downtime_{n}"],
                UNITS[n],
            )
            for n in WINDOWS
        ]
    if outages:
        row += [measures[f"outages_{n}"] for n in WINDOWS]
        row += [round_units(measures[f"longest_{n}"], HOUR) for n in ("day", "week")]
    return tuple(row)


def reference_measures(polls, hours, timezones, now_us: int, closures=(), stale_after_us=None):
    """store_id → exact measures. polls: [(store_id, µs, active)]; hours: [(store_id, weekday,
    start, end)]; timezones: {store_id: zone}; closures: [(store_id, start_local, end_local)]."""
    by_store: dict = {}
    for store, instant, active in polls:
        if instant <= now_us:
            by_store.setdefault(store, []).append((instant, active))
    rows_by_store: dict = {}
    for store, weekday, start, end in hours:
        rows_by_store.setdefault(store, []).append((weekday, start, end))
    closures_by_store: dict = {}
    for store, start, end in closures:
        closures_by_store.setdefault(store, []).append((start, end))
    return {
        store: reference_store(
            store_polls,
            rows_by_store.get(store, []),
            timezones.get(store, "America/Chicago"),
            now_us,
            closures_by_store.get(store, []),
            stale_after_us,
        )
        for store, store_polls in by_store.items()
    }


def reference_report(
    polls, hours, timezones, now_us: int, closures=(), stale_after_us=None, outages=False
) -> dict:
    """store_id → the report row, rounded as the report (columns per the options)."""
    measures = reference_measures(polls, hours, timezones, now_us, closures, stale_after_us)
    return {
        store: report_row(values, stale_after_us, outages) for store, values in measures.items()
    }


def reference_incidents(
    polls, hours, timezones, now_us: int, closures=(), stale_after_us=None
) -> dict[str, list[tuple]]:
    """store_id → its incidents as (start, end or None, business time held up to its end or
    now, down now), exact: outages of the timeline, open while they reach past `now`; an
    outage from before the first poll starts at that poll."""
    by_store: dict = {}
    for store, instant, active in polls:
        if instant <= now_us:
            by_store.setdefault(store, []).append((instant, active))
    found = {}
    for store, store_polls in by_store.items():
        rows = [(h[1], h[2], h[3]) for h in hours if h[0] == store]
        zone = ZoneInfo(timezones.get(store, "America/Chicago"))
        store_polls = sorted({p[0]: p for p in reversed(store_polls)}.values())
        first_day = datetime.fromtimestamp(store_polls[0][0] / US - 3 * 86400, UTC)
        last_day = datetime.fromtimestamp(now_us / US + 2 * 86400, UTC)
        intervals = store_intervals(rows, zone, first_day.date(), last_day.date())
        intervals = [[-NEVER, NEVER]] if intervals is None else intervals
        own_closures = [(c[1], c[2]) for c in closures if c[0] == store]
        intervals = minus(intervals, closure_intervals(own_closures, zone))

        def in_hours(instant, intervals=intervals) -> bool:
            return any(start <= instant < end for start, end in intervals)

        evidence = [p for p in store_polls if in_hours(p[0])] or store_polls
        incidents = []
        for start, end in outages_of(timeline(evidence, stale_after_us)):
            start = evidence[0][0] if start == -NEVER else start
            is_open = end > now_us
            held = measure([(start, min(end, now_us))], intervals)
            incidents.append((start, None if is_open else end, held, is_open and in_hours(now_us)))
        found[store] = incidents
    return found
