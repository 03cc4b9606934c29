"""A slow, obviously-correct reference for the report: plain Python, one store at a time.

It shares no code with report.py: zoneinfo instead of pandas for time zones, exact fractions
for midpoints, explicit interval lists for every measure.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction
from zoneinfo import ZoneInfo

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
US = 1_000_000
HOUR = 3600 * US
DAY = 24 * HOUR


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


def store_intervals(rows: list[tuple[int, str, str]], zone: ZoneInfo, first: date, last: date):
    """Merged UTC business intervals for local dates first..last; None means open 24×7."""
    if not rows:
        return None
    raw = []
    day = first
    while day <= last:
        for weekday, start_text, end_text in rows:
            if day.weekday() != weekday:
                continue
            start, end = parse_hms(start_text), parse_hms(end_text)
            if start == end:
                end = start + 86400
            elif end == 86399:
                end = 86400
            elif end < start:
                end += 86400
            midnight = datetime.combine(day, time())
            raw.append(
                (
                    local_to_utc_us(midnight + timedelta(seconds=start), zone),
                    local_to_utc_us(midnight + timedelta(seconds=end), zone),
                )
            )
        day += timedelta(days=1)
    raw.sort()
    merged: list[list[int]] = []
    for start, end in raw:
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return merged


def overlap(a: tuple, b: tuple):
    low, high = max(a[0], b[0]), min(a[1], b[1])
    return (low, high) if high > low else None


def reference_store(polls, rows, zone_name, now_us: int) -> tuple[Fraction, ...]:
    """Uptime/downtime (µs, exact) of one store for hour, day, week. polls: [(µs, active)]."""
    zone = ZoneInfo(zone_name)
    polls = sorted({p[0]: p for p in reversed(polls)}.values())  # first row wins a tie
    polls = [p for p in polls if p[0] <= now_us]
    first_day = datetime.fromtimestamp(min(polls[0][0], now_us - 7 * DAY) / US - 3 * 86400, UTC)
    last_day = datetime.fromtimestamp(now_us / US + 2 * 86400, UTC)
    intervals = store_intervals(rows, zone, first_day.date(), last_day.date())
    if intervals is None:
        intervals = [[now_us - 100 * DAY, now_us + DAY]]
        intervals[0][0] = min(intervals[0][0], polls[0][0] - DAY)

    def in_hours(instant: int) -> bool:
        return any(start <= instant < end for start, end in intervals)

    evidence = [p for p in polls if in_hours(p[0])] or polls
    segments = []
    for index, (instant, active) in enumerate(evidence):
        start = Fraction(-(10**20)) if index == 0 else Fraction(evidence[index - 1][0] + instant, 2)
        last = index == len(evidence) - 1
        end = Fraction(10**20) if last else Fraction(instant + evidence[index + 1][0], 2)
        segments.append((start, end, active))
    result = []
    for length in (HOUR, DAY, 7 * DAY):
        window = (now_us - length, now_us)
        up = down = Fraction(0)
        for interval in intervals:
            open_part = overlap(window, tuple(interval))
            if open_part is None:
                continue
            for start, end, active in segments:
                piece = overlap(open_part, (start, end))
                if piece:
                    if active:
                        up += piece[1] - piece[0]
                    else:
                        down += piece[1] - piece[0]
        result.append((up, down))
    return tuple(value for pair in result for value in pair)


def round_units(micros: Fraction, unit: int) -> float:
    value = Decimal(micros.numerator) / Decimal(micros.denominator) / Decimal(unit)
    return float(value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def reference_report(polls, hours, timezones, now_us: int) -> dict:
    """store_id → (uptime hour/day/week, downtime hour/day/week), rounded as the report.

    polls: [(store_id, µs, active)]; hours: [(store_id, weekday, start, end)];
    timezones: {store_id: zone}.
    """
    by_store: dict = {}
    for store, instant, active in polls:
        if instant <= now_us:
            by_store.setdefault(store, []).append((instant, active))
    rows_by_store: dict = {}
    for store, weekday, start, end in hours:
        rows_by_store.setdefault(store, []).append((weekday, start, end))
    report = {}
    for store, store_polls in by_store.items():
        zone = timezones.get(store, "America/Chicago")
        up_h, down_h, up_d, down_d, up_w, down_w = reference_store(
            store_polls, rows_by_store.get(store, []), zone, now_us
        )
        report[store] = (
            round_units(up_h, 60 * US),
            round_units(up_d, HOUR),
            round_units(up_w, HOUR),
            round_units(down_h, 60 * US),
            round_units(down_d, HOUR),
            round_units(down_w, HOUR),
        )
    return report
