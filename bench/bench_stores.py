"""Benchmark loads that create or look up millions of store ids: seconds and peak RSS.

A polls file with `--stores` different store ids (decimal numbers, one poll each) is loaded
with `flask load-data` in a child process on a fresh SQLite and MariaDB database: first when
every id is new, then again when every id is stored (each must be looked up, none created).
The yardstick (pandas reading the same file) runs in the same run: the machine is shared.
The same body posted to a server is `bench_bombs.py --only csv-many-stores [--mariadb]`.

    python bench/bench_stores.py [--stores 1700000]
"""

from __future__ import annotations

import argparse
import gzip
import os
import tempfile
import time
from pathlib import Path

import pandas as pd
from bench_load import load_in_child
from common import MARIADB_ADMIN


def polls_of_new_stores(path: Path, stores: int) -> Path:
    """A gzip polls CSV with one poll of each of `stores` different ids."""
    with gzip.open(path, "wb", compresslevel=1) as out:
        out.write(b"store_id,status,timestamp_utc\n")
        step = 100_000
        for start in range(0, stores, step):
            out.write(
                b"".join(
                    b"%d,active,2023-01-22 12:00:00 UTC\n" % n
                    for n in range(start, min(start + step, stores))
                )
            )
    return path


def yardstick(path: Path) -> float:
    start = time.perf_counter()
    pd.read_csv(path, dtype=str)
    return time.perf_counter() - start


def main() -> None:
    from tests.databases import create_database, drop_database

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stores", type=int, default=1_700_000)
    args = parser.parse_args()
    mariadb = f"sm_bench_stores_{os.getpid()}"  # its own: others may bench at the same time
    with tempfile.TemporaryDirectory() as folder:
        scratch = Path(folder)
        polls = polls_of_new_stores(scratch / "store_status.csv.gz", args.stores)
        print(f"yardstick (pandas reads the file) {yardstick(polls):6.1f} s", flush=True)
        urls = {
            "SQLite": f"sqlite:///{scratch / 'bench.sqlite3'}",
            "MariaDB": create_database(MARIADB_ADMIN, mariadb),
        }
        try:
            for name, url in urls.items():
                for what in ("new ids", "stored ids"):
                    seconds, peak, line = load_in_child(url, None, "--polls", str(polls))
                    print(
                        f"load  {name:<8} {args.stores:,} {what:<10} {seconds:6.1f} s  "
                        f"peak RSS {peak:5.0f} MB   ({line})",
                        flush=True,
                    )
        finally:
            drop_database(MARIADB_ADMIN, mariadb)


if __name__ == "__main__":
    main()
