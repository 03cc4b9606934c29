"""One store's last week as the web page draws it: the engine's own timeline, in local time.

The store is read exactly as a report reads it (`snapshot.read_shard` over the key range
[key, key + 1) at a report's load watermark and `now`), and the week comes from
`report.store_timeline`, so its totals are the store's report row, to the last digit.

The answer is bounded whatever the store's data: the engine's pieces stay numpy arrays, and
each list (polls, status segments, outages, business hours, closures) is given whole only up
to MAX_ITEMS entries. Beyond that, polls and segments come as summaries of the week cut into
bins of BIN_US, outages as the MAX_ITEMS with the most business time; `counts` and
`truncated` say what was left out. A store polled every 2 seconds answers in about 1 MB.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Engine, text

import report
from engine import timestamps
from engine.timestamps import US_PER_HOUR, US_PER_MINUTE
from jobs import results, snapshot
from report import TICKS_PER_US, Spans

DAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MAX_ITEMS = 2000  # entries of each list given whole
BIN_US = 10 * US_PER_MINUTE  # summaries beyond that: the week in 1,008 bins
MIXED = "mixed"  # a summarised piece holding more than one status (or part of a span)


def store_key(engine: Engine, external_id: str) -> int | None:
    """The compact key of a store, compared byte for byte (MySQL's PAD SPACE collations
    would also match the id with trailing spaces, hence the check in Python)."""
    with engine.connect() as conn:
        row = conn.execute(
            text("SELECT id, external_id FROM stores WHERE external_id = :id"), {"id": external_id}
        ).first()
    return int(row[0]) if row is not None and row[1] == external_id else None


def store_week(
    engine: Engine,
    fixed: snapshot.Snapshot,
    key: int,
    external_id: str,
    options: report.ReportOptions,
) -> dict[str, Any] | None:
    """The store's week ending at the snapshot's `now` (None if it has no poll by then): its
    zone and hours, the week's local days, its pieces (bounded) and its report row."""
    if fixed.now_us is None:
        return None
    inputs = snapshot.read_shard(engine, fixed, key, key + 1).inputs
    timeline = report.store_timeline(inputs, key, fixed.now_us, options)
    if timeline is None:
        return None
    zone, default_zone = zone_of(inputs.zones, key)
    now = fixed.now_us
    edges = bin_edges(timeline)
    outage_business = covered_between(timeline.business, timeline.outages)
    hours = store_hours(inputs.hours, key)
    return {
        "store_id": external_id,
        "as_of": timestamps.format_instant(now),
        "timezone": zone,
        "timezone_is_default": default_zone,
        "utc_offset": utc_offsets(np.array([now]), zone)[0],
        "hours": weekly_hours(hours),
        "windows": windows(now),
        "days": local_days(now, zone),
        "limits": {"items": MAX_ITEMS, "bin_us": BIN_US},
        "counts": counts(timeline, outage_business) | {"hours": len(hours)},
        "truncated": truncated(timeline, hours),
        "business": coverage(timeline.business, edges, zone),
        "closures": coverage(timeline.closures, edges, zone),
        "segments": segments(timeline.segments, edges, zone),
        "polls": polls(timeline.polls, zone),
        "poll_bins": poll_bins(timeline.polls, edges, zone),
        "outages": outages(timeline.outages, outage_business, zone),
        "totals": totals(timeline.row),
    }


def truncated(timeline: report.Timeline, hours: np.ndarray) -> dict[str, bool]:
    """Which lists hold more than MAX_ITEMS entries (and are summarised or cut)."""
    lengths = {
        "hours": len(hours),
        "business": len(timeline.business),
        "closures": len(timeline.closures),
        "segments": len(timeline.segments),
        "polls": timeline.polls.ticks.size,
        "outages": len(timeline.outages),
    }
    return {name: length > MAX_ITEMS for name, length in lengths.items()}


def zone_of(zones: report.StoreZones, key: int) -> tuple[str, bool]:
    """The store's zone, and whether it is the spec's default (no zone row)."""
    mine = np.flatnonzero(np.asarray(zones.store) == key)
    if mine.size == 0:
        return report.DEFAULT_TIMEZONE, True
    return str(zones.zone[mine[0]]), False


