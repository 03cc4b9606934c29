"""Faults injected: crashes, failing jobs, concurrent loads, floods, hostile input, expiry."""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import re
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
from sqlalchemy import create_engine, select, text, update
from sqlalchemy.exc import OperationalError

import config
import loader
import snapshot
import timestamps
from app import create_app
from jobs import errors, executors, housekeeping, leases, results, states, steps
from jobs.options import ReportRequest
from models import LoadBatch, Report, ReportShard, ReportStatus, db, utcnow
from tests.conftest import ROOT, SAMPLE, SHARED, make_app
from tests.jobcheck import StepHook
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


def wait_until_part_done(database_url: str, report_id: str, timeout: float = 60) -> None:
    """Return once the report is Running with some, not all, of its shards done."""
    engine = create_engine(database_url)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                row = conn.execute(
                    text("SELECT status, shards_done, shard_count FROM reports WHERE id = :i"),
                    {"i": report_id},
                ).one()
            if row.status == "Running" and 0 < row.shards_done < row.shard_count:
                return
            assert row.status in ("Queued", "Running"), f"report ended first: {row.status}"
            time.sleep(0.01)
        raise TimeoutError("no shard was done in time")
    finally:
        engine.dispose()


@pytest.mark.slow
def test_kill_9_mid_report_then_restart_completes_it(big_data, tmp_path):
    url = f"sqlite:///{tmp_path / 'crash.sqlite3'}"
    assert run_cli(url, "load-data", str(big_data)).returncode == 0
    reports = tmp_path / "reports"
    # Small shards, one at a time: the report takes a while, whatever the machine's speed.
    server = ServerProcess(
        url, reports, tmp_path / "server.log", REPORT_SHARD_STORES="300", REPORT_WORKERS="1"
    )
    server.start()
    report_id = requests.post(f"{server.url}/trigger_report", timeout=10).json()["report_id"]
    wait_until_part_done(url, report_id)
    server.kill()  # SIGKILL: no cleanup, no goodbye
    assert report_status(url, report_id) in ("Queued", "Running")
    assert not (reports / f"report_{report_id}.csv").exists()
    # The new process finds the old owner dead on this machine and takes its work over.
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
    assert "taking over" in (tmp_path / "server.log").read_text()


DEAD_OWNER = "other-host:4242:dead"


