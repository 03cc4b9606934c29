"""Alert rules and webhooks, end to end: uploads → evaluation → signed calls on a real receiver.

The receiver is a real HTTP server on a thread of the test. Time never passes by sleeping:
retries are driven by calling the sender with a clock moved forward.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import socket
import sqlite3
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
from sqlalchemy import func, select, text, update

import loader
from jobs import alerts, deliveries, incidents, last_evidence
from jobs.leases import LeaseKeeper
from loading import writing
from models import AlertAttempt, AlertEvent, DeliveryStatus, KeyRole, Store, db, utcnow
from tests.brokers import broker_url
from tests.conftest import make_app
from tests.owners import bearer, groups_csv
from tests.server import ServerProcess, WorkerProcess, run_cli
from web import keys

CSV = {"Content-Type": "text/csv"}
SECRET = "s3cret-for-tests"
POLLS = "store_id,status,timestamp_utc\n"
# 2023-01-23 is a Monday: store s1 is open 09:00-17:00 UTC that day.
HOURS = "store_id,day,start_time_local,end_time_local\ns1,0,09:00,17:00\ns2,0,09:00,17:00\n"


def s1_open_on(day: int) -> str:
    """Hours: s1 open 09:00-17:00 on one weekday (0 = Monday)."""
    return f"store_id,day,start_time_local,end_time_local\ns1,{day},09:00,17:00\n"


ZONES = "store_id,timezone_str\ns1,UTC\ns2,UTC\n"
NOON_US = 1_674_475_200_000_000  # 2023-01-23 12:00 UTC


class Receiver:
    """A webhook receiver: records each call (headers, raw body); answers `status`."""

    def __init__(self, port: int = 0) -> None:
        self.calls: list[tuple[dict, bytes]] = []
        self.status = 200
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.calls.append((dict(self.headers), body))
                self.send_response(receiver.status)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def bodies(self) -> list[dict]:
        return [json.loads(body) for _, body in self.calls]


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.stop()


@pytest.fixture
def alert_app(database_url, tmp_path):
    app = make_app(database_url, tmp_path, ALERT_ALLOW_PRIVATE_URLS=1)
    yield app
    with app.app_context():
        db.engine.dispose()


def upload(client, path: str, body: str):
    answer = client.post(path, data=body.encode(), headers=CSV)
    assert answer.status_code == 200, answer.get_json()
    return answer


def polls(*rows: str) -> str:
    return POLLS + "".join(f"{row}\n" for row in rows)


def start(client, receiver, **rule) -> int:
    """Hours and zones, two active polls of s1 on Monday morning, and a rule."""
    upload(client, "/business_hours", HOURS)
    upload(client, "/timezones", ZONES)
    upload(
        client, "/polls", polls("s1,active,2023-01-23 09:00:00", "s1,active,2023-01-23 10:00:00")
    )
    answer = client.post(
        "/alerts", json={"url": receiver.url, "secret": SECRET, "after": "15m", **rule}
    )
    assert answer.status_code == 201
    return answer.get_json()["id"]


def signed(headers: dict, body: bytes) -> bool:
    expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(headers[deliveries.SIGNATURE_HEADER], expected)


def test_an_incident_in_business_hours_is_announced_once_signed_then_resolved(alert_app, receiver):
    client = alert_app.test_client()
    rule_id = start(client, receiver)
    assert receiver.calls == []
    # Inactive at 11:00: the outage starts at the midpoint 10:30; now = 11:00, 30 min ≥ 15 min.
    upload(client, "/polls", polls("s1,inactive,2023-01-23 11:00:00"))
    assert [body["event"] for body in receiver.bodies()] == ["incident.opened"]
    headers, raw = receiver.calls[0]
    assert signed(headers, raw)
    opened = receiver.bodies()[0]
    assert opened == {
        "id": opened["id"],
        "event": "incident.opened",
        "store_id": "s1",
        "started_at": "2023-01-23T10:30:00.000000Z",
        "resolved_at": None,
        "business_downtime_seconds": 1800.0,
        "now": "2023-01-23T11:00:00.000000Z",
    }
    incidents = client.get("/incidents").get_json()
    assert incidents["down_now"] == 1
    assert incidents["incidents"] == [
        {
            "store_id": "s1",
            "started_at": "2023-01-23T10:30:00.000000Z",
            "started_local": "2023-01-23T10:30:00+00:00",
            "resolved_at": None,
            "business_downtime_seconds": 1800.0,
            "down_now": True,
        }
    ]
    # Another inactive poll: the same incident, nothing new.
    upload(client, "/polls", polls("s1,inactive,2023-01-23 11:20:00"))
    assert len(receiver.calls) == 1
    # Active at 12:00: resolved at the midpoint 11:40 (downtime 10:30–11:40 = 4200 s).
    upload(client, "/polls", polls("s1,active,2023-01-23 12:00:00"))
    assert [body["event"] for body in receiver.bodies()] == ["incident.opened", "incident.resolved"]
    headers, raw = receiver.calls[1]
    assert signed(headers, raw)
    resolved = receiver.bodies()[1]
    assert resolved["resolved_at"] == "2023-01-23T11:40:00.000000Z"
    assert resolved["business_downtime_seconds"] == 4200.0
    assert resolved["id"] != opened["id"]
    assert client.get("/incidents").get_json()["incidents"] == []
    done = client.get("/incidents?state=resolved").get_json()["incidents"]
    assert [(i["started_at"], i["resolved_at"]) for i in done] == [
        ("2023-01-23T10:30:00.000000Z", "2023-01-23T11:40:00.000000Z")
    ]
    attempts = client.get(f"/alerts/{rule_id}/deliveries").get_json()["deliveries"]
    assert [(a["event"], a["status_code"]) for a in attempts] == [
        ("incident.resolved", 200),
        ("incident.opened", 200),
    ]
    # Evaluating again (another process, a restart) sends nothing more.
    with alert_app.app_context():
        alerts.evaluate()
        deliveries.deliver_due()
    assert len(receiver.calls) == 2


def test_short_stretches_closures_and_closed_hours_send_nothing(alert_app, receiver):
    client = alert_app.test_client()
    start(client, receiver)
    upload(
        client,
        "/closures",
        "store_id,start_local,end_local\ns2,2023-01-23 10:00,2023-01-23 14:00\n",
    )
    upload(
        client,
        "/polls",
        polls(
            # s1: inactive after 17:00 only (closed): those polls are not evidence.
            "s1,active,2023-01-23 16:50:00",
            "s1,inactive,2023-01-23 17:30:00",
            "s1,inactive,2023-01-23 18:00:00",
            # s2: active in hours, inactive only inside its closure.
            "s2,active,2023-01-23 09:30:00",
            "s2,inactive,2023-01-23 11:00:00",
            "s2,inactive,2023-01-23 13:00:00",
            "s2,active,2023-01-23 15:00:00",
        ),
    )
    assert receiver.calls == []
    assert client.get("/incidents?state=all").get_json()["incidents"] == []


def test_below_the_threshold_nothing_is_sent(alert_app, receiver):
    client = alert_app.test_client()
    start(client, receiver, after="1h")
    # 10:30–11:00 inactive (30 min < 1 h), then resolved at 11:10: never announced.
    upload(client, "/polls", polls("s1,inactive,2023-01-23 11:00:00"))
    upload(client, "/polls", polls("s1,active,2023-01-23 11:20:00"))
    assert receiver.calls == []
    resolved = client.get("/incidents?state=resolved").get_json()["incidents"]
    assert [i["business_downtime_seconds"] for i in resolved] == [2400.0]


def test_a_receiver_down_then_back_gets_each_event_once_in_order(alert_app, receiver):
    client = alert_app.test_client()
    rule_id = start(client, receiver)
    port = receiver.port
    receiver.stop()
    upload(client, "/polls", polls("s1,inactive,2023-01-23 11:00:00"))
    upload(client, "/polls", polls("s1,active,2023-01-23 12:00:00"))
    attempts = client.get(f"/alerts/{rule_id}/deliveries").get_json()["deliveries"]
    # Only the opened event was tried: the resolved one waits behind it.
    assert [(a["event"], a["status_code"]) for a in attempts] == [("incident.opened", None)]
    assert "ConnectionRefusedError" in attempts[0]["error"]
    back = Receiver(port)
    try:
        with alert_app.app_context():
            now = utcnow()
            # Within the first minute of backoff nothing is due.
            assert deliveries.deliver_due(lambda: now + timedelta(seconds=30)) == 0
            assert deliveries.deliver_due(lambda: now + timedelta(seconds=61)) == 2
            assert deliveries.deliver_due(lambda: now + timedelta(hours=1)) == 0
        assert [body["event"] for body in back.bodies()] == ["incident.opened", "incident.resolved"]
    finally:
        back.stop()


def test_backoff_doubles_and_gives_up_after_a_day(alert_app, receiver):
    client = alert_app.test_client()
    start(client, receiver)
    receiver.status = 500
    upload(client, "/polls", polls("s1,inactive,2023-01-23 11:00:00"))
    with alert_app.app_context():
        event = db.session.scalars(select(AlertEvent)).one()
        created = event.created_at
        waits = []
        for _ in range(20):
            event = db.session.get(AlertEvent, event.id)
            db.session.refresh(event)
            if event.status != DeliveryStatus.PENDING:
                break
            due = event.next_attempt_at
            waits.append(round((due - created).total_seconds() / 60))
            assert deliveries.deliver_due(lambda due=due: due) == 1
        db.session.commit()
        status = db.session.get(AlertEvent, event.id).status
    # First try right after the upload, then 1, 2, 4, ... minutes after each failed one: due
    # 1, 3, 7, ... minutes after creation; the next wait (1024 min) would end past 24 h.
    assert waits == [1, 3, 7, 15, 31, 63, 127, 255, 511, 1023]
    assert status == DeliveryStatus.FAILED
    assert len(receiver.calls) == 11


def test_a_sender_killed_mid_delivery_leaves_the_event_to_another(alert_app, receiver):
    client = alert_app.test_client()
    start(client, receiver)
    receiver.stop()  # the first attempt is refused: the event stays Pending
    upload(client, "/polls", polls("s1,inactive,2023-01-23 11:00:00"))
    back = Receiver(receiver.port)
    try:
        with alert_app.app_context():
            event = db.session.scalars(select(AlertEvent)).one()
            later = event.next_attempt_at + timedelta(seconds=1)
            # A process claimed it, then died before sending: its lease holds for a while.
            assert deliveries.claim(event.id, "dead-process", later)
            assert deliveries.deliver_due(lambda: later + timedelta(seconds=10)) == 0
            expired = later + deliveries.LEASE + timedelta(seconds=1)
            assert deliveries.deliver_due(lambda: expired) == 1
        assert [body["event"] for body in back.bodies()] == ["incident.opened"]
    finally:
        back.stop()


def test_a_sent_event_is_recorded_though_another_process_writes_meanwhile(
    alert_app, receiver, monkeypatch
):
    client = alert_app.test_client()
    start(client, receiver)
    receiver.stop()  # the first attempt is refused: the event stays Pending
    upload(client, "/polls", polls("s1,inactive,2023-01-23 11:00:00"))
    back = Receiver(receiver.port)
    writes = []

    def other_process_writes() -> None:
        """Another process commits a write, unless this one holds the write lock."""
        url = db.engine.url
        if url.get_backend_name() == "sqlite":
            other = sqlite3.connect(url.database, timeout=0)
        else:
            other = db.engine.raw_connection()
        try:
            other.cursor().execute("UPDATE service_locks SET uses = uses + 1")
            other.commit()
            writes.append("committed")
        except sqlite3.OperationalError:
            writes.append("refused: locked")
        finally:
            other.close()

    real_insert = deliveries.insert

    def insert_after_another_write(*args, **kwargs):
        other_process_writes()  # between the settling's read and its first insert
        return real_insert(*args, **kwargs)

    try:
        with alert_app.app_context():
            event = db.session.scalars(select(AlertEvent)).one()
            later = event.next_attempt_at + timedelta(seconds=1)
            monkeypatch.setattr(deliveries, "insert", insert_after_another_write)
            assert deliveries.deliver_due(lambda: later) == 1
            monkeypatch.undo()
            assert db.session.get(AlertEvent, event.id).status == DeliveryStatus.DELIVERED
            assert db.session.scalar(select(func.count()).select_from(AlertAttempt)) == 2
        assert [body["event"] for body in back.bodies()] == ["incident.opened"]
        assert len(writes) == 1
    finally:
        back.stop()


def test_two_processes_evaluating_the_same_load_make_each_event_once(
    alert_app, receiver, database_url, tmp_path
):
    client = alert_app.test_client()
    start(client, receiver)
    other = make_app(database_url, tmp_path, ALERT_ALLOW_PRIVATE_URLS=1)
    try:
        # A load neither has evaluated yet (as if its process died right after the commit).
        with alert_app.app_context():
            db.session.execute(update(AlertEvent).values(status=DeliveryStatus.DELIVERED))
            db.session.commit()
            import loader

            folder = tmp_path / "load"
            folder.mkdir()
            (folder / "polls.csv").write_text(polls("s1,inactive,2023-01-23 11:00:00"))
            loader.load(db.engine, polls=folder / "polls.csv")
        for app in (alert_app, other, alert_app):
            with app.app_context():
                alerts.evaluate()
        for app in (other, alert_app):
            with app.app_context():
                deliveries.deliver_due()
        with alert_app.app_context():
            events = db.session.scalar(select(func.count()).select_from(AlertEvent))
            attempts = db.session.scalar(select(func.count()).select_from(AlertAttempt))
        assert (events, attempts) == (1, 1)
        assert [body["event"] for body in receiver.bodies()] == ["incident.opened"]
    finally:
        with other.app_context():
            db.engine.dispose()


def test_loads_without_polls_leave_nothing_to_evaluate(alert_app, tmp_path):
    # Hours and zones but no poll yet: no incident can exist, and the loads count as evaluated
    # (else /healthz would count them for ever and every serving process evaluate again).
    folder = tmp_path / "load"
    folder.mkdir()
    (folder / "menu_hours.csv").write_text(HOURS)
    (folder / "timezones.csv").write_text(ZONES)
    with alert_app.app_context():
        loader.load(db.engine, folder)
        assert alerts.unevaluated_loads() == 1
        assert alerts.evaluate().now_us is None
        assert alerts.unevaluated_loads() == 0
    assert alert_app.test_client().get("/healthz").get_json()["unevaluated_loads"] == 0


def test_a_serving_process_evaluates_a_load_a_command_committed(alert_app, receiver, tmp_path):
    # `flask load-data` leaves evaluating to the serving processes: the next round of a serving
    # process's lease keeper (`catch_up`) evaluates it; other keepers (a command's) do not.
    client = alert_app.test_client()
    start(client, receiver)
    path = tmp_path / "polls.csv"
    path.write_text(polls("s1,inactive,2023-01-23 11:00:00"))
    with alert_app.app_context():
        loader.load(db.engine, polls=path)
        assert alerts.behind()
    LeaseKeeper(alert_app, sweep=False).round()
    with alert_app.app_context():
        assert alerts.behind()
    assert client.get("/incidents").get_json()["incidents"] == []
    LeaseKeeper(alert_app, sweep=False, catch_up=True).round()
    with alert_app.app_context():
        assert not alerts.behind()
    found = client.get("/incidents").get_json()["incidents"]
    assert [(row["store_id"], row["started_at"]) for row in found] == [
        ("s1", "2023-01-23T10:30:00.000000Z")
    ]
    assert [body["event"] for body in receiver.bodies()] == ["incident.opened"]


def test_an_evaluation_that_another_overtook_computes_again_under_the_lock(
    alert_app, receiver, database_url, tmp_path, monkeypatch
):
    # A computes incidents (no lock held) as of a load where s1 is inactive; meanwhile a newer
    # load makes s1 active again and B evaluates it. A must not write its older incidents
    # over B's: it sees the state moved on once it holds the lock and computes again.
    client = alert_app.test_client()
    start(client, receiver)
    other = make_app(database_url, tmp_path, ALERT_ALLOW_PRIVATE_URLS=1)
    down, back = tmp_path / "down.csv", tmp_path / "back.csv"
    down.write_text(polls("s1,inactive,2023-01-23 11:00:00"))
    back.write_text(polls("s1,active,2023-01-23 12:00:00"))
    original = alerts.compute
    overtaken = []

    def compute_then_be_overtaken(planned_from):
        computed = original(planned_from)
        if not overtaken:
            overtaken.append(planned_from)
            with other.app_context():
                loader.load(db.engine, polls=back)
                alerts.evaluate()  # B, in another process's place
        return computed

    try:
        with alert_app.app_context():
            loader.load(db.engine, polls=down)
        monkeypatch.setattr(alerts, "compute", compute_then_be_overtaken)
        with alert_app.app_context():
            evaluation = alerts.evaluate()  # A
            assert not alerts.behind()
        assert overtaken and evaluation.now_us == NOON_US
        assert client.get("/incidents?state=open").get_json()["incidents"] == []
        resolved = client.get("/incidents?state=resolved").get_json()["incidents"]
        assert [row["resolved_at"] for row in resolved] == ["2023-01-23T11:30:00.000000Z"]
        with alert_app.app_context():
            deliveries.deliver_due()
        assert [body["event"] for body in receiver.bodies()] == [
            "incident.opened",
            "incident.resolved",
        ]
    finally:
        with other.app_context():
            db.engine.dispose()


def test_rules_listed_without_secret_and_deleted(alert_app, receiver):
    client = alert_app.test_client()
    rule_id = start(client, receiver, stale_after="2h")
    listed = client.get("/alerts").get_json()["alerts"]
    assert listed == [
        {
            "id": rule_id,
            "url": receiver.url,
            "after": "PT15M",
            "stale_after": "PT2H",
            "groups": None,
            "created_by": None,
            "created_at": listed[0]["created_at"],
        }
    ]
    assert SECRET not in client.get("/alerts").get_data(as_text=True)
    assert client.delete(f"/alerts/{rule_id}").status_code == 204
    assert client.delete(f"/alerts/{rule_id}").status_code == 404
    assert client.get(f"/alerts/{rule_id}/deliveries").status_code == 404
    assert client.get("/alerts").get_json()["alerts"] == []


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/hook",
        "http://127.0.0.1:9/hook",
        "http://10.1.2.3/hook",
        "http://169.254.169.254/latest",
        "http://[::1]/hook",
        "http://localhost/hook",
        "https://]bad",
        "http:///nohost",
    ],
)
def test_private_or_odd_urls_are_refused(sqlite_client, url):
    answer = sqlite_client.post("/alerts", json={"url": url, "secret": "x", "after": "15m"})
    assert answer.status_code == 400
    assert answer.get_json()["error"] == "bad_request"


def test_a_host_that_resolves_elsewhere_after_the_check_is_not_called(receiver, monkeypatch):
    # DNS rebinding: the name resolves to a public address when checked, then to the receiver
    # on the loopback. The call goes to the checked address (refused here), never to the
    # second answer.
    public = "93.184.216.34"
    answers = iter([public, "127.0.0.1", "127.0.0.1"])

    def rebinding_lookup(host, port, *args, **kwargs):
        address = next(answers)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    connected: list[tuple[str, int]] = []

    def refused(address, *args, **kwargs):
        connected.append(address)
        raise ConnectionRefusedError(f"not dialing {address} from a test")

    monkeypatch.setattr(socket, "getaddrinfo", rebinding_lookup)
    monkeypatch.setattr(socket, "create_connection", refused)
    url = f"http://rebinding.test:{receiver.port}/hook"
    outcome = deliveries.post(url, b"{}", SECRET, allow_private=False)
    assert connected == [(public, receiver.port)]
    assert not outcome.delivered and "ConnectionRefusedError" in outcome.error
    assert receiver.calls == []


def test_a_webhook_call_tries_the_next_checked_address_when_one_does_not_answer(receiver):
    # The receiver listens on 127.0.0.1 only: 127.0.0.2 refuses, the next address answers.
    sock = deliveries.connect_to_first(["127.0.0.2", "127.0.0.1"], receiver.port, 5)
    try:
        assert sock.getpeername() == ("127.0.0.1", receiver.port)
    finally:
        sock.close()


def test_a_bare_ipv6_host_is_called_on_its_scheme_s_port(monkeypatch):
    dialed: list[tuple] = []

    def refused(address, *args, **kwargs):
        dialed.append(address)
        raise ConnectionRefusedError("not dialing from a test")

    monkeypatch.setattr(socket, "create_connection", refused)
    outcome = deliveries.post("https://[2001:db8::1]/hook", b"{}", SECRET, allow_private=True)
    assert dialed == [("2001:db8::1", 443)] and not outcome.delivered


def test_rule_bodies_are_checked(sqlite_client):
    for body, word in [
        ({"url": "http://x.test", "secret": "x"}, "after"),
        ({"url": "http://x.test", "secret": "", "after": "1m"}, "secret"),
        ({"url": "http://x.test", "secret": "x", "after": "soon"}, "after"),
        ({"url": "http://x.test", "secret": "x", "after": "1m", "group": "no spaces"}, "group"),
        ({"url": "http://x.test", "secret": "x", "after": "1m", "owner": "G"}, "owner"),
    ]:
        answer = sqlite_client.post("/alerts", json=body)
        assert answer.status_code == 400 and word in answer.get_json()["message"], body


def test_an_incident_older_than_the_read_week_keeps_its_exact_start(alert_app):
    client = alert_app.test_client()
    upload(client, "/timezones", ZONES)
    # s1 (open all day: no hours rows here) goes down at 2023-01-10 00:00 (midpoint of the
    # polls at 2023-01-09 23:00 and 2023-01-10 01:00) and stays down for 13 days.
    rows = ["s1,active,2023-01-09 23:00:00", "s1,inactive,2023-01-10 01:00:00"]
    rows += [f"s1,inactive,2023-01-{day:02d} 12:00:00" for day in range(11, 24)]
    upload(client, "/polls", polls(*rows))
    found = client.get("/incidents").get_json()["incidents"]
    # 2023-01-10 00:00 → 2023-01-23 12:00 = 13.5 days = 1,166,400 s, all business time.
    assert [(i["started_at"], i["business_downtime_seconds"]) for i in found] == [
        ("2023-01-10T00:00:00.000000Z", 1_166_400.0)
    ]
    # Later loads re-read from the open incident's start: still the same one, grown by 1 h.
    upload(client, "/polls", polls("s1,inactive,2023-01-23 13:00:00"))
    found = client.get("/incidents").get_json()["incidents"]
    assert [(i["started_at"], i["business_downtime_seconds"]) for i in found] == [
        ("2023-01-10T00:00:00.000000Z", 1_170_000.0)
    ]


def test_an_evaluation_reads_the_stores_of_its_batches_and_open_incidents_only(alert_app):
    client = alert_app.test_client()
    upload(client, "/timezones", ZONES)
    upload(
        client,
        "/polls",
        polls(
            "s1,active,2023-01-23 09:00:00",
            "s2,active,2023-01-23 09:00:00",
            "s3,inactive,2023-01-23 09:00:00",
        ),
    )
    upload(client, "/polls", polls("s1,active,2023-01-23 10:00:00"))
    with alert_app.app_context():
        # The last upload was evaluated already: nothing new but s3's open incident.
        assert alerts.evaluate().stores == 1


def test_an_open_incident_of_a_store_without_new_polls_grows_without_reading_it(alert_app, caplog):
    client = alert_app.test_client()
    upload(client, "/business_hours", HOURS)  # Monday 09:00-17:00 UTC
    upload(client, "/timezones", ZONES)
    rows = ["s1,active,2023-01-23 09:00:00", "s1,inactive,2023-01-23 10:00:00"]
    upload(client, "/polls", polls(*rows, "s2,active,2023-01-23 10:00:00"))
    caplog.set_level(logging.INFO, logger="jobs.alerts")

    def s1_now() -> tuple[float, str | None, bool]:
        found = client.get("/incidents?state=all").get_json()["incidents"]
        assert [i["started_at"] for i in found] == ["2023-01-23T09:30:00.000000Z"]
        return found[0]["business_downtime_seconds"], found[0]["resolved_at"], found[0]["down_now"]

    assert s1_now() == (1800.0, None, True)
    # Only s2 is polled: s1's last poll still owns the time up to `now`.
    upload(client, "/polls", polls("s2,active,2023-01-23 12:00:00"))
    assert s1_now() == (9000.0, None, True)  # 09:30-12:00
    # s1 is polled inactive again: its outage goes on (s1 has a poll inside business hours).
    upload(
        client, "/polls", polls("s1,inactive,2023-01-23 13:00:00", "s2,active,2023-01-23 13:00:00")
    )
    assert s1_now() == (12600.0, None, True)  # 09:30-13:00
    upload(client, "/polls", polls("s2,active,2023-01-23 18:00:00"))
    assert s1_now() == (27000.0, None, False)  # 09:30-17:00; closed at 18:00
    carried = [
        record.args[2]
        for record in caplog.records
        if record.name == "jobs.alerts" and record.msg.startswith("alerts: batch")
    ]
    assert carried == [1, 1, 1]  # s1, read none of these times
    # An active poll that comes late (before `now`) ends it where it takes over: 14:00.
    upload(client, "/polls", polls("s1,active,2023-01-23 15:00:00"))
    assert s1_now() == (16200.0, "2023-01-23T14:00:00.000000Z", False)


def evaluated_store_counts(caplog) -> list[int]:
    """How many stores each evaluation logged since the capture began read."""
    return [
        record.args[1]
        for record in caplog.records
        if record.name == "jobs.alerts" and record.msg.startswith("alerts: batch")
    ]


def test_stores_whose_new_polls_are_all_active_are_not_read_again(alert_app, caplog):
    client = alert_app.test_client()
    upload(client, "/business_hours", HOURS)
    upload(client, "/timezones", ZONES)
    upload(
        client, "/polls", polls("s1,active,2023-01-23 09:00:00", "s2,active,2023-01-23 09:00:00")
    )
    caplog.set_level(logging.INFO, logger="jobs.alerts")
    caplog.clear()
    upload(
        client, "/polls", polls("s1,active,2023-01-23 10:00:00", "s2,inactive,2023-01-23 10:00:00")
    )
    assert evaluated_store_counts(caplog) == [1]  # s2: its status changed


def remembered_counts(caplog) -> list[int]:
    """How many stores each evaluation logged since the capture began computed from memory."""
    return [
        record.args[3]
        for record in caplog.records
        if record.name == "jobs.alerts" and record.msg.startswith("alerts: batch")
    ]


def s1_incidents(client) -> list[tuple[str, str | None, float]]:
    found = client.get("/incidents?state=all").get_json()["incidents"]
    return sorted(
        (i["started_at"], i["resolved_at"], i["business_downtime_seconds"])
        for i in found
        if i["store_id"] == "s1"
    )


def test_a_store_with_one_new_poll_is_computed_from_memory(alert_app, caplog):
    client = alert_app.test_client()
    upload(client, "/business_hours", HOURS)  # Monday 09:00-17:00 UTC
    upload(client, "/timezones", ZONES)
    upload(
        client, "/polls", polls("s1,active,2023-01-23 09:00:00", "s2,active,2023-01-23 09:00:00")
    )
    caplog.set_level(logging.INFO, logger="jobs.alerts")
    caplog.clear()
    upload(client, "/polls", polls("s1,inactive,2023-01-23 10:00:00"))
    assert s1_incidents(client) == [("2023-01-23T09:30:00.000000Z", None, 1800.0)]
    upload(client, "/polls", polls("s1,inactive,2023-01-23 11:00:00"))  # carried forward
    upload(client, "/polls", polls("s1,active,2023-01-23 12:00:00"))
    assert s1_incidents(client) == [
        ("2023-01-23T09:30:00.000000Z", "2023-01-23T11:30:00.000000Z", 7200.0)
    ]
    assert remembered_counts(caplog) == [1, 0, 1]
    # A process that does not keep the state it evaluates from reads, and keeps what it read.
    last_evidence.forget()
    upload(client, "/polls", polls("s1,inactive,2023-01-23 13:00:00"))
    upload(client, "/polls", polls("s1,active,2023-01-23 14:00:00"))
    assert s1_incidents(client)[1:] == [
        ("2023-01-23T12:30:00.000000Z", "2023-01-23T13:30:00.000000Z", 3600.0)
    ]
    assert remembered_counts(caplog) == [1, 0, 1, 0, 1]


def test_an_open_incident_older_than_the_week_goes_when_new_hours_end_it(alert_app):
    # Under Monday hours s1's only evidence is Monday 2 January's inactive poll: it is down
    # from then on. Under Tuesday hours its evidence is its Tuesday polls, both active: it
    # never was. The hours' evaluation reads the week before `now`, which does not reach the
    # open incident's first poll; that incident must go all the same.
    client = alert_app.test_client()
    upload(client, "/business_hours", s1_open_on(0))
    upload(client, "/timezones", ZONES)
    monday_and_tuesdays = ("s1,inactive,2023-01-02 10:00:00", "s1,active,2023-01-03 09:30:00")
    upload(client, "/polls", polls(*monday_and_tuesdays, "s1,active,2023-01-10 10:00:00"))
    assert s1_incidents(client) == [("2023-01-02T10:00:00.000000Z", None, 54000.0)]
    upload(client, "/business_hours", s1_open_on(1))
    assert s1_incidents(client) == []


def test_a_poll_repeated_in_two_loads_not_yet_evaluated_is_the_first_loaded(alert_app, tmp_path):
    # What a load sent per store (`batch_polls`) counts a repeat that the database skipped:
    # an evaluation must read such a store's polls, not take the last load's word for them.
    client = alert_app.test_client()
    upload(client, "/business_hours", HOURS)
    upload(client, "/timezones", ZONES)
    upload(client, "/polls", polls("s1,active,2023-01-23 09:00:00"))
    first = tmp_path / "first.csv"
    first.write_text(polls("s1,active,2023-01-23 10:00:00"))
    again = tmp_path / "again.csv"
    again.write_text(polls("s1,inactive,2023-01-23 10:00:00", "s2,active,2023-01-23 10:00:00"))
    with alert_app.app_context():
        loader.load(db.engine, polls=first)
        loader.load(db.engine, polls=again)
        alerts.evaluate()
    assert s1_incidents(client) == []


def test_what_a_load_sent_is_kept_until_its_batch_is_evaluated(alert_app, tmp_path):
    # Which stores a batch wrote and what it sent for their polls are read by the evaluation
    # of that batch only: the service drops them once it has evaluated it.
    client = alert_app.test_client()
    upload(client, "/business_hours", HOURS)
    upload(client, "/timezones", ZONES)
    bodies = [
        polls("s1,active,2023-01-23 09:00:00"),
        polls("s1,inactive,2023-01-23 10:00:00", "s2,active,2023-01-23 10:00:00"),
        polls("s1,active,2023-01-23 11:00:00"),
    ]
    paths = [tmp_path / f"polls{number}.csv" for number in range(len(bodies))]
    for path, body in zip(paths, bodies, strict=True):
        path.write_text(body)

    def recorded() -> list[tuple[str, int]]:
        return [
            (table, batch)
            for table in ("batch_stores", "batch_polls")
            for (batch,) in db.session.execute(
                text(f"SELECT DISTINCT batch FROM {table} ORDER BY batch")
            )
        ]

    with alert_app.app_context():
        first = loader.load(db.engine, polls=paths[0]).batch
        loader.load(db.engine, polls=paths[1])  # commands leave evaluating to the service
        both = [first, first + 1]
        assert recorded() == [("batch_stores", b) for b in both] + [
            ("batch_polls", b) for b in both
        ]
        db.session.commit()
        alerts.evaluate_and_send(alert_app, send=False)
        assert recorded() == []
        loader.load(db.engine, polls=paths[2])
        db.session.commit()
        assert recorded() == [("batch_stores", first + 2), ("batch_polls", first + 2)]
        alerts.evaluate_and_send(alert_app, send=False)
    assert incidents_of_s1(client) == [
        ("2023-01-23T09:30:00.000000Z", "2023-01-23T10:30:00.000000Z")
    ]


def test_a_load_of_more_stores_than_are_summarised_is_read_by_its_evaluation(
    alert_app, tmp_path, monkeypatch
):
    # A load naming more stores than MAX_SUMMARIZED_STORES records no `batch_polls` rows (its
    # memory stays bounded); its evaluation reads the polls of its stores instead.
    monkeypatch.setattr(writing, "MAX_SUMMARIZED_STORES", 1)
    client = alert_app.test_client()
    upload(client, "/business_hours", HOURS)
    upload(client, "/timezones", ZONES)
    upload(client, "/polls", polls("s1,active,2023-01-23 09:00:00"))
    two_stores = tmp_path / "two.csv"
    two_stores.write_text(polls("s1,inactive,2023-01-23 10:00:00", "s2,active,2023-01-23 10:00:00"))
    with alert_app.app_context():
        batch = loader.load(db.engine, polls=two_stores).batch
        summarised = db.session.scalar(
            text(f"SELECT COUNT(*) FROM batch_polls WHERE batch = {batch}")
        )
        db.session.commit()
        alerts.evaluate_and_send(alert_app, send=False)
    assert summarised == 0
    assert incidents_of_s1(client) == [("2023-01-23T09:30:00.000000Z", None)]
    upload(client, "/polls", polls("s1,active,2023-01-23 11:00:00"))  # one store: summarised
    assert incidents_of_s1(client) == [
        ("2023-01-23T09:30:00.000000Z", "2023-01-23T10:30:00.000000Z")
    ]


def incidents_of_s1(client) -> list[tuple[str, str | None]]:
    return [(started, resolved) for started, resolved, _ in s1_incidents(client)]


def test_a_first_active_poll_inside_business_hours_recomputes_the_store(alert_app):
    client = alert_app.test_client()
    upload(client, "/business_hours", HOURS)  # s1: Monday 09:00-17:00 UTC
    upload(client, "/timezones", ZONES)
    sunday = ("s1,active,2023-01-22 09:00:00", "s1,inactive,2023-01-22 10:00:00")
    upload(client, "/polls", polls(*sunday, "s1,active,2023-01-22 11:00:00"))
    # No poll inside business hours: all are its evidence, and it was down from 09:30 to 10:30.
    assert incidents_of_s1(client) == [
        ("2023-01-22T09:30:00.000000Z", "2023-01-22T10:30:00.000000Z")
    ]
    upload(client, "/polls", polls("s1,active,2023-01-23 10:00:00"))
    assert incidents_of_s1(client) == []  # its evidence is Monday's poll alone


def test_a_store_whose_hours_change_is_no_longer_known_to_have_evidence(alert_app):
    client = alert_app.test_client()
    upload(client, "/business_hours", s1_open_on(6))
    upload(client, "/timezones", ZONES)
    sunday = ("s1,active,2023-01-22 09:00:00", "s1,inactive,2023-01-22 10:00:00")
    upload(client, "/polls", polls(*sunday, "s1,active,2023-01-22 11:00:00"))
    upload(client, "/business_hours", HOURS)  # Monday only: no poll of s1 is inside them now
    assert incidents_of_s1(client) == [
        ("2023-01-22T09:30:00.000000Z", "2023-01-22T10:30:00.000000Z")
    ]
    upload(client, "/polls", polls("s1,active,2023-01-23 10:00:00"))
    assert incidents_of_s1(client) == []


def test_an_evaluation_that_found_nothing_new_cannot_leave_a_store_marked_evidenced(
    alert_app, tmp_path, monkeypatch
):
    # E1 finds nothing new (it writes the alert state back as it was) but reads s1 for its open
    # incident and marks it evidenced. It commits after E2 planned, as of a load that moved
    # s1's hours to Sundays, where none of its polls is. E2 must unmark s1: its first poll on a
    # Sunday changes its evidence, and that store must be read again.
    client = alert_app.test_client()
    upload(client, "/business_hours", HOURS)  # s1: Monday 09:00-17:00 UTC
    upload(client, "/timezones", ZONES)
    monday = ("s1,active,2023-01-23 10:00:00", "s1,inactive,2023-01-23 11:00:00")
    upload(client, "/polls", polls(*monday, "s1,active,2023-01-23 18:00:00"))
    sundays = tmp_path / "sundays.csv"
    sundays.write_text(s1_open_on(6))
    with alert_app.app_context():
        db.session.execute(text("DELETE FROM evidenced_stores"))  # as in a database upgraded
        db.session.commit()
        with db.engine.connect() as conn:
            state = alerts.alert_state(conn)
        first = alerts.compute(state)
        loader.load(db.engine, hours=sundays)
        second = alerts.compute(state)
        plans = iter([first, second])
        monkeypatch.setattr(alerts, "compute", lambda planned_from: next(plans))
        alerts.evaluate()  # E1
        alerts.evaluate()  # E2: the alert state is the one it planned from
        monkeypatch.undo()
    assert incidents_of_s1(client) == [
        ("2023-01-23T10:30:00.000000Z", "2023-01-23T14:30:00.000000Z")
    ]
    upload(client, "/polls", polls("s1,active,2023-01-29 10:00:00"))
    assert incidents_of_s1(client) == []  # its evidence is that Sunday's poll alone


def test_a_store_down_for_an_hour_is_not_read_back_as_far_as_one_down_for_days(alert_app):
    client = alert_app.test_client()
    upload(client, "/timezones", ZONES)
    # Open all day: s1 is down since 2023-01-19 01:00, s2 since 2023-01-23 09:00.
    rows = ["s1,active,2023-01-19 00:00:00", "s1,inactive,2023-01-19 02:00:00"]
    rows += ["s2,active,2023-01-23 08:00:00", "s2,inactive,2023-01-23 10:00:00"]
    upload(client, "/polls", polls(*rows))
    with alert_app.app_context(), db.engine.connect() as conn:
        batch, now_us = alerts.alert_state(conn)
        keys = dict(conn.execute(select(Store.external_id, Store.id)).all())
        readings = incidents.plan_readings(conn, batch, batch, now_us).readings
    since = {int(key): r.since_us for r in readings for key in r.store_keys}
    assert since == {
        keys["s1"]: 1_674_090_000_000_000,  # 2023-01-19 01:00 UTC
        keys["s2"]: 1_674_464_400_000_000,  # 2023-01-23 09:00 UTC
    }


# --------------------------------------------------------------------------- real processes


def wait_for_calls(
    receiver: Receiver, count: int, logs: list[Path] | None = None, timeout: float = 300.0
) -> None:
    """Return once the receiver has `count` calls. They come from other processes, so there is
    no hook to wait on: the bound only catches a hang (a busy machine takes seconds, not
    minutes), and the processes' logs say where it stopped."""
    deadline = time.monotonic() + timeout
    while len(receiver.calls) < count:
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {log}\n{log.read_text()[-4000:]}" for log in logs or [])
            pytest.fail(f"{len(receiver.calls)} calls, not {count}, in {timeout} s\n{tails}")
        time.sleep(0.1)


