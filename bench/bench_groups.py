"""Benchmark a scoped report: POST /trigger_report → Complete for a 100-store group on the full
data set, SQLite and MariaDB, beside the full report (the yardstick of the same run).

Loads the data and a group of 100 stores spread over the whole key range (every 136th store:
a scoped read that read key ranges would read nearly everything), creates a reader key of that
group, starts the real service (`python app.py`), and triggers 3 reports of each kind one after
the other, as the reader and as an admin.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import requests
from common import MARIADB_ADMIN, ROOT, require_full_data

sys.path.insert(0, str(ROOT))
from tests.databases import create_database, drop_database
from tests.server import ServerProcess, run_cli

GROUP_STORES = 100
DATABASE = "store_monitor_bench_groups"  # its own: other benchmarks may run meanwhile


def group_file(folder: Path, scratch: Path) -> Path:
    """A group of GROUP_STORES stores spread evenly over the polls file's stores."""
    ids = pd.read_csv(folder / "store_status.csv.gz", usecols=["store_id"], dtype=str)
    stores = ids["store_id"].drop_duplicates().sort_values().to_numpy()
    step = max(len(stores) // GROUP_STORES, 1)
    chosen = stores[::step][:GROUP_STORES]
    path = scratch / "store_groups.csv"
    path.write_text("group_id,store_id\n" + "".join(f"owner,{store}\n" for store in chosen))
    return path


def new_token(url: str, *arguments: str) -> str:
    created = run_cli(url, "keys", "create", *arguments)
    if created.returncode != 0:
        raise RuntimeError(created.stderr)
    return created.stdout.splitlines()[-1]


def trigger_to_complete(base_url: str, token: str) -> tuple[float, int]:
    """Seconds from the trigger to the finished report, and its rows."""
    headers = {"Authorization": f"Bearer {token}"}
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
    return elapsed, response.text.count("\n") - 1


def main() -> None:
    folder = require_full_data()
    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        groups = group_file(folder, scratch)
        targets = {
            "SQLite": f"sqlite:///{scratch / 'bench.sqlite3'}",
            "MariaDB": create_database(MARIADB_ADMIN, DATABASE),
        }
        for name, url in targets.items():
            for arguments in ([str(folder)], ["--groups", str(groups)]):
                loaded = run_cli(url, "load-data", *arguments)
                if loaded.returncode != 0:
                    raise RuntimeError(loaded.stderr)
            reader = new_token(url, "owner", "--role", "reader", "--group", "owner")
            admin = new_token(url, "ops", "--role", "admin")
            server = ServerProcess(url, scratch / f"reports-{name}", scratch / "server.log")
            server.start()
            try:
                for label, token in (("100-store group", reader), ("every store", admin)):
                    runs = [trigger_to_complete(server.url, token) for _ in range(3)]
                    times = [seconds for seconds, _ in runs]
                    listed = ", ".join(f"{t:.2f}" for t in times)
                    print(
                        f"{name:<8} {label:<16} trigger → Complete: median "
                        f"{statistics.median(times):.2f} s ({listed}); {runs[-1][1]} rows"
                    )
            finally:
                server.stop()
        drop_database(MARIADB_ADMIN, DATABASE)


if __name__ == "__main__":
    main()
