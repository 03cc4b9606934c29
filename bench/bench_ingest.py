"""Benchmark HTTP ingestion: 4 clients posting 10,000-row CSV batches of loop-full's polls.

For SQLite and MariaDB: a real server (`python app.py`) on a fresh database holding loop-full's
hours and time zones; 4 concurrent clients post the polls in 10,000-row batches until all are
sent, once with no report running and once while reports are triggered one after another.
Prints sustained polls per second and the p50/p95/max latency of a batch.

    python bench/bench_ingest.py [--batches 120] [--clients 4] [--rows 10000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import requests
from common import ROOT, require_full_data, targets

sys.path.insert(0, str(ROOT))
from tests.server import ServerProcess, run_cli

CSV = {"Content-Type": "text/csv"}


def batches(folder: Path, rows: int, count: int, shift_days: int) -> list[bytes]:
    """`count` CSV bodies of `rows` polls each, moved `shift_days` later (new instants)."""
    polls = pd.read_csv(folder / "store_status.csv.gz", dtype=str, nrows=rows * count)
    stamps = pd.to_datetime(polls["timestamp_utc"].str.removesuffix(" UTC"), format="ISO8601")
    moved = stamps + pd.Timedelta(days=shift_days)
    polls["timestamp_utc"] = moved.dt.strftime("%Y-%m-%d %H:%M:%S.%f UTC")
    return [
        polls.iloc[start : start + rows].to_csv(index=False).encode()
        for start in range(0, len(polls), rows)
    ]


def keep_reporting(url: str, stop: threading.Event) -> int:
    """Trigger reports one after the other until stopped; return how many completed."""
    done = 0
    while not stop.is_set():
        report_id = requests.post(f"{url}/trigger_report", timeout=60).json()["report_id"]
        while not stop.is_set():
            if requests.get(f"{url}/get_report/{report_id}", timeout=60).status_code != 202:
                done += 1
                break
            time.sleep(0.05)
    return done


def post_all(url: str, bodies: list[bytes], clients: int) -> tuple[float, list[float]]:
    """Post every body with `clients` concurrent clients; return (seconds, batch latencies)."""
    latencies: list[float] = []
    lock = threading.Lock()

    def send(body: bytes) -> None:
        session = requests.Session()
        start = time.perf_counter()
        response = session.post(f"{url}/polls", data=body, headers=CSV, timeout=120)
        elapsed = time.perf_counter() - start
        if response.status_code != 200:
            raise RuntimeError(f"{response.status_code}: {response.text[:300]}")
        with lock:
            latencies.append(elapsed)

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(send, bodies))
    return time.perf_counter() - start, latencies


def run(name: str, url: str, folder: Path, scratch: Path, args) -> None:
    base = scratch / f"base-{name}"
    base.mkdir()
    for file in ("menu_hours.csv",):
        (base / file).write_bytes((folder / file).read_bytes())
    zones = next(folder.glob("bq-results-*.csv"))
    (base / "timezones.csv").write_bytes(zones.read_bytes())
    loaded = run_cli(url, "load-data", str(base))
    if loaded.returncode != 0:
        raise RuntimeError(loaded.stderr)
    server = ServerProcess(url, scratch / f"reports-{name}", scratch / f"{name}.log").start()
    try:
        for shift, with_reports in ((0, False), (30, True)):
            bodies = batches(folder, args.rows, args.batches, shift)
            stop = threading.Event()
            reporter = None
            if with_reports:
                reporter = ThreadPoolExecutor(1).submit(keep_reporting, server.url, stop)
            seconds, latencies = post_all(server.url, bodies, args.clients)
            stop.set()
            reports = reporter.result() if reporter else 0
            ordered = sorted(latencies)
            p95 = ordered[min(int(0.95 * len(ordered)), len(ordered) - 1)]
            rate = args.rows * len(bodies) / seconds
            label = f"with reports running ({reports} done)" if with_reports else "no report"
            print(
                f"{name:<8} {label:<34} {rate:9,.0f} polls/s  batch p50 "
                f"{statistics.median(latencies) * 1000:5.0f} ms  p95 {p95 * 1000:5.0f} ms  "
                f"max {ordered[-1] * 1000:5.0f} ms",
                flush=True,
            )
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=120)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--rows", type=int, default=10_000)
    args = parser.parse_args()
    folder = require_full_data()
    with tempfile.TemporaryDirectory() as scratch:
        for name, url in targets(Path(scratch)).items():
            run(name, url, folder, Path(scratch), args)


if __name__ == "__main__":
    main()
