"""Benchmark loading the full data set into SQLite and MariaDB, then the report's read.

Each load runs in a fresh child process (`flask load-data`) on a fresh database: wall time
and the child's peak RSS. Then a closures file with one holiday for every store is loaded the
same way. The read (`snapshot.read_shard` over all stores: polls of the last week plus each
store's earlier evidence, hours, zones, closures) is timed 3 times in this process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from common import ROOT, require_full_data, targets, timed


def load_in_child(
    database_url: str, folder: Path | None, *options: str
) -> tuple[float, float, str]:
    """Return (seconds, peak RSS MB, summary) of `flask load-data` in a child process."""
    environment = {**os.environ, "DATABASE_URL": database_url}
    command = ["/usr/bin/time", "-f", "%M", sys.executable, "-m", "flask", "--app", "app"]
    subprocess.run(
        [*command, "init-db"], cwd=ROOT, env=environment, check=True, capture_output=True
    )
    start = time.perf_counter()
    done = subprocess.run(
        [*command, "load-data", *([str(folder)] if folder else []), *options],
        cwd=ROOT,
        env=environment,
        check=True,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - start
    peak_kb = int(done.stderr.strip().splitlines()[-1])
    return seconds, peak_kb / 1024, done.stdout.strip().splitlines()[-2]


def read_time(database_url: str) -> tuple[float, int]:
    from app import create_app
    from jobs import snapshot
    from models import db

    app = create_app({"DATABASE_URL": database_url})
    with app.app_context():
        fixed = snapshot.fix_snapshot(db.engine, None)
        seconds, read = timed(
            lambda: snapshot.read_shard(db.engine, fixed, 1, fixed.last_store_key + 1)
        )
        db.engine.dispose()
    return seconds, read.inputs.polls.ts_us.size


def holiday_for_every_store(folder: Path, out: Path) -> Path:
    """closures.csv: every store of the data closed on Christmas Day 2022, local time."""
    stores = pd.read_csv(folder / "store_status.csv.gz", dtype=str, usecols=["store_id"])
    closures = pd.DataFrame({"store_id": stores["store_id"].unique()})
    closures["start_local"] = "2022-12-25 00:00:00"
    closures["end_local"] = "2022-12-26 00:00:00"
    path = out / "closures.csv"
    closures.to_csv(path, index=False)
    return path


def main() -> None:
    folder = require_full_data()
    with tempfile.TemporaryDirectory() as scratch:
        for name, url in targets(Path(scratch)).items():
            seconds, peak, polls_line = load_in_child(url, folder)
            print(f"load  {name:<8} {seconds:6.1f} s  peak RSS {peak:5.0f} MB   ({polls_line})")
            closures = holiday_for_every_store(folder, Path(scratch))
            seconds, peak, line = load_in_child(url, None, "--closures", str(closures))
            print(f"load  {name:<8} {seconds:6.1f} s  peak RSS {peak:5.0f} MB   ({line})")
            read_seconds, rows = read_time(url)
            print(f"read  {name:<8} {read_seconds:6.2f} s  ({rows:,} polls read, median of 3)")


if __name__ == "__main__":
    main()
