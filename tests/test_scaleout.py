"""Out of one process: Celery workers, several API processes, and faults between them.

Real processes over real connections: `flask --app app worker` processes on RabbitMQ (AMQP)
and Redis, `python app.py` and `gunicorn -w 4` API processes, MariaDB or a shared SQLite
file. Without a broker the Celery tests skip with the reason printed (in CI they must run).
"""

from __future__ import annotations

import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest
import requests
from sqlalchemy import create_engine, text

from tests.brokers import broker_port, broker_url
from tests.conftest import SAMPLE, SHARED
from tests.server import (
    GunicornProcess,
    ServerProcess,
    WorkerProcess,
    free_port,
    run_cli,
    wait_for_report,
)
from tests.tcpproxy import TcpProxy

pytestmark = pytest.mark.slow

FAST_LEASES = {"REPORT_LEASE_SECONDS": "3"}
# A shard per store: a report of the sample is ~200 steps, so one is seen mid-shard.
MANY_SHARDS = {"REPORT_SHARD_STORES": "1", **FAST_LEASES}


@pytest.fixture(params=["rabbitmq", "redis"])
def broker(request) -> str:
    return broker_url(request.param)


@pytest.fixture(autouse=True)
def no_process_left_behind(monkeypatch):
    """Stop every server and worker a test started, whatever happened in it."""
    started = []
    for kind in (ServerProcess, WorkerProcess):
        original = kind.start

        def start(self, *args, _original=original, **kwargs):
            started.append(self)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(kind, "start", start)
    yield
    for process in started:
        process.stop()


@pytest.fixture
def shared_database(database_url, tmp_path) -> str:
    """The database with the bundled sample loaded (SQLite: one file all processes share)."""
    assert run_cli(database_url, "load-data", str(SAMPLE)).returncode == 0
    return database_url


def query(database_url: str, sql: str, **params):
    engine = create_engine(database_url)
    with engine.connect() as conn:
        rows = conn.execute(text(sql), params).all()
    engine.dispose()
    return rows


def embedded_csv(database_url: str, tmp_path: Path) -> bytes:
    """The report as the embedded executor makes it (the `report` command, inline)."""
    out = tmp_path / f"embedded-{time.monotonic_ns()}.csv"
    done = run_cli(database_url, "report", "--out", str(out))
    assert done.returncode == 0, done.stderr
    return out.read_bytes()


def trigger(url: str, **body) -> str:
    response = requests.post(f"{url}/trigger_report", json=body or None, timeout=30)
    assert response.status_code == 202, response.text
    return response.json()["report_id"]


def running_shard_owner(database_url: str, report_id: str, timeout: float = 60) -> int:
    """The pid of a process computing a shard of the report right now (one connection, asked
    every 20 ms: with a shard per store the report runs through hundreds of shards)."""
    engine = create_engine(database_url)
    running = text("SELECT owner FROM report_shards WHERE report_id = :r AND status = 'Running'")
    deadline = time.monotonic() + timeout
    try:
        with engine.connect() as conn:
            while time.monotonic() < deadline:
                rows = conn.execute(running, {"r": report_id}).all()
                conn.rollback()  # the next question sees what committed since
                if rows and rows[0][0]:
                    return int(rows[0][0].split(":")[1])
                time.sleep(0.02)
    finally:
        engine.dispose()
    raise TimeoutError("no shard was seen running")


def download(url: str, report_id: str) -> bytes:
    response = requests.get(f"{url}/get_report/{report_id}", timeout=60)
    assert response.status_code == 200, response.text
    return response.content


def wait_for_tasks_done(log: Path, task_ids: list[str], timeout: float = 60) -> None:
    """Return once the worker has logged each task as finished (it runs in another process:
    its log is the hook)."""
    deadline = time.monotonic() + timeout
    while True:
        text = log.read_text()
        left = [task for task in task_ids if not re.search(rf"\[{task}\] succeeded in", text)]
        if not left:
            return
        assert time.monotonic() < deadline, f"tasks {left} not finished in {timeout} s"
        time.sleep(0.1)


