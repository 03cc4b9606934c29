"""Faults injected: crashes, failing jobs, concurrent loads, floods, hostile input, expiry."""

from __future__ import annotations

import io
import logging
import shutil
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest
import requests
from sqlalchemy import create_engine, text

import jobs
import loader
import report
import snapshot
from app import start_service
from models import Report, ReportStatus, db, utcnow
from tests.conftest import ROOT, SAMPLE, SHARED, make_app
from tests.server import ServerProcess, run_cli, wait_for_report

# --------------------------------------------------------------------------- crashes


@pytest.fixture(scope="module")
def big_data(tmp_path_factory) -> Path:
    """Data big enough that a report takes seconds: the full set, else a generated one."""
    full = SHARED / "loop-full"
    if (full / "store_status.csv.gz").exists():
        return full
    out = tmp_path_factory.mktemp("big")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "flask",
            "--app",
            "app",
            "generate-data",
            str(out),
            "--stores",
            "6000",
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    return out


def report_status(database_url: str, report_id: str) -> str:
    engine = create_engine(database_url)
    with engine.connect() as conn:
        status = conn.execute(
            text("SELECT status FROM reports WHERE id = :i"), {"i": report_id}
        ).scalar()
    engine.dispose()
    return status


@pytest.mark.slow
def test_kill_9_mid_report_then_restart_completes_it(big_data, tmp_path):
    url = f"sqlite:///{tmp_path / 'crash.sqlite3'}"
    assert run_cli(url, "load-data", str(big_data)).returncode == 0
    reports = tmp_path / "reports"
    server = ServerProcess(url, reports, tmp_path / "server.log").start()
    report_id = requests.post(f"{server.url}/trigger_report", timeout=10).json()["report_id"]
    time.sleep(0.3)
    server.kill()  # SIGKILL: no cleanup, no goodbye
    assert report_status(url, report_id) == "Running"
    assert not (reports / f"report_{report_id}.csv").exists()
    restarted = ServerProcess(url, reports, tmp_path / "server.log").start()
    try:
        done = wait_for_report(restarted.url, report_id)
        assert done.status_code == 200
        frame = pd.read_csv(io.StringIO(done.text))
        assert len(frame) > 1000
        listing = requests.get(f"{restarted.url}/reports", timeout=10).json()["reports"]
        assert next(r for r in listing if r["report_id"] == report_id)["status"] == "Complete"
        assert not list(reports.glob(".*.tmp"))
    finally:
        restarted.stop()


def test_reports_left_running_are_run_again_at_start(app, tmp_path):
    with app.app_context():
        loader.load(db.engine, SAMPLE)
        db.session.add(Report(id="a" * 32, status=ReportStatus.RUNNING))
        db.session.commit()
    (Path(app.config["REPORTS_DIR"]) / ".report_x.csv.1.2.tmp").write_text("half a fil")
    start_service(app)
    with app.app_context():
        row = db.session.get(Report, "a" * 32)
        assert row.status == "Complete" and row.attempts == 1 and row.row_count > 0
    assert not list(Path(app.config["REPORTS_DIR"]).glob(".*.tmp"))


def test_a_write_that_dies_half_way_leaves_no_file_and_a_failed_report(app, monkeypatch):
    with app.app_context():
        loader.load(db.engine, SAMPLE)

    def half_then_crash(self, path, *args, **kwargs):
        Path(path).write_text("store_id,uptime_last_hour\n12")
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_csv", half_then_crash)
    client = app.test_client()
    report_id = client.post("/trigger_report").get_json()["report_id"]
    response = client.get(f"/get_report/{report_id}")
    assert response.status_code == 422 and "disk full" in response.get_json()["message"]
    assert list(Path(app.config["REPORTS_DIR"]).iterdir()) == []


# --------------------------------------------------------------------------- back-pressure


