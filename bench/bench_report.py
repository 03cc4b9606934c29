"""Benchmark the pure engine on the full data set (inputs in memory) and on 10× the stores.

Prints the median wall time of 3 runs and the peak memory allocated during the computation
(tracemalloc, which numpy reports to), for a plain report and for one with both options
(`stale_after` 2 h and `outages`). Inputs have the shape the database read gives them: integer
store keys, each store's polls in time order, epoch µs, booleans, hours in seconds.
"""

from __future__ import annotations

import gc
import tracemalloc

import numpy as np
import pandas as pd
from common import require_full_data, timed

import report
from engine import timestamps

BOTH_OPTIONS = report.ReportOptions(stale_after_us=2 * timestamps.US_PER_HOUR, outages=True)


def load_inputs() -> tuple[report.ReportInputs, int]:
    """loop-full as engine inputs keyed by integer store keys; and the number of stores."""
    folder = require_full_data()
    polls = pd.read_csv(folder / "store_status.csv.gz", dtype=str)
    hours = pd.read_csv(folder / "menu_hours.csv", dtype=str)
    zones = pd.read_csv(next(folder.glob("bq-results-*.csv")), dtype=str)
    ids = pd.Index(pd.unique(pd.concat([polls["store_id"], hours["store_id"], zones["store_id"]])))
    day = "dayOfWeek" if "dayOfWeek" in hours else "day"
    keys = ids.get_indexer(polls["store_id"]).astype(np.int64)
    instants = timestamps.parse_utc_timestamps(polls["timestamp_utc"])
    order = np.lexsort((instants, keys))  # the database returns each store's polls in order
    inputs = report.ReportInputs(
        report.Polls.of(
            keys[order], instants[order], (polls["status"] == "active").to_numpy()[order]
        ),
        report.WeeklyHours.of(
            ids.get_indexer(hours["store_id"]),
            hours[day].astype(int),
            timestamps.parse_local_times(hours["start_time_local"]),
            timestamps.parse_local_times(hours["end_time_local"], end_of_day=True),
        ),
        report.StoreZones.of(ids.get_indexer(zones["store_id"]), zones["timezone_str"]),
    )
    return inputs, len(ids)


def scaled(inputs: report.ReportInputs, stores: int, factor: int) -> report.ReportInputs:
    """`factor` copies of every store under new keys, with the same polls, hours and zones."""

    def copies(store: np.ndarray) -> np.ndarray:
        return np.concatenate([store + k * stores for k in range(factor)])

    def tile(values: np.ndarray) -> np.ndarray:
        return np.tile(values, factor)

    polls, hours, zones = inputs.polls, inputs.hours, inputs.zones
    return report.ReportInputs(
        report.Polls.of(copies(polls.store), tile(polls.ts_us), tile(polls.active)),
        report.WeeklyHours.of(
            copies(hours.store), tile(hours.weekday), tile(hours.start_s), tile(hours.end_s)
        ),
        report.StoreZones.of(copies(zones.store), tile(zones.zone)),
    )


def measure(label: str, inputs: report.ReportInputs, options=None) -> float:
    gc.collect()
    seconds, result = timed(lambda: report.compute_report(inputs, None, options))
    tracemalloc.start()
    report.compute_report(inputs, None, options)
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    print(
        f"{label:<46} {inputs.polls.ts_us.size:>11,} polls {len(result):>8,} stores  "
        f"{seconds:6.2f} s  peak +{peak:5.0f} MB",
        flush=True,
    )
    return seconds


def main() -> None:
    inputs, stores = load_inputs()
    plain = measure("full data, plain", inputs)
    both = measure("full data, stale_after 2h + outages", inputs, BOTH_OPTIONS)
    print(f"both options cost {both / plain:.2f}x a plain report")
    big = scaled(inputs, stores, 10)
    ten = measure("10x stores, plain", big)
    print(f"10x data took {ten / plain:.1f}x the time (linear = 10x)")


if __name__ == "__main__":
    main()