@pytest.mark.slow
def test_two_api_processes_and_two_celery_workers_send_each_event_once(
    database_url, receiver, tmp_path
):
    broker = broker_url("redis").removesuffix("/0") + "/12"  # a database of its own
    settings = {"CELERY_BROKER_URL": broker, "ALERT_ALLOW_PRIVATE_URLS": "1"}
    assert run_cli(database_url, "init-db").returncode == 0
    apis = [
        ServerProcess(database_url, tmp_path / f"api{n}", tmp_path / f"api{n}.log", **settings)
        for n in range(2)
    ]
    workers = [
        WorkerProcess(
            database_url, broker, tmp_path / f"worker{n}.log", ALERT_ALLOW_PRIVATE_URLS="1"
        )
        for n in range(2)
    ]
    started = []
    try:
        for process in [*apis, *workers]:
            started.append(process.start())
        first, second = (api.url for api in apis)
        for path, body in [("/business_hours", HOURS), ("/timezones", ZONES)]:
            assert requests.post(f"{first}{path}", data=body, headers=CSV, timeout=30).ok
        morning = polls("s1,active,2023-01-23 09:00:00", "s1,active,2023-01-23 10:00:00")
        assert requests.post(f"{first}/polls", data=morning, headers=CSV, timeout=30).ok
        rule = {"url": receiver.url, "secret": SECRET, "after": "15m"}
        assert requests.post(f"{second}/alerts", json=rule, timeout=30).status_code == 201
        down = polls("s1,inactive,2023-01-23 11:00:00")
        assert requests.post(f"{first}/polls", data=down, headers=CSV, timeout=30).ok
        logs = [tmp_path / f"api{n}.log" for n in range(2)]
        logs += [tmp_path / f"worker{n}.log" for n in range(2)]
        wait_for_calls(receiver, 1, logs)
        back = polls("s1,active,2023-01-23 12:00:00")
        assert requests.post(f"{second}/polls", data=back, headers=CSV, timeout=30).ok
        wait_for_calls(receiver, 2, logs)
        # Both API processes evaluate again (as after a restart): nothing new is owed.
        again = polls("s1,active,2023-01-23 12:10:00")
        for url in (first, second):
            assert requests.post(f"{url}/polls", data=again, headers=CSV, timeout=30).ok
        rule_id = requests.get(f"{first}/alerts", timeout=30).json()["alerts"][0]["id"]
        attempts = requests.get(f"{first}/alerts/{rule_id}/deliveries", timeout=30).json()
        assert [a["event"] for a in attempts["deliveries"]] == [
            "incident.resolved",
            "incident.opened",
        ]
        assert [body["event"] for body in receiver.bodies()] == [
            "incident.opened",
            "incident.resolved",
        ]
        assert all(signed(headers, raw) for headers, raw in receiver.calls)
    finally:
        for process in started:
            process.stop()


