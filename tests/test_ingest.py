"""HTTP ingestion: pushed polls, hours, zones and closures, on SQLite and MariaDB."""

from __future__ import annotations

import gzip
import json
import os
import pathlib
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import pandas as pd
import pytest
import requests
from sqlalchemy import text

import loader
from jobs import results, snapshot, steps
from jobs.executors import InlineExecutor
from jobs.options import ReportRequest
from loading import ndjson, sources
from models import Report, db
from tests.conftest import SAMPLE, make_app
from tests.loading import contents
from tests.server import ServerProcess, run_cli
from web import ingest

CSV = {"Content-Type": "text/csv"}
GZIP_CSV = {**CSV, "Content-Encoding": "gzip"}
NDJSON = {"Content-Type": "application/x-ndjson"}
POLL_HEADER = "store_id,status,timestamp_utc\n"
GOOD_NDJSON = b'{"store_id": "11", "status": "active", "timestamp_utc": "2023-01-22T12:00:00Z"}'


def report_csv(app) -> bytes:
    with app.app_context():
        report_id = steps.submit_report(ReportRequest(), InlineExecutor())
        row = db.session.get(Report, report_id)
        assert row.status == "Complete", row.error
        return results.local_csv(row).read_bytes()


def csv_body(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False).encode()


def ndjson_body(frame: pd.DataFrame) -> bytes:
    return "".join(json.dumps(record) + "\n" for record in frame.to_dict("records")).encode()


def post(client, path: str, body: bytes, headers=CSV, **query):
    return client.post(path, data=body, headers=headers, query_string=query)


def sample_frames() -> dict[str, pd.DataFrame]:
    return {
        "polls": pd.read_csv(SAMPLE / "store_status.csv", dtype=str),
        "hours": pd.read_csv(SAMPLE / "menu_hours.csv", dtype=str),
        "zones": pd.read_csv(SAMPLE / "timezones.csv", dtype=str),
    }


def test_polls_posted_in_pieces_equal_the_file_loaded_by_load_data(database_url, tmp_path):
    # Zones and hours as CSV, polls in 7 pieces: plain CSV, gzip CSV and NDJSON. The report is
    # byte for byte the one of the same files loaded by `load-data` into another database.
    posted = make_app(database_url, tmp_path / "posted")
    client = posted.test_client()
    frames = sample_frames()
    assert post(client, "/timezones", csv_body(frames["zones"])).status_code == 200
    assert post(client, "/business_hours", csv_body(frames["hours"])).status_code == 200
    pieces = [frames["polls"].iloc[i::7] for i in range(7)]
    for number, piece in enumerate(pieces):
        if number % 3 == 0:
            response = post(client, "/polls", ndjson_body(piece), NDJSON)
        elif number % 3 == 1:
            response = post(
                client,
                "/polls",
                gzip.compress(csv_body(piece)),
                {**CSV, "Content-Encoding": "gzip"},
            )
        else:
            response = post(client, "/polls", csv_body(piece))
        assert response.status_code == 200, response.get_json()
        assert response.get_json()["received"] == len(piece)
    loaded = make_app(f"sqlite:///{tmp_path / 'loaded.sqlite3'}", tmp_path / "loaded")
    with loaded.app_context():
        loader.load(db.engine, SAMPLE)
    assert report_csv(posted) == report_csv(loaded)


def test_a_retried_body_stores_nothing_new(client):
    frames = sample_frames()
    body = csv_body(frames["polls"].head(500))
    first = post(client, "/polls", body).get_json()
    again = post(client, "/polls", body).get_json()
    assert first["stored"] == 500 - first["duplicates"] and first["batch"] == 1
    assert again == {**first, "batch": 2, "stored": 0, "duplicates": 500}
    hours = csv_body(frames["hours"])
    assert post(client, "/business_hours", hours).get_json()["stored"] == len(frames["hours"])
    retried = post(client, "/business_hours", hours).get_json()
    assert retried["stored"] == 0 and retried["unchanged"] == len(frames["hours"])