def test_beyond_workers_and_queue_trigger_answers_429(database_url, tmp_path, monkeypatch):
    app = make_app(database_url, tmp_path, REPORTS_INLINE=False, REPORT_WORKERS=1, REPORT_QUEUE=1)
    with app.app_context():
        loader.load(db.engine, SAMPLE)
    release = threading.Event()
    original = jobs.compute

    def slow_compute(inputs):
        release.wait(30)
        return original(inputs)

    monkeypatch.setattr(jobs, "compute", slow_compute)
    client = app.test_client()
    accepted = [client.post("/trigger_report") for _ in range(2)]
    refused = client.post("/trigger_report")
    assert [r.status_code for r in accepted] == [202, 202]
    assert refused.status_code == 429 and refused.headers["Retry-After"].isdigit()
    assert refused.get_json()["error"] == "too_many_reports"
    release.set()
    for response in accepted:
        report_id = response.get_json()["report_id"]
        for _ in range(200):
            if client.get(f"/get_report/{report_id}").status_code == 200:
                break
            time.sleep(0.05)
        assert client.get(f"/get_report/{report_id}").status_code == 200
    assert client.post("/trigger_report").status_code == 202
    app.extensions["report_runner"].shutdown()


# --------------------------------------------------------------------------- consistency


def shifted_polls(tmp_path: Path, copies: int) -> Path:
    """New polls: the sample's, moved by 1..copies seconds (same stores, all new instants)."""
    polls = pd.read_csv(SAMPLE / "store_status.csv", dtype=str)
    instants = report.parse_utc_timestamps(polls["timestamp_utc"])
    frames = []
    for shift in range(1, copies + 1):
        moved = pd.to_datetime(instants + shift * 1_000_000, unit="us").strftime(
            "%Y-%m-%d %H:%M:%S.%f UTC"
        )
        frames.append(polls.assign(timestamp_utc=moved))
    path = tmp_path / "more_polls.csv"
    pd.concat(frames).to_csv(path, index=False)
    return path


def test_report_during_a_load_sees_all_of_it_or_none(app, tmp_path, monkeypatch):
    # The window's polls are read on a second connection; slow it down so that loads commit
    # between the snapshot's first read and that one: the watermark must still hold.
    window_read = snapshot.read_window_polls

    def slow_window_read(*args):
        time.sleep(0.2)
        return window_read(*args)

    monkeypatch.setattr(snapshot, "read_window_polls", slow_window_read)
    with app.app_context():
        loader.load(db.engine, SAMPLE)
        before = len(
            snapshot.read_inputs(db.engine, report.parse_iso_instant("2023-01-26T00:00:00Z")).polls
        )
    more = shifted_polls(tmp_path, 8)
    as_of = report.parse_iso_instant("2023-01-26T00:00:00Z")
    seen: list[tuple[int, int]] = []
    loading = threading.Thread(target=lambda: run_load(app, more))
    with app.app_context():
        loading.start()
        while loading.is_alive():
            inputs = snapshot.read_inputs(db.engine, as_of)
            seen.append((inputs.batch, len(inputs.polls)))
        loading.join()
        after = len(snapshot.read_inputs(db.engine, as_of).polls)
    assert after > before
    assert {count for _, count in seen} <= {before, after}
    assert all(count == (before if batch == 1 else after) for batch, count in seen)


def run_load(app, path: Path) -> None:
    with app.app_context():
        loader.load(db.engine, polls=path)


# --------------------------------------------------------------------------- hostile input


def test_a_line_longer_than_a_read_block_is_a_clear_error(app, tmp_path):
    path = tmp_path / "store_status.csv"
    path.write_text(
        "store_id,status,timestamp_utc\n" + "1" * (20 << 20) + ",active,2023-01-22 12:00:00 UTC\n"
    )
    with pytest.raises(loader.LoadError) as caught, app.app_context():
        loader.load(db.engine, tmp_path)
    assert str(path) in str(caught.value)


