"""The HTTP API through Flask's test client: jobs inline and in real threads."""

from __future__ import annotations

import io
import logging
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

import loader
from jobs import leases, results, states, steps
from models import Report, ReportStatus, db, utcnow
from tests.conftest import ROOT, SAMPLE, make_app
from tests.jobcheck import StepHook, check_report_agrees

MINUTE = timedelta(seconds=61)
BASE_COLUMNS = [
    "store_id",
    "uptime_last_hour",
    "uptime_last_day",
    "uptime_last_week",
    "downtime_last_hour",
    "downtime_last_day",
    "downtime_last_week",
]


@pytest.fixture
def loaded_app(app):
    with app.app_context():
        loader.load(db.engine, SAMPLE)
    return app


def sample_store_count() -> int:
    return pd.read_csv(SAMPLE / "store_status.csv", dtype=str)["store_id"].nunique()


def trigger(client, **body) -> str:
    response = client.post("/trigger_report", json=body or None)
    assert response.status_code == 202, response.get_json()
    return response.get_json()["report_id"]


def test_trigger_then_get_returns_the_csv(loaded_app):
    client = loaded_app.test_client()
    response = client.post("/trigger_report")
    assert response.status_code == 202
    body = response.get_json()
    assert body["status"] in ("Queued", "Running", "Complete") and len(body["report_id"]) == 32
    assert response.headers["Location"].endswith(f"/get_report/{body['report_id']}")
    got = client.get(f"/get_report/{body['report_id']}")
    assert got.status_code == 200
    assert got.headers["Content-Type"].startswith("text/csv")
    assert got.headers["X-Report-Status"] == "Complete"
    assert (
        got.headers["Content-Disposition"] == f"attachment; filename=report_{body['report_id']}.csv"
    )
    frame = pd.read_csv(io.BytesIO(got.data), dtype={"store_id": str})
    assert list(frame.columns) == BASE_COLUMNS
    assert len(frame) == sample_store_count()
    assert (frame["uptime_last_hour"] + frame["downtime_last_hour"]).le(60.0).all()


def test_as_of_is_used_and_reported(loaded_app):
    client = loaded_app.test_client()
    report_id = trigger(client, as_of="2023-01-20T00:00:00Z")
    listing = client.get("/reports").get_json()["reports"]
    assert listing[0]["report_id"] == report_id
    assert listing[0]["as_of"] == "2023-01-20T00:00:00.000000Z"
    assert listing[0]["status"] == "Complete" and listing[0]["row_count"] > 0


def test_options_add_columns_in_spec_order_and_are_listed(loaded_app):
    client = loaded_app.test_client()
    report_id = trigger(client, stale_after="PT90M", outages=True)
    frame = pd.read_csv(io.BytesIO(client.get(f"/get_report/{report_id}").data))
    assert list(frame.columns) == [
        *BASE_COLUMNS,
        "unknown_last_hour",
        "unknown_last_day",
        "unknown_last_week",
        "outages_last_hour",
        "outages_last_day",
        "outages_last_week",
        "longest_outage_last_day",
        "longest_outage_last_week",
    ]
    listed = client.get("/reports").get_json()["reports"][0]
    assert listed["options"] == {"stale_after": "PT1H30M", "outages": True}
    plain = trigger(client)
    assert client.get("/reports").get_json()["reports"][0]["options"] == {
        "stale_after": None,
        "outages": False,
    }
    assert list(pd.read_csv(io.BytesIO(client.get(f"/get_report/{plain}").data)).columns) == (
        BASE_COLUMNS
    )


def test_json_format_keeps_ids_exact_and_numbers_as_numbers(loaded_app):
    client = loaded_app.test_client()
    report_id = trigger(client, outages=True)
    csv_frame = pd.read_csv(
        io.BytesIO(client.get(f"/get_report/{report_id}").data), dtype={"store_id": str}
    )
    for response in (
        client.get(f"/get_report/{report_id}?format=json"),
        client.get(f"/get_report/{report_id}", headers={"Accept": "application/json"}),
    ):
        assert response.status_code == 200 and response.is_json
        body = response.get_json()
        assert set(body) == {"report_id", "as_of", "options", "columns", "rows"}
        assert body["columns"] == list(csv_frame.columns)
        assert body["options"] == {"stale_after": None, "outages": True}
        first = body["rows"][0]
        assert isinstance(first["store_id"], str) and isinstance(first["outages_last_day"], int)
        json_frame = pd.DataFrame(body["rows"])[body["columns"]]
        pd.testing.assert_frame_equal(json_frame, csv_frame, check_dtype=False)
    assert client.get(f"/get_report/{report_id}?format=xml").status_code == 400


