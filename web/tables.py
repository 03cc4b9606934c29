"""A finished report's table for the web page: summary, uptime histogram, sorted pages.

Everything is computed on whole columns with pandas, from the table a report stored (the same
numbers as its CSV). Tables are kept per report id in a small cache: a finished report never
changes, and a page asks for many pages of the same one.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

import report
from jobs import results

WINDOWS = tuple(report.WINDOWS_US)
WINDOW_UNITS = report.WINDOW_UNITS
UPTIME_PERCENT = "uptime_percent"
DEFAULT_SORT = "downtime_last_week"
# The histogram starts at the highest of these at or below the lowest store's uptime %, so a
# report where every store is above 90 % still shows how they spread.
HISTOGRAM_STARTS = (0.0, 50.0, 75.0, 90.0, 95.0, 99.0)
HISTOGRAM_BINS = 10
CACHED_TABLES = 8


@dataclass(frozen=True)
class ReportTable:
    """A report's rows sorted by store id, with each store's uptime % over the last week."""

    frame: pd.DataFrame
    folded_ids: pd.Series  # store ids in lower case, for a filter that ignores case

    @classmethod
    def of(cls, table: pd.DataFrame) -> ReportTable:
        frame = table.sort_values("store_id", kind="stable").reset_index(drop=True)
        frame[UPTIME_PERCENT] = uptime_percent(frame, "week")
        folded = frame["store_id"].astype("string[pyarrow]").str.lower()
        return cls(frame, folded)

    @property
    def columns(self) -> list[str]:
        """The report's own columns, in its order (without the derived uptime %)."""
        return [name for name in self.frame.columns if name != UPTIME_PERCENT]

    @property
    def sortable(self) -> list[str]:
        return [*self.columns, UPTIME_PERCENT]


def uptime_percent(frame: pd.DataFrame, window: str) -> pd.Series:
    """Uptime as a share of known business time (uptime + downtime), in percent.

    Unknown time (with `stale_after`) is neither up nor down, so it is left out; a store with
    no known business time in the window has no percentage (NaN).
    """
    up = frame[f"uptime_last_{window}"].astype(float)
    known = up + frame[f"downtime_last_{window}"].astype(float)
    return (100 * up / known.where(known > 0)).astype(float)


# --------------------------------------------------------------------------- cache


class TableCache:
    """The tables of the most recently used reports (at most `size`), shared by threads."""

    def __init__(self, size: int = CACHED_TABLES) -> None:
        self.size = size
        self.tables: OrderedDict[str, ReportTable] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, report_id: str, load: Callable[[], pd.DataFrame]) -> ReportTable:
        """The report's table, loaded with `load` the first time (outside the lock)."""
        with self.lock:
            if report_id in self.tables:
                self.tables.move_to_end(report_id)
                return self.tables[report_id]
        table = ReportTable.of(load())
        with self.lock:
            self.tables[report_id] = table
            self.tables.move_to_end(report_id)
            while len(self.tables) > self.size:
                self.tables.popitem(last=False)
        return table


# --------------------------------------------------------------------------- summary


def summary(table: ReportTable) -> dict[str, Any]:
    """Totals per window, the uptime histogram, and counts a reader looks for first."""
    frame = table.frame
    percent = frame[UPTIME_PERCENT]
    result: dict[str, Any] = {
        "stores": len(frame),
        "windows": {window: window_totals(frame, window) for window in WINDOWS},
        "stores_with_downtime": int((frame["downtime_last_week"] > 0).sum()),
        "stores_without_known_time": int(percent.isna().sum()),
        "histogram": histogram(percent),
        "outages": None,
    }
    if "outages_last_week" in frame:
        longest = frame["longest_outage_last_week"]
        result["outages"] = {
            "total_last_week": int(frame["outages_last_week"].sum()),
            "stores_with_outages": int((frame["outages_last_week"] > 0).sum()),
            "longest_last_week": float(longest.max()) if len(longest) else 0.0,
        }
    return result


def window_totals(frame: pd.DataFrame, window: str) -> dict[str, Any]:
    """Sums over all stores of one window (of the report's rounded values)."""
    up = float(frame[f"uptime_last_{window}"].sum())
    down = float(frame[f"downtime_last_{window}"].sum())
    unknown_column = f"unknown_last_{window}"
    unknown = float(frame[unknown_column].sum()) if unknown_column in frame else None
    known = up + down
    return {
        "unit": WINDOW_UNITS[window],
        "business": round(known + (unknown or 0.0), 2),
        "uptime": round(up, 2),
        "downtime": round(down, 2),
        "unknown": None if unknown is None else round(unknown, 2),
        "uptime_percent": round(100 * up / known, 2) if known > 0 else None,
    }


def histogram(percent: pd.Series) -> dict[str, Any]:
    """Stores per uptime % bin: ten equal bins [low, high) up to 100, then exactly 100 %."""
    values = percent.dropna().to_numpy(dtype=float)
    lowest = values.min() if values.size else 0.0
    start = max(edge for edge in HISTOGRAM_STARTS if edge <= lowest)
    edges = np.linspace(start, 100.0, HISTOGRAM_BINS + 1)
    below_full = values[values < 100.0]
    counts = np.histogram(below_full, bins=edges)[0] if below_full.size else [0] * HISTOGRAM_BINS
    bins = [
        {"low": float(low), "high": float(high), "count": int(count)}
        for low, high, count in zip(edges[:-1], edges[1:], counts, strict=True)
    ]
    bins.append({"low": 100.0, "high": 100.0, "count": int((values == 100.0).sum())})
    return {"window": "week", "bins": bins, "without_known_time": int(percent.isna().sum())}


# --------------------------------------------------------------------------- pages


@dataclass(frozen=True)
class Page:
    matched: int
    rows: list[dict[str, Any]]


def page(
    table: ReportTable, sort: str, descending: bool, query: str, offset: int, limit: int
) -> Page:
    """One page of stores whose id contains `query` (any case), sorted by `sort`.

    Ties keep store id order, so pages never overlap; stores without a value (no uptime %)
    come last in both directions.
    """
    frame = table.frame
    if query:
        frame = frame[table.folded_ids.str.contains(query.lower(), regex=False).to_numpy()]
    positions = sort_positions(frame, sort, descending)[offset : offset + limit]
    chosen = frame.iloc[positions]
    rows = results.json_rows(chosen[table.columns])
    for row, percent in zip(rows, chosen[UPTIME_PERCENT].to_numpy(), strict=True):
        row[UPTIME_PERCENT] = None if np.isnan(percent) else round(float(percent), 2)
    return Page(len(frame), rows)


def sort_positions(frame: pd.DataFrame, column: str, descending: bool) -> np.ndarray:
    """Row positions in the asked order; `frame` is already in store id order."""
    if column == "store_id":
        positions = np.arange(len(frame))
        return positions[::-1] if descending else positions
    values = frame[column].to_numpy(dtype=float)
    return np.argsort(-values if descending else values, kind="stable")  # NaN sorts last