def add_running_report(report_id: str, shards: int, attempts: int = 1) -> None:
    """A report a vanished process left Running: its shards' leases have run out."""
    expired = utcnow() - timedelta(minutes=5)
    last_key = db.session.scalar(text("SELECT MAX(id) FROM stores"))
    batch = db.session.scalar(text("SELECT last_batch FROM data_state"))
    now_us = db.session.scalar(text("SELECT MAX(max_ts_us) FROM load_batches"))
    db.session.add(
        Report(
            id=report_id,
            status=ReportStatus.RUNNING,
            batch=batch,
            as_of_us=now_us,
            shard_count=shards,
            started_at=expired,
        )
    )
    bounds = [1 + last_key * n // shards for n in range(shards)] + [last_key + 1]
    for number in range(shards):
        db.session.add(
            ReportShard(
                report_id=report_id,
                shard=number,
                key_low=bounds[number],
                key_high=bounds[number + 1],
                status=ReportStatus.RUNNING,
                owner=DEAD_OWNER,
                lease_expires_at=expired,
                attempts=attempts,
            )
        )
    db.session.commit()


def test_work_whose_lease_expired_is_taken_over_and_completed(app):
    with app.app_context():
        loader.load(db.engine, SAMPLE)
        add_running_report("a" * 32, shards=3)
        assert leases.take_over_expired(app.extensions["report_executor"]) == 3
        row = db.session.get(Report, "a" * 32)
        assert row.status == "Complete" and row.row_count > 0 and row.progress == 1.0
        attempts = db.session.scalars(select(ReportShard.attempts)).all()
        assert attempts == [2, 2, 2]
        assert leases.take_over_expired(app.extensions["report_executor"]) == 0


def test_a_shard_attempted_too_often_fails_the_report_with_a_clear_message(app):
    # A report whose process died three times (e.g. out of memory) is not run a fourth time.
    with app.app_context():
        loader.load(db.engine, SAMPLE)
        add_running_report("b" * 32, shards=1, attempts=3)
        leases.take_over_expired(app.extensions["report_executor"])
        row = db.session.get(Report, "b" * 32)
        assert row.status == "Failed"
        assert row.error == (
            "gave up after 3 attempts at shard 1 of 1: the process computing it stopped each time"
        )


def test_a_live_owner_keeps_its_work(app):
    with app.app_context():
        loader.load(db.engine, SAMPLE)
        add_running_report("c" * 32, shards=1)
        db.session.execute(
            update(ReportShard).values(lease_expires_at=utcnow() + timedelta(minutes=5))
        )
        db.session.commit()
        assert leases.take_over_expired(app.extensions["report_executor"]) == 0
        assert db.session.get(Report, "c" * 32).status == "Running"


def test_threads_asking_at_once_get_one_owner_name(monkeypatch):
    # The `report` command's lease keeper asks for the name while the command creates its
    # report: two names would leave the report Queued under one and claimed under the other.
    monkeypatch.setattr(executors, "_OWNER", {})
    tokens = iter(range(1000))
    inside = threading.Barrier(2)

    def token_waiting_for_company(_size: int) -> str:
        # Wait here for a second thread: without the lock one comes at once (and gets a name
        # of its own); with it none can, and the wait ends unmet.
        with contextlib.suppress(threading.BrokenBarrierError):
            inside.wait(timeout=2)
        return f"{next(tokens):08x}"

    monkeypatch.setattr(executors.secrets, "token_hex", token_waiting_for_company)
    start = threading.Barrier(8)
    names: list[str] = []

    def ask() -> None:
        start.wait()
        names.append(executors.process_owner())

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(names) == 8 and len(set(names)) == 1


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread niceness is Linux's")
def test_report_threads_run_below_the_request_threads(sqlite_app):
    # Uploads and page requests must not queue behind a report for the cores.
    executor = executors.ThreadExecutor(sqlite_app, 1)
    here = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    def own_niceness() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    try:
        assert executor.pool.submit(own_niceness).result() == min(here + 10, 19)
        assert own_niceness() == here  # the calling thread keeps its own
    finally:
        executor.shutdown()


def test_a_shard_delivered_twice_is_computed_once(app, monkeypatch):
    with app.app_context():
        loader.load(db.engine, SAMPLE)
    computed = []
    original = steps.compute_shard
    monkeypatch.setattr(
        steps,
        "compute_shard",
        lambda work: computed.append(work.shard) or original(work),
    )
    client = app.test_client()
    report_id = client.post("/trigger_report").get_json()["report_id"]
    first = client.get(f"/get_report/{report_id}").data
    with app.app_context():
        for shard in range(db.session.get(Report, report_id).shard_count):
            steps.run_shard(report_id, shard, executors.process_owner())
        assert db.session.get(Report, report_id).shards_done == len(computed)
    assert sorted(computed) == list(range(len(computed)))
    assert client.get(f"/get_report/{report_id}").data == first


def released(report_id: str) -> bool:
    rows = db.session.execute(
        select(ReportShard.lease_expires_at).where(ReportShard.report_id == report_id)
    ).all()
    db.session.commit()
    return bool(rows) and all(lease is not None and lease <= utcnow() for (lease,) in rows)


def test_a_step_that_cannot_record_its_outcome_is_not_left_running(
    database_url, tmp_path, monkeypatch
):
    # Recording a shard's result fails (the database stays locked past every retry): the step
    # lets go of its rows at once (long before its 10-minute lease would run out), and the
    # next sweep runs the shard again, which completes.
    app = make_app(database_url, tmp_path, REPORT_LEASE_SECONDS=600)
    with app.app_context():
        loader.load(db.engine, SAMPLE)
    original, failures = states.complete_shard, []

    def locked_once(*args):
        if not failures:
            failures.append(args)
            raise OperationalError("UPDATE report_shards ...", {}, Exception("database is locked"))
        return original(*args)

    monkeypatch.setattr(states, "complete_shard", locked_once)
    let_go = StepHook(monkeypatch, states, "release")
    executor = executors.ThreadExecutor(app, 1)
    with app.app_context():
        report_id = steps.submit_report(ReportRequest(), executor)
        let_go.wait()  # the failed step let go of its shard
        executor.shutdown()
        assert released(report_id), "the shard was never released"
        assert failures and db.session.get(Report, report_id).status == "Running"
        app.extensions["report_executor"] = executors.InlineExecutor()
        states.renew(executors.process_owner())  # a keeper round renews first, then sweeps
        assert leases.take_over_expired(app.extensions["report_executor"]) == 1
        row = db.session.get(Report, report_id)
        assert row.status == "Complete"
        assert db.session.scalars(select(ReportShard.attempts)).all() == [2]


def test_a_write_that_dies_half_way_leaves_no_file_and_the_report_is_still_served(app, monkeypatch):
    # The local CSV is a copy of the table stored in the database: if writing it fails (disk
    # full at the rename), no partial file is left and the report is served all the same.
    with app.app_context():
        loader.load(db.engine, SAMPLE)
    real_replace, failures = os.replace, []

    def replace_failing_once(source, target):
        if not failures:
            failures.append(target)
            raise OSError(28, "No space left on device")
        real_replace(source, target)

    monkeypatch.setattr(results.os, "replace", replace_failing_once)
    client = app.test_client()
    report_id = client.post("/trigger_report").get_json()["report_id"]
    reports_dir = Path(app.config["REPORTS_DIR"])
    assert failures and list(reports_dir.iterdir()) == []
    response = client.get(f"/get_report/{report_id}")
    assert response.status_code == 200
    frame = pd.read_csv(io.BytesIO(response.data), dtype={"store_id": str})
    assert len(frame) == pd.read_csv(SAMPLE / "store_status.csv")["store_id"].nunique()
    assert [path.name for path in reports_dir.iterdir()] == [f"report_{report_id}.csv"]


# --------------------------------------------------------------------------- back-pressure


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


# --------------------------------------------------------------------------- consistency


def shifted_polls(tmp_path: Path, copies: int) -> Path:
    """New polls: the sample's, moved by 1..copies seconds (same stores, all new instants)."""
    polls = pd.read_csv(SAMPLE / "store_status.csv", dtype=str)
    stamps = pd.to_datetime(polls["timestamp_utc"].str.removesuffix(" UTC"), format="ISO8601")
    frames = [
        polls.assign(
            timestamp_utc=(stamps + pd.Timedelta(seconds=shift)).dt.strftime(
                "%Y-%m-%d %H:%M:%S.%f UTC"
            )
        )
        for shift in range(1, copies + 1)
    ]
    path = tmp_path / "more_polls.csv"
    pd.concat(frames).to_csv(path, index=False)
    return path


def test_a_report_during_a_load_sees_all_of_it_or_none(app, tmp_path, monkeypatch):
    # Forced order (a hook, not timing): the load has written its polls but not committed; a
    # snapshot is fixed and two shards are read; the load commits; the other two shards are
    # read with the same snapshot. The watermark must hold: the snapshot reads the data as it
    # was before the load, entirely, and a snapshot fixed afterwards reads all of the load.
    as_of = timestamps.parse_iso_instant("2023-01-26T00:00:00Z")
    with app.app_context():
        loader.load(db.engine, SAMPLE)
        before_rows = polls_read(as_of)
    record_batch = loader._record_batch
    mid_load: list[tuple[snapshot.Snapshot, int]] = []

    def read_before_commit(conn, batch, *args):
        record_batch(conn, batch, *args)
        with app.app_context():  # another connection, while the load is uncommitted
            fixed = snapshot.fix_snapshot(db.engine, as_of)
            mid_load.append((fixed, shard_polls(fixed, (1, 51))))

    monkeypatch.setattr(loader, "_record_batch", read_before_commit)
    run_load(app, shifted_polls(tmp_path, 8))
    monkeypatch.setattr(loader, "_record_batch", record_batch)
    [(fixed, first_half)] = mid_load
    with app.app_context():
        second_half = shard_polls(fixed, (101, 151))
        last = db.session.scalar(text("SELECT last_batch FROM data_state"))
        db.session.commit()
        after_rows = polls_read(as_of)
    assert (fixed.batch, last) == (1, 2)
    assert first_half + second_half == before_rows
    assert after_rows > before_rows


def shard_polls(fixed: snapshot.Snapshot, shard_starts: tuple[int, ...]) -> int:
    """Polls read by the shards of 50 stores starting at `shard_starts`."""
    parts = [snapshot.read_shard(db.engine, fixed, low, low + 50) for low in shard_starts]
    return sum(part.inputs.polls.ts_us.size for part in parts)


def polls_read(as_of: int) -> int:
    fixed = snapshot.fix_snapshot(db.engine, as_of)
    return snapshot.read_shard(
        db.engine, fixed, 1, fixed.last_store_key + 1
    ).inputs.polls.ts_us.size


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


# --------------------------------------------------------------------------- security


def test_report_files_are_only_read_from_the_reports_dir(tmp_path):
    assert results.report_path(tmp_path, "f" * 32) == tmp_path / f"report_{'f' * 32}.csv"
    for hostile in ["../" * 3 + "etc/passwd", "F" * 32, "f" * 31, "f" * 33, "", "f" * 31 + "\n"]:
        with pytest.raises(errors.ReportNotFound):
            results.report_path(tmp_path, hostile)


def test_the_token_never_reaches_the_logs(sqlite_app, tmp_path, caplog, monkeypatch):
    # Requests with a right and a wrong token, one of which fails inside: the failure is
    # logged (so logging is on and captured), the token is not.
    token = "tok-" + "9" * 20
    app = make_app(sqlite_app.config["DATABASE_URL"], tmp_path, API_TOKEN=token)

    def explode(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(steps, "submit_report", explode)
    client = app.test_client()
    with caplog.at_level(logging.DEBUG):
        client.get("/reports", headers={"Authorization": f"Bearer {token}x"})
        failed = client.post("/trigger_report", headers={"Authorization": f"Bearer {token}"})
    assert failed.status_code == 500
    assert "unhandled error on POST /trigger_report" in caplog.text
    assert token not in caplog.text


def make_report_row(report_id: str, age_days: float) -> None:
    db.session.add(
        Report(
            id=report_id,
            status=ReportStatus.COMPLETE,
            created_at=utcnow() - timedelta(days=age_days),
        )
    )
    db.session.commit()


def test_expired_reports_and_their_files_are_removed(app):
    reports_dir = Path(app.config["REPORTS_DIR"])
    with app.app_context():
        old, new = "b" * 32, "c" * 32
        make_report_row(old, 40)
        make_report_row(new, 0)
        for report_id in (old, new):
            results.report_path(reports_dir, report_id).write_text("store_id\n")
        assert housekeeping.remove_expired(str(reports_dir), ttl_days=30) == 1
        assert db.session.get(Report, old) is None and db.session.get(Report, new) is not None
    assert not results.report_path(reports_dir, old).exists()
    assert results.report_path(reports_dir, new).exists()


def test_at_most_report_max_count_reports_are_kept_oldest_go_first(app):
    reports_dir = Path(app.config["REPORTS_DIR"])
    ids = [f"{n:032x}" for n in range(5)]
    with app.app_context():
        for age, report_id in enumerate(ids):  # ids[0] is the newest
            make_report_row(report_id, age)
            results.report_path(reports_dir, report_id).write_text("store_id\n")
        db.session.add(
            Report(
                id="e" * 32, status=ReportStatus.RUNNING, created_at=utcnow() - timedelta(days=9)
            )
        )
        db.session.commit()
        assert housekeeping.remove_beyond_count(str(reports_dir), keep=2) == 3
        kept = set(db.session.scalars(select(Report.id)))
    assert kept == {ids[0], ids[1], "e" * 32}  # a running report is never removed
    assert sorted(path.name for path in reports_dir.iterdir()) == sorted(
        f"report_{i}.csv" for i in ids[:2]
    )


@pytest.mark.parametrize(
    "name, value, fragment",
    [
        ("REPORT_TTL_DAYS", 0.0, "REPORT_TTL_DAYS=0.0: must be between"),
        ("REPORT_TTL_DAYS", -1.0, "REPORT_TTL_DAYS=-1.0: must be between"),
        ("REPORT_TTL_DAYS", math.inf, "must be a finite number"),
        ("REPORT_TTL_DAYS", math.nan, "must be a finite number"),
        ("REPORT_MAX_COUNT", 0, "REPORT_MAX_COUNT=0: must be between 1"),
        ("REPORT_WORKERS", 0, "REPORT_WORKERS=0"),
        ("REPORT_SHARD_STORES", 0, "REPORT_SHARD_STORES=0"),
    ],
)
def test_bad_settings_stop_start_up_with_a_clear_message(tmp_path, name, value, fragment):
    with pytest.raises(config.SettingsError, match=fragment.replace("(", "\\(")):
        create_app({"DATABASE_URL": f"sqlite:///{tmp_path / 'x.sqlite3'}", name: value})


@pytest.mark.slow
def test_bad_environment_values_stop_start_up(tmp_path):
    for raw in ("inf", "nan", "0", "-1", "soon"):
        done = run_cli(f"sqlite:///{tmp_path / 'x.sqlite3'}", "init-db", REPORT_TTL_DAYS=raw)
        assert done.returncode != 0
        assert "REPORT_TTL_DAYS" in done.stderr and "Traceback" not in done.stderr, done.stderr


# --------------------------------------------------------------------------- the API contract


def test_openapi_document_describes_every_route(app):
    # Every route but Flask's own static files, page shells included, each of its methods.
    document = app.test_client().get("/openapi.json").get_json()
    routes = {
        (re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule), method.lower())
        for rule in app.url_map.iter_rules()
        if rule.endpoint != "static"
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    documented = {(path, method) for path, item in document["paths"].items() for method in item}
    assert documented == routes


@pytest.mark.slow
def test_schemathesis_finds_no_5xx_and_no_schema_violation(live_server):
    command = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    # Every check runs (schemathesis' default); schemathesis.toml turns one off for the
    # ingestion endpoints only, and says why.
    result = subprocess.run(
        [
            command,
            "--config-file",
            str(ROOT / "schemathesis.toml"),
            "run",
            f"{live_server.url}/openapi.json",
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


def test_retired_versions_are_purged_only_when_no_report_can_read_them(app, tmp_path):
    # Hours loaded twice: the first version is retired by batch 2. It stays while a report
    # reading batch 1 is kept, and while batch 2 is less than an hour old; then it goes.
    hours = "store_id,day,start_time_local,end_time_local\n1,0,09:00,17:00\n"
    (tmp_path / "menu_hours.csv").write_text(hours)
    with app.app_context():
        loader.load(db.engine, hours=tmp_path / "menu_hours.csv")
        (tmp_path / "menu_hours.csv").write_text(hours.replace("17:00", "18:00"))
        loader.load(db.engine, hours=tmp_path / "menu_hours.csv")
        db.session.add(Report(id="d" * 32, status=ReportStatus.COMPLETE, batch=1))
        db.session.commit()

        def versions() -> int:
            count = db.session.scalar(text("SELECT COUNT(*) FROM business_hours"))
            db.session.commit()
            return count

        assert (
            housekeeping.purge_retired_versions() == 0 and versions() == 2
        )  # batch 2 is too recent
        db.session.execute(update(LoadBatch).values(finished_at=utcnow() - timedelta(hours=2)))
        db.session.commit()
        assert (
            housekeeping.purge_retired_versions() == 0 and versions() == 2
        )  # a report reads batch 1
        housekeeping.delete_reports(["d" * 32])
        assert housekeeping.purge_retired_versions() == 1 and versions() == 1


def test_a_shard_that_fails_is_tried_again_elsewhere_then_completes(
    database_url, tmp_path, monkeypatch
):
    # The computation fails once (say, out of memory on that worker): the shard is let go and
    # the next sweep runs it again; the second attempt completes the report.
    app = make_app(database_url, tmp_path, REPORT_LEASE_SECONDS=600)
    with app.app_context():
        loader.load(db.engine, SAMPLE)
    original, failures = steps.compute_shard, []

    def fails_once(work):
        if not failures:
            failures.append(work.shard)
            raise MemoryError
        return original(work)

    monkeypatch.setattr(steps, "compute_shard", fails_once)
    let_go = StepHook(monkeypatch, states, "release")
    executor = executors.ThreadExecutor(app, 1)
    with app.app_context():
        report_id = steps.submit_report(ReportRequest(), executor)
        let_go.wait()
        executor.shutdown()
        assert released(report_id), "the failed shard was never let go"
        app.extensions["report_executor"] = executors.InlineExecutor()
        states.renew(executors.process_owner())
        assert leases.take_over_expired(app.extensions["report_executor"]) == 1
        assert db.session.get(Report, report_id).status == "Complete"
        assert db.session.scalars(select(ReportShard.attempts)).all() == [2]


def test_a_trigger_leaves_every_pooled_sqlite_connection_with_its_own_lock_wait(tmp_path):
    app = make_app(f"sqlite:///{tmp_path / 'x.sqlite3'}", tmp_path, TRIGGER_LOCK_TIMEOUT_MS=250)
    client = app.test_client()
    for _ in range(3):
        assert client.post("/trigger_report").status_code == 202
    with app.app_context():
        connections = [db.engine.connect() for _ in range(5)]
        waits = [c.exec_driver_sql("PRAGMA busy_timeout").scalar() for c in connections]
        for connection in connections:
            connection.close()
    assert waits == [30_000] * 5