@pytest.mark.slow
def test_a_served_process_evaluates_and_sends_on_its_own_threads(database_url, receiver, tmp_path):
    # The default executor: the upload is answered at once; a thread of the API process
    # evaluates, another sends.
    assert run_cli(database_url, "init-db").returncode == 0
    server = ServerProcess(
        database_url, tmp_path / "api", tmp_path / "api.log", ALERT_ALLOW_PRIVATE_URLS="1"
    ).start()
    try:
        for path, body in [
            ("/timezones", ZONES),
            ("/polls", polls("s1,active,2023-01-23 10:00:00")),
        ]:
            assert requests.post(f"{server.url}{path}", data=body, headers=CSV, timeout=30).ok
        rule = {"url": receiver.url, "secret": SECRET, "after": "15m"}
        assert requests.post(f"{server.url}/alerts", json=rule, timeout=30).status_code == 201
        down = polls("s1,inactive,2023-01-23 11:00:00")
        assert requests.post(f"{server.url}/polls", data=down, headers=CSV, timeout=30).ok
        wait_for_calls(receiver, 1, [tmp_path / "api.log"])
        headers, raw = receiver.calls[0]
        assert signed(headers, raw) and json.loads(raw)["event"] == "incident.opened"
    finally:
        server.stop()


def test_new_hours_rework_a_stores_incidents_and_later_polls_keep_older_ones(alert_app):
    client = alert_app.test_client()
    upload(client, "/timezones", ZONES)
    upload(
        client,
        "/polls",
        polls(
            "s1,active,2023-01-23 09:00:00",
            "s1,inactive,2023-01-23 10:00:00",
            "s1,active,2023-01-23 11:00:00",
            "s1,active,2023-01-23 13:00:00",
        ),
    )
    # Open all day: one incident 09:30–10:30 (3600 s).
    resolved = client.get("/incidents?state=resolved").get_json()["incidents"]
    assert [(i["started_at"], i["business_downtime_seconds"]) for i in resolved] == [
        ("2023-01-23T09:30:00.000000Z", 3600.0)
    ]
    # A later poll: the older incident is neither read again nor doubled.
    upload(client, "/polls", polls("s1,active,2023-01-23 14:00:00"))
    assert client.get("/incidents?state=resolved").get_json()["incidents"] == resolved
    # Hours 10:15–17:00: the inactive poll at 10:00 lies outside them, so it is no evidence
    # any more, and no incident is left.
    hours = "store_id,day,start_time_local,end_time_local\ns1,0,10:15,17:00\n"
    upload(client, "/business_hours", hours)
    assert client.get("/incidents?state=all").get_json()["incidents"] == []


