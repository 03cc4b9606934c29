"""Hostile uploads against a real server: peak memory, seconds, and rows per second.

Each body below is posted to a fresh `python app.py` on a fresh SQLite database (or MariaDB
with `--mariadb`); the server's peak RSS (VmHWM, reset before each body through
/proc/<pid>/clear_refs) and the request's wall time are printed with the answer. A body that
takes the server beyond `--max-rss-mb` kills it (the line says so): the old code needed that.

    python bench/bench_bombs.py [--only NAME ...] [--max-rss-mb 6000] [--mariadb]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import requests
from common import MARIADB_ADMIN, ROOT

sys.path.insert(0, str(ROOT))
from tests.server import ServerProcess, run_cli

POLL_HEADER = b"store_id,status,timestamp_utc\n"
HOURS_HEADER = b"store_id,day,start_time_local,end_time_local\n"
GOOD_POLL = b"1,active,2023-01-22 12:00:00 UTC\n"
LIMIT = 64 << 20  # INGEST_MAX_BYTES
CSV = {"Content-Type": "text/csv"}
GZIP_CSV = {**CSV, "Content-Encoding": "gzip"}
NDJSON = {"Content-Type": "application/x-ndjson"}
GZIP_NDJSON = {**NDJSON, "Content-Encoding": "gzip"}


def deflated(head: bytes, block: bytes, total: int, level: int = 9) -> bytes:
    """One gzip member holding `head`, then `block` repeated as often as fits in `total`
    bytes, compressed as it goes."""
    packer = zlib.compressobj(level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    parts = [packer.compress(head)]
    parts += [packer.compress(block) for _ in range((total - len(head)) // len(block))]
    parts.append(packer.flush())
    return b"".join(parts)


def repeated(line: bytes, size: int) -> bytes:
    """`line` repeated into a block of about `size` bytes (whole lines)."""
    return line * max(1, size // len(line))


def bombs() -> dict[str, Callable[[], tuple[str, dict, bytes, str]]]:
    """name → (path, headers, body, what it is), built lazily."""
    mb_of_polls = repeated(GOOD_POLL, 1 << 20)
    return {
        "multi-member": lambda: (
            "/polls",
            GZIP_CSV,
            gzip.compress(POLL_HEADER, mtime=0)
            + b"".join(gzip.compress(GOOD_POLL * 63_000, mtime=0) for _ in range(40)),
            "41 gzip members, 40 of 2 MB of polls (80 MB decompressed)",
        ),
        "multi-member-valid": lambda: (
            "/polls",
            GZIP_CSV,
            gzip.compress(POLL_HEADER + GOOD_POLL * 40_000, mtime=0)
            + b"".join(gzip.compress(GOOD_POLL * 40_000, mtime=0) for _ in range(2)),
            "3 gzip members of 1.3 MB of polls each (4 MB decompressed, valid)",
        ),
        "identity-gzip": lambda: (
            "/polls",
            CSV,
            deflated(POLL_HEADER, mb_of_polls, 2200 << 20, level=9),
            "gzip of 2.2 GB of polls sent without Content-Encoding",
        ),
        "gzip-in-gzip": lambda: (
            "/polls",
            GZIP_CSV,
            gzip.compress(deflated(POLL_HEADER, mb_of_polls, 1000 << 20, level=9), 9, mtime=0),
            "gzip of a gzip of 1 GB of polls, sent as gzip",
        ),
        "hours-duplicates": lambda: (
            "/business_hours",
            GZIP_CSV,
            deflated(HOURS_HEADER, repeated(b"1,0,09:00,17:00\n", 1 << 20), LIMIT - (1 << 20)),
            "63 MB of one identical hours row (4 M rows), as gzip",
        ),
        "ndjson-ones": lambda: (
            "/polls",
            GZIP_NDJSON,
            deflated(b"", repeated(b"1\n", 1 << 20), LIMIT - 1024),
            "33 M NDJSON lines `1`, as gzip",
        ),
        "ndjson-ones-skip": lambda: (
            "/polls?skip_invalid=true",
            GZIP_NDJSON,
            deflated(b"", repeated(b"1\n", 1 << 20), LIMIT - 1024),
            "33 M NDJSON lines `1`, as gzip, skip_invalid",
        ),
        "ndjson-objects-skip": lambda: (
            "/polls?skip_invalid=true",
            GZIP_NDJSON,
            deflated(
                b"",
                repeated(b'{"store_id":1,"status":"\\u0061","timestamp_utc":2}\n', 1 << 20),
                LIMIT - 1024,
            ),
            "1.3 M NDJSON objects with escapes and a number stamp, skip_invalid",
        ),
        "ndjson-bad-status-skip": lambda: (
            "/polls?skip_invalid=true",
            GZIP_NDJSON,
            deflated(
                b"",
                repeated(
                    json.dumps(
                        {"store_id": "1", "status": "x", "timestamp_utc": "2023-01-22T12:00:00Z"}
                    ).encode()
                    + b"\n",
                    1 << 20,
                ),
                LIMIT - 1024,
            ),
            "NDJSON objects with a bad status (64 MB), skip_invalid",
        ),
        "csv-malformed": lambda: (
            "/polls",
            GZIP_CSV,
            deflated(POLL_HEADER, repeated(b"x\n", 1 << 20), LIMIT - 1024),
            "33 M CSV lines `x` (a field count of 1), as gzip",
        ),
        "csv-malformed-skip": lambda: (
            "/polls?skip_invalid=true",
            GZIP_CSV,
            deflated(POLL_HEADER, repeated(b"x\n", 1 << 20), LIMIT - 1024),
            "33 M CSV lines `x`, as gzip, skip_invalid",
        ),
        "csv-quoted-malformed-skip": lambda: (
            "/polls?skip_invalid=true",
            GZIP_CSV,
            deflated(POLL_HEADER, repeated(b'"x"\n', 1 << 20), LIMIT - 1024),
            '16 M CSV lines `"x"` (quoted: fields counted by the csv module), skip_invalid',
        ),
        "csv-bad-status-skip": lambda: (
            "/polls?skip_invalid=true",
            GZIP_CSV,
            deflated(
                POLL_HEADER, repeated(b"1,x,2023-01-22 12:00:00 UTC\n", 1 << 20), LIMIT - 1024
            ),
            "CSV polls with a bad status (64 MB), skip_invalid",
        ),
        "csv-valid": lambda: (
            "/polls",
            GZIP_CSV,
            deflated(POLL_HEADER, repeated(GOOD_POLL, 1 << 20), LIMIT - 1024),
            "64 MB of valid CSV polls of one store and one instant, as gzip",
        ),
        "csv-many-stores": lambda: (
            "/polls",
            GZIP_CSV,
            gzip.compress(
                POLL_HEADER
                + b"".join(b"%d,active,2023-01-22 12:00:00 UTC\n" % n for n in range(1_700_000)),
                1,
                mtime=0,
            ),
            "1.7 M polls of 1.7 M different stores (63 MB), as gzip",
        ),
    }


def rss_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def reset_peak(pid: int) -> None:
    """Reset the process's VmHWM to its current RSS (Linux ≥ 4.0, own processes)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def post_watched(
    server: ServerProcess, path: str, headers: dict, body: bytes, cap_mb: int, cap_seconds: float
):
    """Post while watching the server's RSS; kill it beyond `cap_mb` or `cap_seconds`.
    Returns (status or None, answer text, seconds, peak MB, why it was killed or None)."""
    pid = server.process.pid
    reset_peak(pid)
    answer: dict = {}
    killed: list[str] = []

    def send() -> None:
        try:
            response = requests.post(server.url + path, data=body, headers=headers, timeout=900)
            answer["status"], answer["text"] = response.status_code, response.text
        except requests.RequestException as exc:
            answer["status"], answer["text"] = None, f"{type(exc).__name__}"

    start = time.perf_counter()
    sender = threading.Thread(target=send)
    sender.start()
    peak = 0
    while sender.is_alive():
        try:
            peak = max(peak, rss_kb(pid, "VmHWM"))
        except FileNotFoundError:
            break
        elapsed = time.perf_counter() - start
        if not killed and (peak > cap_mb * 1024 or elapsed > cap_seconds):
            killed.append(f"KILLED at {peak // 1024} MB" if peak > cap_mb * 1024 else "TIMEOUT")
            server.kill()
        sender.join(0.1)
    seconds = time.perf_counter() - start
    if not killed:
        peak = max(peak, rss_kb(pid, "VmHWM"))
    why = killed[0] if killed else None
    return answer.get("status"), answer.get("text", ""), seconds, peak / 1024, why