GOOD = "11,active,2023-01-22 12:09:39.388884 UTC\n"
BAD_BODIES = [
    ("/polls", POLL_HEADER + GOOD + "12,actve,2023-01-22 12:09:39 UTC\n", 3, "status"),
    ("/polls", POLL_HEADER + GOOD + "12,active,2023-01-22 25:09:39 UTC\n", 3, "timestamp_utc"),
    ("/polls", POLL_HEADER + GOOD + ",active,2023-01-22 12:00:00 UTC\n", 3, "store_id"),
    ("/polls", POLL_HEADER + GOOD + "9" * 200 + ",active,2023-01-22 12:00:00 UTC\n", 3, "store_id"),
    ("/polls", POLL_HEADER + GOOD + "13,active,3023-01-22 12:00:00 UTC\n", 3, "timestamp_utc"),
    ("/polls", POLL_HEADER + GOOD + "1\x014,active,2023-01-22 12:00:00 UTC\n", 3, "store_id"),
    ("/polls", POLL_HEADER + GOOD + "14,active,2023-01-22 12:00:00 UTC,extra\n", 3, "*"),
    (
        "/business_hours",
        "store_id,day,start_time_local,end_time_local\n1,7,09:00:00,17:00:00\n",
        2,
        "day",
    ),
    (
        "/business_hours",
        "store_id,day,start_time_local,end_time_local\n1,1,9am,17:00:00\n",
        2,
        "start_time_local",
    ),
    ("/timezones", "store_id,timezone_str\n1,America/Chicago\n2,Mars/Olympus\n", 3, "timezone_str"),
    (
        "/closures",
        "store_id,start_local,end_local\n1,2023-01-02 10:00,2023-01-01 10:00\n",
        2,
        "end_local",
    ),
    ("/closures", "store_id,start_local,end_local\n1,2023-02-30 10:00,2023-03-01\n", 2, None),
]


@pytest.mark.parametrize("path, body, line, column", BAD_BODIES)
def test_invalid_rows_get_422_with_the_rows_and_nothing_is_stored(app, path, body, line, column):
    client = app.test_client()
    assert post(client, "/polls", csv_body(sample_frames()["polls"].head(50))).status_code == 200
    before = contents(app)
    response = post(client, path, body.encode())
    assert response.status_code == 422
    answer = response.get_json()
    assert answer["error"] == "invalid_rows" and "nothing was stored" in answer["message"]
    assert answer["error_count"] == 1 and answer["errors"][0]["line"] == line
    if column:
        assert answer["errors"][0]["column"] == column
    assert contents(app) == before


@pytest.mark.parametrize(
    "body, fragment",
    [
        (b"store_id,status\n11,active\n", "missing column(s) timestamp_utc"),
        (b"store_id;status;timestamp_utc\n11;active;2023-01-22 12:09:39 UTC\n", "wrong delimiter"),
        ((POLL_HEADER + GOOD).encode() + b"15,activ\xe9,2023-01-22 12:00:00 UTC\n", "not UTF-8"),
    ],
)
def test_a_bad_header_or_encoding_gets_422(sqlite_client, body, fragment):
    response = post(sqlite_client, "/polls", body)
    assert response.status_code == 422 and fragment in response.get_json()["message"]


def test_skip_invalid_stores_the_valid_rows_and_returns_the_rejected(sqlite_client):
    body = POLL_HEADER + GOOD + "12,actve,2023-01-22 12:09:39 UTC\n13,inactive,not a time\n"
    answer = post(sqlite_client, "/polls", body.encode(), skip_invalid="true").get_json()
    assert (answer["received"], answer["stored"], answer["rejected"]) == (3, 1, 2)
    assert [(row["line"], row["column"]) for row in answer["rejected_rows"]] == [
        (3, "status"),
        (4, "timestamp_utc"),
    ]
    assert answer["rejected_rows_truncated"] is False