@pytest.mark.parametrize(
    "body, content_type, fragment",
    [
        (b"{not json", "application/json", "JSON object"),
        (b"[1, 2]", "application/json", "JSON object"),
        (b'{"as_of": 5}', "application/json", "as_of must be a string"),
        (b'{"as_of": "yesterday"}', "application/json", "ISO-8601"),
        (b'{"as_of": "2023-01-20T00:00:00Z", "x": 1}', "application/json", "unknown field"),
        (b"as_of=2023", "application/x-www-form-urlencoded", "JSON object"),
        (b'{"stale_after": "2 hours"}', "application/json", "not a duration"),
        (b'{"stale_after": "0m"}', "application/json", "greater than zero"),
        (b'{"stale_after": "-1h"}', "application/json", "not a duration"),
        (b'{"stale_after": 7200}', "application/json", "must be a string"),
        (b'{"outages": "yes"}', "application/json", "outages must be true or false"),
        (b"[" * 8000 + b"]" * 8000, "application/json", "JSON object"),
    ],
)
def test_bad_trigger_bodies_get_400_with_the_reason(sqlite_client, body, content_type, fragment):
    response = sqlite_client.post("/trigger_report", data=body, content_type=content_type)
    assert response.status_code == 400
    payload = response.get_json()
    assert payload["error"] == "bad_request" and fragment in payload["message"]


@pytest.mark.parametrize(
    "report_id", ["0" * 32, "not-a-report", "..%2F..%2Fetc%2Fpasswd", "A" * 32, "f" * 5000]
)
def test_unknown_or_malformed_ids_get_404(sqlite_client, report_id):
    response = sqlite_client.get(f"/get_report/{report_id}")
    assert response.status_code == 404
    assert set(response.get_json()) == {"error", "message"}


def test_unknown_route_and_method_are_json_errors(sqlite_client):
    assert sqlite_client.get("/nope").get_json()["error"] == "not_found"
    response = sqlite_client.delete("/trigger_report")
    assert response.status_code == 405 and response.get_json()["error"] == "method_not_allowed"


def test_oversized_body_is_refused(sqlite_client):
    response = sqlite_client.post(
        "/trigger_report", data=b"{" + b" " * 100_000 + b"}", content_type="application/json"
    )
    assert (
        response.status_code == 413 and response.get_json()["error"] == "request_entity_too_large"
    )


def test_healthz(client):
    assert client.get("/healthz").get_json() == {
        "status": "ok",
        "database": "ok",
        "unevaluated_loads": 0,
    }


def test_queued_then_running_with_progress_then_complete_in_threads(
    database_url, tmp_path, monkeypatch
):
    # 200 stores in shards of 20 on one worker thread; the fourth shard waits until the test
    # has seen the report Running part-way, so each state is observed for sure.
    app = make_app(
        database_url, tmp_path, REPORTS_INLINE=False, REPORT_WORKERS=1, REPORT_SHARD_STORES=20
    )
    with app.app_context():
        loader.load(db.engine, SAMPLE)
    seen_part_way, release = threading.Event(), threading.Event()
    original = steps.compute_shard

    def held_compute(work):
        if work.shard == 3:
            release.wait(30)
        return original(work)

    monkeypatch.setattr(steps, "compute_shard", held_compute)
    client = app.test_client()
    first = client.post("/trigger_report").get_json()
    assert first["status"] in ("Queued", "Running")
    states = []
    for _ in range(600):
        response = client.get(f"/get_report/{first['report_id']}")
        if response.status_code == 200:
            break
        body = response.get_json()
        states.append((body["status"], body["progress"], body["shards"]["done"]))
        if body["status"] == "Running" and 0 < body["progress"] < 1:
            seen_part_way.set()
            release.set()
        time.sleep(0.02)
    assert response.status_code == 200, states[-5:]
    assert seen_part_way.is_set(), states[-5:]
    assert {status for status, _, _ in states} <= {"Queued", "Running"}
    assert [progress for _, progress, _ in states] == sorted(p for _, p, _ in states)
    assert len(pd.read_csv(io.BytesIO(response.data))) == sample_store_count()
    app.extensions["report_executor"].shutdown()


