"""Moments written as text, turned into the engine's integers with the standard library and
pandas alone (never the service's own parsers), for tests of the engine and of snapshots."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pandas as pd

import report
from tests.reference import parse_hms


def wall(text: str) -> int:
    """Local wall seconds since 1970-01-01 00:00 (no zone), as closures are stored."""
    return (datetime.fromisoformat(text) - datetime(1970, 1, 1)) // timedelta(seconds=1)


def utc_micros(stamps: pd.Series) -> np.ndarray:
    """`2023-01-22 12:09:39.388884 UTC` → epoch µs with pandas alone (not the service's parser)."""
    parsed = pd.to_datetime(stamps.str.removesuffix(" UTC"), format="ISO8601")
    return parsed.to_numpy(dtype="datetime64[us]").astype(np.int64)


def engine_inputs(polls=(), hours=(), zones=None, closures=()) -> report.ReportInputs:
    """Engine inputs from readable tuples: polls (store, epoch µs, active), hours (store,
    weekday, "HH:MM[:SS]" start, end), zones {store: zone}, closures (store, local start, end)."""
    zones = zones or {}
    return report.ReportInputs(
        report.Polls.of([p[0] for p in polls], [p[1] for p in polls], [p[2] for p in polls]),
        report.WeeklyHours.of(
            [h[0] for h in hours],
            [h[1] for h in hours],
            [parse_hms(h[2]) for h in hours],
            [parse_hms(h[3]) for h in hours],
        ),
        report.StoreZones.of(list(zones), list(zones.values())),
        report.Closures.of(
            [c[0] for c in closures], [wall(c[1]) for c in closures], [wall(c[2]) for c in closures]
        ),
    )