def completions_logged(report_id: str, *logs: Path) -> int:
    pattern = re.compile(rf"report {report_id}: complete")
    return sum(len(pattern.findall(log.read_text())) for log in logs if log.exists())


# --------------------------------------------------------------------------- Celery


def test_celery_workers_compute_what_the_embedded_executor_computes(
    shared_database, broker, tmp_path
):
    # Shards of 7 stores on two workers of one process each; options set; the API only
    # enqueues. The CSV must equal the embedded (inline) one byte for byte.
    settings = {"REPORT_SHARD_STORES": "7", "CELERY_BROKER_URL": broker}
    workers = [
        WorkerProcess(shared_database, broker, tmp_path / f"worker{n}.log").start()
        for n in range(2)
    ]
    api = ServerProcess(shared_database, tmp_path / "api", tmp_path / "api.log", **settings)
    api.start()
    try:
        report_id = trigger(api.url, stale_after="2h", outages=True)
        done = wait_for_report(api.url, report_id, timeout=180)
        assert done.status_code == 200, done.text
    finally:
        api.stop()
        for worker in workers:
            worker.stop()
    inline = tmp_path / "inline.csv"
    command = ["report", "--stale-after", "2h", "--outages", "--out", str(inline)]
    assert run_cli(shared_database, *command).returncode == 0
    assert done.content == inline.read_bytes()
    worked = [
        log.read_text().count("store_monitor.run_shard") for log in tmp_path.glob("worker*.log")
    ]
    assert all(count > 0 for count in worked), "both workers should have taken shards"


def celery_api(database_url: str, broker: str, tmp_path: Path, **settings: str) -> ServerProcess:
    """A started API process that enqueues report steps on `broker` (workers run them)."""
    return ServerProcess(
        database_url, tmp_path / "api", tmp_path / "api.log", CELERY_BROKER_URL=broker, **settings
    ).start()


def test_a_worker_killed_mid_shard_is_replaced_and_the_csv_is_unchanged(shared_database, tmp_path):
    broker = broker_url("rabbitmq")
    settings = MANY_SHARDS
    logs = [tmp_path / f"worker{n}.log" for n in range(2)]
    workers = [WorkerProcess(shared_database, broker, log, **settings).start() for log in logs]
    api = celery_api(shared_database, broker, tmp_path, **settings)
    try:
        report_id = trigger(api.url)
        owner = running_shard_owner(shared_database, report_id)
        victim = next(worker for worker in workers if worker.owns(owner))
        victim.kill()  # SIGKILL the worker and its pool processes mid-shard
        done = wait_for_report(api.url, report_id, timeout=180)
        assert done.status_code == 200, done.text
    finally:
        api.stop()
        for worker in workers:
            worker.stop()
    assert done.content == embedded_csv(shared_database, tmp_path)
    survivor = next(log for log, worker in zip(logs, workers, strict=True) if worker is not victim)
    assert "complete" in survivor.read_text()


def test_the_same_shard_delivered_twice_changes_nothing(shared_database, tmp_path):
    broker = broker_url("rabbitmq")
    worker = WorkerProcess(shared_database, broker, tmp_path / "worker.log").start()
    api = celery_api(shared_database, broker, tmp_path)
    try:
        report_id = trigger(api.url)
        first = wait_for_report(api.url, report_id).content
        from celery import Celery

        sender = Celery(broker=broker)
        duplicates = [
            sender.send_task("store_monitor.run_shard", args=[report_id, 0], queue="store_monitor")
            for _ in range(2)
        ]
        wait_for_tasks_done(worker.log_path, [task.id for task in duplicates])
        again = requests.get(f"{api.url}/get_report/{report_id}", timeout=10)
    finally:
        api.stop()
        worker.stop()
    assert again.content == first
    shards = query(
        shared_database,
        "SELECT attempts, status FROM report_shards WHERE report_id = :r",
        r=report_id,
    )
    assert shards == [(1, "Complete")]
    assert completions_logged(report_id, tmp_path / "worker.log") == 1


