"""Benchmark the pure engine on the full data set (inputs in memory) and on 10× the stores.

Prints median wall time of 3 runs and the peak memory allocated during the computation
(tracemalloc, which numpy reports to). Two input shapes: as the database read returns them
(integer store keys, integer µs, sorted by store and time) and as parsed from the CSV (text
store ids, unsorted, text status).
"""

from __future__ import annotations

import gc
import tracemalloc

import numpy as np
import pandas as pd
from common import require_full_data, timed

import report


def load_frames():
    folder = require_full_data()
    polls = pd.read_csv(folder / "store_status.csv.gz", dtype=str)
    polls["timestamp_utc"] = report.parse_utc_timestamps(polls["timestamp_utc"])
    hours = pd.read_csv(folder / "menu_hours.csv", dtype={"store_id": str})
    zones = pd.read_csv(next(folder.glob("bq-results-*.csv")), dtype=str)
    return polls, hours, zones


def keyed(polls, hours, zones):
    """The shape the database read produces: integer keys, µs, booleans, sorted."""
    ids = pd.Index(pd.unique(pd.concat([polls["store_id"], hours["store_id"], zones["store_id"]])))
    frame = pd.DataFrame(
        {
            "store_id": ids.get_indexer(polls["store_id"]).astype(np.int64),
            "timestamp_utc": polls["timestamp_utc"].to_numpy(),
            "status": (polls["status"] == "active").to_numpy(),
        }
    )
    frame = frame.sort_values(["store_id", "timestamp_utc"], kind="stable").reset_index(drop=True)
    hours = hours.assign(
        store_id=ids.get_indexer(hours["store_id"]).astype(np.int64),
        start_time_local=report.parse_local_times(hours["start_time_local"]),
        end_time_local=report.parse_local_times(hours["end_time_local"]),
    )
    zones = zones.assign(store_id=ids.get_indexer(zones["store_id"]).astype(np.int64))
    return frame, hours, zones, len(ids)


def scaled(polls, hours, zones, store_count: int, factor: int):
    """`factor` copies of every store (new keys), same polls, hours and zones."""

    def repeat(frame):
        copies = [frame.assign(store_id=frame["store_id"] + k * store_count) for k in range(factor)]
        return pd.concat(copies, ignore_index=True)

    return repeat(polls), repeat(hours), repeat(zones)


def measure(label: str, polls, hours, zones) -> float:
    gc.collect()
    seconds, result = timed(lambda: report.compute_report(polls, hours, zones))
    tracemalloc.start()
    report.compute_report(polls, hours, zones)
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    print(
        f"{label:<44} {len(polls):>11,} polls {len(result):>8,} stores  {seconds:6.2f} s  "
        f"peak +{peak:5.0f} MB"
    )
    return seconds


def main() -> None:
    polls, hours, zones = load_frames()
    measure("full data, as parsed from CSV", polls, hours, zones)
    keyed_polls, keyed_hours, keyed_zones, stores = keyed(polls, hours, zones)
    one = measure("full data, as read from the database", keyed_polls, keyed_hours, keyed_zones)
    big = scaled(keyed_polls, keyed_hours, keyed_zones, stores, 10)
    ten = measure("10x stores, as read from the database", *big)
    print(f"10x data took {ten / one:.1f}x the time (linear = 10x)")


if __name__ == "__main__":
    main()