def test_ndjson_lines_are_numbered_as_sent_and_ids_kept_exact(sqlite_app):
    client = sqlite_app.test_client()
    body = (
        b'{"store_id": 18446744073709551615, "status": "ACTIVE", "timestamp_utc": '
        b'"2023-01-22T12:00:00Z"}\n\n[1]\n{"store_id": 1.5, "status": "active", '
        b'"timestamp_utc": "2023-01-22T12:00:00Z"}\n{"store_id": "y", "status": "on", '
        b'"timestamp_utc": "2023-01-22T12:00:00Z"}\n'
    )
    answer = post(client, "/polls", body, NDJSON, skip_invalid="true").get_json()
    assert answer["stored"] == 1 and answer["rejected"] == 3
    assert [(row["line"], row["column"]) for row in answer["rejected_rows"]] == [
        (3, "*"),
        (4, "*"),
        (5, "status"),
    ]
    assert "not a JSON object" in answer["rejected_rows"][0]["reason"]
    with sqlite_app.app_context():
        assert db.session.scalar(text("SELECT external_id FROM stores")) == "18446744073709551615"


@pytest.mark.parametrize(
    "path, headers, body, status",
    [
        ("/polls", {"Content-Type": "application/json"}, b"{}", 415),
        ("/business_hours", NDJSON, b'{"store_id": "1"}\n', 415),
        ("/polls", {**CSV, "Content-Encoding": "br"}, b"x", 415),
        ("/polls", CSV, b"", 400),
        ("/polls", {**CSV, "Content-Encoding": "gzip"}, b"not gzip at all", 400),
        (
            "/polls",
            {**CSV, "Content-Encoding": "gzip"},
            gzip.compress(b"a" * 100, mtime=0)[:20],
            400,
        ),
    ],
)
def test_wrong_type_encoding_or_empty_body(sqlite_client, path, headers, body, status):
    response = post(sqlite_client, path, body, headers)
    assert response.status_code == status and response.is_json


def test_bodies_beyond_the_limit_get_413_even_when_gzip_hides_the_size(tmp_path):
    app = make_app(f"sqlite:///{tmp_path / 'x.sqlite3'}", tmp_path, INGEST_MAX_BYTES=10_000)
    client = app.test_client()
    rows = POLL_HEADER + GOOD * 1000  # 43 KB of text, 0.2 KB compressed
    bomb = gzip.compress(rows.encode())
    assert len(bomb) < 10_000
    for body, headers in ((rows.encode(), CSV), (bomb, {**CSV, "Content-Encoding": "gzip"})):
        response = post(client, "/polls", body, headers)
        assert response.status_code == 413 and response.get_json()["error"] == (
            "request_entity_too_large"
        )
    with app.app_context():
        assert db.session.scalar(text("SELECT COUNT(*) FROM polls")) == 0


def test_ingestion_needs_the_token(tmp_path):
    app = make_app(f"sqlite:///{tmp_path / 'x.sqlite3'}", tmp_path, API_TOKEN="t0ken")
    client = app.test_client()
    body = (POLL_HEADER + GOOD).encode()
    assert post(client, "/polls", body).status_code == 401
    authorised = {**CSV, "Authorization": "Bearer t0ken"}
    assert post(client, "/polls", body, authorised).status_code == 200


def test_a_held_sqlite_lock_gives_503_quickly_and_stores_nothing(tmp_path):
    # Another connection holds the write lock, as a long `load-data` does: the upload waits
    # INGEST_LOCK_TIMEOUT_MS, then answers 503 with Retry-After; nothing is stored.
    path = tmp_path / "locked.sqlite3"
    app = make_app(f"sqlite:///{path}", tmp_path, INGEST_LOCK_TIMEOUT_MS=300)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        started = time.monotonic()
        response = post(app.test_client(), "/polls", (POLL_HEADER + GOOD).encode())
        waited = time.monotonic() - started
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert response.status_code == 503 and response.headers["Retry-After"].isdigit()
    assert waited < 10  # generous: the point is "not the 30 s busy timeout"
    with app.app_context():
        assert db.session.scalar(text("SELECT COUNT(*) FROM polls")) == 0
        assert db.session.execute(text("PRAGMA busy_timeout")).scalar() == 30_000


