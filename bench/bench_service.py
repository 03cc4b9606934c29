"""Benchmark POST /trigger_report → Complete on the full data set, SQLite and MariaDB.

Loads the data once per engine, starts the real service (`python app.py`), triggers 3 reports
one after the other, polls each until Complete, and prints the end-to-end times and the
server's peak RSS.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path

from common import ROOT, process_peak_rss_mb, require_full_data, targets, trigger_to_complete

sys.path.insert(0, str(ROOT))
from tests.server import ServerProcess, run_cli


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