def store_hours(hours: report.WeeklyHours, key: int) -> np.ndarray:
    """The store's weekly rows as written, (weekday, start, end) in that order, one a row."""
    mine = np.asarray(hours.store) == key
    rows = np.column_stack([hours.weekday[mine], hours.start_s[mine], hours.end_s[mine]])
    rows = rows.astype(np.int64).reshape(-1, 3)
    return rows[np.lexsort(rows.T[::-1])]


def weekly_hours(rows: np.ndarray) -> list[dict[str, Any]]:
    """The first MAX_ITEMS weekly rows (none: open 24 hours, 7 days)."""
    return [
        {"day": day, "weekday": DAY_NAMES[day], "start": clock(start), "end": clock(end)}
        for day, start, end in rows[:MAX_ITEMS].tolist()
    ]


def clock(seconds: int) -> str:
    hours, rest = divmod(seconds, 3600)
    return f"{hours:02d}:{rest // 60:02d}:{rest % 60:02d}"


def windows(now_us: int) -> dict[str, Any]:
    """The report's windows: each starts here and ends at `now`."""
    starts = {"now": now_us} | {name: now_us - length for name, length in report.WINDOWS_US.items()}
    return {name: {"at": timestamps.format_instant(at), "at_us": at} for name, at in starts.items()}


def local_days(now_us: int, zone: str) -> list[dict[str, Any]]:
    """The local dates the week touches, each from its local midnight to the next (UTC), with
    the zone's UTC offset at that midnight."""
    week_start = now_us - report.WINDOWS_US["week"]
    first, last = (
        pd.Timestamp(at, unit="us", tz="UTC").tz_convert(zone).tz_localize(None).normalize()
        for at in (week_start, now_us - 1)
    )
    dates = pd.date_range(first, last + pd.Timedelta(days=1), freq="D")
    midnights = dates.tz_localize(
        zone, ambiguous=np.ones(len(dates), dtype=bool), nonexistent="shift_forward"
    )
    bounds = midnights.as_unit("us").asi8
    offsets = utc_offsets(bounds[:-1], zone)
    return [
        {
            "date": date.strftime("%Y-%m-%d"),
            "weekday": DAY_NAMES[date.weekday()],
            "start_us": int(start),
            "end_us": int(end),
            "hours": (int(end) - int(start)) / US_PER_HOUR,
            "utc_offset": offset,
        }
        for date, start, end, offset in zip(
            dates[:-1], bounds[:-1], bounds[1:], offsets, strict=True
        )
    ]


