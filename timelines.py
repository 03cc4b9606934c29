"""One store's last week as the web page draws it: the engine's own timeline, in local time.

The store is read exactly as a report reads it (`snapshot.read_shard` over the key range
[key, key + 1) at a report's load watermark and `now`), and the week comes from
`report.store_timeline`, so its totals are the store's report row, to the last digit.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Engine, text

import report
import results
import snapshot
import timestamps
from timestamps import US_PER_HOUR

DAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


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
    """The store's week ending at the snapshot's `now` (None if it has no poll by then)."""
    if fixed.now_us is None:
        return None
    inputs = snapshot.read_shard(engine, fixed, key, key + 1).inputs
    timeline = report.store_timeline(inputs, key, fixed.now_us, options)
    if timeline is None:
        return None
    zone, default_zone = zone_of(inputs.zones, key)
    now = fixed.now_us
    return {
        "store_id": external_id,
        "as_of": timestamps.format_instant(now),
        "timezone": zone,
        "timezone_is_default": default_zone,
        "hours": weekly_hours(inputs.hours, key),
        "windows": windows(now),
        "days": local_days(now, zone),
        "business": spans(timeline.business, zone),
        "closures": spans(timeline.closures, zone),
        "segments": segments(timeline.segments, zone),
        "polls": polls(timeline.polls, zone),
        "outages": outages(timeline.outages, timeline.business, zone),
        "totals": totals(timeline.row),
    }


def zone_of(zones: report.StoreZones, key: int) -> tuple[str, bool]:
    """The store's zone, and whether it is SPEC's default (no zone row)."""
    mine = np.flatnonzero(np.asarray(zones.store) == key)
    if mine.size == 0:
        return report.DEFAULT_TIMEZONE, True
    return str(zones.zone[mine[0]]), False


def weekly_hours(hours: report.WeeklyHours, key: int) -> list[dict[str, Any]]:
    """The store's weekly rows as written (empty: open 24 hours, 7 days)."""
    mine = np.flatnonzero(np.asarray(hours.store) == key)
    rows = sorted((int(hours.weekday[i]), int(hours.start_s[i]), int(hours.end_s[i])) for i in mine)
    return [
        {"day": day, "weekday": DAY_NAMES[day], "start": clock(start), "end": clock(end)}
        for day, start, end in rows
    ]


def clock(seconds: int) -> str:
    hours, rest = divmod(seconds, 3600)
    return f"{hours:02d}:{rest // 60:02d}:{rest % 60:02d}"


def windows(now_us: int) -> dict[str, Any]:
    """The report's windows: each starts here and ends at `now`."""
    starts = {"now": now_us} | {name: now_us - length for name, length in report.WINDOWS_US.items()}
    return {name: {"at": timestamps.format_instant(at), "at_us": at} for name, at in starts.items()}


def local_days(now_us: int, zone: str) -> list[dict[str, Any]]:
    """The local dates the week touches, each from its local midnight to the next (UTC)."""
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
    return [
        {
            "date": date.strftime("%Y-%m-%d"),
            "weekday": DAY_NAMES[date.weekday()],
            "start_us": int(start),
            "end_us": int(end),
            "hours": (int(end) - int(start)) / US_PER_HOUR,
        }
        for date, start, end in zip(dates[:-1], bounds[:-1], bounds[1:], strict=True)
    ]


def instants(micros: list[float], zone: str) -> tuple[list[str], list[str]]:
    """UTC and local ISO-8601 text of instants (a half microsecond is shown truncated)."""
    utc = pd.to_datetime(np.floor(np.asarray(micros, dtype=float)).astype(np.int64), unit="us")
    utc = utc.tz_localize("UTC")
    local = utc.tz_convert(zone)
    return (
        list(utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")),
        [moment.isoformat() for moment in local],
    )


def spans(pieces: list[tuple[float, float]], zone: str) -> list[dict[str, Any]]:
    starts_utc, starts_local = instants([start for start, _ in pieces], zone)
    ends_utc, ends_local = instants([end for _, end in pieces], zone)
    return [
        {
            "start": starts_utc[i],
            "end": ends_utc[i],
            "start_local": starts_local[i],
            "end_local": ends_local[i],
            "start_us": start,
            "end_us": end,
        }
        for i, (start, end) in enumerate(pieces)
    ]


def segments(pieces: list[tuple[float, float, str]], zone: str) -> list[dict[str, Any]]:
    """Status over the week: active, inactive, or unknown (no evidence poll near enough)."""
    listed = spans([(start, end) for start, end, _ in pieces], zone)
    return [{**span, "status": status} for span, (*_, status) in zip(listed, pieces, strict=True)]


def polls(observed: list[tuple[float, bool, bool]], zone: str) -> list[dict[str, Any]]:
    """The week's polls; `evidence` marks those the status is taken from."""
    utc, local = instants([at for at, _, _ in observed], zone)
    return [
        {
            "at": utc[i],
            "at_local": local[i],
            "at_us": at,
            "status": "active" if active else "inactive",
            "evidence": evidence,
        }
        for i, (at, active, evidence) in enumerate(observed)
    ]


def outages(
    found: list[tuple[float, float]], business: list[tuple[float, float]], zone: str
) -> list[dict[str, Any]]:
    """The week's outages with their business time (hours): only that counts as downtime."""
    listed = spans(found, zone)
    if not found:
        return listed
    outage = np.asarray(found, dtype=float)
    open_ = np.asarray(business, dtype=float).reshape(-1, 2)
    overlap = np.minimum(outage[:, 1:2], open_[:, 1]) - np.maximum(outage[:, 0:1], open_[:, 0])
    business_us = np.clip(overlap, 0, None).sum(axis=1)
    for item, length in zip(listed, business_us, strict=True):
        item["business_hours"] = float(length) / US_PER_HOUR
    return listed


def totals(row: dict[str, object]) -> dict[str, Any]:
    """The store's report row without its id: the same numbers as the report's JSON."""
    numbers = {name: value for name, value in row.items() if name != "store_id"}
    return results.json_rows(pd.DataFrame([numbers]))[0]
