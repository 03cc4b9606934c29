"""Benchmark the evaluation of incidents and alert rules after an upload, on loop-full.

For SQLite and MariaDB: loop-full loaded (`loader.load`), a first evaluation (every store), one
alert rule, then 10,000-poll uploads an hour apart after the data's latest poll (the next poll
of 10,000 stores: each as its latest poll was, the hourly case; half of them inactive; all
active again; all active) and the evaluation that follows each, timed alone (with how long the
upload took to load, and dropping its rows for the evaluation after it). With `--repeat N`
each evaluation runs N times from the same state (the tables it writes are put back between
runs) and the fastest and the median are printed: one run on a 2-core machine varies by a
third. The yardstick (pandas reading the polls file) runs in the same process, since the
machine's speed varies from day to day.

    python bench/bench_alerts.py [--rows 10000] [--only SQLite|MariaDB] [--repeat 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from common import ROOT, require_full_data, targets

sys.path.insert(0, str(ROOT))
from sqlalchemy import text

import loader
from app import create_app
from jobs import alerts, last_evidence
from models import AlertRule, db, init_schema

EVALUATED_TABLES = ("incidents", "evidenced_stores", "alert_events", "alert_state")


def next_hour_polls(folder: Path, rows: int, out: Path, hours: int, mode: str) -> Path:
    """`rows` polls of distinct stores, `hours` after the latest poll: each store's status as
    its latest poll had it (`as-before`), every second one inactive (`half-down`), or all
    active (`all-active`)."""
    polls = pd.read_csv(folder / "store_status.csv.gz", dtype=str)
    instants = pd.to_datetime(polls["timestamp_utc"].str.removesuffix(" UTC"), format="ISO8601")
    latest = polls.assign(at=instants).sort_values("at").drop_duplicates("store_id", keep="last")
    stores = polls["store_id"].drop_duplicates().head(rows)
    moment = (instants.max() + pd.Timedelta(hours=hours)).strftime("%Y-%m-%d %H:%M:%S.%f UTC")
    if mode == "as-before":
        status = latest.set_index("store_id")["status"].reindex(stores).to_numpy()
    else:
        down = mode == "half-down"
        status = ["inactive" if n % 2 and down else "active" for n in range(len(stores))]
    frame = pd.DataFrame({"store_id": stores, "status": status, "timestamp_utc": moment})
    frame.to_csv(out, index=False)
    return out


def yardstick(folder: Path) -> float:
    start = time.perf_counter()
    pd.read_csv(folder / "store_status.csv.gz")
    return time.perf_counter() - start


def run(name: str, url: str, folder: Path, uploads: list[Path], scratch: Path, repeat: int) -> None:
    app = create_app(
        {
            "DATABASE_URL": url,
            "REPORTS_DIR": str(scratch / "reports"),
            "REPORTS_INLINE": True,
            "START_BACKGROUND": False,
        }
    )
    with app.app_context():
        init_schema()
        started = time.perf_counter()
        loader.load(db.engine, folder)
        loaded = time.perf_counter() - started
        started = time.perf_counter()
        first = alerts.evaluate()
        first_seconds = time.perf_counter() - started
        db.session.add(AlertRule(url="http://192.0.2.1/", secret="x", after_us=15 * 60 * 10**6))
        db.session.commit()
        print(
            f"{name}: load {loaded:.1f} s; first evaluation {first_seconds:.2f} s "
            f"({first.stores} stores)"
        )
        for upload in uploads:
            started = time.perf_counter()
            loader.load(db.engine, polls=upload)
            loaded = time.perf_counter() - started
            seconds, after = evaluations(repeat)
            started = time.perf_counter()
            alerts.forget_evaluated_batches(after.batch)  # as the service does after one
            dropped = time.perf_counter() - started
            times = (
                f"{min(seconds):.2f} s"
                if repeat == 1
                else (
                    f"fastest {min(seconds):.2f} s, median {statistics.median(seconds):.2f} s "
                    f"of {repeat}"
                )
            )
            print(
                f"{name}: evaluation after {upload.name}: {times} "
                f"({after.stores} stores, {getattr(after, 'carried', 0)} carried forward, "
                f"{getattr(after, 'remembered', 0)} from memory, {after.events} events; "
                f"the upload loaded in {loaded:.2f} s, its rows for the evaluation dropped in "
                f"{dropped:.2f} s)"
            )
        db.engine.dispose()


def evaluations(repeat: int) -> tuple[list[float], alerts.Evaluation]:
    """Time the evaluation `repeat` times from the same state: the tables it writes, and what
    the process keeps in memory of the stores' timelines, are copied first and put back after
    each run but the last."""
    kept = last_evidence.saved()
    if repeat > 1:
        statements(
            [f"DROP TABLE IF EXISTS saved_{table}" for table in EVALUATED_TABLES]
            + [f"CREATE TABLE saved_{table} AS SELECT * FROM {table}" for table in EVALUATED_TABLES]
        )
    seconds = []
    for attempt in range(repeat):
        started = time.perf_counter()
        after = alerts.evaluate()
        seconds.append(time.perf_counter() - started)
        if attempt < repeat - 1:
            last_evidence.restore(kept)
            statements(
                [f"DELETE FROM {table}" for table in EVALUATED_TABLES]
                + [f"INSERT INTO {table} SELECT * FROM saved_{table}" for table in EVALUATED_TABLES]
            )
    return seconds, after


def statements(sql: list[str]) -> None:
    with db.engine.begin() as conn:
        for one in sql:
            conn.execute(text(one))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--only", choices=["SQLite", "MariaDB"])
    parser.add_argument("--repeat", type=int, default=1, help="runs of each evaluation")
    args = parser.parse_args()
    folder = require_full_data()
    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        uploads = [
            next_hour_polls(folder, args.rows, scratch / "as-before.csv", 1, "as-before"),
            next_hour_polls(folder, args.rows, scratch / "half-down.csv", 2, "half-down"),
            next_hour_polls(folder, args.rows, scratch / "all-back.csv", 3, "all-active"),
            next_hour_polls(folder, args.rows, scratch / "all-up.csv", 4, "all-active"),
        ]
        print(f"yardstick (pandas reads the polls file): {yardstick(folder):.2f} s")
        for name, url in targets(scratch).items():
            if args.only in (None, name):
                run(name, url, folder, uploads, scratch, args.repeat)


if __name__ == "__main__":
    main()
