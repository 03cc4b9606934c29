"""Benchmark a scoped report: POST /trigger_report → Complete for a 100-store group on the full
data set, SQLite and MariaDB, beside the full report (the yardstick of the same run).

`--scale 10 --group-stores 1000` runs a 1,000-store group on ten copies of the data (each copy's
store ids get a suffix: 136,030 stores, 18 M polls); `--engines SQLite` runs one engine.

Loads the data and a group of 100 stores spread over the whole key range (every 136th store:
a scoped read that read key ranges would read nearly everything), creates a reader key of that
group, starts the real service (`python app.py`), and triggers 3 reports of each kind one after
the other, as the reader and as an admin.

`--keep DIR` keeps the copies and the loaded databases in DIR and reuses them on the next run
with the same options (so the loads can be made beforehand, on a busy machine, and the reports
timed later on a quiet one).
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
    if (out / "done").exists():
        return out
    out.mkdir(exist_ok=True)
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
    (out / "done").touch()
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
    parser.add_argument("--keep", type=Path, help="keep (and reuse) copies and databases here")
    parser.add_argument("--prepare-only", action="store_true", help="with --keep: load, no timing")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = options.keep or Path(scratch_name)
        scratch.mkdir(parents=True, exist_ok=True)
        folder = scaled_copy(require_full_data(), scratch, options.scale)
        groups = group_file(folder, scratch, options.group_stores)
        label_of_group = f"{options.group_stores}-store group"
        tag = f"x{options.scale}_g{options.group_stores}"
        targets = {
            "SQLite": lambda: f"sqlite:///{scratch / f'bench_{tag}.sqlite3'}",
            "MariaDB": lambda: create_database(MARIADB_ADMIN, f"{DATABASE}_{tag}"),
        }
        for name in options.engines:
            url, tokens = prepared(name, targets, scratch / f"{name}_{tag}.tokens", folder, groups)
            if options.prepare_only:
                continue
            # Many stores take a while to evaluate at start-up (the server is ready after it).
            server = ServerProcess(url, scratch / f"reports-{name}", scratch / "server.log")
            server.start(timeout=1800)
            reader, admin = tokens
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
        if "MariaDB" in options.engines and not options.keep:
            drop_database(MARIADB_ADMIN, f"{DATABASE}_{tag}")


def prepared(name: str, targets: dict, tokens: Path, folder: Path, groups: Path):
    """The database's URL and the (reader, admin) tokens: loaded and created now, or by an
    earlier run with `--keep` (whose tokens file is written once everything is in place)."""
    if tokens.exists():
        url, reader, admin = tokens.read_text().splitlines()
        return url, (reader, admin)
    url = targets[name]()
    for arguments in ([str(folder)], ["--groups", str(groups)]):
        loaded = run_cli(url, "load-data", *arguments)
        if loaded.returncode != 0:
            raise RuntimeError(loaded.stderr)
    reader = new_token(url, "owner", "--role", "reader", "--group", "owner")
    admin = new_token(url, "ops", "--role", "admin")
    tokens.write_text(f"{url}\n{reader}\n{admin}\n")
    return url, (reader, admin)


if __name__ == "__main__":
    main()
