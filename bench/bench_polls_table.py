"""Benchmark the size of MariaDB's `polls` table and what it costs, with the yardstick.

In one run, on loop-full:
1. the yardstick: a child process that parses the polls file with pandas (read_csv, strip
   " UTC", `to_datetime(format="ISO8601")`), whole-process wall time;
2. SQLite: `flask load-data` in a child process on a fresh database, 3 times, each right after
   a yardstick run;
3. MariaDB: `flask load-data`, the table's `data_length` (after `ANALYZE TABLE`, which makes
   the statistics current) before and after `OPTIMIZE TABLE`;
4. MariaDB again from a fresh load: 24 hourly uploads of 10,000 polls (the hours after the
   latest poll, 10,000 stores drawn at random) through `flask load-data --polls`, then
   `data_length`, then after `OPTIMIZE TABLE`;
5. the warm report on that database: `POST /trigger_report` → Complete on the real server
   (one report to warm up, then the median of 3), with the yardstick run twice just before and
   twice just after it.
Each ratio uses yardsticks measured next to what it compares: the machine's load varies.

`POLLS_COMPACT_SECONDS` is set to 0 for step 4 (compaction allowed after every load) so
that 24 uploads made within a minute behave as 24 made an hour apart.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pymysql
from common import MARIADB_ADMIN, ROOT, require_full_data, trigger_to_complete
from sqlalchemy.engine import make_url

sys.path.insert(0, str(ROOT))
from tests.databases import create_database
from tests.server import ServerProcess

YARDSTICK = """
import sys, pandas as pd
polls = pd.read_csv(sys.argv[1])
stamps = polls["timestamp_utc"].str.removesuffix(" UTC")
polls["timestamp_utc"] = pd.to_datetime(stamps, format="ISO8601", utc=True)
"""
UPLOADS, UPLOAD_POLLS = 24, 10_000
HOUR_US = 3_600_000_000
COMPACT_EVERY = "0"  # seconds: after every upload if the table is bloated


def yardstick(folder: Path) -> float:
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", YARDSTICK, str(folder / "store_status.csv.gz")], check=True
    )
    return time.perf_counter() - start


def flask(url: str, *args: str, **env: str) -> float:
    """Run a `flask` command in a child process; return its wall time."""
    environment = {**os.environ, "DATABASE_URL": url, **env}
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "flask", "--app", "app", *args],
        cwd=ROOT,
        env=environment,
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - start


def fresh_load(url: str, folder: Path, **env: str) -> float:
    flask(url, "init-db")
    return flask(url, "load-data", str(folder), **env)


def mariadb(url: str) -> pymysql.Connection:
    parts = make_url(url)
    return pymysql.connect(
        host=parts.host, port=parts.port or 3306, user=parts.username,
        password=parts.password or "", database=parts.database, autocommit=True,
    )  # fmt: skip


def data_length_mb(url: str, optimize: bool = False) -> float:
    """The polls table's data pages, in MB, with current statistics (optimised first if asked)."""
    connection = mariadb(url)
    with connection.cursor() as cursor:
        if optimize:
            cursor.execute("OPTIMIZE TABLE polls")
            cursor.fetchall()
        cursor.execute("ANALYZE TABLE polls")
        cursor.fetchall()
        cursor.execute(
            "SELECT data_length FROM information_schema.tables "
            "WHERE table_schema = DATABASE() AND table_name = 'polls'"
        )
        (length,) = cursor.fetchone()
    connection.close()
    return length / 2**20


def hourly_uploads(url: str, scratch: Path) -> None:
    """24 uploads of 10,000 polls each, one hour apart, after the latest poll."""
    connection = mariadb(url)
    with connection.cursor() as cursor:
        cursor.execute("SELECT MAX(max_ts_us) FROM load_batches")
        (latest,) = cursor.fetchone()
        cursor.execute("SELECT external_id FROM stores")
        store_ids = np.array([row[0] for row in cursor.fetchall()], dtype=object)
    connection.close()
    random = np.random.default_rng(16)
    for hour in range(UPLOADS):
        stores = random.choice(store_ids, size=UPLOAD_POLLS, replace=False)
        instants = latest + hour * HOUR_US + random.integers(1, HOUR_US, size=UPLOAD_POLLS)
        stamps = pd.to_datetime(instants, unit="us").strftime("%Y-%m-%d %H:%M:%S.%f UTC")
        path = scratch / f"hour-{hour}.csv"
        pd.DataFrame(
            {"store_id": stores, "status": random.choice(["active", "inactive"], UPLOAD_POLLS),
             "timestamp_utc": stamps}
        ).to_csv(path, index=False)  # fmt: skip
        flask(url, "load-data", "--polls", str(path), POLLS_COMPACT_SECONDS=COMPACT_EVERY)


def warm_report(url: str, scratch: Path) -> list[float]:
    server = ServerProcess(url, scratch / "reports", scratch / "server.log").start()
    try:
        trigger_to_complete(server.url)  # warm: caches, buffer pool
        return [trigger_to_complete(server.url) for _ in range(3)]
    finally:
        server.stop()


def main() -> None:
    folder = require_full_data()
    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        sqlite_ratios = []
        for n in range(3):  # each load beside a yardstick of its own: the machine's load varies
            stick = yardstick(folder)
            seconds = fresh_load(f"sqlite:///{scratch / f'load-{n}.sqlite3'}", folder)
            sqlite_ratios.append(seconds / stick)
            print(f"SQLite load-data {seconds:.2f} s, yardstick {stick:.2f} s: "
                  f"{seconds / stick:.2f}x", flush=True)  # fmt: skip

        url = create_database(MARIADB_ADMIN, "store_monitor_bench_polls")
        seconds = fresh_load(url, folder)
        loaded, optimized = data_length_mb(url), data_length_mb(url, optimize=True)
        print(f"MariaDB load-data {seconds:.2f} s; polls data_length {loaded:.1f} MB, after "
              f"OPTIMIZE {optimized:.1f} MB ({loaded / optimized:.2f}x)", flush=True)  # fmt: skip

        url = create_database(MARIADB_ADMIN, "store_monitor_bench_polls")
        fresh_load(url, folder)
        hourly_uploads(url, scratch)
        appended = data_length_mb(url)
        sticks = [yardstick(folder) for _ in range(2)]
        reports = warm_report(url, scratch)
        sticks += [yardstick(folder) for _ in range(2)]
        compacted = data_length_mb(url, optimize=True)
        print(f"after {UPLOADS} uploads of {UPLOAD_POLLS:,}: data_length {appended:.1f} MB, "
              f"after OPTIMIZE {compacted:.1f} MB ({appended / compacted:.2f}x)")  # fmt: skip
    stick = statistics.median(sticks)
    listed = ", ".join(f"{s:.2f}" for s in sticks)
    print(f"MariaDB warm report: {', '.join(f'{s:.2f}' for s in reports)} s; yardstick just "
          f"before and after: {listed} s (median {stick:.2f})")  # fmt: skip
    print(f"SQLite load / yardstick: median {statistics.median(sqlite_ratios):.2f}x "
          f"(runs {min(sqlite_ratios):.2f}-{max(sqlite_ratios):.2f}x)")  # fmt: skip
    print(f"MariaDB warm report / yardstick: {statistics.median(reports) / stick:.2f}x "
          f"(runs {min(reports) / stick:.2f}-{max(reports) / stick:.2f}x)")  # fmt: skip


if __name__ == "__main__":
    main()
