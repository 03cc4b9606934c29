"""Benchmark the service from one process to many, on MariaDB: loop-full and 10× its stores.

For each data size: load it with `flask load-data` (wall time, peak RSS), then compute a report
(`POST /trigger_report` → Complete, median of 3) with the embedded executor (one
`python app.py`), and with 1 and 2 Celery worker processes (`flask --app app worker
--concurrency 1` each); print every process's peak RSS (VmHWM, children included).

The 10× set is made at bench time, never committed: every store of loop-full copied 10 times
under new ids (`<id>-<k>`, k = 0..9), each copy with the same polls, hours and time zone:
139,030 stores, 19.6 M polls. It is written to a scratch folder (BENCH_SCRATCH, default a
temporary one) and removed afterwards.

    python bench/bench_scaleout.py [--sizes 1,10] [--broker amqp://guest:guest@127.0.0.1:5672//]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from common import MARIADB_ADMIN, ROOT, require_full_data, trigger_to_complete

sys.path.insert(0, str(ROOT))
from tests.databases import create_database, drop_database
from tests.server import FLASK, ServerProcess, WorkerProcess, clean_environment


def scaled_copy(folder: Path, factor: int, out: Path) -> Path:
    """`factor` copies of every store of `folder` under new ids, as CSV files in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    polls = pd.read_csv(folder / "store_status.csv.gz", dtype=str)
    hours = pd.read_csv(folder / "menu_hours.csv", dtype=str)
    zones = pd.read_csv(next(folder.glob("bq-results-*.csv")), dtype=str)
    for frame, name in ((polls, "store_status.csv"), (hours, "menu_hours.csv")):
        path = out / name
        for k in range(factor):
            copy = frame.assign(store_id=frame["store_id"] + f"-{k}")
            copy.to_csv(path, index=False, header=k == 0, mode="w" if k == 0 else "a")
    pd.concat([zones.assign(store_id=zones["store_id"] + f"-{k}") for k in range(factor)]).to_csv(
        out / "timezones.csv", index=False
    )
    return out


def load(database_url: str, folder: Path) -> tuple[float, float]:
    """Seconds and peak RSS (MB) of `flask load-data` in a child process."""
    environment = clean_environment(DATABASE_URL=database_url)
    command = ["/usr/bin/time", "-f", "%M", *FLASK]
    subprocess.run(
        [*command, "init-db"], cwd=ROOT, env=environment, check=True, capture_output=True
    )
    start = time.perf_counter()
    done = subprocess.run(
        [*command, "load-data", str(folder)],
        cwd=ROOT,
        env=environment,
        check=True,
        capture_output=True,
        text=True,
    )
    return time.perf_counter() - start, int(done.stderr.strip().splitlines()[-1]) / 1024


def peak_rss_mb(pid: int) -> float:
    """VmHWM of a process and of each of its descendants: the largest one, in MB."""
    peaks = []
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except FileNotFoundError:
            continue
        peaks += [int(line.split()[1]) / 1024 for line in status.splitlines() if "VmHWM" in line]
        pending += [int(child) for child in children]
    return max(peaks, default=float("nan"))


def measure(label: str, database_url: str, scratch: Path, broker: str | None, workers: int):
    settings = {"CELERY_BROKER_URL": broker} if broker else {}
    started = [
        WorkerProcess(database_url, broker, scratch / f"{label}-w{n}.log").start()
        for n in range(workers)
    ]
    server = ServerProcess(
        database_url, scratch / f"r-{label}", scratch / f"{label}.log", **settings
    )
    server.start(timeout=1800)  # ready once the loads are evaluated: 10x takes a while
    try:
        times = [trigger_to_complete(server.url) for _ in range(3)]
        peaks = [peak_rss_mb(server.process.pid)] + [peak_rss_mb(w.process.pid) for w in started]
    finally:
        server.stop()
        for worker in started:
            worker.stop()
    listed = ", ".join(f"{t:.2f}" for t in times)
    rss = " / ".join(f"{p:.0f}" for p in peaks)
    print(
        f"  report {label:<18} median {statistics.median(times):6.2f} s ({listed}); "
        f"peak RSS MB server{' / workers' if workers else ''}: {rss}",
        flush=True,
    )
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,10", help="data sizes, as multiples of loop-full")
    parser.add_argument("--broker", default="amqp://guest:guest@127.0.0.1:5672//")
    args = parser.parse_args()
    folder = require_full_data()
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_SCRATCH")) as scratch_name:
        scratch = Path(scratch_name)
        medians = {}
        for factor in (int(size) for size in args.sizes.split(",")):
            data = folder if factor == 1 else scaled_copy(folder, factor, scratch / f"x{factor}")
            url = create_database(MARIADB_ADMIN, f"store_monitor_bench_x{factor}")
            try:
                seconds, peak = load(url, data)
                print(f"{factor}x: load {seconds:.1f} s, peak RSS {peak:.0f} MB", flush=True)
                medians[factor] = [
                    measure("embedded", url, scratch, None, 0),
                    measure("celery, 1 worker", url, scratch, args.broker, 1),
                    measure("celery, 2 workers", url, scratch, args.broker, 2),
                ]
            finally:
                drop_database(MARIADB_ADMIN, f"store_monitor_bench_x{factor}")
        if 1 in medians and len(medians) > 1:
            for factor, values in medians.items():
                ratios = ", ".join(
                    f"{v / base:.1f}x" for v, base in zip(values, medians[1], strict=True)
                )
                print(f"{factor}x data: report time {ratios} of loop-full (embedded, 1, 2 workers)")


if __name__ == "__main__":
    main()