def test_incidents_list_open_first_then_newest_start_within_the_limit(alert_app):
    client = alert_app.test_client()
    upload(client, "/timezones", "store_id,timezone_str\ns1,UTC\ns2,UTC\ns3,Asia/Kolkata\n")
    upload(
        client,
        "/polls",
        polls(
            # s1: down 09:30–10:30, then again from 11:30 (open): two incidents.
            "s1,active,2023-01-23 09:00:00",
            "s1,inactive,2023-01-23 10:00:00",
            "s1,active,2023-01-23 11:00:00",
            "s1,inactive,2023-01-23 12:00:00",
            # s2: down 09:15–09:45 (resolved); s3: first poll inactive at 10:00 (open).
            "s2,active,2023-01-23 09:00:00",
            "s2,inactive,2023-01-23 09:30:00",
            "s2,active,2023-01-23 10:00:00",
            "s3,inactive,2023-01-23 10:00:00",
        ),
    )
    listed = client.get("/incidents?state=all").get_json()
    assert listed["down_now"] == 2  # open all day (no hours rows): s1 and s3
    assert [
        (i["store_id"], i["started_at"][11:19], i["resolved_at"]) for i in listed["incidents"]
    ] == [
        ("s1", "11:30:00", None),
        ("s3", "10:00:00", None),
        ("s1", "09:30:00", "2023-01-23T10:30:00.000000Z"),
        ("s2", "09:15:00", "2023-01-23T09:45:00.000000Z"),
    ]
    # Local start: Asia/Kolkata is UTC+05:30.
    assert listed["incidents"][1]["started_local"] == "2023-01-23T15:30:00+05:30"
    limited = client.get("/incidents?state=all&limit=1").get_json()["incidents"]
    assert [i["store_id"] for i in limited] == ["s1"]
    mine = client.get("/incidents?state=resolved&store=s2").get_json()["incidents"]
    assert [i["store_id"] for i in mine] == ["s2"]
    for query in ("state=closed", "limit=0", "limit=1001"):
        assert client.get(f"/incidents?{query}").status_code == 400


