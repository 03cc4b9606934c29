"""Benchmark one store's timeline (`GET /store/timeline`) for a store polled every 2 s.

Loads the bundled sample plus one generated store with 300,000 polls in the week before the
sample's latest poll (statuses at random, so its status flips about every second poll), starts
the real service (`python app.py`), asks for that store's week once, then four times at once,
and prints the answer's size, the wall time and the server's peak RSS after each step.

    .venv/bin/python bench/bench_timeline.py [--polls 300000] [--engine sqlite|mariadb|both]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import requests
from common import MARIADB_ADMIN, ROOT, process_peak_rss_mb

sys.path.insert(0, str(ROOT))
from tests.databases import create_database, drop_database
from tests.server import ServerProcess, run_cli

HEAVY_STORE = "heavy-store"
SAMPLE_LATEST = pd.Timestamp("2023-01-25 17:25:17", tz="UTC")
QUERIES = {"plain": {}, "stale 1s, outages": {"stale_after": "1s", "outages": "true"}}


def write_heavy_store(folder: Path, polls: int) -> Path:
    """`polls` polls of one store spread evenly over the week, statuses at random."""
    rng = np.random.default_rng(7)
    week = pd.Timedelta(days=7)
    offsets = np.sort(rng.integers(0, week.value // 1000, size=polls))  # µs after week start
    stamps = SAMPLE_LATEST - week + pd.to_timedelta(offsets, unit="us")
    frame = pd.DataFrame(
        {
            "store_id": HEAVY_STORE,
            "status": np.where(rng.random(polls) < 0.5, "active", "inactive"),
            "timestamp_utc": stamps.strftime("%Y-%m-%d %H:%M:%S.%f UTC"),
        }
    )
    folder.mkdir(parents=True, exist_ok=True)
    frame.to_csv(folder / "store_status.csv", index=False)
    return folder


def timeline(base_url: str, query: dict[str, str]) -> tuple[int, float]:
    """Bytes of the answer and seconds it took."""
    start = time.perf_counter()
    response = requests.get(
        f"{base_url}/store/timeline", params={"id": HEAVY_STORE, **query}, timeout=600
    )
    elapsed = time.perf_counter() - start
    response.raise_for_status()
    return len(response.content), elapsed


def measure(name: str, url: str, scratch: Path, heavy: Path) -> None:
    for folder in (ROOT / "data", heavy):
        loaded = run_cli(url, "load-data", str(folder))
        if loaded.returncode != 0:
            raise RuntimeError(loaded.stderr)
    server = ServerProcess(url, scratch / f"reports-{name}", scratch / f"server-{name}.log")
    server.start()
    try:
        idle = process_peak_rss_mb(server.process.pid)
        print(f"{name}: server peak RSS before any timeline {idle:.0f} MB")
        for label, query in QUERIES.items():
            size, seconds = timeline(server.url, query)
            peak = process_peak_rss_mb(server.process.pid)
            answer = f"{size / 1e6:7.2f} MB in {seconds:5.2f} s"
            print(f"  {label:<18} one: {answer}; peak {peak:.0f} MB")
        with ThreadPoolExecutor(4) as pool:
            start = time.perf_counter()
            answers = list(pool.map(lambda _: timeline(server.url, QUERIES["plain"]), range(4)))
            elapsed = time.perf_counter() - start
        peak = process_peak_rss_mb(server.process.pid)
        largest = max(size for size, _ in answers) / 1e6
        answer = f"{elapsed:5.2f} s, largest {largest:.2f} MB"
        print(f"  four at once (plain): {answer}; peak {peak:.0f} MB")
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--polls", type=int, default=300_000)
    parser.add_argument("--engine", choices=["sqlite", "mariadb", "both"], default="both")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        scratch = Path(folder)
        heavy = write_heavy_store(scratch / "heavy", args.polls)
        if args.engine in ("sqlite", "both"):
            measure("SQLite", f"sqlite:///{scratch / 'bench.sqlite3'}", scratch, heavy)
        if args.engine in ("mariadb", "both"):
            database = "store_monitor_bench_timeline"
            try:
                measure("MariaDB", create_database(MARIADB_ADMIN, database), scratch, heavy)
            finally:
                drop_database(MARIADB_ADMIN, database)


if __name__ == "__main__":
    main()
