"""The web page: its JSON endpoints through the test client, then the pages in a real browser."""

from __future__ import annotations

import html
import itertools
import os
import shutil
import time
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import jsonschema_rs
import numpy as np
import pandas as pd
import pytest
import requests

import loader
from jobs import results
from models import Report, ReportResult, ReportStatus, db
from tests.conftest import ROOT, SAMPLE, make_app
from tests.owners import NORTH, SOUTH, groups_csv, owners_groups
from tests.server import ServerProcess, run_cli, wait_for_report
from web import pages, timelines

HOUR_US = 3_600_000_000
FULL_OPTIONS = {"stale_after": "2h", "outages": True}

# The spec's worked example (store Shop-W, open Monday 09:00–12:00 UTC, polls 10:14 active
# and 11:15 inactive, now Monday 12:00) and a store open 24×7 with one poll, whose id needs
# URL-encoding ("/", a space, "ü").
EXAMPLE_POLLS = """store_id,status,timestamp_utc
Shop-W,active,2023-01-23 10:14:00 UTC
Shop-W,inactive,2023-01-23 11:15:00 UTC
shop/x ü,active,2023-01-23 11:00:00 UTC
"""
EXAMPLE_HOURS = """store_id,dayOfWeek,start_time_local,end_time_local
Shop-W,0,09:00:00,12:00:00
"""
EXAMPLE_ZONES = """store_id,timezone_str
Shop-W,UTC
"""
EXAMPLE_AS_OF = "2023-01-23T12:00:00Z"
ALWAYS_OPEN = "shop/x ü"


def us(text: str) -> float:
    """Epoch µs of a UTC time written ``YYYY-MM-DD HH:MM``."""
    return pd.Timestamp(text, tz="UTC").value / 1000


@pytest.fixture
def loaded_app(app):
    with app.app_context():
        loader.load(db.engine, SAMPLE)
    return app


@pytest.fixture
def loaded_sqlite_app(sqlite_app):
    """The sample on SQLite: for tests of the web layer, where the engine makes no difference."""
    with sqlite_app.app_context():
        loader.load(db.engine, SAMPLE)
    return sqlite_app


@pytest.fixture
def example_client(sqlite_app, tmp_path):
    folder = tmp_path / "example"
    folder.mkdir()
    (folder / "store_status.csv").write_text(EXAMPLE_POLLS)
    (folder / "menu_hours.csv").write_text(EXAMPLE_HOURS)
    (folder / "timezones.csv").write_text(EXAMPLE_ZONES)
    with sqlite_app.app_context():
        loader.load(db.engine, folder)
    return sqlite_app.test_client()


def trigger(client, **body) -> str:
    response = client.post("/trigger_report", json=body or None)
    assert response.status_code == 202, response.get_json()
    return response.get_json()["report_id"]


def example_report(client) -> str:
    return trigger(client, as_of=EXAMPLE_AS_OF, stale_after="30m", outages=True)


def timeline_path(store_id: str, **query: str) -> str:
    return f"/store/timeline?{urlencode({'id': store_id, **query})}"


def store_path(store_id: str, **query: str) -> str:
    return f"/store?{urlencode({'id': store_id, **query})}"


# --------------------------------------------------------------------------- timeline


@pytest.mark.slow  # every store of the sample, one request each
@pytest.mark.parametrize("options", [{}, FULL_OPTIONS], ids=["plain", "stale-and-outages"])
def test_timeline_totals_equal_the_report_row_of_every_store(loaded_app, options):
    client = loaded_app.test_client()
    report_id = trigger(client, **options)
    rows = client.get(f"/get_report/{report_id}?format=json").get_json()["rows"]
    assert len(rows) == 200
    for row in rows:
        response = client.get(timeline_path(row["store_id"], report=report_id))
        assert response.status_code == 200, response.get_json()
        week = response.get_json()
        assert week["store_id"] == row["store_id"]
        assert week["totals"] == {k: v for k, v in row.items() if k != "store_id"}
        check_week_is_consistent(week)


def check_week_is_consistent(week: dict) -> None:
    """Properties of every store's week: status segments tile [week start, now) without gap
    or overlap, a mixed segment's times fill it, every poll is listed or counted in a bin,
    and the inactive stretches' business time adds up to the week's downtime."""
    segments = [(s["start_us"], s["end_us"]) for s in week["segments"]]
    assert segments[0][0] == week["windows"]["week"]["at_us"]
    assert segments[-1][1] == week["windows"]["now"]["at_us"]
    assert all(end > start for start, end in segments)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(segments))
    for mixed in (s for s in week["segments"] if s["status"] == "mixed"):
        times = (mixed["active_us"], mixed["inactive_us"], mixed["unknown_us"])
        assert sum(times) == mixed["end_us"] - mixed["start_us"]
    counts = week["counts"]
    assert len(week["polls"]) + sum(b["count"] for b in week["poll_bins"]) == counts["polls"]
    if week["truncated"]["outages"]:
        assert len(week["outages"]) == week["limits"]["items"]
        return
    in_business = [o["business_hours"] for o in week["outages"]]
    assert sum(in_business) == pytest.approx(week["totals"]["downtime_last_week"], abs=0.006)
    assert sum(hours > 0 for hours in in_business) == counts["outages_in_business_hours"]
    if "outages_last_week" in week["totals"]:
        assert counts["outages_in_business_hours"] == week["totals"]["outages_last_week"]


def test_timeline_of_the_latest_data_equals_a_report_with_the_same_as_of_and_options(
    loaded_app,
):
    client = loaded_app.test_client()
    as_of = "2023-01-24T06:30:00Z"
    report_id = trigger(client, as_of=as_of, stale_after="PT90M", outages=True)
    rows = client.get(f"/get_report/{report_id}?format=json").get_json()["rows"]
    for row in rows[:20]:
        by_report = client.get(timeline_path(row["store_id"], report=report_id)).get_json()
        latest = client.get(
            timeline_path(row["store_id"], as_of=as_of, stale_after="PT90M", outages="true")
        ).get_json()
        assert latest["report_id"] is None and by_report["report_id"] == report_id
        assert {**latest, "report_id": report_id} == by_report


def test_timeline_of_the_worked_example(example_client):
    report_id = example_report(example_client)
    response = example_client.get(timeline_path("Shop-W", report=report_id))
    assert response.status_code == 200
    week = response.get_json()
    assert week["as_of"] == "2023-01-23T12:00:00.000000Z"
    assert week["options"] == {"stale_after": "PT30M", "outages": True}
    assert (week["timezone"], week["timezone_is_default"]) == ("UTC", False)
    assert week["hours"] == [
        {"day": 0, "weekday": "Monday", "start": "09:00:00", "end": "12:00:00"}
    ]
    assert {name: mark["at"] for name, mark in week["windows"].items()} == {
        "now": "2023-01-23T12:00:00.000000Z",
        "hour": "2023-01-23T11:00:00.000000Z",
        "day": "2023-01-22T12:00:00.000000Z",
        "week": "2023-01-16T12:00:00.000000Z",
    }
    # Local dates Monday 16 to Monday 23 January, 24 hours each (UTC has no DST).
    assert [day["date"] for day in week["days"]] == [f"2023-01-{d}" for d in range(16, 24)]
    assert {day["hours"] for day in week["days"]} == {24.0}
    # Monday 16, 09:00–12:00 ends before the week starts (12:00): only the 23rd is in it.
    assert [(b["start"], b["end_local"]) for b in week["business"]] == [
        ("2023-01-23T09:00:00.000000Z", "2023-01-23T12:00:00+00:00")
    ]
    # the spec's options example: known 09:44–10:44 (active) and 10:45–11:45 (inactive).
    assert [(s["start_us"], s["end_us"], s["status"]) for s in week["segments"]] == [
        (us("2023-01-16 12:00"), us("2023-01-23 09:44"), "unknown"),
        (us("2023-01-23 09:44"), us("2023-01-23 10:44"), "active"),
        (us("2023-01-23 10:44"), us("2023-01-23 10:45"), "unknown"),
        (us("2023-01-23 10:45"), us("2023-01-23 11:45"), "inactive"),
        (us("2023-01-23 11:45"), us("2023-01-23 12:00"), "unknown"),
    ]
    assert [(p["at_local"], p["status"], p["evidence"]) for p in week["polls"]] == [
        ("2023-01-23T10:14:00+00:00", "active", True),
        ("2023-01-23T11:15:00+00:00", "inactive", True),
    ]
    assert [(o["start"], o["end"], o["business_hours"]) for o in week["outages"]] == [
        ("2023-01-23T10:45:00.000000Z", "2023-01-23T11:45:00.000000Z", 1.0)
    ]
    assert week["closures"] == []
    assert week["totals"] == {
        "uptime_last_hour": 0.0,
        "uptime_last_day": 1.0,
        "uptime_last_week": 1.0,
        "downtime_last_hour": 45.0,
        "downtime_last_day": 1.0,
        "downtime_last_week": 1.0,
        "unknown_last_hour": 15.0,
        "unknown_last_day": 1.0,
        "unknown_last_week": 1.0,
        "outages_last_hour": 1,
        "outages_last_day": 1,
        "outages_last_week": 1,
        "longest_outage_last_day": 1.0,
        "longest_outage_last_week": 1.0,
    }