# --------------------------------------------------------------------------- scopes


@pytest.fixture
def two_owners(alert_app):
    """s1 in group a, s2 in group b, both open on Monday; a reader key of each and an admin
    key: (client, tokens)."""
    with alert_app.app_context():
        tokens = {
            "reader-a": keys.create_key("reader-a", KeyRole.READER, ("a",)),
            "reader-b": keys.create_key("reader-b", KeyRole.READER, ("b",)),
            "admin": keys.create_key("admin", KeyRole.ADMIN, ()),
        }
    client = alert_app.test_client()
    admin = bearer(tokens["admin"])
    for path, body in (
        ("/business_hours", HOURS),
        ("/timezones", ZONES),
        ("/store_groups", groups_csv({"a": ["s1"], "b": ["s2"]})),
        ("/polls", polls("s1,active,2023-01-23 09:00:00", "s2,active,2023-01-23 09:00:00")),
    ):
        answer = client.post(path, data=body.encode(), headers={**CSV, **admin})
        assert answer.status_code == 200, answer.get_json()
    return client, tokens


def add_rule(client, token: str, url: str, **rule) -> int:
    answer = client.post(
        "/alerts",
        json={"url": url, "secret": SECRET, "after": "15m", **rule},
        headers=bearer(token),
    )
    assert answer.status_code == 201, answer.get_json()
    return answer.get_json()["id"]


