"""An evaluation after each load reads only what may have changed (`jobs/incidents.py`); the
incidents it keeps must be those of one evaluation of all the data at once.

Random polls of three stores (hours in a zone with a DST change, 24x7 in the default zone,
overnight hours) arrive in several uploads, in the order of time or not, with the hours loaded
first or between two uploads; after the last, the incidents table equals the one a new database
gets from the same data loaded at once. On real SQLite files, a new pair per example.
"""

from __future__ import annotations

import tempfile
from datetime import datetime, timedelta
from pathlib import Path

from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from sqlalchemy import text

from jobs import last_evidence
from models import db
from tests.conftest import make_app
from tests.examples import examples

CSV = {"Content-Type": "text/csv"}
# Sunday 2023-03-12 00:00 UTC: New York moves its clocks forward at 07:00 UTC; s1 opens on
# Monday at 13:00 UTC, so its polls before are all outside business hours (all of them its
# evidence until one is inside). Polls are close (two hours apart on average, most of them
# active), within the week that an evaluation reads at first.
BASE = datetime(2023, 3, 12)
SPAN_MINUTES = 48 * 60
HOURS = (
    "store_id,day,start_time_local,end_time_local\n"
    + "".join(f"s1,{day},09:00,17:00\n" for day in range(5))
    + "".join(f"s3,{day},22:00,06:00\n" for day in range(7))
)
ZONES = "store_id,timezone_str\ns1,America/New_York\ns3,Asia/Kolkata\n"  # s2: the default


@st.composite
def scenarios(draw):
    """Polls (store, minute, active, upload), when the hours arrive (before upload n), and
    before which uploads the process forgets how the stores' timelines ended (as when another
    process evaluated meanwhile). Uploads follow time, one poll of a store each (as hourly
    pollers send them: computed from memory), or several; or they mix it."""
    order = draw(st.sampled_from(["hourly", "in time", "mixed"]))
    uploads = draw(st.integers(1, 6))
    polls = []
    for store in ("s1", "s2", "s3"):
        most = 8 if order == "hourly" else 24
        minutes = draw(st.lists(st.integers(0, SPAN_MINUTES), max_size=most, unique=True))
        for minute in minutes:
            active = draw(st.integers(0, 3)) > 0
            if order == "in time":
                upload = minute * uploads // (SPAN_MINUTES + 1)
            else:
                upload = draw(st.integers(0, uploads - 1))
            polls.append((store, minute, active, upload))
    if order == "hourly":
        polls, uploads = one_poll_of_a_store_an_upload(polls)
    forgets = draw(st.lists(st.booleans(), min_size=uploads, max_size=uploads))
    return polls, uploads, draw(st.integers(0, uploads - 1)), forgets


def one_poll_of_a_store_an_upload(polls: list[tuple]) -> tuple[list[tuple], int]:
    """The polls in time order, a new upload whenever a store has one in the current."""
    upload, in_upload, placed = 0, set(), []
    for store, minute, active, _ in sorted(polls, key=lambda row: row[1]):
        if store in in_upload:
            upload, in_upload = upload + 1, set()
        in_upload.add(store)
        placed.append((store, minute, active, upload))
    return placed, upload + 1


def polls_csv(rows) -> str:
    lines = ["store_id,status,timestamp_utc"]
    for store, minute, active, _ in rows:
        moment = BASE + timedelta(minutes=minute)
        lines.append(f"{store},{'active' if active else 'inactive'},{moment:%Y-%m-%d %H:%M:%S}")
    return "\n".join(lines) + "\n"


def post(client, path: str, body: str) -> None:
    answer = client.post(path, data=body.encode(), headers=CSV)
    assert answer.status_code == 200, answer.get_json()


def stored_incidents(app) -> list[tuple]:
    with app.app_context(), db.engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT s.external_id, i.started_us, i.first_poll_us, i.resolved_us, "
                "i.business_us, i.is_open, i.down_now FROM incidents i "
                "JOIN stores s ON s.id = i.store_key ORDER BY s.external_id, i.started_us"
            )
        ).all()
        db.engine.dispose()
    return [tuple(row) for row in rows]


@settings(
    max_examples=examples(60),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(scenarios())
def test_evaluating_load_by_load_keeps_the_incidents_of_one_evaluation_of_all(scenario):
    polls, uploads, hours_before, forgets = scenario
    note(f"scenario: {scenario!r}")
    with tempfile.TemporaryDirectory() as folder:
        base = Path(folder)
        stepwise = make_app(f"sqlite:///{base / 'stepwise.sqlite3'}", base / "a")
        client = stepwise.test_client()
        post(client, "/timezones", ZONES)
        for upload in range(uploads):
            if upload == hours_before:
                post(client, "/business_hours", HOURS)
            part = [row for row in polls if row[3] == upload]
            if forgets[upload]:
                last_evidence.forget()
            if part:
                post(client, "/polls", polls_csv(part))
        at_once = make_app(f"sqlite:///{base / 'at_once.sqlite3'}", base / "b")
        client = at_once.test_client()
        post(client, "/timezones", ZONES)
        post(client, "/business_hours", HOURS)
        if polls:
            post(client, "/polls", polls_csv(polls))
        assert stored_incidents(stepwise) == stored_incidents(at_once)
