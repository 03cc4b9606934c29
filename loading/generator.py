"""Generate realistic input data in the original CSV format (for demos, tests, benchmarks).

Shape: mostly one poll per store per hour a few minutes after the hour, some stores polled
every 2–6 hours, gaps, outages as random intervals, some stores that read `inactive` while
closed; business hours regular, overnight, split or missing (24×7); some stores without a time
zone row; a few exact duplicate rows; rows shuffled; fractions of 0–6 digits.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

import report
from engine import arrays, timestamps

ZONES = [
    "America/New_York",
    "America/Los_Angeles",
    "America/Chicago",
    "America/Denver",
    "America/Phoenix",
    "America/Detroit",
    "Pacific/Honolulu",
    "Asia/Beirut",
]
ZONE_WEIGHTS = [0.58, 0.23, 0.11, 0.02, 0.03, 0.01, 0.01, 0.01]
HOUR_US = timestamps.US_PER_HOUR


def write_dataset(out_dir: Path, *, stores: int, days: int, seed: int, end_us: int) -> list[Path]:
    """Write store_status.csv, menu_hours.csv and timezones.csv into `out_dir`."""
    rng = np.random.default_rng(seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    store_ids = make_store_ids(rng, stores)
    zones = make_timezones(rng, store_ids)
    hours = make_hours(rng, store_ids)
    polls = make_polls(rng, store_ids, hours, zones, days, end_us)
    paths = [out_dir / "store_status.csv", out_dir / "menu_hours.csv", out_dir / "timezones.csv"]
    polls.to_csv(paths[0], index=False)
    hours.to_csv(paths[1], index=False)
    zones.to_csv(paths[2], index=False)
    return paths


def make_store_ids(rng: np.random.Generator, count: int) -> np.ndarray:
    """Distinct 64-bit decimal ids, most far above 2^53 like the original data."""
    ids = rng.integers(10**15, 2**63 - 1, size=count * 2, dtype=np.int64)
    return pd.unique(ids)[:count].astype(str).astype(object)


def make_timezones(rng: np.random.Generator, store_ids: np.ndarray) -> pd.DataFrame:
    """About 95% of stores get a zone row; the rest default to America/Chicago."""
    has_zone = rng.random(store_ids.size) < 0.95
    zones = rng.choice(ZONES, size=store_ids.size, p=ZONE_WEIGHTS)
    return pd.DataFrame({"store_id": store_ids[has_zone], "timezone_str": zones[has_zone]})


HOUR_SHAPES = {  # name: (probability, [(start, end), ...] per open day)
    "always": (0.10, []),
    "regular": (0.45, [("10:00:00", "22:00:00")]),
    "overnight": (0.12, [("18:00:00", "02:00:00")]),
    "split": (0.13, [("11:00:00", "14:30:00"), ("17:00:00", "22:00:00")]),
    "whole_day": (0.10, [("00:00:00", "23:59:59")]),
    "early": (0.10, [("06:30:00", "15:00:00")]),
}


def make_hours(rng: np.random.Generator, store_ids: np.ndarray) -> pd.DataFrame:
    """Weekly rows per store by shape; some stores close on one or two weekdays."""
    names = list(HOUR_SHAPES)
    shapes = rng.choice(names, size=store_ids.size, p=[HOUR_SHAPES[n][0] for n in names])
    closed_day = np.where(rng.random(store_ids.size) < 0.3, rng.integers(0, 7, store_ids.size), -1)
    parts = []
    for name in names:
        periods = HOUR_SHAPES[name][1]
        chosen = np.flatnonzero(shapes == name)
        for start, end in periods:
            store = np.repeat(chosen, 7)
            day = np.tile(np.arange(7), chosen.size)
            keep = day != closed_day[store]
            parts.append(
                pd.DataFrame(
                    {
                        "store_id": store_ids[store[keep]],
                        "day": day[keep],
                        "start_time_local": start,
                        "end_time_local": end,
                    }
                )
            )
    return pd.concat(parts, ignore_index=True).sample(
        frac=1.0, random_state=int(rng.integers(1 << 31))
    )


def make_polls(
    rng: np.random.Generator,
    store_ids: np.ndarray,
    hours: pd.DataFrame,
    zones: pd.DataFrame,
    days: int,
    end_us: int,
) -> pd.DataFrame:
    """Hourly-ish polls with jitter and gaps, outages, and stores inactive while closed."""
    count = store_ids.size
    interval_h = rng.choice([1, 2, 3, 6], size=count, p=[0.85, 0.07, 0.05, 0.03])
    per_store = np.maximum(days * 24 // interval_h, 1)
    sparse = rng.random(count) < 0.02
    per_store[sparse] = rng.integers(1, 6, sparse.sum())
    store = np.repeat(np.arange(count), per_store)
    step = np.arange(store.size) - np.repeat(np.cumsum(per_store) - per_store, per_store)
    start_us = end_us - days * timestamps.US_PER_DAY
    jitter = rng.integers(60, 12 * 60, store.size) * timestamps.US_PER_SECOND + rng.integers(
        0, 10**6, store.size
    )
    instants = start_us + step * interval_h[store] * HOUR_US + jitter
    instants[sparse[store]] = rng.integers(start_us, end_us, sparse[store].sum())
    keep = (rng.random(store.size) > 0.04) & (instants <= end_us)
    store, instants = store[keep], instants[keep]
    active = ~in_outage(rng, store, instants, count, start_us, end_us)
    closed_inactive = rng.random(count) < 0.3
    open_now = open_at(store_ids, hours, zones, store, instants)
    active &= ~(closed_inactive[store] & ~open_now)
    frame = pd.DataFrame(
        {
            "store_id": store_ids[store],
            "status": np.where(active, "active", "inactive"),
            "timestamp_utc": format_stamps(rng, instants),
        }
    )
    duplicates = frame.sample(n=max(store.size // 2000, 1), random_state=int(rng.integers(1 << 31)))
    return pd.concat([frame, duplicates]).sample(frac=1.0, random_state=int(rng.integers(1 << 31)))


def in_outage(
    rng: np.random.Generator,
    store: np.ndarray,
    instants: np.ndarray,
    count: int,
    start_us: int,
    end_us: int,
) -> np.ndarray:
    """Outages: about one every two days per store, lasting 2 h on average."""
    outages = rng.poisson(max((end_us - start_us) / timestamps.US_PER_DAY / 2, 0.5), count)
    owner = np.repeat(np.arange(count), outages)
    begins = rng.integers(start_us, end_us, owner.size)
    ends = begins + (rng.exponential(2.0, owner.size) * HOUR_US).astype(np.int64)
    order = arrays.sort_order(owner, begins)
    if order is not None:
        owner, begins, ends = owner[order], begins[order], ends[order]
    if owner.size == 0:
        return np.zeros(store.size, dtype=bool)
    index = arrays.grouped_searchsorted(owner, begins, store, instants) - 1
    safe = np.maximum(index, 0)
    return (index >= 0) & (owner[safe] == store) & (instants < ends[safe])


def open_at(store_ids, hours, zones, store, instants) -> np.ndarray:
    """Whether each poll falls in its store's business hours (the engine's own rule)."""
    context = report.ReportInputs(
        polls=report.Polls.of(),
        hours=report.WeeklyHours.of(
            hours["store_id"].to_numpy(),
            hours["day"].to_numpy(),
            timestamps.parse_local_times(hours["start_time_local"]),
            timestamps.parse_local_times(hours["end_time_local"], end_of_day=True),
        ),
        zones=report.StoreZones.of(zones["store_id"].to_numpy(), zones["timezone_str"].to_numpy()),
    )
    return report.in_business_hours(context, store_ids[store], instants)


def format_stamps(rng: np.random.Generator, instants: np.ndarray) -> np.ndarray:
    """`2023-01-22 12:09:39.388884 UTC` with 0–6 fraction digits, trailing zeros dropped."""
    seconds = pd.to_datetime(instants // 10**6, unit="s").strftime("%Y-%m-%d %H:%M:%S")
    micros = pd.Series(instants % 10**6).astype(str).str.zfill(6)
    digits = rng.choice(
        [6, 5, 4, 3, 2, 1, 0], size=instants.size, p=[0.8, 0.1, 0.04, 0.02, 0.02, 0.01, 0.01]
    )
    fraction = micros.copy()
    for kept in range(6):
        fraction[digits == kept] = micros[digits == kept].str.slice(0, kept)
    fraction = fraction.str.rstrip("0")
    dot = np.where(fraction.str.len() > 0, ".", "")
    return (pd.Series(seconds) + dot + fraction + " UTC").to_numpy()