def test_timeline_of_a_store_whose_id_needs_url_encoding_and_has_no_hours_or_zone(
    example_client,
):
    response = example_client.get(timeline_path(ALWAYS_OPEN, as_of=EXAMPLE_AS_OF))
    assert response.status_code == 200, response.get_json()
    week = response.get_json()
    assert week["store_id"] == ALWAYS_OPEN and week["hours"] == []
    assert (week["timezone"], week["timezone_is_default"]) == ("America/Chicago", True)
    # One active poll, no stale_after: active all week, open 24×7 → 168 h of uptime.
    assert [s["status"] for s in week["segments"]] == ["active"]
    assert week["totals"]["uptime_last_week"] == 168.0
    # The week's local dates in Chicago: 16 Jan 06:00 to 23 Jan 06:00 local.
    assert [day["date"] for day in week["days"]] == [f"2023-01-{d}" for d in range(16, 24)]
    assert week["days"][0]["start_us"] == us("2023-01-16 06:00")


def test_a_closure_shows_on_the_timeline_and_removes_business_time(example_client):
    # The loader reads no closures file yet: the row is written as a load would write it.
    with example_client.application.app_context():
        key = db.session.execute(db.text("SELECT id FROM stores WHERE external_id = 'Shop-W'"))
        batch = db.session.execute(db.text("SELECT last_batch FROM data_state")).scalar()
        db.session.execute(
            db.text(
                "INSERT INTO closures (store_key, start_local_s, end_local_s, batch) "
                "VALUES (:key, :start, :end, :batch)"
            ),
            {
                "key": key.scalar(),
                "start": int(us("2023-01-23 11:30") // 1_000_000),
                "end": int(us("2023-01-23 13:00") // 1_000_000),
                "batch": batch,
            },
        )
        db.session.commit()
    week = example_client.get(timeline_path("Shop-W", as_of=EXAMPLE_AS_OF)).get_json()
    # Closed from 11:30: business hours are 09:00–11:30, the closure is cut at now (12:00).
    assert [(c["start_local"], c["end_local"]) for c in week["closures"]] == [
        ("2023-01-23T11:30:00+00:00", "2023-01-23T12:00:00+00:00")
    ]
    assert [b["end_local"] for b in week["business"]] == ["2023-01-23T11:30:00+00:00"]
    # Without stale_after: active 09:00–10:44:30, inactive 10:44:30–11:30 → 0.76 h down.
    assert week["totals"]["downtime_last_week"] == 0.76


# --------------------------------------------------------------------------- a bounded week

# Store "busy", open 24×7 in UTC: a poll every 5 minutes from Monday 10:00 to 11:00, active
# and inactive in turn (10:00 active, 10:05 inactive, ..., 11:00 active): 13 polls, 13 status
# segments, 6 outages of 5 minutes. `now` is Monday 12:00, so the week and its 10-minute
# bins start on a whole hour (Monday 16 January, 12:00).
BUSY_POLLS = "store_id,status,timestamp_utc\n" + "".join(
    f"busy,{'inactive' if i % 2 else 'active'},2023-01-23 {10 + i // 12}:{i % 12 * 5:02d}:00 UTC\n"
    for i in range(13)
)


@pytest.fixture
def busy_client(sqlite_app, tmp_path):
    (tmp_path / "store_status.csv").write_text(BUSY_POLLS)
    (tmp_path / "timezones.csv").write_text("store_id,timezone_str\nbusy,UTC\n")
    with sqlite_app.app_context():
        loader.load(db.engine, tmp_path)
    return sqlite_app.test_client()


def test_a_week_beyond_the_limits_comes_as_bin_summaries_and_says_so(busy_client, monkeypatch):
    monkeypatch.setattr(timelines, "MAX_ITEMS", 5)
    week = busy_client.get(timeline_path("busy", as_of=EXAMPLE_AS_OF, outages="true")).get_json()
    assert week["counts"] == {
        "hours": 0,
        "polls": 13,
        "evidence_polls": 13,
        "polls_in_business_hours": 13,
        "segments": 13,
        "outages": 6,
        "outages_in_business_hours": 6,
        "business": 1,
        "closures": 0,
    }
    assert week["truncated"] == {
        "hours": False,
        "business": False,
        "closures": False,
        "segments": True,
        "polls": True,
        "outages": True,
    }
    assert week["limits"] == {"items": 5, "bin_us": 10 * 60_000_000}
    # Segments by 10-minute bin: active up to 10:00 (the first poll owns all time before it);
    # each bin from 10:00 to 11:00 holds 5 minutes of each status (e.g. 10:00–10:10: active
    # to 10:02:30 and from 10:07:30, inactive between); active from 11:00 (the last poll).
    minutes_5 = 5 * 60_000_000
    assert [(s["start_us"], s["end_us"], s["status"]) for s in week["segments"]] == [
        (us("2023-01-16 12:00"), us("2023-01-23 10:00"), "active"),
        *[
            (us(f"2023-01-23 10:{m}0"), us(f"2023-01-23 1{(m + 1) // 6}:{(m + 1) % 6}0"), "mixed")
            for m in range(6)
        ],
        (us("2023-01-23 11:00"), us("2023-01-23 12:00"), "active"),
    ]
    mixed = [s for s in week["segments"] if s["status"] == "mixed"]
    assert {(s["active_us"], s["inactive_us"], s["unknown_us"]) for s in mixed} == {
        (minutes_5, minutes_5, 0)
    }
    # Polls by bin: two per bin from 10:00 (one active, one inactive), then 11:00 alone.
    assert week["polls"] == []
    assert [(b["start"], b["count"], b["active"], b["evidence"]) for b in week["poll_bins"]] == [
        *[(f"2023-01-23T10:{m}0:00.000000Z", 2, 1, 2) for m in range(6)],
        ("2023-01-23T11:00:00.000000Z", 1, 1, 1),
    ]
    # Six outages of 5 minutes (10:02:30–10:07:30, ...): the five with the most business time,
    # the earliest on a tie.
    assert [(o["start"][11:19], o["business_hours"]) for o in week["outages"]] == [
        (f"10:{m}2:30", 5 / 60) for m in range(5)
    ]
    assert week["totals"]["downtime_last_week"] == 0.5 and week["totals"]["outages_last_week"] == 6
    check_week_is_consistent(week)


def test_weekly_hours_beyond_the_limit_are_cut_in_day_order(sqlite_app, tmp_path, monkeypatch):
    # Seven one-hour periods on Sunday, Monday and Tuesday: the first five, in (day, start)
    # order, are listed: Monday 08:00 and 10:00, Tuesday 08:00, 09:00, 10:00.
    monkeypatch.setattr(timelines, "MAX_ITEMS", 5)
    periods = [(6, 8), (1, 10), (1, 8), (0, 10), (0, 8), (1, 9), (6, 9)]
    hours = "".join(f"busy,{day},{hour:02d}:00,{hour + 1:02d}:00\n" for day, hour in periods)
    (tmp_path / "store_status.csv").write_text(BUSY_POLLS)
    (tmp_path / "menu_hours.csv").write_text(
        "store_id,day,start_time_local,end_time_local\n" + hours
    )
    with sqlite_app.app_context():
        loader.load(db.engine, tmp_path)
    week = sqlite_app.test_client().get(timeline_path("busy", as_of=EXAMPLE_AS_OF)).get_json()
    assert (week["counts"]["hours"], week["truncated"]["hours"]) == (7, True)
    assert [(h["day"], h["start"]) for h in week["hours"]] == [
        (0, "08:00:00"),
        (0, "10:00:00"),
        (1, "08:00:00"),
        (1, "09:00:00"),
        (1, "10:00:00"),
    ]


def test_a_week_within_the_limits_is_given_whole(busy_client):
    week = busy_client.get(timeline_path("busy", as_of=EXAMPLE_AS_OF)).get_json()
    assert not any(week["truncated"].values())
    assert [s["status"] for s in week["segments"]] == ["active", "inactive"] * 6 + ["active"]
    assert len(week["polls"]) == 13 and week["poll_bins"] == []
    assert len(week["outages"]) == 6
    check_week_is_consistent(week)


# One poll every 2 seconds for the week before Monday 23 January 12:00 (302,400 polls), each
# active or inactive at random: about 151,000 status segments and 76,000 outages.
HEAVY_POLLS = 7 * 24 * 3600 // 2
HEAVY_ANSWER_BYTES = 1_500_000  # 2,000 outages and 1,008 bins of segments and polls: ~1.1 MB


@pytest.mark.slow
def test_a_store_polled_every_two_seconds_answers_within_a_size_bound(app, tmp_path):
    rng = np.random.default_rng(3)
    instants = pd.Timestamp("2023-01-16 12:00:01", tz="UTC") + pd.to_timedelta(
        np.arange(HEAVY_POLLS) * 2, unit="s"
    )
    pd.DataFrame(
        {
            "store_id": "heavy",
            "status": np.where(rng.random(HEAVY_POLLS) < 0.5, "active", "inactive"),
            "timestamp_utc": instants.strftime("%Y-%m-%d %H:%M:%S UTC"),
        }
    ).to_csv(tmp_path / "store_status.csv", index=False)
    with app.app_context():
        loader.load(db.engine, polls=tmp_path / "store_status.csv")
    client = app.test_client()
    report_id = trigger(client, as_of=EXAMPLE_AS_OF, stale_after="1s", outages=True)
    (row,) = client.get(f"/get_report/{report_id}?format=json").get_json()["rows"]
    answer = client.get(timeline_path("heavy", report=report_id))
    assert answer.status_code == 200
    assert len(answer.get_data()) < HEAVY_ANSWER_BYTES
    week = answer.get_json()
    assert week["totals"] == {name: value for name, value in row.items() if name != "store_id"}
    assert week["counts"]["polls"] == HEAVY_POLLS
    assert week["truncated"] == dict.fromkeys(week["truncated"], True) | {
        "hours": False,
        "business": False,
        "closures": False,
    }
    assert len(week["segments"]) <= 7 * 24 * 6 and len(week["poll_bins"]) == 7 * 24 * 6
    check_week_is_consistent(week)


@pytest.mark.parametrize(
    "path, status, fragment",
    [
        (timeline_path("nope"), 404, "no store with id 'nope'"),
        (timeline_path("x" * 65), 404, "no store"),
        (timeline_path("Shop-W", as_of="2023-01-20T00:00:00Z"), 404, "has no poll at or before"),
        (timeline_path("Shop-W", as_of="soon"), 400, "not an ISO-8601 instant"),
        (timeline_path("Shop-W", stale_after="0s"), 400, "stale_after"),
        (timeline_path("Shop-W", outages="yes"), 400, "outages must be true or false"),
        (timeline_path("Shop-W", report="f" * 32), 404, "no report with id"),
        (timeline_path("Shop-W", report="../x"), 404, "no report"),
    ],
)
def test_timeline_errors(example_client, path, status, fragment):
    response = example_client.get(path)
    assert response.status_code == status
    body = response.get_json()
    assert body["error"] and fragment in body["message"]


def test_store_ids_are_matched_exactly_in_every_database(app, tmp_path):
    # MariaDB's collations would match "Shop-W " (PAD SPACE) or "shop-w" (case-blind ones).
    (tmp_path / "store_status.csv").write_text(EXAMPLE_POLLS)
    with app.app_context():
        loader.load(db.engine, polls=tmp_path / "store_status.csv")
    client = app.test_client()
    assert client.get(timeline_path("Shop-W")).status_code == 200
    for near_miss in ("Shop-W ", "shop-w", "Shop-W\t", "shop/x u"):
        response = client.get(timeline_path(near_miss))
        assert response.status_code == 404, near_miss
        assert response.get_json()["message"] == f"no store with id {near_miss!r}"


def test_timeline_of_a_report_refuses_other_options_and_waits_for_its_start(example_client):
    report_id = example_report(example_client)
    mixed = example_client.get(timeline_path("Shop-W", report=report_id, as_of=EXAMPLE_AS_OF))
    assert mixed.status_code == 400 and "either report" in mixed.get_json()["message"]
    with example_client.application.app_context():
        db.session.add(Report(id="e" * 32, status=ReportStatus.QUEUED))
        db.session.commit()
    queued = example_client.get(timeline_path("Shop-W", report="e" * 32))
    assert queued.status_code == 409 and queued.get_json()["status"] == "Queued"


# --------------------------------------------------------------------------- report tables


def test_summary_of_the_example_is_computed_by_hand(example_client):
    report_id = example_report(example_client)
    summary = example_client.get(f"/reports/{report_id}/summary").get_json()
    assert summary["stores"] == 2 and summary["options"]["stale_after"] == "PT30M"
    # Shop-W (the spec's example): hour up 0, down 45, unknown 15 min; day and week 1, 1, 1 h.
    # shop/x ü (24×7, one active poll at 11:00, known 10:30–11:30): hour up 30, unknown 30
    # min; day up 1, unknown 23 h; week up 1, unknown 167 h.
    assert summary["windows"] == {
        "hour": {
            "unit": "minutes",
            "business": 120.0,
            "uptime": 30.0,
            "downtime": 45.0,
            "unknown": 45.0,
            "uptime_percent": 40.0,  # 30 / (30 + 45)
        },
        "day": {
            "unit": "hours",
            "business": 27.0,
            "uptime": 2.0,
            "downtime": 1.0,
            "unknown": 24.0,
            "uptime_percent": 66.67,  # 2 / 3
        },
        "week": {
            "unit": "hours",
            "business": 171.0,
            "uptime": 2.0,
            "downtime": 1.0,
            "unknown": 168.0,
            "uptime_percent": 66.67,
        },
    }
    assert summary["stores_with_downtime"] == 1 and summary["stores_without_known_time"] == 0
    # Uptime %: Shop-W 50 (1 of 2 known hours), shop/x ü 100: bins from 50 in steps of 5.
    bins = summary["histogram"]["bins"]
    assert [(b["low"], b["high"]) for b in bins[:2]] == [(50.0, 55.0), (55.0, 60.0)]
    assert [b["count"] for b in bins] == [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]
    assert bins[-1] == {"low": 100.0, "high": 100.0, "count": 1}
    assert summary["outages"] == {
        "total_last_week": 1,
        "stores_with_outages": 1,
        "longest_last_week": 1.0,
    }


def test_summary_equals_sums_over_the_report(loaded_sqlite_app):
    client = loaded_sqlite_app.test_client()
    report_id = trigger(client, **FULL_OPTIONS)
    table = pd.DataFrame(client.get(f"/get_report/{report_id}?format=json").get_json()["rows"])
    summary = client.get(f"/reports/{report_id}/summary").get_json()
    week = summary["windows"]["week"]
    assert week["uptime"] == round(table["uptime_last_week"].sum(), 2)
    assert week["business"] == round(
        table[["uptime_last_week", "downtime_last_week", "unknown_last_week"]].sum().sum(), 2
    )
    known = table["uptime_last_week"] + table["downtime_last_week"]
    assert sum(b["count"] for b in summary["histogram"]["bins"]) == int((known > 0).sum())
    assert summary["stores_without_known_time"] == int((known == 0).sum())
    assert summary["outages"]["total_last_week"] == table["outages_last_week"].sum()


def stores_page(client, report_id: str, **query) -> dict:
    response = client.get(f"/reports/{report_id}/stores", query_string=query)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def test_stores_are_worst_first_and_pages_cover_every_store_once(loaded_sqlite_app):
    client = loaded_sqlite_app.test_client()
    report_id = trigger(client)
    table = pd.DataFrame(client.get(f"/get_report/{report_id}?format=json").get_json()["rows"])
    expected = table.sort_values(
        ["downtime_last_week", "store_id"], ascending=[False, True]
    ).store_id
    first = stores_page(client, report_id)
    assert (first["sort"], first["order"], first["limit"], first["total"]) == (
        "downtime_last_week",
        "desc",
        50,
        200,
    )
    paged = []
    for offset in range(0, 200, 7):
        paged += [
            r["store_id"] for r in stores_page(client, report_id, offset=offset, limit=7)["rows"]
        ]
    assert paged == expected.tolist()
    assert stores_page(client, report_id, offset=200)["rows"] == []


@pytest.mark.parametrize(
    "column, order",
    [("store_id", "desc"), ("uptime_last_hour", "asc"), ("downtime_last_day", "desc")],
)
def test_stores_sort_by_any_column_ties_in_store_id_order(loaded_sqlite_app, column, order):
    client = loaded_sqlite_app.test_client()
    report_id = trigger(client)
    table = pd.DataFrame(client.get(f"/get_report/{report_id}?format=json").get_json()["rows"])
    keys = [column] if column == "store_id" else [column, "store_id"]
    ascending = [order == "asc"] + [True] * (len(keys) - 1)
    expected = table.sort_values(keys, ascending=ascending).store_id.tolist()
    got = stores_page(client, report_id, sort=column, order=order, limit=1000)["rows"]
    assert [row["store_id"] for row in got] == expected


def test_stores_filter_ignores_case_and_uptime_percent_sorts_lowest_first(example_client):
    report_id = example_report(example_client)
    both = stores_page(example_client, report_id, q="SHOP")
    assert both["matched"] == 2 and both["total"] == 2
    assert [r["store_id"] for r in both["rows"]] == ["Shop-W", ALWAYS_OPEN]  # downtime 1, 0
    assert [r["store_id"] for r in stores_page(example_client, report_id, q="/X Ü")["rows"]] == [
        ALWAYS_OPEN
    ]
    assert stores_page(example_client, report_id, q="zz")["matched"] == 0
    by_uptime = stores_page(example_client, report_id, sort="uptime_percent")
    assert by_uptime["order"] == "asc"
    assert [(r["store_id"], r["uptime_percent"]) for r in by_uptime["rows"]] == [
        ("Shop-W", 50.0),
        (ALWAYS_OPEN, 100.0),
    ]


@pytest.mark.parametrize(
    "query, fragment",
    [
        ({"sort": "bogus"}, "sort must be one of"),
        ({"order": "up"}, "order must be asc or desc"),
        ({"limit": "0"}, "limit must be an integer from 1 to 1000"),
        ({"limit": "1001"}, "limit must be"),
        ({"offset": "-1"}, "offset must be"),
        ({"offset": "1e3"}, "offset must be"),
        ({"q": "x" * 65}, "q is at most 64 characters"),
    ],
)
def test_stores_bad_parameters_are_400(example_client, query, fragment):
    report_id = trigger(example_client)
    response = example_client.get(f"/reports/{report_id}/stores", query_string=query)
    assert response.status_code == 400
    assert fragment in response.get_json()["message"]


def test_sorting_by_a_column_the_report_lacks_is_a_conflict(example_client):
    report_id = trigger(example_client)  # without stale_after: no unknown_* columns
    response = example_client.get(f"/reports/{report_id}/stores?sort=unknown_last_week")
    assert response.status_code == 409
    assert response.get_json() == {
        "error": "not_in_report",
        "message": "this report has no column unknown_last_week: "
        "it was made without the option that adds it",
    }


def test_report_endpoints_answer_404_409_410_422(example_client):
    done = example_report(example_client)
    with example_client.application.app_context():
        db.session.add_all(
            [
                Report(id="a" * 32, status=ReportStatus.RUNNING, batch=1, shard_count=2),
                Report(id="b" * 32, status=ReportStatus.FAILED, error="shard 1 of 1: broke"),
            ]
        )
        db.session.execute(db.delete(ReportResult).where(ReportResult.report_id == done))
        db.session.commit()
    pages.tables.tables.pop(done, None)
    for suffix in ("summary", "stores"):
        statuses = [
            example_client.get(f"/reports/{report_id}/{suffix}")
            for report_id in ("nope", "c" * 32, "a" * 32, "b" * 32, done)
        ]
        assert [r.status_code for r in statuses] == [404, 404, 409, 422, 410]
        assert statuses[2].get_json()["status"] == "Running"
        assert statuses[3].get_json()["message"] == "shard 1 of 1: broke"


def test_tables_are_cached_per_report_and_bounded(example_client, monkeypatch):
    loads = []
    original = results.finished_table
    monkeypatch.setattr(
        results, "finished_table", lambda row: loads.append(row.id) or original(row)
    )
    monkeypatch.setattr(pages, "tables", pages.report_tables.TableCache(size=2))
    ids = [trigger(example_client) for _ in range(3)]
    for report_id in [ids[0], ids[0], ids[1], ids[0], ids[2], ids[1]]:
        assert example_client.get(f"/reports/{report_id}/summary").status_code == 200
    # ids[0] loaded once and kept (used again before ids[2] came); ids[1] pushed out by ids[2].
    assert loads == [ids[0], ids[1], ids[2], ids[1]]
    assert list(pages.tables.tables) == [ids[2], ids[1]]


# --------------------------------------------------------------------------- contract, pages


def documented_schema(document: dict, path: str) -> jsonschema_rs.Validator:
    schema = document["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]
    return jsonschema_rs.validator_for(
        {"components": document["components"], "allOf": [schema["schema"]]}
    )


def test_answers_match_their_openapi_description(example_client):
    report_id = example_report(example_client)
    document = example_client.get("/openapi.json").get_json()
    answers = {
        "/reports/{report_id}/summary": f"/reports/{report_id}/summary",
        "/reports/{report_id}/stores": f"/reports/{report_id}/stores",
        "/store/timeline": timeline_path("Shop-W", report=report_id),
    }
    for documented, path in answers.items():
        response = example_client.get(path)
        assert response.status_code == 200
        documented_schema(document, documented).validate(response.get_json())


def test_pages_are_public_shells_and_never_hold_the_token(tmp_path):
    token = "s3cret-token-value"
    app = make_app(f"sqlite:///{tmp_path / 'token.sqlite3'}", tmp_path, API_TOKEN=token)
    client = app.test_client()
    for path in ("/", "/report/" + "a" * 32, store_path("a/b ü")):
        page = client.get(path)
        assert page.status_code == 200 and page.mimetype == "text/html"
        assert "default-src 'self'" in page.headers["Content-Security-Policy"]
        html = page.get_data(as_text=True)
        assert token not in html and 'data-token-required="true"' in html
    store_page = client.get(store_path("a/b ü")).get_data(as_text=True)
    assert 'data-store-id="a/b ü"' in store_page
    for asset in ("style.css", "common.js", "reports.js", "report.js", "store.js", "favicon.svg"):
        assert client.get(f"/static/{asset}").status_code == 200
    headers = {"Authorization": f"Bearer {token}"}
    for path in ("/reports/" + "a" * 32 + "/summary", timeline_path("x")):
        assert client.get(path).status_code == 401
        assert client.get(path, headers=headers).status_code == 404
    app.extensions["report_executor"].shutdown()


def test_a_store_id_with_slashes_reaches_the_page_and_the_timeline_unchanged(sqlite_client):
    page = sqlite_client.get(store_path("a//b/"))
    assert page.status_code == 200 and 'data-store-id="a//b/"' in page.get_data(as_text=True)
    timeline = sqlite_client.get(timeline_path("a//b/"))
    assert timeline.get_json()["message"] == "no store with id 'a//b/'"


# Store ids that a path would not carry: dot segments, a route's suffix, "/" and "%", a query
# or fragment mark, "+" and "&" (query syntax), and unicode. Each store gets its own number of
# polls (i + 1, active), so its totals tell it apart.
ODD_IDS = [
    ".",
    "..",
    "a",
    "a/timeline",
    "a/b",
    "%2F",
    "?x",
    "#",
    "a+b",
    "a b",
    "x&id=a",
    "stóre ü/✓",
]


def odd_polls() -> str:
    rows = [
        f'"{store_id}",active,2023-01-23 {10 + n}:00:00 UTC\n'
        for i, store_id in enumerate(ODD_IDS)
        for n in range(i + 1)
    ]
    return "store_id,status,timestamp_utc\n" + "".join(rows)


@pytest.fixture
def odd_client(sqlite_app, tmp_path):
    (tmp_path / "store_status.csv").write_text(odd_polls())
    with sqlite_app.app_context():
        loader.load(db.engine, tmp_path)
    return sqlite_app.test_client()


def test_every_store_id_has_its_own_page_and_timeline(odd_client):
    for i, store_id in enumerate(ODD_IDS):
        page = odd_client.get(store_path(store_id))
        assert page.status_code == 200, store_id
        assert f'data-store-id="{html.escape(store_id)}"' in page.get_data(as_text=True)
        answer = odd_client.get(timeline_path(store_id))
        assert answer.status_code == 200, (store_id, answer.get_json())
        week = answer.get_json()
        assert (week["store_id"], week["counts"]["polls"]) == (store_id, i + 1)


def test_earlier_store_links_redirect_to_the_store_they_named(odd_client):
    # /stores/<id> was the page; "." and ".." never reached the server (browsers drop them).
    for store_id in ODD_IDS[2:]:
        answer = odd_client.get(f"/stores/{quote(store_id, safe='')}?report={'a' * 32}")
        assert answer.status_code == 301, store_id
        assert redirected_to(answer) == ("/store", {"id": store_id, "report": "a" * 32})
    # "a/timeline" was store a's timeline: now it is the page of store "a/timeline".
    answer = odd_client.get("/stores/a/timeline")
    assert redirected_to(answer) == ("/store", {"id": "a/timeline"})
    # Other parameters ride along as they are, url_for's own ("_external", ...) too.
    answer = odd_client.get("/stores/a?_external=1&_scheme=javascript&_anchor=x&id=b")
    assert answer.headers["Location"] == "/store?id=a&_external=1&_scheme=javascript&_anchor=x"


def redirected_to(answer) -> tuple[str, dict[str, str]]:
    """The path and query parameters of a redirect's Location."""
    where = urlsplit(answer.headers["Location"])
    return where.path, dict(parse_qsl(where.query))


def test_a_timeline_needs_a_store_id(odd_client):
    for path in ("/store/timeline", "/store/timeline?id="):
        answer = odd_client.get(path)
        assert answer.status_code == 400
        assert answer.get_json()["message"] == "id (the store's id) is required"


def test_a_hostile_store_id_is_escaped_in_the_page(sqlite_client):
    hostile = '"><script>alert(1)</script>'
    html = sqlite_client.get(store_path(hostile)).get_data(as_text=True)
    assert "<script>alert" not in html and "&lt;script&gt;" in html


# --------------------------------------------------------------------------- in a browser

SCREENSHOTS_DIR = os.environ.get("WEB_SCREENSHOTS_DIR")  # e.g. docs: keep the 1280 px shots
TOKEN = "page-token-7f3a9c"


def wait_until(page, script: str, arg=None, timeout: float = 10.0) -> None:
    """Poll a JavaScript function until it returns true (Playwright's wait_for_function
    evaluates strings, which the page's Content-Security-Policy forbids)."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(script, arg):
        assert time.monotonic() < deadline, f"still false after {timeout} s: {script}"
        time.sleep(0.1)


def serve_sample(folder: Path, **settings: str) -> ServerProcess:
    url = f"sqlite:///{folder / 'web.sqlite3'}"
    assert run_cli(url, "load-data", str(SAMPLE)).returncode == 0
    return ServerProcess(url, folder / "reports", folder / "server.log", **settings).start()


@pytest.fixture(scope="module")
def web_server(tmp_path_factory):
    """`python app.py` on the sample (SQLite), shared by the browser tests of this module."""
    server = serve_sample(tmp_path_factory.mktemp("web"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def finished(web_server) -> str:
    """A Complete report with every option (all columns)."""
    answer = requests.post(f"{web_server.url}/trigger_report", json=FULL_OPTIONS, timeout=10)
    report_id = answer.json()["report_id"]
    assert wait_for_report(web_server.url, report_id).status_code == 200
    return report_id


class Tab:
    """A browser page that records console errors and uncaught exceptions."""

    def __init__(self, browser, width: int = 1280, height: int = 900) -> None:
        self.context = browser.new_context(viewport={"width": width, "height": height})
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on(
            "console", lambda message: message.type == "error" and self.errors.append(message.text)
        )
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))

    def open(self, url: str, ready: str) -> None:
        self.page.goto(url)
        self.page.wait_for_selector(ready, timeout=30_000)

    def overflow(self) -> int:
        """How far the page is wider than the window (0: no horizontal scrolling)."""
        return self.page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def tab(browser):
    opened = Tab(browser)
    yield opened
    opened.close()


def page_urls(web_server, report_id: str, store_id: str) -> dict[str, tuple[str, str]]:
    """Each page and the element that shows it has loaded its data."""
    return {
        "reports": (f"{web_server.url}/", "#reports-body tr .status-Complete"),
        "report": (f"{web_server.url}/report/{report_id}", "#stores-table tbody tr"),
        "store": (f"{web_server.url}{store_path(store_id, report=report_id)}", "#timeline svg"),
    }


def worst_store(web_server, report_id: str) -> str:
    page = requests.get(f"{web_server.url}/reports/{report_id}/stores?limit=1", timeout=10)
    return page.json()["rows"][0]["store_id"]


@pytest.mark.slow
@pytest.mark.parametrize("width", [1280, 390])
def test_each_page_loads_without_console_errors_and_fits_the_width(
    browser, web_server, finished, width, tmp_path
):
    tab = Tab(browser, width=width, height=1250 if width == 1280 else 844)
    try:
        for name, (url, ready) in page_urls(
            web_server, finished, worst_store(web_server, finished)
        ).items():
            tab.open(url, ready)
            tab.page.wait_for_load_state("networkidle")
            assert tab.errors == [], (name, tab.errors)
            assert tab.overflow() <= 0, f"{name} is wider than {width} px"
            for table in tab.page.locator("table").all():  # no table cut off inside the page
                fits = table.evaluate("t => t.offsetWidth <= t.parentElement.clientWidth + 1")
                assert fits, (name, table.get_attribute("id") or table.get_attribute("class"))
            shot = tmp_path / f"{name}-{width}.png"
            tab.page.screenshot(path=str(shot))
            assert shot.stat().st_size > 10_000  # a drawn page, not a blank one
            if SCREENSHOTS_DIR and width == 1280 and name in ("report", "store"):
                shutil.copy(shot, ROOT / SCREENSHOTS_DIR / f"web-{name}.png")
    finally:
        tab.close()


# Where a cell is drawn: its left and right edges, and the window's width.
CELL_BOX = """selector => { const cell = document.querySelector(selector);
    const box = cell.getBoundingClientRect();
    return {left: box.left, right: box.right, width: window.innerWidth}; }"""


def in_view(page, selector: str) -> dict:
    box = page.evaluate(CELL_BOX, selector)
    assert 0 <= box["left"] < box["right"] <= box["width"], (selector, box)
    return box


def check_store_and_sorted_columns_in_view(page, column: str) -> None:
    """The store and the sorted column, header and first row, lie inside the window and do
    not cover each other, wherever the table is scrolled sideways."""
    wrapper = page.locator("#stores-table").locator("xpath=..")
    for scroll in ("0", "el.scrollWidth"):
        wrapper.evaluate(f"el => {{ el.scrollLeft = {scroll}; }}")
        for row in ("thead", "tbody tr:first-child"):
            store = in_view(page, f"#stores-table {row} .sticky")
            sorted_cell = "th" if row == "thead" else "td"
            sorted_box = in_view(page, f"#stores-table {row} {sorted_cell}.sorted")
            assert sorted_box["left"] >= store["right"] - 1, (scroll, row)
    header = page.locator(f'#stores-table th[data-column="{column}"]')
    assert header.get_attribute("aria-sort") is not None


@pytest.mark.slow
@pytest.mark.parametrize("width", [1280, 390])
def test_the_stores_table_keeps_the_store_and_the_sorted_column_in_view(
    browser, web_server, finished, width
):
    tab = Tab(browser, width=width, height=900 if width == 1280 else 844)
    try:
        tab.open(f"{web_server.url}/report/{finished}", "#stores-table tbody tr")
        page = tab.page
        wrapper = page.locator("#stores-table").locator("xpath=..")
        # The report has all 16 columns; the default ones fit without scrolling.
        assert wrapper.evaluate("el => el.scrollWidth <= el.clientWidth")
        assert page.locator("#scroll-hint").is_hidden()
        shown = page.locator("#stores-table thead tr:last-child th").count() + 2
        assert shown == (8 if width == 1280 else 3)  # + store and uptime % (two rows high)
        check_store_and_sorted_columns_in_view(page, "downtime_last_week")
        page.get_by_label("Worst by").select_option(label="Outages, last week")
        page.wait_for_selector("#stores-table td.sorted >> nth=0")
        wait_until(page, "() => location.search.includes('sort=outages_last_week')")
        check_store_and_sorted_columns_in_view(page, "outages_last_week")
        # Every column chosen: wider than the window, it scrolls and says so; the store and
        # the sorted column stay in view.
        page.locator("#columns-summary").click()
        for box in page.locator("#column-choices input[type=checkbox]:not([disabled])").all():
            box.check()
        assert page.inner_text("#columns-summary") == "Columns: 16 of 16"
        assert page.locator("#stores-table thead tr:last-child th").count() == 14
        assert wrapper.evaluate("el => el.scrollWidth > el.clientWidth")
        assert page.locator("#scroll-hint").is_visible()
        check_store_and_sorted_columns_in_view(page, "outages_last_week")
        assert "columns=" in page.url
        page.get_by_role("button", name="Default").click()
        # The default columns again, and the sorted one (on a phone, not among the defaults).
        again = page.locator("#stores-table thead tr:last-child th").count() + 2
        assert again == shown + (0 if width == 1280 else 1)
        assert tab.errors == [], tab.errors
    finally:
        tab.close()


@pytest.mark.slow
@pytest.mark.parametrize("width", [1280, 390])
def test_a_closed_day_reads_closed_and_is_not_drawn_like_unknown_time(
    browser, web_server, finished, width
):
    # The worst store of the sample is open all day, except on Monday (closed), in Los Angeles.
    store_id = worst_store(web_server, finished)
    week = requests.get(f"{web_server.url}{timeline_path(store_id, report=finished)}").json()
    assert [h["weekday"] for h in week["hours"]] == list(timelines.DAY_NAMES[1:])
    tab = Tab(browser, width=width, height=900 if width == 1280 else 844)
    try:
        tab.open(f"{web_server.url}{store_path(store_id, report=finished)}", "#timeline svg")
        page = tab.page
        labels = page.locator('#timeline [data-kind="closed-day"]')
        assert labels.evaluate_all("ls => ls.map(l => [l.dataset.date, l.textContent])") == [
            ["2023-01-23", "Closed"]
        ]
        fills = page.evaluate(
            """() => Object.fromEntries(['closed', 'outside', 'segment.unknown'].map(kind => {
                const shape = document.querySelector(`#timeline rect.${kind}`);
                return [kind, shape && getComputedStyle(shape).fill]; }))"""
        )
        assert fills["closed"].startswith("rgb(") and fills["outside"] == "none", fills
        assert "unknown-hatch" in fills["segment.unknown"], fills
        # Los Angeles in January: UTC−08:00, shown beside the zone (a minus sign, unbroken).
        assert week["utc_offset"] == "-08:00"
        assert "America/Los_Angeles, UTC\u221208:00" in page.inner_text("#zone-note")
        assert "UTC\u221208:00" in page.inner_text("#timeline-zone")
        hours = page.locator("#hours-table tbody tr").all_inner_texts()
        assert hours[0] == "Monday\tClosed" and hours[1] == "Tuesday\tall day", hours
        assert tab.errors == [], tab.errors
    finally:
        tab.close()


# Store "busy": a poll a minute from Monday 23 January 10:00 UTC, active and inactive in turn,
# 3,000 polls: more than the timeline lists (2,000), so polls and segments come in bins.
BUSY_COUNT = 3000


@pytest.fixture(scope="module")
def odd_server(tmp_path_factory):
    """`python app.py` on the stores of ODD_IDS and "busy", with a finished report."""
    folder = tmp_path_factory.mktemp("odd")
    busy = pd.Timestamp("2023-01-23 10:00", tz="UTC") + pd.to_timedelta(
        np.arange(BUSY_COUNT), unit="min"
    )
    statuses = np.where(np.arange(BUSY_COUNT) % 2 == 1, "inactive", "active")
    busy_rows = "".join(
        f"busy,{status},{at}\n"
        for status, at in zip(statuses, busy.strftime("%Y-%m-%d %H:%M:%S UTC"), strict=True)
    )
    (folder / "store_status.csv").write_text(odd_polls() + busy_rows)
    url = f"sqlite:///{folder / 'odd.sqlite3'}"
    assert run_cli(url, "load-data", str(folder)).returncode == 0
    server = ServerProcess(url, folder / "reports", folder / "server.log").start()
    answer = requests.post(f"{server.url}/trigger_report", json=FULL_OPTIONS, timeout=10)
    server.report_id = answer.json()["report_id"]
    assert wait_for_report(server.url, server.report_id).status_code == 200
    yield server
    server.stop()


@pytest.mark.slow
def test_every_store_id_reaches_its_own_page_in_the_browser(tab, odd_server):
    page = tab.page
    for i, store_id in enumerate(ODD_IDS):
        tab.open(f"{odd_server.url}/", "#store-form")
        page.get_by_label("Store id").fill(store_id)
        page.get_by_role("button", name="Show store").click()
        page.wait_for_selector("#timeline svg, #store-error:not([hidden])")
        assert page.inner_text("h1") == f"Store {store_id}"
        assert page.inner_text("#polls-note").startswith(f"{i + 1} polls in the week"), store_id
    # From the report's table: each link opens its own store.
    tab.open(f"{odd_server.url}/report/{odd_server.report_id}?sort=store_id&order=asc", "td")
    links = page.locator("#stores-table tbody th a")
    assert sorted(links.all_inner_texts()) == sorted([*ODD_IDS, "busy"])
    page.get_by_role("link", name="a/timeline", exact=True).click()
    page.wait_for_selector("#timeline svg")
    assert page.inner_text("h1") == "Store a/timeline" and "report=" in page.url
    assert tab.errors == [], tab.errors


@pytest.mark.slow
def test_a_busy_store_is_drawn_from_its_bounded_week(tab, odd_server):
    report_id = odd_server.report_id
    week = requests.get(f"{odd_server.url}{timeline_path('busy', report=report_id)}").json()
    assert week["truncated"]["polls"] and week["truncated"]["segments"]
    tab.open(f"{odd_server.url}{store_path('busy', report=report_id)}", "#timeline svg")
    page = tab.page
    # Each bin of polls and each segment (whole bins or mixed ones) drawn, piece by piece.
    for kind, items in (("poll-bin", week["poll_bins"]), ("segment", week["segments"])):
        pieces = drawn(page, kind)
        assert {piece["index"] for piece in pieces} == set(range(len(items))), kind
        for index, item in enumerate(items):
            mine = [piece for piece in pieces if piece["index"] == index]
            assert sum(p["end"] - p["start"] for p in mine) == item["end_us"] - item["start_us"]
    assert page.locator("#timeline rect.share").count() > 0
    assert page.locator('#timeline [data-kind="poll"]').count() == 0
    assert page.inner_text("#polls-note").startswith("3,000 polls in the week")
    assert "drawn as counts per 10-minute bins" in page.inner_text("#timeline-note")
    assert page.locator("#legend-mixed").is_visible()
    # Thousands separators on the report page: 1,500 outages of the busy store.
    tab.open(f"{odd_server.url}/report/{report_id}", "#stores-table tbody tr")
    outages = f"{week['totals']['outages_last_week']:,}"
    assert outages == "1,500" and outages in page.inner_text("#summary-cards")
    busy_row = page.locator("#stores-table tbody tr", has=page.get_by_role("link", name="busy"))
    assert outages in busy_row.inner_text()
    assert tab.errors == [], tab.errors


@pytest.mark.slow
def test_a_triggered_report_turns_complete_and_opens(tab, web_server):
    tab.open(f"{web_server.url}/", "#trigger-form")
    page = tab.page
    before = page.locator("#reports-body tr").count()
    page.get_by_label("As of").fill("soon")
    page.get_by_role("button", name="Start report").click()
    page.wait_for_selector("#trigger-error:not([hidden])")
    assert "not an ISO-8601 instant: 'soon'" in page.inner_text("#trigger-error")
    page.get_by_label("As of").fill("2023-01-25T12:00:00Z")
    page.get_by_label("Unknown after").fill("PT90M")
    page.get_by_label("Count outages").check()
    page.get_by_role("button", name="Start report").click()
    wait_until(page, "n => document.querySelectorAll('#reports-body tr').length > n", before)
    newest = page.locator("#reports-body tr").first
    newest.locator(".status-Complete").wait_for(timeout=60_000)
    assert newest.locator(".progress-text").inner_text() == "100 %"
    assert newest.locator("td").nth(5).inner_text() == "unknown after PT1H30M, outages"
    assert newest.locator("td").nth(4).inner_text() == "2023-01-25 12:00 UTC"
    newest.get_by_role("link", name="Open report").click()
    page.wait_for_selector("#stores-table tbody tr")
    assert "Outages" in page.inner_text("#summary-cards")
    # The browser logs the refused trigger's 400 itself; nothing else went wrong.
    assert tab.errors == [
        "Failed to load resource: the server responded with a status of 400 (BAD REQUEST)"
    ]


def shown_ids(page) -> list[str]:
    return page.locator("#stores-table tbody th a").all_inner_texts()


def api_ids(web_server, report_id: str, **query) -> list[str]:
    answer = requests.get(
        f"{web_server.url}/reports/{report_id}/stores", params={"limit": 50, **query}, timeout=10
    )
    return [row["store_id"] for row in answer.json()["rows"]]


def wait_for_rows(page, expected: list[str]) -> None:
    wait_until(
        page,
        "expected => JSON.stringify([...document.querySelectorAll('#stores-table tbody th a')]"
        ".map(a => a.textContent)) === JSON.stringify(expected)",
        expected,
    )


@pytest.mark.slow
def test_the_stores_table_sorts_filters_and_pages_on_the_server(tab, web_server, finished):
    tab.open(f"{web_server.url}/report/{finished}", "#stores-table tbody tr")
    page = tab.page
    assert shown_ids(page) == api_ids(web_server, finished)  # worst first: downtime, week
    page.locator("#columns-summary").click()  # not among the default columns: shown first
    page.get_by_label("Uptime, week (h)").check()
    header = page.locator('button[data-column="uptime_last_week"]')
    header.click()
    wait_for_rows(page, api_ids(web_server, finished, sort="uptime_last_week", order="asc"))
    column = page.locator("th", has=page.locator('button[data-column="uptime_last_week"]'))
    assert column.get_attribute("aria-sort") == "ascending"
    page.locator('button[data-column="uptime_last_week"]').click()
    wait_for_rows(page, api_ids(web_server, finished, sort="uptime_last_week", order="desc"))
    assert column.get_attribute("aria-sort") == "descending"
    page.get_by_label("Worst by").select_option(label="Outages, last week")
    wait_for_rows(page, api_ids(web_server, finished, sort="outages_last_week", order="desc"))
    page.get_by_role("button", name="Next").click()
    wait_for_rows(
        page, api_ids(web_server, finished, sort="outages_last_week", order="desc", offset=50)
    )
    assert "Stores 51–100 of 200" in page.inner_text("#stores-status")
    page.get_by_label("Filter by store id").fill("99")
    filtered = api_ids(web_server, finished, sort="outages_last_week", order="desc", q="99")
    wait_for_rows(page, filtered)
    assert filtered and all("99" in store_id for store_id in filtered)
    assert "q=99" in page.url and "offset" not in page.url  # a new filter starts at page 1
    assert tab.errors == [], tab.errors


def drawn(page, kind: str) -> list[dict]:
    return page.evaluate(
        """kind => [...document.querySelectorAll(`#timeline [data-kind="${kind}"]`)].map(e => ({
            index: Number(e.dataset.index), status: e.dataset.status,
            start: Number(e.dataset.start), end: Number(e.dataset.end)}))""",
        kind,
    )


@pytest.mark.slow
def test_the_store_page_draws_every_piece_of_the_timeline(tab, web_server, finished):
    store_id = worst_store(web_server, finished)
    url, ready = page_urls(web_server, finished, store_id)["store"]
    tab.open(url, ready)
    week = requests.get(
        f"{web_server.url}{timeline_path(store_id, report=finished)}", timeout=10
    ).json()
    page = tab.page
    # A piece crossing local midnight is drawn once per day row: the pieces of each item
    # must cover exactly its span.
    for kind, items in (
        ("segment", week["segments"]),
        ("business", week["business"]),
        ("outage", week["outages"]),
    ):
        pieces = drawn(page, kind)
        assert {piece["index"] for piece in pieces} == set(range(len(items))), kind
        for index, item in enumerate(items):
            mine = [piece for piece in pieces if piece["index"] == index]
            assert sum(p["end"] - p["start"] for p in mine) == item["end_us"] - item["start_us"]
            assert min(p["start"] for p in mine) == item["start_us"]
            if kind == "segment":
                assert {piece["status"] for piece in mine} == {item["status"]}
    assert page.locator('#timeline [data-kind="poll"]').count() == len(week["polls"]) > 0
    assert page.locator("#timeline .row-label").count() == len(week["days"])
    marks = page.locator('#timeline [data-kind="window"]')
    assert sorted(marks.evaluate_all("marks => marks.map(m => m.dataset.window)")) == sorted(
        ["7 d", "24 h", "1 h", "now"]
    )
    for column, value in week["totals"].items():
        cell = page.locator(f'#numbers-table td[data-column="{column}"]').inner_text()
        expected = str(value) if column.startswith("outages_") else f"{value:.2f}"
        assert cell == expected, column
    assert week["timezone"] in page.inner_text("#zone-note")
    assert tab.errors == [], tab.errors


FOCUSABLE = (
    "a[href], button:not([disabled]), input:not([type=hidden]):not([disabled]), "
    "select:not([disabled]), textarea, [tabindex]:not([tabindex='-1'])"
)


@pytest.mark.slow
def test_the_keyboard_reaches_every_control_with_a_visible_focus(tab, web_server, finished):
    for name, (url, ready) in page_urls(
        web_server, finished, worst_store(web_server, finished)
    ).items():
        tab.open(url, ready)
        page = tab.page
        page.wait_for_load_state("networkidle")
        count = page.evaluate(
            """selector => {
                const shown = [...document.querySelectorAll(selector)]
                    .filter(e => e.checkVisibility() && !e.closest('dialog:not([open])'));
                shown.forEach((e, i) => { e.dataset.focusMark = String(i); });
                return shown.length;
            }""",
            FOCUSABLE,
        )
        assert count >= 6, (name, count)  # links, fields and buttons, not an empty page
        reached: set[str] = set()
        for _ in range(count + 3):
            page.keyboard.press("Tab")
            focused = page.evaluate(
                """() => { const e = document.activeElement;
                    return {mark: e.dataset.focusMark ?? null,
                            outline: getComputedStyle(e).outlineStyle}; }"""
            )
            if focused["mark"] is not None:
                reached.add(focused["mark"])
                assert focused["outline"] != "none", (name, focused)
        assert reached == {str(i) for i in range(count)}, (name, count, sorted(reached))


@pytest.fixture(scope="module")
def token_server(tmp_path_factory):
    server = serve_sample(tmp_path_factory.mktemp("token"), API_TOKEN=TOKEN)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    report_id = requests.post(f"{server.url}/trigger_report", headers=headers, timeout=10).json()[
        "report_id"
    ]
    assert wait_for_report(server.url, report_id, headers=headers).status_code == 200
    yield server
    server.stop()


@pytest.mark.slow
def test_the_token_is_asked_once_sent_as_a_header_and_never_put_in_a_url(tab, token_server):
    page = tab.page
    urls: list[str] = []
    documents: list[str] = []
    authorized: list[str] = []
    page.on("request", lambda request: urls.append(request.url))
    page.on(
        "request",
        lambda request: (
            request.headers.get("authorization") == f"Bearer {TOKEN}"
            and authorized.append(request.url)
        ),
    )
    page.on(
        "response",
        lambda response: (
            response.request.resource_type == "document" and documents.append(response.text())
        ),
    )
    page.goto(f"{token_server.url}/")
    dialog = page.locator("#token-dialog")
    dialog.wait_for(state="visible")
    page.get_by_label("Token", exact=True).fill("wrong")
    page.get_by_role("button", name="Use this token").click()
    wait_until(page, "() => document.getElementById('token-message').textContent.includes('refus')")
    page.get_by_label("Token", exact=True).fill(TOKEN)
    page.get_by_role("button", name="Use this token").click()
    page.locator("#reports-body tr .status-Complete").wait_for()
    assert page.evaluate("sessionStorage.getItem('store-monitor.token')") == TOKEN
    with page.expect_download() as downloading:
        page.locator("#reports-body tr").first.get_by_role("link", name="as CSV").click()
    assert Path(downloading.value.path()).read_text().startswith("store_id,uptime_last_hour")
    page.locator("#reports-body tr").first.get_by_role("link", name="Open report").click()
    page.wait_for_selector("#stores-table tbody tr")
    assert not dialog.is_visible()  # asked once: the next page reuses the tab's token
    page.locator("#stores-table tbody th a").first.click()
    page.wait_for_selector("#timeline svg")
    assert not dialog.is_visible()
    assert len(documents) == 3 and all(TOKEN not in html for html in documents)
    assert TOKEN not in page.content()
    assert urls and all(TOKEN not in url for url in urls)
    assert any("/get_report/" in url for url in authorized)
    assert any(url.endswith("/summary") for url in authorized)
    assert any("/timeline" in url for url in authorized)
    refused = [error for error in tab.errors if "401" not in error]
    assert refused == [], refused  # only the wrong token's 401 was logged


@pytest.mark.slow
def test_a_report_waiting_for_a_worker_that_is_not_there_says_so(tab, tmp_path):
    # A broker is configured (kombu's in-memory one: nothing can take the report) and no
    # worker has ever been seen: the list shows the report Queued with the warning.
    server = serve_sample(tmp_path, CELERY_BROKER_URL="memory://")
    try:
        answer = requests.post(f"{server.url}/trigger_report", timeout=10)
        assert answer.status_code == 202, answer.text
        tab.open(f"{server.url}/", "#reports-body tr .status-Queued")
        warning = tab.page.locator("#reports-body tr").first.locator(".status-detail.warning")
        assert "no report worker has been seen" in warning.inner_text()
        assert tab.errors == []
    finally:
        server.stop()


@pytest.mark.slow
def test_the_reports_page_shows_who_is_down_now_and_the_store_page_marks_its_incident(
    browser, tmp_path
):
    # The worked example: Shop-W inactive since the midpoint 10:44:30, and open at now (11:15,
    # the latest poll): 1 store down now, 30 min 30 s of business downtime (31 min shown).
    folder = tmp_path / "example"
    folder.mkdir()
    (folder / "store_status.csv").write_text(EXAMPLE_POLLS)
    (folder / "menu_hours.csv").write_text(EXAMPLE_HOURS)
    (folder / "timezones.csv").write_text(EXAMPLE_ZONES)
    url = f"sqlite:///{tmp_path / 'down.sqlite3'}"
    assert run_cli(url, "load-data", str(folder)).returncode == 0
    server = ServerProcess(url, tmp_path / "reports", tmp_path / "server.log").start()
    tab = Tab(browser)
    try:
        tab.open(f"{server.url}/", "#open-incidents li")
        assert tab.page.inner_text("#down-title") == "Down now: 1 store"
        item = tab.page.inner_text("#open-incidents li")
        assert item == "Shop-W down since 2023-01-23 10:44 UTC, 31 min of business downtime"
        tab.page.click("#open-incidents a")
        tab.page.wait_for_selector("#store-incident:not([hidden])", timeout=30_000)
        assert tab.page.inner_text("#store-incident") == (
            "Down now: inactive since 2023-01-23 10:44 UTC, 31 min of business downtime so far."
        )
        tab.open(f"{server.url}{store_path(ALWAYS_OPEN)}", "#timeline svg")
        tab.page.wait_for_load_state("networkidle")
        assert tab.page.is_hidden("#store-incident")
        assert tab.errors == []
    finally:
        tab.close()
        server.stop()


@pytest.fixture(scope="module")
def owners_server(tmp_path_factory):
    """The sample with the north and south groups, a reader key of each and an admin key."""
    folder = tmp_path_factory.mktemp("owners")
    url = f"sqlite:///{folder / 'web.sqlite3'}"
    assert run_cli(url, "load-data", str(SAMPLE)).returncode == 0
    groups_file = folder / "store_groups.csv"
    groups_file.write_text(groups_csv(owners_groups()))
    assert run_cli(url, "load-data", "--groups", str(groups_file)).returncode == 0
    tokens = {}
    for name, extra in (
        ("owner-north", ["--role", "reader", "--group", NORTH]),
        ("owner-south", ["--role", "reader", "--group", SOUTH]),
        ("ops", ["--role", "admin"]),
    ):
        created = run_cli(url, "keys", "create", name, *extra)
        assert created.returncode == 0, created.stderr
        tokens[name] = created.stdout.splitlines()[-1]
    server = ServerProcess(url, folder / "reports", folder / "server.log").start()
    yield server, tokens
    server.stop()


def sign_in(page, token: str) -> None:
    page.locator("#token-dialog").wait_for(state="visible")
    page.get_by_label("Token", exact=True).fill(token)
    page.get_by_role("button", name="Use this token").click()


@pytest.mark.slow
def test_a_reader_sees_its_name_and_scope_and_only_its_reports(tab, owners_server):
    server, tokens = owners_server
    south = {"Authorization": f"Bearer {tokens['owner-south']}"}
    theirs = requests.post(f"{server.url}/trigger_report", headers=south, timeout=10).json()
    page = tab.page
    page.goto(f"{server.url}/")
    sign_in(page, tokens["owner-north"])
    page.get_by_role("button", name="Start report").click()
    page.locator("#reports-body tr .status-Complete").wait_for()
    assert page.inner_text("#identity") == f"owner-north · reader · {NORTH}"
    rows = page.locator("#reports-body tr")
    assert rows.count() == 1
    assert page.locator("#reports-body tr td[data-label='Stores of']").inner_text() == NORTH
    assert page.locator("#reports-body tr td[data-label='By']").inner_text() == "owner-north"
    assert theirs["report_id"][:8] not in page.inner_text("#reports-body")
    options = page.locator("#group option").all_inner_texts()
    assert options == [f"All my groups ({NORTH})", f"Group {NORTH}"]
    assert tab.errors == [], tab.errors


@pytest.mark.slow
def test_an_admin_picks_the_group_a_report_covers(tab, owners_server):
    server, tokens = owners_server
    page = tab.page
    page.goto(f"{server.url}/")
    sign_in(page, tokens["ops"])
    page.locator("#group-field").wait_for(state="visible")
    assert page.inner_text("#identity") == "ops · admin · every store"
    page.get_by_label("Stores", exact=True).select_option(SOUTH)
    page.get_by_role("button", name="Start report").click()
    # The south owner's report is listed too (an admin sees every report): wait for the one
    # this admin started, of south.
    by_admin = page.locator("td[data-label='By']", has_text="ops")
    scope = page.locator("td[data-label='Stores of']", has_text=SOUTH)
    page.locator("#reports-body tr", has=by_admin).filter(has=scope).first.wait_for()
    assert tab.errors == [], tab.errors