def utc_offsets(micros: np.ndarray, zone: str) -> list[str]:
    """The zone's offset from UTC at each instant, as ISO-8601 writes it ("-06:00")."""
    utc = pd.to_datetime(np.asarray(micros, dtype=np.int64), unit="us")
    wall = utc.tz_localize("UTC").tz_convert(zone).tz_localize(None)
    minutes = ((wall - utc) // pd.Timedelta(minutes=1)).to_numpy()
    return [f"{'-' if m < 0 else '+'}{abs(m) // 60:02d}:{abs(m) % 60:02d}" for m in minutes]


# --------------------------------------------------------------------------- pieces as JSON


def instants(ticks: np.ndarray, zone: str) -> tuple[list[str], list[str]]:
    """UTC and local ISO-8601 text of instants (a half microsecond is shown truncated)."""
    utc = pd.to_datetime(np.asarray(ticks, dtype=np.int64) // TICKS_PER_US, unit="us")
    utc = utc.tz_localize("UTC")
    local = utc.tz_convert(zone)
    return (
        list(utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")),
        [moment.isoformat() for moment in local],
    )


def micros(ticks: np.ndarray) -> list[float]:
    """Instants or lengths in µs (a midpoint between two polls may end in .5)."""
    return (np.asarray(ticks, dtype=np.int64) / TICKS_PER_US).tolist()


def spans(starts: np.ndarray, ends: np.ndarray, zone: str) -> list[dict[str, Any]]:
    starts_utc, starts_local = instants(starts, zone)
    ends_utc, ends_local = instants(ends, zone)
    return [
        {
            "start": starts_utc[i],
            "end": ends_utc[i],
            "start_local": starts_local[i],
            "end_local": ends_local[i],
            "start_us": start,
            "end_us": end,
        }
        for i, (start, end) in enumerate(zip(micros(starts), micros(ends), strict=True))
    ]


def segments(pieces: Spans, edges: np.ndarray, zone: str) -> list[dict[str, Any]]:
    """Status over the week: active, inactive, or unknown (no evidence poll near enough).

    Beyond MAX_ITEMS segments, bins wholly of one status are joined and the others are
    "mixed", with the time of each status in them."""
    if len(pieces) <= MAX_ITEMS:
        listed = spans(pieces.starts, pieces.ends, zone)
        for item, status in zip(listed, pieces.status, strict=True):
            item["status"] = report.STATUSES[status]
        return listed
    by_status = [
        Spans(pieces.starts[pieces.status == code], pieces.ends[pieces.status == code])
        for code in range(len(report.STATUSES))
    ]
    starts, ends, kinds, durations = summarise(by_status, edges)
    listed = spans(starts, ends, zone)
    for item, kind, times in zip(listed, kinds, durations, strict=True):
        item["status"] = MIXED if kind < 0 else report.STATUSES[kind]
        if kind < 0:
            item |= {
                f"{name}_us": us for name, us in zip(report.STATUSES, micros(times), strict=True)
            }
    return listed


def coverage(pieces: Spans, edges: np.ndarray, zone: str) -> list[dict[str, Any]]:
    """Business hours or closures: the spans, or beyond MAX_ITEMS, runs of whole bins and
    partly covered bins with the time covered (`covered_us`)."""
    if len(pieces) <= MAX_ITEMS:
        return spans(pieces.starts, pieces.ends, zone)
    starts, ends, kinds, durations = summarise([pieces], edges)
    listed = spans(starts, ends, zone)
    for item, kind, covered in zip(listed, kinds, micros(durations[:, 0]), strict=True):
        if kind < 0:
            item["covered_us"] = covered
    return listed


def polls(observed: report.WeekPolls, zone: str) -> list[dict[str, Any]]:
    """The week's polls (none beyond MAX_ITEMS: see poll_bins); `evidence` marks those the
    status is taken from."""
    if observed.ticks.size > MAX_ITEMS:
        return []
    utc, local = instants(observed.ticks, zone)
    return [
        {
            "at": utc[i],
            "at_local": local[i],
            "at_us": at,
            "status": "active" if active else "inactive",
            "evidence": evidence,
        }
        for i, (at, active, evidence) in enumerate(
            zip(
                micros(observed.ticks),
                observed.active.tolist(),
                observed.evidence.tolist(),
                strict=True,
            )
        )
    ]


def poll_bins(observed: report.WeekPolls, edges: np.ndarray, zone: str) -> list[dict[str, Any]]:
    """Beyond MAX_ITEMS polls, how many fell in each bin, active and evidence (empty bins
    left out); else nothing."""
    if observed.ticks.size <= MAX_ITEMS:
        return []
    bins = edges.size - 1
    index = np.clip(np.searchsorted(edges, observed.ticks, side="right") - 1, 0, bins - 1)
    tallies = [
        np.bincount(index[chosen], minlength=bins)
        for chosen in (np.ones(index.size, dtype=bool), observed.active, observed.evidence)
    ]
    filled = np.flatnonzero(tallies[0])
    listed = spans(edges[filled], edges[filled + 1], zone)
    for item, count, active, evidence in zip(
        listed, *(tally[filled].tolist() for tally in tallies), strict=True
    ):
        item |= {"count": count, "active": active, "evidence": evidence}
    return listed


def outages(found: Spans, business: np.ndarray, zone: str) -> list[dict[str, Any]]:
    """The week's outages with their business time (hours; only that counts as downtime),
    in time order: beyond MAX_ITEMS, those with the most business time (earliest first on
    a tie)."""
    chosen = np.arange(len(found))
    if chosen.size > MAX_ITEMS:
        chosen = np.sort(np.argsort(-business, kind="stable")[:MAX_ITEMS])
    listed = spans(found.starts[chosen], found.ends[chosen], zone)
    hours = business[chosen] / (TICKS_PER_US * US_PER_HOUR)
    for item, length in zip(listed, hours.tolist(), strict=True):
        item["business_hours"] = length
    return listed


def counts(timeline: report.Timeline, outage_business: np.ndarray) -> dict[str, int]:
    """How many of each piece the week holds, whether or not all are listed."""
    week_polls = timeline.polls
    return {
        "polls": int(week_polls.ticks.size),
        "evidence_polls": int(week_polls.evidence.sum()),
        "polls_in_business_hours": int(covers(timeline.business, week_polls.ticks).sum()),
        "segments": len(timeline.segments),
        "outages": len(timeline.outages),
        "outages_in_business_hours": int((outage_business > 0).sum()),
        "business": len(timeline.business),
        "closures": len(timeline.closures),
    }


def totals(row: dict[str, object]) -> dict[str, Any]:
    """The store's report row without its id: the same numbers as the report's JSON."""
    numbers = {name: value for name, value in row.items() if name != "store_id"}
    return results.json_rows(pd.DataFrame([numbers]))[0]


# --------------------------------------------------------------------------- arrays


def bin_edges(timeline: report.Timeline) -> np.ndarray:
    """The week cut into bins of BIN_US from its start (ticks; the last may be shorter)."""
    step = BIN_US * TICKS_PER_US
    inner = np.arange(timeline.week_start + step, timeline.now, step, dtype=np.int64)
    return np.r_[timeline.week_start, inner, timeline.now].astype(np.int64)


def covered_until(pieces: Spans, points: np.ndarray) -> np.ndarray:
    """Time (ticks) the disjoint, sorted pieces cover before each point."""
    if len(pieces) == 0:
        return np.zeros(np.size(points), dtype=np.int64)
    lengths = pieces.ends - pieces.starts
    before = np.r_[0, np.cumsum(lengths)]
    started = np.searchsorted(pieces.starts, points, side="right")  # pieces starting by then
    last = np.maximum(started - 1, 0)
    inside = np.clip(points - pieces.starts[last], 0, lengths[last])
    return np.where(started > 0, before[last] + inside, 0)


def covered_between(pieces: Spans, ranges: Spans) -> np.ndarray:
    """Time (ticks) the pieces cover inside each range."""
    return covered_until(pieces, ranges.ends) - covered_until(pieces, ranges.starts)


def covers(pieces: Spans, points: np.ndarray) -> np.ndarray:
    """Whether each point lies inside one of the pieces."""
    if len(pieces) == 0:
        return np.zeros(np.size(points), dtype=bool)
    index = np.searchsorted(pieces.starts, points, side="right") - 1
    safe = np.maximum(index, 0)
    return (index >= 0) & (points < pieces.ends[safe])


def summarise(kinds: list[Spans], edges: np.ndarray) -> tuple[np.ndarray, ...]:
    """Pieces of several kinds at bin resolution: starts, ends, kind and time of each kind.

    Neighbouring bins wholly of one kind are joined (kind: its index); a bin holding more
    than one kind, or part of one, stays alone (kind -1); bins holding none are left out."""
    per_kind = np.column_stack([np.diff(covered_until(pieces, edges)) for pieces in kinds])
    lengths = np.diff(edges)
    whole = per_kind == lengths[:, None]
    some = per_kind.sum(axis=1) > 0
    kind = np.where(whole.any(axis=1), whole.argmax(axis=1), np.where(some, -1, -2))
    first = np.r_[True, (kind[1:] != kind[:-1]) | (kind[1:] == -1)]
    last = np.r_[first[1:], True]
    keep = kind[first] != -2
    starts, ends = edges[:-1][first][keep], edges[1:][last][keep]
    return starts, ends, kind[first][keep], per_kind[first][keep]