def test_failed_report_gives_a_short_reason_without_sql_or_paths(loaded_app, monkeypatch):
    def explode(*args, **kwargs):
        raise OperationalError(
            "SELECT secret_column FROM polls WHERE x = 1", {}, Exception(1146, "/var/lib/x")
        )

    monkeypatch.setattr(steps, "compute_shard", explode)
    client = loaded_app.test_client()
    report_id = trigger(client)
    response = client.get(f"/get_report/{report_id}")
    assert response.status_code == 422
    body = response.get_json()
    assert body["status"] == "Failed" and "the database failed" in body["message"]
    assert "SELECT" not in body["message"] and "/var/lib" not in body["message"]
    assert client.get("/healthz").status_code == 200


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
def test_api_token_guards_everything_but_health_in_any_scheme_case(sqlite_app, tmp_path, scheme):
    app = make_app(sqlite_app.config["DATABASE_URL"], tmp_path, API_TOKEN="s3cret-token")
    client = app.test_client()
    assert client.post("/trigger_report").status_code == 401
    assert client.get("/reports", headers={"Authorization": f"{scheme} wrong"}).status_code == 401
    assert (
        client.get("/reports", headers={"Authorization": "Basic s3cret-token"}).status_code == 401
    )
    good = {"Authorization": f"{scheme} s3cret-token"}
    assert client.get("/reports", headers=good).status_code == 200
    assert client.get("/healthz").status_code == 200
    assert client.get("/openapi.json").status_code == 200


def test_trigger_answers_503_quickly_while_a_load_holds_the_sqlite_lock(tmp_path):
    # Another connection holds SQLite's write lock (as a long load does): the trigger gives up
    # after TRIGGER_LOCK_TIMEOUT_MS with 503 and Retry-After, creates nothing, and health
    # answers at once (reads need no write lock).
    url = f"sqlite:///{tmp_path / 'locked.sqlite3'}"
    app = make_app(url, tmp_path, TRIGGER_LOCK_TIMEOUT_MS=300)
    holder = sqlite3.connect(tmp_path / "locked.sqlite3", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        client = app.test_client()
        started = time.monotonic()
        response = client.post("/trigger_report")
        waited = time.monotonic() - started
        assert response.status_code == 503 and response.headers["Retry-After"].isdigit()
        assert response.get_json()["message"] == (
            "the database is busy with another write; nothing was created, retry later"
        )
        assert waited < 10  # generous bound: the point is "not the 30 s busy timeout"
        assert client.get("/healthz").status_code == 200
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert app.test_client().get("/reports").get_json()["reports"] == []
    assert app.test_client().post("/trigger_report").status_code == 202


@pytest.mark.slow
def test_key_api_tests_pass_whatever_the_shell_exports(tmp_path):
    # A stray API_TOKEN, DATABASE_URL and REPORTS_DIR in the shell must not reach the tests.
    environment = {
        **os.environ,
        "API_TOKEN": "stray-token",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'stray.sqlite3'}",
        "REPORTS_DIR": str(tmp_path / "stray-reports"),
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-m",
            "not mariadb",
            "tests/test_api.py::test_trigger_then_get_returns_the_csv",
            "tests/test_api.py::test_as_of_is_used_and_reported",
            "tests/test_api.py::test_json_format_keeps_ids_exact_and_numbers_as_numbers",
            "tests/test_app.py::test_trigger_poll_download",
        ],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:]
    assert "4 passed" in done.stdout
    assert not (tmp_path / "stray.sqlite3").exists()


def test_csv_cells_that_spreadsheets_would_run_are_neutralised_json_keeps_them(sqlite_app):
    # OWASP "CSV Injection": ids starting with =, +, -, @ get a leading quote in the CSV only.
    client = sqlite_app.test_client()
    hostile = ['=HYPERLINK("http://x")', "+cmd|' /C calc'!A0", "-1+1", "@SUM(1)", "plain"]
    body = "store_id,status,timestamp_utc\n" + "".join(
        f'"{sid.replace(chr(34), chr(34) * 2)}",active,2023-01-22 12:00:00 UTC\n' for sid in hostile
    )
    assert client.post("/polls", data=body, content_type="text/csv").status_code == 200
    report_id = trigger(client)
    frame = pd.read_csv(io.BytesIO(client.get(f"/get_report/{report_id}").data), dtype=str)
    assert sorted(frame["store_id"]) == sorted(["'" + sid for sid in hostile[:4]] + ["plain"])
    rows = client.get(f"/get_report/{report_id}?format=json").get_json()["rows"]
    assert sorted(row["store_id"] for row in rows) == sorted(hostile)