def test_concurrent_posters_store_everything_once(database_url, tmp_path):
    app = make_app(database_url, tmp_path)
    polls = sample_frames()["polls"]
    pieces = [csv_body(polls.iloc[i::8]) for i in range(8)]

    def send(body: bytes) -> dict:
        response = post(app.test_client(), "/polls", body)
        assert response.status_code == 200, response.get_json()
        return response.get_json()

    with ThreadPoolExecutor(4) as posters:
        answers = list(posters.map(send, pieces))
    assert sorted(answer["batch"] for answer in answers) == list(range(1, 9))
    unique = len(polls.drop_duplicates(["store_id", "timestamp_utc"]))
    assert sum(answer["stored"] for answer in answers) == unique
    with app.app_context():
        assert db.session.scalar(text("SELECT COUNT(*) FROM polls")) == unique


def test_a_report_sees_each_posted_batch_entirely_or_not_at_all(app, monkeypatch):
    # For each posted batch, in this order (forced by a hook, not by timing): the post has
    # written its rows but not committed; a snapshot is fixed and half its shards are read;
    # the post commits; the other half is read. Each snapshot must read exactly what a read
    # at its watermark reads once all posting is over: no batch partly, none after it.
    polls = sample_frames()["polls"]
    pieces = [polls.iloc[i::6] for i in range(6)]
    as_of = 1_674_691_200_000_000  # 2023-01-26 00:00 UTC
    record_batch = loader._record_batch
    mid_post: list[tuple[snapshot.Snapshot, int]] = []

    def read_half_before_commit(conn, batch, *args):
        record_batch(conn, batch, *args)
        with app.app_context():  # another connection: the batch is written, not committed
            fixed = snapshot.fix_snapshot(db.engine, as_of)
            mid_post.append((fixed, polls_read(fixed, FIRST_HALF)))

    monkeypatch.setattr(loader, "_record_batch", read_half_before_commit)
    client = app.test_client()
    seen: list[tuple[int, int, int]] = []
    for piece in pieces:
        assert post(client, "/polls", csv_body(piece)).status_code == 200
        fixed, first_half = mid_post.pop()
        with app.app_context():
            count = first_half + polls_read(fixed, SECOND_HALF)
            latest = db.session.scalar(text("SELECT last_batch FROM data_state"))
            db.session.commit()
        seen.append((fixed.batch, latest, count))
    monkeypatch.setattr(loader, "_record_batch", record_batch)
    with app.app_context():
        settled = {
            batch: polls_read(snapshot.Snapshot(batch, as_of, 200), FIRST_HALF + SECOND_HALF)
            for batch in range(0, 7)
        }
    assert [(batch, latest) for batch, latest, _ in seen] == [(b, b + 1) for b in range(6)]
    assert [count for _, _, count in seen] == [settled[batch] for batch, _, _ in seen]
    assert sorted(set(settled.values())) == list(settled.values())  # each batch adds polls


FIRST_HALF, SECOND_HALF = (1, 41, 81), (121, 161)


def polls_read(fixed: snapshot.Snapshot, shard_starts: tuple[int, ...]) -> int:
    """How many polls a report fixed at `fixed` reads in the shards of 40 stores starting at
    `shard_starts`."""
    parts = [snapshot.read_shard(db.engine, fixed, low, low + 40) for low in shard_starts]
    return sum(part.inputs.polls.ts_us.size for part in parts)


# --------------------------------------------------------------------------- a real server


