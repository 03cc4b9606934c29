"""Bounded load test against a running server: concurrent clients mixing trigger and fetch.

Each client loops until the time is up: with probability `--trigger-share` it triggers a
report (remembering its id), else it fetches one of its reports (or lists reports). At the end
every triggered report is polled until it is Complete or Failed: a report that is neither, or
unknown to the server, is lost. Prints status counts, 5xx count, lost reports and latency
percentiles; exits non-zero on any 5xx or lost report. Talks only to the given local URL.

    python bench/load_test.py --url http://127.0.0.1:5000 --clients 200 --seconds 30
"""

from __future__ import annotations

import argparse
import collections
import random
import sys
import threading
import time
from urllib.parse import urlparse

import requests

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


class Results:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latencies: dict[str, list[float]] = collections.defaultdict(list)
        self.statuses: collections.Counter = collections.Counter()
        self.triggered: list[str] = []
        self.errors: list[str] = []

    def record(self, kind: str, status: int, seconds: float) -> None:
        with self.lock:
            self.latencies[kind].append(seconds)
            self.statuses[(kind, status)] += 1


def client(url: str, deadline: float, share: float, results: Results, seed: int) -> None:
    rng = random.Random(seed)
    session = requests.Session()
    mine: list[str] = []
    while time.monotonic() < deadline:
        try:
            if rng.random() < share or not mine:
                kind, start = "trigger", time.perf_counter()
                response = session.post(f"{url}/trigger_report", timeout=60)
                if response.status_code == 202:
                    mine.append(response.json()["report_id"])
                    with results.lock:
                        results.triggered.append(mine[-1])
            elif rng.random() < 0.1:
                kind, start = "list", time.perf_counter()
                response = session.get(f"{url}/reports?limit=20", timeout=60)
            else:
                kind, start = "get", time.perf_counter()
                response = session.get(f"{url}/get_report/{rng.choice(mine)}", timeout=60)
            results.record(kind, response.status_code, time.perf_counter() - start)
            if response.status_code == 429:
                time.sleep(min(float(response.headers.get("Retry-After", "1")), 0.5))
        except requests.RequestException as exc:
            with results.lock:
                results.errors.append(f"{type(exc).__name__}: {exc}")


def settle(url: str, report_ids: list[str], timeout: float) -> list[str]:
    """Poll every triggered report until it is done; return the ids that are lost."""
    deadline = time.monotonic() + timeout
    pending = list(report_ids)
    lost: list[str] = []
    while pending and time.monotonic() < deadline:
        still = []
        for report_id in pending:
            response = requests.get(f"{url}/get_report/{report_id}", timeout=60)
            if response.status_code == 202:
                still.append(report_id)
            elif response.status_code not in (200, 422):
                lost.append(report_id)
        pending = still
        if pending:
            time.sleep(0.5)
    return lost + pending


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(share * len(ordered)), len(ordered) - 1)] if ordered else float("nan")


def run(url: str, clients: int, seconds: float, share: float = 0.2) -> dict:
    host = urlparse(url).hostname
    if host not in LOCAL_HOSTS:
        raise SystemExit(f"refusing to load {host}: this test only targets the local machine")
    results = Results()
    deadline = time.monotonic() + seconds
    threads = [
        threading.Thread(target=client, args=(url, deadline, share, results, n), daemon=True)
        for n in range(clients)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 120)
    lost = settle(url, results.triggered, timeout=300)
    server_errors = sum(count for (_, status), count in results.statuses.items() if status >= 500)
    return {"results": results, "lost": lost, "server_errors": server_errors}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:5000")
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--trigger-share", type=float, default=0.2)
    args = parser.parse_args()
    outcome = run(args.url, args.clients, args.seconds, args.trigger_share)
    results: Results = outcome["results"]
    total = sum(results.statuses.values())
    rate = total / args.seconds
    print(f"{args.clients} clients, {args.seconds:.0f} s: {total} requests ({rate:.0f}/s)")
    for (kind, status), count in sorted(results.statuses.items()):
        print(f"  {kind:<8} {status}: {count}")
    for kind, values in sorted(results.latencies.items()):
        p50, p95, p99 = (percentile(values, q) * 1000 for q in (0.5, 0.95, 0.99))
        print(
            f"  latency {kind:<8} p50 {p50:7.1f} ms  p95 {p95:7.1f} ms  p99 {p99:7.1f} ms  max "
            f"{max(values) * 1000:7.1f} ms"
        )
    print(
        f"reports triggered: {len(results.triggered)}, lost: {len(outcome['lost'])}, "
        f"5xx: {outcome['server_errors']}, client errors: {len(results.errors)}"
    )
    return 1 if outcome["server_errors"] or outcome["lost"] or results.errors else 0


if __name__ == "__main__":
    sys.exit(main())