def test_a_report_as_of_the_far_future_completes_quickly_and_small(loaded_app):
    # Business intervals are built only where polls and windows need them: a report as of
    # 2099 costs what one as of the data does (it used to grow with the distance).
    client = loaded_app.test_client()
    report_id = trigger(client, as_of="2099-12-31T23:59:59Z")
    response = client.get(f"/get_report/{report_id}")
    assert response.status_code == 200
    frame = pd.read_csv(io.BytesIO(response.data))
    assert len(frame) == sample_store_count()
    # Long after the data, each store's last evidence owns the whole week.
    totals = frame["uptime_last_week"] + frame["downtime_last_week"]
    assert (totals > 0).all()


def no_space_left(source, target):
    raise OSError(28, "No space left on device")


@pytest.mark.parametrize("fault", ["reports_dir_is_a_file", "disk_full"])
def test_a_csv_that_cannot_be_written_is_served_from_the_database(
    database_url, tmp_path, caplog, monkeypatch, fault
):
    # REPORTS_DIR cannot take the report's CSV (a file stands where the folder was, or every
    # write fails as on a full disk): the report is still Complete, with no error logged, and
    # its CSV is streamed from the table the database holds, byte for byte what a machine with
    # a working folder serves. Never a 500.
    caplog.set_level(logging.INFO)
    app = make_app(database_url, tmp_path / "broken")
    with app.app_context():
        loader.load(db.engine, SAMPLE)
    reports_dir = Path(app.config["REPORTS_DIR"])
    if fault == "reports_dir_is_a_file":
        shutil.rmtree(reports_dir)
        reports_dir.write_text("not a folder")
    else:
        monkeypatch.setattr(results.os, "replace", no_space_left)
    report_id = trigger(app.test_client())
    assert check_report_agrees(app, report_id, caplog.records) == "Complete"
    served = app.test_client().get(f"/get_report/{report_id}")
    monkeypatch.undo()
    working = make_app(database_url, tmp_path / "working")
    copy = working.test_client().get(f"/get_report/{report_id}")
    assert served.status_code == copy.status_code == 200
    assert served.data == copy.data and len(copy.data.splitlines()) == sample_store_count() + 1
    assert served.headers["Content-Disposition"] == copy.headers["Content-Disposition"]
    assert served.headers["X-Report-Status"] == "Complete"
    assert "served from the database" in caplog.text
    for each in (app, working):
        with each.app_context():
            db.engine.dispose()


@pytest.fixture
def broker_app(database_url, tmp_path):
    """An API process that sends steps to a broker (kombu's in-memory one: nothing else can
    take its messages), with no worker."""
    app = make_app(database_url, tmp_path, REPORTS_INLINE=False, CELERY_BROKER_URL="memory://")
    yield app
    with app.app_context():
        db.engine.dispose()


def reports_warning(client) -> str | None:
    return client.get("/reports").get_json()["reports"][0].get("warning")


def test_with_a_broker_health_counts_workers_and_a_waiting_report_warns_when_none(broker_app):
    client = broker_app.test_client()
    assert client.get("/healthz").get_json() == {
        "status": "ok",
        "database": "ok",
        "workers": 0,
        "unevaluated_loads": 0,
    }
    report_id = trigger(client)
    warning = reports_warning(client)
    assert warning and "no report worker has been seen" in warning
    waiting = client.get(f"/get_report/{report_id}")
    assert waiting.status_code == 202 and waiting.get_json()["status"] == "Queued"
    assert waiting.get_json()["warning"] == warning
    # A worker process's lease keeper records its heartbeat every round.
    leases.LeaseKeeper(broker_app, sweep=False, heartbeat=True).round()
    assert client.get("/healthz").get_json()["workers"] == 1
    assert reports_warning(client) is None
    assert "warning" not in client.get(f"/get_report/{report_id}").get_json()
    # Not seen for over a minute: not counted any more.
    with broker_app.app_context():
        db.session.execute(text("UPDATE workers SET last_seen = :t"), {"t": utcnow() - MINUTE})
        db.session.commit()
    assert client.get("/healthz").get_json()["workers"] == 0
    assert reports_warning(client) == warning