def both_go_down(client, tokens) -> None:
    """s1 and s2 inactive at 11:00: an incident each from the midpoint 10:00."""
    answer = client.post(
        "/polls",
        data=polls("s1,inactive,2023-01-23 11:00:00", "s2,inactive,2023-01-23 11:00:00").encode(),
        headers={**CSV, **bearer(tokens["admin"])},
    )
    assert answer.status_code == 200, answer.get_json()


def test_a_rule_fires_only_for_the_stores_of_its_scope(two_owners):
    client, tokens = two_owners
    of_a, of_b, of_all, of_admin_b = Receiver(), Receiver(), Receiver(), Receiver()
    try:
        add_rule(client, tokens["reader-a"], of_a.url, group="a")
        add_rule(client, tokens["reader-b"], of_b.url)  # no group: the reader's groups
        add_rule(client, tokens["admin"], of_all.url)  # no group: every store
        add_rule(client, tokens["admin"], of_admin_b.url, group="b")
        both_go_down(client, tokens)
        assert [body["store_id"] for body in of_a.bodies()] == ["s1"]
        assert [body["store_id"] for body in of_b.bodies()] == ["s2"]
        assert sorted(body["store_id"] for body in of_all.bodies()) == ["s1", "s2"]
        assert [body["store_id"] for body in of_admin_b.bodies()] == ["s2"]
    finally:
        for receiver in (of_a, of_b, of_all, of_admin_b):
            receiver.stop()