@pytest.mark.slow
def test_a_client_that_disconnects_mid_upload_stores_nothing(live_server):
    body = csv_body(sample_frames()["polls"])
    head = (
        f"POST /polls HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/csv\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    before = requests.get(f"{live_server.url}/reports", timeout=10)
    assert before.status_code == 200
    with socket.create_connection(("127.0.0.1", live_server.port), timeout=10) as sock:
        sock.sendall(head + body[: len(body) // 2])
    # A complete upload of one new poll works afterwards, in the batch after the sample's.
    one = (POLL_HEADER + "new-store,active,2023-01-25 18:00:00 UTC\n").encode()
    answer = requests.post(f"{live_server.url}/polls", data=one, headers=CSV, timeout=30).json()
    assert answer["stored"] == 1 and answer["batch"] == 2


@pytest.mark.slow
def test_curl_style_upload_over_http(live_server, tmp_path):
    gz = gzip.compress((SAMPLE / "store_status.csv").read_bytes())
    response = requests.post(
        f"{live_server.url}/polls",
        data=gz,
        headers={**CSV, "Content-Encoding": "gzip"},
        timeout=60,
    )
    answer = response.json()
    assert response.status_code == 200 and answer["stored"] == 0
    assert answer["received"] == answer["duplicates"] == len(sample_frames()["polls"])


def test_a_gzip_body_of_several_members_is_read_whole(sqlite_client):
    # `cat a.gz b.gz` is one valid gzip body: both halves are stored, none silently dropped.
    first = (POLL_HEADER + GOOD).encode()
    second = b"12,inactive,2023-01-22 13:00:00 UTC\n"
    body = gzip.compress(first) + gzip.compress(second)
    answer = post(sqlite_client, "/polls", body, {**CSV, "Content-Encoding": "gzip"}).get_json()
    assert (answer["received"], answer["stored"]) == (2, 2)
    garbage = gzip.compress(first) + b"not gzip"
    refused = post(sqlite_client, "/polls", garbage, {**CSV, "Content-Encoding": "gzip"})
    assert refused.status_code == 400


def test_ndjson_lines_that_are_not_utf8_are_rejected_not_altered(sqlite_app):
    client = sqlite_app.test_client()
    body = (
        b'{"store_id": "caf\xe9", "status": "active", "timestamp_utc": "2023-01-22T12:00:00Z"}\n'
        b'{"store_id": "ok", "status": "active", "timestamp_utc": "2023-01-22T12:00:00Z"}\n'
    )
    answer = post(client, "/polls", body, NDJSON, skip_invalid="true").get_json()
    assert answer["stored"] == 1 and answer["rejected"] == 1
    assert answer["rejected_rows"][0]["line"] == 1
    assert "not UTF-8" in answer["rejected_rows"][0]["reason"]
    with sqlite_app.app_context():
        assert db.session.scalars(text("SELECT external_id FROM stores")).all() == ["ok"]


# --------------------------------------------------------------------------- hostile bodies


@pytest.mark.parametrize("piece_bytes", [1, 777, 1 << 20, 1 << 30])
def test_every_byte_of_a_gzip_body_of_several_members_is_inflated_once(piece_bytes):
    # Members larger than what one call may inflate (COPY_BYTES) end in the middle of a piece
    # of the body: there CPython leaves what follows in both unused_data and unconsumed_tail,
    # and feeding both doubled the rest of the body at every member boundary.
    plain = [bytes([ord("a") + n]) * (ingest.COPY_BYTES + 300_000) for n in range(3)]
    plain.append(b"tail")
    body = b"".join(gzip.compress(part, mtime=0) for part in plain)
    pieces = (body[start : start + piece_bytes] for start in range(0, len(body), piece_bytes))
    assert b"".join(ingest.inflated(pieces)) == b"".join(plain)


def test_a_valid_body_of_large_gzip_members_is_stored_once_within_the_limit(tmp_path):
    # Three members of 1.3 MB each, under a limit of their size: every row counted once.
    rows = GOOD.encode() * 30_000
    members = [gzip.compress(POLL_HEADER.encode() + rows, mtime=0)]
    members += [gzip.compress(rows, mtime=0) for _ in range(2)]
    size = len(POLL_HEADER) + 3 * len(rows)
    app = make_app(f"sqlite:///{tmp_path / 'x.sqlite3'}", tmp_path, INGEST_MAX_BYTES=size)
    response = post(app.test_client(), "/polls", b"".join(members), GZIP_CSV)
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["received"] == 90_000


@pytest.mark.parametrize(
    "body, headers",
    [
        # gzip sent as plain bytes: never inflated by anyone
        (gzip.compress((POLL_HEADER + GOOD * 100).encode(), mtime=0), CSV),
        # gzip inside gzip: inflated once, as the header says
        (gzip.compress(gzip.compress((POLL_HEADER + GOOD).encode(), mtime=0), mtime=0), GZIP_CSV),
    ],
)
def test_a_body_is_inflated_only_as_its_content_encoding_says(sqlite_app, body, headers):
    response = post(sqlite_app.test_client(), "/polls", body, headers)
    assert response.status_code == 422
    assert response.get_json()["message"].startswith("line 1: not UTF-8 text")
    with sqlite_app.app_context():
        assert db.session.scalar(text("SELECT COUNT(*) FROM polls")) == 0


@pytest.mark.parametrize(
    "headers, line",
    [(NDJSON, b"1\n"), (CSV, b"x\n"), (CSV, b"1,maybe,2023-01-22 12:00:00 UTC\n")],
)
def test_a_body_of_bad_lines_is_refused_after_the_first_thousand(
    sqlite_client, monkeypatch, headers, line
):
    # 30,000 bad lines, read in small blocks: the answer comes once about 1,000 are counted.
    monkeypatch.setattr(sources, "BATCH_BYTES", 1024)
    monkeypatch.setattr(ndjson, "BLOCK_BYTES", 1024)
    body = (b"" if headers is NDJSON else POLL_HEADER.encode()) + line * 30_000
    answer = post(sqlite_client, "/polls", body, headers).get_json()
    count = answer["error_count"]
    assert 1000 <= count < 1300
    assert answer["message"] == (
        f"at least {count} invalid rows (reading stopped there); nothing was stored"
    )
    first = 1 if headers is NDJSON else 2
    assert [error["line"] for error in answer["errors"]] == list(range(first, first + 20))


def test_with_skip_invalid_every_bad_ndjson_line_is_counted(sqlite_client):
    lines = [b"1", b"", b"[]", b'{"store_id": "a"}', b"\xff", GOOD_NDJSON, b"null"] * 3_000
    answer = post(
        sqlite_client, "/polls", b"\n".join(lines) + b"\n", NDJSON, skip_invalid="true"
    ).get_json()
    # Per 7 lines: 1 blank (not a row), 1 good, 5 rejected.
    assert (answer["received"], answer["stored"], answer["rejected"]) == (18_000, 1, 15_000)
    assert len(answer["rejected_rows"]) == 10_000 and answer["rejected_rows_truncated"]
    assert [row["line"] for row in answer["rejected_rows"][:6]] == [1, 3, 4, 5, 7, 8]


def test_an_ndjson_line_with_a_lone_surrogate_is_refused_with_its_line(sqlite_client):
    body = GOOD_NDJSON + b'\n{"store_id": "a\\ud800", "status": "active", "timestamp_utc": "x"}\n'
    response = post(sqlite_client, "/polls", body, NDJSON)
    assert response.status_code == 422
    error = response.get_json()["errors"][0]
    assert (error["line"], error["column"]) == (2, "*")
    assert error["reason"] == "not valid Unicode: a lone surrogate (\\ud800-\\udfff) in a field"


def test_ndjson_keys_in_any_order_escapes_and_big_integers_read_like_json(sqlite_app):
    body = (
        b'{"status": "active", "timestamp_utc": "2023-01-22T12:00:00Z", "store_id": "s\\u00e9"}\n'
        b'{"timestamp_utc":"2023-01-22T12:00:00Z","store_id":123456789012345678901234567890,'
        b'"status":"inactive","extra":[1]}\n'
        b' {"store_id" : "\xc3\xa9t\xc3\xa9" , "status" : "active" , '
        b'"timestamp_utc" : "2023-01-22T13:00:00Z"} \r\n'
    )
    answer = post(sqlite_app.test_client(), "/polls", body, NDJSON).get_json()
    assert answer["stored"] == 3
    with sqlite_app.app_context():
        ids = db.session.scalars(text("SELECT external_id FROM stores ORDER BY id")).all()
    assert ids == ["sé", "123456789012345678901234567890", "été"]


def test_a_huge_header_is_not_echoed_whole(sqlite_client):
    body = ("store_id," + "x" * 1_000_000 + "\n" + GOOD).encode()
    message = post(sqlite_client, "/polls", body).get_json()["message"]
    assert message.startswith("line 1: missing column(s) ") and len(message) < 400


# --------------------------------------------------------------------------- upload folders


def test_upload_folders_carry_their_process_and_are_removed_when_it_is_gone(
    sqlite_client, tmp_path, monkeypatch
):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    seen: list[str] = []
    real_load = loader.load_sources
    monkeypatch.setattr(
        loader,
        "load_sources",
        lambda *args, **kwargs: seen.extend(os.listdir(tmp_path)) or real_load(*args, **kwargs),
    )
    assert post(sqlite_client, "/polls", (POLL_HEADER + GOOD).encode()).status_code == 200
    uploads = [name for name in seen if name.startswith("store-monitor-upload-")]
    assert [name.split("-")[3] for name in uploads] == [str(os.getpid())]
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        text=True,
        capture_output=True,
        check=True,
    )
    dead = int(gone.stdout)
    folders = {
        "dead": f"store-monitor-upload-{dead}-abc",
        "live": f"store-monitor-upload-{os.getppid()}-abc",
        "live-but-old": f"store-monitor-upload-{os.getppid()}-def",
        "own": f"store-monitor-upload-{os.getpid()}-abc",
        "unnamed-fresh": "store-monitor-upload-xyz",
        "unnamed-old": "store-monitor-upload-uvw",
        "someone-else": "other-upload-1",
    }
    for name in folders.values():
        (tmp_path / name).mkdir()
        (tmp_path / name / "body").write_bytes(b"x")
    two_hours_ago = time.time() - 7200
    for name in ("live-but-old", "unnamed-old"):
        os.utime(tmp_path / folders[name], (two_hours_ago, two_hours_ago))
    assert ingest.remove_stale_upload_folders() == 3
    left = {name for name, folder in folders.items() if (tmp_path / folder).exists()}
    assert left == {"live", "own", "unnamed-fresh", "someone-else"}
    assert ingest.remove_stale_upload_folders(also_own=True) == 1


def stop_mid_upload(tmp_path, name: str, stop) -> tuple[pathlib.Path, ServerProcess]:
    """Start a server, post an upload that waits for the SQLite write lock (this test holds
    it), stop the server with `stop` while the upload's folder exists; return that folder."""
    url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    temp = tmp_path / "tmp"
    temp.mkdir(exist_ok=True)
    settings = {"TMPDIR": str(temp), "INGEST_LOCK_TIMEOUT_MS": "60000"}
    server = ServerProcess(url, tmp_path / "reports", tmp_path / f"{name}.log", **settings)
    server.start()
    holder = sqlite3.connect(tmp_path / "db.sqlite3", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    body = (POLL_HEADER + GOOD).encode()
    with ThreadPoolExecutor(1) as poster:
        poster.submit(requests.post, f"{server.url}/polls", data=body, headers=CSV, timeout=90)
        deadline = time.monotonic() + 30  # no hook across processes: poll for the folder
        while not list(temp.glob("store-monitor-upload-*")) and time.monotonic() < deadline:
            time.sleep(0.05)
        left = list(temp.glob("store-monitor-upload-*"))
        assert len(left) == 1 and left[0].name.startswith(
            f"store-monitor-upload-{server.process.pid}-"
        )
        stop(server)
    holder.execute("ROLLBACK")
    holder.close()
    return left[0], server


@pytest.mark.slow
def test_a_server_killed_mid_upload_leaves_no_folder_after_its_restart(tmp_path):
    assert run_cli(f"sqlite:///{tmp_path / 'db.sqlite3'}", "init-db").returncode == 0
    folder, server = stop_mid_upload(tmp_path, "1", ServerProcess.kill)
    assert folder.exists()  # SIGKILL: nothing could remove it
    again = ServerProcess(
        server.environment["DATABASE_URL"],
        tmp_path / "reports",
        tmp_path / "2.log",
        TMPDIR=str(tmp_path / "tmp"),
    ).start()
    try:
        assert not folder.exists()
    finally:
        again.stop()


@pytest.mark.slow
def test_sigterm_stops_the_server_cleanly_and_removes_its_upload_folder(tmp_path):
    assert run_cli(f"sqlite:///{tmp_path / 'db.sqlite3'}", "init-db").returncode == 0
    folder, server = stop_mid_upload(tmp_path, "1", ServerProcess.stop)
    assert server.process.returncode == 0
    assert not folder.exists()
    assert "stopped" in (tmp_path / "1.log").read_text()


# Bodies that took the server to gigabytes before, and a large valid one.
BOMBS = {
    "gzip members doubled": (
        "/polls",
        GZIP_CSV,
        lambda: (
            gzip.compress(POLL_HEADER.encode(), mtime=0)
            + b"".join(gzip.compress(GOOD.encode() * 50_000, mtime=0) for _ in range(30))
        ),
    ),
    "33 M bad NDJSON lines, skip_invalid": (
        "/polls?skip_invalid=true",
        {**NDJSON, "Content-Encoding": "gzip"},
        lambda: gzip.compress(b"1\n" * 33_000_000, 9, mtime=0),
    ),
    "33 M short bad CSV rows, skip_invalid": (
        "/polls?skip_invalid=true",
        GZIP_CSV,
        lambda: gzip.compress(POLL_HEADER.encode() + b"1\n" * 33_000_000, 9, mtime=0),
    ),
    "4 M identical hours rows": (
        "/business_hours",
        GZIP_CSV,
        lambda: gzip.compress(
            b"store_id,day,start_time_local,end_time_local\n" + b"1,0,09:00,17:00\n" * 4_000_000,
            9,
            mtime=0,
        ),
    ),
    "64 MB of valid polls": (
        "/polls",
        GZIP_CSV,
        lambda: gzip.compress(POLL_HEADER.encode() + GOOD.encode() * 1_900_000, 9, mtime=0),
    ),
}
# Growth of the server's peak RSS over its size before the upload. Seen: 12 to 90 MB; 200 to
# 310 MB when a block of short bad rows was bounded by its bytes only.
UPLOAD_MEMORY_BOUND_MB = 200


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="peak RSS from /proc")
def test_the_memory_of_an_upload_is_bounded_whatever_its_body(tmp_path):
    url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    assert run_cli(url, "init-db").returncode == 0
    server = ServerProcess(url, tmp_path / "reports", tmp_path / "server.log").start()
    status = f"/proc/{server.process.pid}/status"
    try:
        for name, (path, headers, build) in BOMBS.items():
            body = build()
            with open(f"/proc/{server.process.pid}/clear_refs", "w") as refs:
                refs.write("5")  # the peak starts again from the current size
            before = peak_rss_mb(status)
            response = requests.post(server.url + path, data=body, headers=headers, timeout=300)
            assert response.status_code in (200, 413), (name, response.text[:300])
            growth = peak_rss_mb(status) - before
            assert growth < UPLOAD_MEMORY_BOUND_MB, f"{name}: peak RSS grew by {growth:.0f} MB"
    finally:
        server.stop()


def peak_rss_mb(status_path: str) -> float:
    with open(status_path) as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")
