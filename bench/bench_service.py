"""Benchmark POST /trigger_report → Complete on the full data set, SQLite and MariaDB.

Loads the data once per engine, starts the real service (`python app.py`), triggers 3 reports
one after the other, polls each until Complete, and prints the end-to-end times and the
server's peak RSS.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests
from common import ROOT, process_peak_rss_mb, require_full_data, targets

sys.path.insert(0, str(ROOT))
from tests.server import ServerProcess, run_cli


def trigger_to_complete(base_url: str) -> float:
    start = time.perf_counter()
    report_id = requests.post(f"{base_url}/trigger_report", timeout=30).json()["report_id"]
    while True:
        response = requests.get(f"{base_url}/get_report/{report_id}", timeout=30)
        if response.status_code != 202:
            break
        time.sleep(0.02)
    elapsed = time.perf_counter() - start
    if response.status_code != 200:
        raise RuntimeError(f"report failed: {response.text}")
    return elapsed


def main() -> None:
    folder = require_full_data()
    with tempfile.TemporaryDirectory() as scratch:
        for name, url in targets(Path(scratch)).items():
            loaded = run_cli(url, "load-data", str(folder))
            if loaded.returncode != 0:
                raise RuntimeError(loaded.stderr)
            server = ServerProcess(
                url, Path(scratch) / f"reports-{name}", Path(scratch) / "server.log"
            )
            server.start()
            try:
                times = [trigger_to_complete(server.url) for _ in range(3)]
                peak = process_peak_rss_mb(server.process.pid)
            finally:
                server.stop()
            listed = ", ".join(f"{t:.2f}" for t in times)
            median = statistics.median(times)
            print(
                f"{name:<8} trigger → Complete: median {median:.2f} s ({listed}); "
                f"server peak RSS {peak:.0f} MB"
            )


if __name__ == "__main__":
    main()