def own_redis_database(number: int) -> str:
    """A Redis database of its own (not the /0 other tests share): no other test's worker can
    take a message that waits there for this test's worker."""
    return broker_url("redis").removesuffix("/0") + f"/{number}"


def health(url: str) -> dict:
    response = requests.get(f"{url}/healthz", timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def wait_for_workers(url: str, count: int, timeout: float = 30) -> None:
    """Return once /healthz counts `count` workers (their heartbeats come from other
    processes: no hook to wait on)."""
    deadline = time.monotonic() + timeout
    while (seen := health(url)["workers"]) != count:
        assert time.monotonic() < deadline, f"{seen} workers seen, not {count}"
        time.sleep(0.2)


def test_workers_are_counted_and_a_report_waiting_for_none_says_so(shared_database, tmp_path):
    broker = own_redis_database(11)
    api = celery_api(shared_database, broker, tmp_path)
    assert health(api.url)["workers"] == 0
    report_id = trigger(api.url)
    waiting = requests.get(f"{api.url}/get_report/{report_id}", timeout=10)
    assert waiting.status_code == 202 and waiting.json()["status"] == "Queued"
    assert "no report worker has been seen" in waiting.json()["warning"]
    listed = requests.get(f"{api.url}/reports", timeout=10).json()["reports"][0]
    assert listed["warning"] == waiting.json()["warning"]
    worker = WorkerProcess(shared_database, broker, tmp_path / "worker.log", concurrency=2)
    worker.start()
    done = wait_for_report(api.url, report_id)
    assert done.status_code == 200, done.text
    wait_for_workers(api.url, 2)  # each process of the pool beats on its own
    worker.stop()  # a worker process that stops says goodbye
    assert health(api.url)["workers"] == 0


def test_an_unreachable_broker_gives_503_and_creates_nothing(shared_database, tmp_path):
    closed = f"amqp://guest:guest@127.0.0.1:{free_port()}//"
    api = ServerProcess(
        shared_database,
        tmp_path / "api",
        tmp_path / "api.log",
        CELERY_BROKER_URL=closed,
        CELERY_CONNECT_TIMEOUT="1",
    ).start()
    try:
        response = requests.post(f"{api.url}/trigger_report", timeout=60)
        listing = requests.get(f"{api.url}/reports", timeout=10).json()["reports"]
    finally:
        api.stop()
    assert response.status_code == 503 and response.headers["Retry-After"].isdigit()
    assert "nothing was created" in response.json()["message"]
    assert listing == []


def test_a_one_second_broker_outage_mid_report_delays_no_report(shared_database, tmp_path):
    # The broker goes away for a second while a report runs: a proxy between it and every
    # process closes all connections and refuses new ones (the shared broker itself is never
    # touched). The first trigger afterwards must be accepted (the API's pooled connection is
    # stale), and both reports must complete within a minute: the worker's stale connection
    # must not leave the second report's shards to the 10-minute re-queue sweep.
    proxy = TcpProxy(("127.0.0.1", broker_port("rabbitmq")))
    broker = proxy.url(broker_url("rabbitmq"))
    settings = MANY_SHARDS
    worker = WorkerProcess(shared_database, broker, tmp_path / "worker.log", **settings).start()
    api = celery_api(shared_database, broker, tmp_path, **settings)
    try:
        before = trigger(api.url)
        running_shard_owner(shared_database, before)  # mid-report
        proxy.cut()
        time.sleep(1)  # the outage itself: one second
        proxy.restore()
        after = trigger(api.url)
        done = [wait_for_report(api.url, report_id, timeout=60) for report_id in (before, after)]
    finally:
        api.stop()
        worker.stop()
        proxy.close()
    assert [answer.status_code for answer in done] == [200, 200], [a.text for a in done]
    expected = embedded_csv(shared_database, tmp_path)
    assert done[0].content == done[1].content == expected


# --------------------------------------------------------------------------- API processes


def test_a_killed_api_process_s_report_completes_once_on_the_other(shared_database, tmp_path):
    # Two embedded-executor API processes on one database. The one running the report is
    # killed mid-shard; the other sees its owner dead (or its leases expire) and finishes.
    settings = MANY_SHARDS
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    first = ServerProcess(shared_database, tmp_path / "a", logs[0], **settings).start()
    second = ServerProcess(shared_database, tmp_path / "b", logs[1], **settings).start()
    try:
        report_id = trigger(first.url)
        running_shard_owner(shared_database, report_id)
        first.kill()
        done = wait_for_report(second.url, report_id, timeout=120)
        assert done.status_code == 200, done.text
    finally:
        first.stop()
        second.stop()
    assert done.content == embedded_csv(shared_database, tmp_path)
    assert "taking over" in logs[1].read_text()
    assert completions_logged(report_id, *logs) == 1
    counted = query(
        shared_database, "SELECT shards_done, shard_count FROM reports WHERE id = :r", r=report_id
    )
    assert counted[0][0] == counted[0][1]


def test_any_api_process_serves_any_report_without_a_shared_folder(shared_database, tmp_path):
    first = ServerProcess(shared_database, tmp_path / "a", tmp_path / "a.log").start()
    second = ServerProcess(shared_database, tmp_path / "b", tmp_path / "b.log").start()
    try:
        report_id = trigger(first.url, outages=True)
        made = wait_for_report(first.url, report_id)
        served = requests.get(f"{second.url}/get_report/{report_id}", timeout=30)
        served_json = requests.get(f"{second.url}/get_report/{report_id}?format=json", timeout=30)
    finally:
        first.stop()
        second.stop()
    assert made.status_code == served.status_code == 200
    assert served.content == made.content
    assert served_json.json()["report_id"] == report_id
    assert (tmp_path / "b" / f"report_{report_id}.csv").exists()  # re-created from the database


def test_gunicorn_with_four_workers_serves_triggers_status_and_downloads(shared_database, tmp_path):
    server = GunicornProcess(shared_database, tmp_path / "g", tmp_path / "g.log", workers=4)
    server.start(timeout=60)
    try:
        with ThreadPoolExecutor(6) as clients:  # concurrent: several worker processes answer
            ids = list(clients.map(lambda n: trigger(server.url, outages=bool(n % 2)), range(6)))
        answers = {}
        for report_id in ids:
            done = wait_for_report(server.url, report_id, timeout=120)
            assert done.status_code == 200, done.text
            answers[report_id] = done.content
        with ThreadPoolExecutor(8) as clients:
            fetched = list(clients.map(lambda i: download(server.url, ids[i % 6]), range(48)))
        assert all(content == answers[ids[i % 6]] for i, content in enumerate(fetched))
        listing = requests.get(f"{server.url}/reports", timeout=10).json()["reports"]
        pids = {
            line.split()[2]
            for line in (tmp_path / "g.log").read_text().splitlines()
            if " INFO " in line
        }
    finally:
        server.stop()
    assert {row["report_id"]: row["status"] for row in listing} == dict.fromkeys(ids, "Complete")
    assert answers[ids[0]] == answers[ids[2]] and answers[ids[1]] == answers[ids[3]]
    assert len(pids) >= 2, "requests should have reached more than one worker process"
    for report_id in ids:
        assert completions_logged(report_id, tmp_path / "g.log") == 1


# --------------------------------------------------------------------------- the database


@pytest.mark.mariadb
def test_a_database_connection_killed_mid_shard_is_retried_then_fails_clearly(
    mariadb_server, tmp_path, monkeypatch
):
    import loader
    from jobs import snapshot
    from models import Report, db
    from tests.conftest import make_app
    from tests.databases import admin_connection, create_database, drop_database

    name = f"sm_kill_{os.getpid()}"
    url = create_database(mariadb_server, name)
    try:
        app = make_app(url, tmp_path, REPORT_DB_RETRIES=1)
        with app.app_context():
            loader.load(db.engine, SAMPLE)
        kills = []
        original = snapshot.packed_polls

        def packed_polls_after_a_kill(conn, *args):
            if len(kills) < kills_wanted[0]:
                connection_id = conn.execute(text("SELECT CONNECTION_ID()")).scalar()
                admin = admin_connection(mariadb_server)
                admin.cursor().execute(f"KILL {int(connection_id)}")
                admin.close()
                kills.append(connection_id)
            return original(conn, *args)

        monkeypatch.setattr(snapshot, "packed_polls", packed_polls_after_a_kill)
        client = app.test_client()
        kills_wanted = [1]  # one kill: the retry succeeds
        first = trigger_in_process(client)
        assert client.get(f"/get_report/{first}").status_code == 200 and len(kills) == 1
        kills_wanted[0] = 1 + 2  # every try killed: 1 + REPORT_DB_RETRIES tries, then Failed
        second = trigger_in_process(client)
        failed = client.get(f"/get_report/{second}")
        assert failed.status_code == 422 and len(kills) == 3
        assert failed.get_json()["message"] == (
            "shard 1 of 1: the database failed (OperationalError 2013)"
        )
        third = trigger_in_process(client)
        assert client.get(f"/get_report/{third}").status_code == 200
        with app.app_context():
            assert (
                db.session.get(Report, third).row_count
                == pd.read_csv(SAMPLE / "store_status.csv")["store_id"].nunique()
            )
            db.engine.dispose()
    finally:
        drop_database(mariadb_server, name)


def trigger_in_process(client) -> str:
    response = client.post("/trigger_report")
    assert response.status_code == 202
    return response.get_json()["report_id"]


# --------------------------------------------------------------------------- full data


@pytest.fixture(scope="module")
def full_mariadb(mariadb_server):
    from tests.databases import create_database, drop_database

    folder = SHARED / "loop-full"
    if not (folder / "store_status.csv.gz").exists():
        pytest.skip(f"full data set not found at {folder}")
    name = f"sm_full_{os.getpid()}"
    url = create_database(mariadb_server, name)
    assert run_cli(url, "load-data", str(folder)).returncode == 0
    yield url
    drop_database(mariadb_server, name)


@pytest.mark.mariadb
def test_on_full_data_two_celery_workers_equal_the_embedded_report_and_survive_a_kill(
    full_mariadb, tmp_path
):
    broker = broker_url("rabbitmq")
    settings = {"REPORT_SHARD_STORES": "2000", **FAST_LEASES}
    logs = [tmp_path / f"worker{n}.log" for n in range(2)]
    workers = [WorkerProcess(full_mariadb, broker, log, **settings).start() for log in logs]
    api_settings = {"CELERY_BROKER_URL": broker, **settings}
    api = ServerProcess(full_mariadb, tmp_path / "api", tmp_path / "api.log", **api_settings)
    api.start()
    try:
        undisturbed = wait_for_report(api.url, trigger(api.url), timeout=300)
        report_id = trigger(api.url)
        owner = running_shard_owner(full_mariadb, report_id)
        next(worker for worker in workers if worker.owns(owner)).kill()
        disturbed = wait_for_report(api.url, report_id, timeout=300)
    finally:
        api.stop()
        for worker in workers:
            worker.stop()
    embedded = embedded_csv(full_mariadb, tmp_path)
    assert undisturbed.status_code == disturbed.status_code == 200
    assert undisturbed.content == embedded == disturbed.content
    assert embedded.count(b"\n") == 13_603 + 1