def test_one_bad_row_at_the_end_of_a_big_file_loads_nothing(app, tmp_path):
    source = pd.read_csv(SAMPLE / "store_status.csv", dtype=str)
    big = pd.concat([source] * 10, ignore_index=True)
    path = tmp_path / "store_status.csv"
    big.to_csv(path, index=False)
    with open(path, "a") as handle:
        handle.write("42,active,2023-02-30 00:00:00 UTC\n")
    with pytest.raises(loader.LoadError, match=f"line {len(big) + 2}"), app.app_context():
        loader.load(db.engine, tmp_path)
    with app.app_context():
        assert db.session.execute(text("SELECT COUNT(*) FROM polls")).scalar() == 0


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
        client.put("/get_report/" + "a" * 32),
        client.open("/trigger_report", method="PATCH"),
    ]
    assert [r.status_code for r in cases] == [400, 400, 400, 413, 404, 404, 400, 400, 405, 405]
    assert all(set(r.get_json()) >= {"error", "message"} for r in cases)


# --------------------------------------------------------------------------- security


def test_report_files_are_only_read_from_the_reports_dir(tmp_path):
    assert jobs.report_path(tmp_path, "f" * 32) == tmp_path / f"report_{'f' * 32}.csv"
    for hostile in ["../" * 3 + "etc/passwd", "F" * 32, "f" * 31, "f" * 33, "", "f" * 31 + "\n"]:
        with pytest.raises(jobs.ReportNotFound):
            jobs.report_path(tmp_path, hostile)


def test_report_ids_are_unguessable():
    ids = {jobs.new_report_id() for _ in range(1000)}
    assert len(ids) == 1000 and all(jobs.is_valid_report_id(i) for i in ids)


def test_the_token_never_reaches_the_logs(database_url, tmp_path, caplog):
    token = "tok-" + "9" * 20
    app = make_app(database_url, tmp_path, API_TOKEN=token)
    client = app.test_client()
    with caplog.at_level(logging.DEBUG):
        client.get("/reports", headers={"Authorization": f"Bearer {token}x"})
        client.post("/trigger_report", headers={"Authorization": f"Bearer {token}"}, data="{")
    assert token not in caplog.text


def test_expired_reports_and_their_files_are_removed(app):
    reports_dir = Path(app.config["REPORTS_DIR"])
    with app.app_context():
        old, new = "b" * 32, "c" * 32
        db.session.add(Report(id=old, status="Complete", created_at=utcnow() - timedelta(days=40)))
        db.session.add(Report(id=new, status="Complete", created_at=utcnow()))
        db.session.commit()
        for report_id in (old, new):
            jobs.report_path(reports_dir, report_id).write_text("store_id\n")
        assert jobs.remove_expired(str(reports_dir), ttl_days=30) == 1
        assert db.session.get(Report, old) is None and db.session.get(Report, new) is not None
    assert (
        not jobs.report_path(reports_dir, old).exists()
        and jobs.report_path(reports_dir, new).exists()
    )


# --------------------------------------------------------------------------- the API contract


def test_openapi_document_describes_every_route(app):
    document = app.test_client().get("/openapi.json").get_json()
    routes = {
        (rule.rule.replace("<", "{").replace(">", "}"), method.lower())
        for rule in app.url_map.iter_rules()
        if rule.endpoint != "static"
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    documented = {(path, method) for path, item in document["paths"].items() for method in item}
    assert documented | {("/openapi.json", "get")} == routes


@pytest.mark.slow
def test_schemathesis_finds_no_5xx_and_no_schema_violation(live_server):
    command = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    result = subprocess.run(
        [
            command,
            "run",
            f"{live_server.url}/openapi.json",
            "--checks",
            "all",
            "--max-examples",
            "25",
            "--seed",
            "7",
            "--workers",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-4000:]


@pytest.mark.slow
def test_bounded_load_loses_nothing_and_gives_no_5xx(live_server):
    sys.path.insert(0, str(ROOT / "bench"))
    import load_test

    outcome = load_test.run(live_server.url, clients=40, seconds=8)
    assert outcome["server_errors"] == 0
    assert outcome["lost"] == []
    assert outcome["results"].triggered and not outcome["results"].errors