def test_without_a_broker_health_has_no_workers_and_reports_no_warning(app, tmp_path):
    threads = make_app(app.config["DATABASE_URL"], tmp_path, REPORTS_INLINE=False)
    client = threads.test_client()
    with threads.app_context():
        db.session.add(Report(id="a" * 32, status=ReportStatus.QUEUED))
        db.session.commit()
    assert client.get("/healthz").get_json() == {
        "status": "ok",
        "database": "ok",
        "unevaluated_loads": 0,
    }
    assert "warning" not in client.get("/reports").get_json()["reports"][0]
    threads.extensions["report_executor"].shutdown()
    with threads.app_context():
        db.engine.dispose()


def test_a_trigger_for_a_full_queue_is_refused_without_waiting_for_the_write_lock(tmp_path):
    # Under a storm of triggers most find the queue full: they must answer 429 at once, from
    # a read, not queue for SQLite's single writer (held here by another connection) and
    # answer 503 when it stays busy.
    url = f"sqlite:///{tmp_path / 'full.sqlite3'}"
    app = make_app(url, tmp_path, REPORT_WORKERS=1, REPORT_QUEUE=0, TRIGGER_LOCK_TIMEOUT_MS=300)
    with app.app_context():
        db.session.add(Report(id="f" * 32, status=ReportStatus.RUNNING))
        db.session.commit()
    holder = sqlite3.connect(tmp_path / "full.sqlite3", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        response = app.test_client().post("/trigger_report")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert response.status_code == 429 and response.get_json()["error"] == "too_many_reports"
    assert response.get_json()["message"] == "1 reports are queued or running; retry later"


def test_beyond_workers_and_queue_trigger_answers_429(database_url, tmp_path, monkeypatch):
    # Queued and running reports are counted in the database: 1 worker + 1 waiting = 2.
    app = make_app(database_url, tmp_path, REPORTS_INLINE=False, REPORT_WORKERS=1, REPORT_QUEUE=1)
    with app.app_context():
        loader.load(db.engine, SAMPLE)
    release = threading.Event()
    original = steps.compute_shard

    def held(work):
        release.wait(30)
        return original(work)

    monkeypatch.setattr(steps, "compute_shard", held)
    completed = StepHook(monkeypatch, states, "complete_report")
    client = app.test_client()
    accepted = [client.post("/trigger_report") for _ in range(2)]
    refused = client.post("/trigger_report")
    assert [r.status_code for r in accepted] == [202, 202]
    assert refused.status_code == 429 and refused.headers["Retry-After"].isdigit()
    assert refused.get_json()["error"] == "too_many_reports"
    statuses = {r["status"] for r in client.get("/reports").get_json()["reports"]}
    assert (
        statuses <= {"Queued", "Running"} and len(client.get("/reports").get_json()["reports"]) == 2
    )
    release.set()
    completed.wait(count=2)  # both reports are Complete
    for response in accepted:
        report_id = response.get_json()["report_id"]
        assert client.get(f"/get_report/{report_id}").status_code == 200
    assert client.post("/trigger_report").status_code == 202
    app.extensions["report_executor"].shutdown()


def test_bad_http_input_never_gives_5xx(client):
    cases = [
        client.post("/trigger_report", data=b"\x00\xff", content_type="application/json"),
        client.post("/trigger_report", json={"as_of": ["2023"]}),
        client.post("/trigger_report", json={"as_of": "2023-01-01T00:00:00Z" * 100}),
        client.post("/trigger_report", data="x" * 20_000, content_type="application/json"),
        client.get("/get_report/" + "../" * 50),
        client.get("/get_report/%00"),
        client.get("/reports?limit=-1"),
        client.get("/reports?limit=abc"),
        client.get("/reports?limit=\u00b2"),
        client.post(
            "/trigger_report", data=b"[" * 8000 + b"]" * 8000, content_type="application/json"
        ),
        client.put("/get_report/" + "a" * 32),
        client.open("/trigger_report", method="PATCH"),
    ]
    assert [r.status_code for r in cases] == [
        400,
        400,
        400,
        413,
        404,
        404,
        400,
        400,
        400,
        400,
        405,
        405,
    ]
    assert all(set(r.get_json()) >= {"error", "message"} for r in cases)


@pytest.mark.slow
def test_bounded_load_loses_nothing_and_gives_no_5xx(live_server):
    sys.path.insert(0, str(ROOT / "bench"))
    import load_test

    outcome = load_test.run(live_server.url, clients=40, seconds=8)
    assert outcome["server_errors"] == 0
    assert outcome["lost"] == []
    assert outcome["results"].triggered and not outcome["results"].errors