def rate(text: str, seconds: float) -> str:
    """Rows per second of an answer that counts its rows."""
    try:
        answer = json.loads(text)
    except ValueError:
        return ""
    rows = answer.get("received") if isinstance(answer, dict) else None
    return f" ({rows:,} rows, {rows / seconds:,.0f} rows/s)" if rows else ""


def fresh_server(scratch: Path, name: str, mariadb: bool) -> tuple[ServerProcess, str | None]:
    database = None
    if mariadb:
        from tests.databases import create_database

        database = f"sm_bombs_{os.getpid()}"
        url = create_database(MARIADB_ADMIN, database)
    else:
        url = f"sqlite:///{scratch / (name + '.sqlite3')}"
    done = run_cli(url, "init-db")
    if done.returncode != 0:
        raise RuntimeError(done.stderr)
    temp = scratch / f"tmp-{name}"
    temp.mkdir()
    server = ServerProcess(url, scratch / "reports", scratch / f"{name}.log", TMPDIR=str(temp))
    return server.start(), database


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="names of the bodies to post")
    parser.add_argument("--max-rss-mb", type=int, default=6000)
    parser.add_argument("--max-seconds", type=float, default=300)
    parser.add_argument("--mariadb", action="store_true")
    args = parser.parse_args()
    chosen = {name: build for name, build in bombs().items() if not args.only or name in args.only}
    print(f"{'body':<24} {'status':>6} {'seconds':>8} {'peak MB':>8}  answer", flush=True)
    with tempfile.TemporaryDirectory() as folder:
        scratch = Path(folder)
        for name, build in chosen.items():
            path, headers, body, what = build()
            server, database = fresh_server(scratch, name, args.mariadb)
            try:
                status, text, seconds, peak, killed = post_watched(
                    server, path, headers, body, args.max_rss_mb, args.max_seconds
                )
            finally:
                server.stop()
                if database:
                    from tests.databases import drop_database

                    drop_database(MARIADB_ADMIN, database)
            print(
                f"{name:<24} {killed or status!s:>6} {seconds:8.1f} {peak:8.0f}  "
                f"{len(body):,} bytes: {what}{rate(text, seconds)}\n{'':<24} -> {text[:300]}",
                flush=True,
            )


if __name__ == "__main__":
    main()
