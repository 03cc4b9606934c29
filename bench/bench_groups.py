"""Benchmark a scoped report: POST /trigger_report → Complete for a 100-store group on the full
data set, SQLite and MariaDB, beside the full report (the yardstick of the same run).

`--scale 10 --group-stores 1000` runs a 1,000-store group on ten copies of the data (each copy's
store ids get a suffix: 136,030 stores, 18 M polls); `--engines SQLite` runs one engine.

Loads the data and a group of 100 stores spread over the whole key range (every 136th store:
a scoped read that read key ranges would read nearly everything), creates a reader key of that
group, starts the real service (`python app.py`), and triggers 3 reports of each kind one after
the other, as the reader and as an admin.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import pandas as pd
from common import MARIADB_ADMIN, ROOT, require_full_data, trigger_and_fetch

sys.path.insert(0, str(ROOT))
from tests.databases import create_database, drop_database
from tests.server import ServerProcess, run_cli

GROUP_STORES = 100
DATABASE = "store_monitor_bench_groups"  # its own: other benchmarks may run meanwhile


def group_file(folder: Path, scratch: Path, size: int = GROUP_STORES) -> Path:
    """A group of `size` stores spread evenly over the polls file's stores."""
    polls = next(folder.glob("store_status.csv*"))
    ids = pd.read_csv(polls, usecols=["store_id"], dtype=str)
    stores = ids["store_id"].drop_duplicates().sort_values().to_numpy()
    step = max(len(stores) // size, 1)
    chosen = stores[::step][:size]
    path = scratch / "store_groups.csv"
    path.write_text("group_id,store_id\n" + "".join(f"owner,{store}\n" for store in chosen))
    return path


def scaled_copy(folder: Path, scratch: Path, factor: int) -> Path:
    """`factor` copies of the data set, the store ids of copy k suffixed with `-k` (k > 0)."""
    if factor == 1:
        return folder
    out = scratch / f"x{factor}"
    out.mkdir()
    sources = {
        "store_status.csv": folder / "store_status.csv.gz",
        "menu_hours.csv": folder / "menu_hours.csv",
        "timezones.csv": next(folder.glob("bq-results-*.csv")),
    }
    for name, source in sources.items():
        frame = pd.read_csv(source, dtype=str)
        original = frame["store_id"].copy()
        for copy in range(factor):
            if copy:
                frame["store_id"] = original + f"-{copy}"
            frame.to_csv(out / name, mode="a" if copy else "w", header=not copy, index=False)
    return out


def new_token(url: str, *arguments: str) -> str:
    created = run_cli(url, "keys", "create", *arguments)
    if created.returncode != 0:
        raise RuntimeError(created.stderr)
    return created.stdout.splitlines()[-1]


def timed_report(base_url: str, token: str | None) -> tuple[float, int]:
    """Seconds from the trigger to the finished report, and its rows."""
    elapsed, csv_text = trigger_and_fetch(base_url, token)
    return elapsed, csv_text.count("\n") - 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=1)
    parser.add_argument("--group-stores", type=int, default=GROUP_STORES)
    parser.add_argument("--engines", nargs="+", default=["SQLite", "MariaDB"])
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        folder = scaled_copy(require_full_data(), scratch, options.scale)
        groups = group_file(folder, scratch, options.group_stores)
        label_of_group = f"{options.group_stores}-store group"
        targets = {
            "SQLite": lambda: f"sqlite:///{scratch / 'bench.sqlite3'}",
            "MariaDB": lambda: create_database(MARIADB_ADMIN, DATABASE),
        }
        for name in options.engines:
            url = targets[name]()
            for arguments in ([str(folder)], ["--groups", str(groups)]):
                loaded = run_cli(url, "load-data", *arguments)
                if loaded.returncode != 0:
                    raise RuntimeError(loaded.stderr)
            reader = new_token(url, "owner", "--role", "reader", "--group", "owner")
            admin = new_token(url, "ops", "--role", "admin")
            server = ServerProcess(url, scratch / f"reports-{name}", scratch / "server.log")
            server.start()
            try:
                for label, token in ((label_of_group, reader), ("every store", admin)):
                    runs = [timed_report(server.url, token) for _ in range(3)]
                    times = [seconds for seconds, _ in runs]
                    listed = ", ".join(f"{t:.2f}" for t in times)
                    print(
                        f"{name:<8} x{options.scale} {label:<17} trigger → Complete: median "
                        f"{statistics.median(times):.2f} s ({listed}); {runs[-1][1]} rows"
                    )
            finally:
                server.stop()
        if "MariaDB" in options.engines:
            drop_database(MARIADB_ADMIN, DATABASE)


if __name__ == "__main__":
    main()
