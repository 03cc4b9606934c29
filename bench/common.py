"""Shared helpers for the benchmark scripts: data location, timing, memory."""

from __future__ import annotations

import os
import resource
import statistics
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
FULL = Path(os.environ.get("FULL_DATA", ROOT.parent / "shared" / "data" / "loop-full"))
MARIADB_ADMIN = os.environ.get("BENCH_MARIADB_URL", "mysql+pymysql://root:@127.0.0.1:3306/test")


def require_full_data() -> Path:
    if not (FULL / "store_status.csv.gz").exists():
        sys.exit(f"full data set not found at {FULL} (set FULL_DATA)")
    return FULL


def timed(function, repeat: int = 3) -> tuple[float, object]:
    """Median wall time of `repeat` runs, and the last result."""
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def children_peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def process_peak_rss_mb(pid: int) -> float:
    """Peak resident memory of a live process (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def targets(scratch: Path) -> dict[str, str]:
    """A fresh SQLite file and a fresh MariaDB database to benchmark on."""
    from tests.databases import create_database

    return {
        "SQLite": f"sqlite:///{scratch / 'bench.sqlite3'}",
        "MariaDB": create_database(MARIADB_ADMIN, "store_monitor_bench"),
    }


def trigger_to_complete(base_url: str, token: str | None = None) -> float:
    """Seconds from `POST /trigger_report` to the finished report (a failed one raises)."""
    return trigger_and_fetch(base_url, token)[0]


def trigger_and_fetch(base_url: str, token: str | None = None) -> tuple[float, str]:
    """Seconds from `POST /trigger_report` to the finished report, and its CSV (a failed
    report raises); `token` is sent as a bearer token."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    start = time.perf_counter()
    answer = requests.post(f"{base_url}/trigger_report", headers=headers, timeout=60)
    report_id = answer.json()["report_id"]
    while True:
        response = requests.get(f"{base_url}/get_report/{report_id}", headers=headers, timeout=60)
        if response.status_code != 202:
            break
        time.sleep(0.01)
    elapsed = time.perf_counter() - start
    if response.status_code != 200:
        raise RuntimeError(f"report failed: {response.text}")
    return elapsed, response.text