def test_a_reader_sees_neither_the_other_owners_incidents_nor_its_rules(two_owners, receiver):
    client, tokens = two_owners
    rule_a = add_rule(client, tokens["reader-a"], receiver.url)
    rule_b = add_rule(client, tokens["reader-b"], receiver.url, group="b")
    both_go_down(client, tokens)
    as_a, as_b, as_admin = (bearer(tokens[name]) for name in ("reader-a", "reader-b", "admin"))

    def incidents(headers: dict, query: str = "") -> tuple[int, list[str]]:
        answer = client.get(f"/incidents?state=all{query}", headers=headers).get_json()
        return answer["down_now"], [item["store_id"] for item in answer["incidents"]]

    assert incidents(as_a) == (1, ["s1"])
    assert incidents(as_a, "&store=s2")[1] == []
    assert incidents(as_b) == (1, ["s2"])
    assert incidents(as_admin)[0] == 2
    assert incidents(as_admin, "&group=a") == (1, ["s1"])
    foreign = client.get("/incidents?group=b", headers=as_a)
    assert foreign.status_code == 404  # as for a group that does not exist
    assert (
        foreign.get_json()["error"] == client.get("/incidents?group=x", headers=as_a).json["error"]
    )

    def rule_ids(headers: dict) -> list[int]:
        return [rule["id"] for rule in client.get("/alerts", headers=headers).get_json()["alerts"]]

    assert rule_ids(as_a) == [rule_a]
    assert rule_ids(as_b) == [rule_b]
    assert rule_ids(as_admin) == [rule_a, rule_b]
    listed = client.get("/alerts", headers=as_a).get_json()["alerts"][0]
    assert (listed["groups"], listed["created_by"]) == (["a"], "reader-a")
    assert client.get(f"/alerts/{rule_b}/deliveries", headers=as_a).status_code == 404
    assert client.get(f"/alerts/{rule_a}/deliveries", headers=as_a).status_code == 200
    assert client.delete(f"/alerts/{rule_b}", headers=as_a).status_code == 404
    assert rule_ids(as_b) == [rule_b]  # still there
    refused = client.post(
        "/alerts",
        json={"url": receiver.url, "secret": SECRET, "after": "15m", "group": "b"},
        headers=as_a,
    )
    assert refused.status_code == 404
    assert client.delete(f"/alerts/{rule_b}", headers=as_b).status_code == 204


def test_a_revoked_readers_rules_fire_no_more(two_owners, receiver):
    client, tokens = two_owners
    add_rule(client, tokens["reader-a"], receiver.url)
    with client.application.app_context():
        keys.revoke_key("reader-a")
    both_go_down(client, tokens)
    assert receiver.calls == []
