"""Incidents in the engine (`report.find_incidents`): the report's outages seen at `now`.

Hand-computed cases from docs/spec.md's worked example, and, on random data, equality with
the plain reference (`tests/reference.py`), which shares no code with the engine.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import report
from tests.examples import examples
from tests.moments import engine_inputs
from tests.reference import reference_incidents, to_us

MINUTE_US = 60_000_000
HOUR_US = 60 * MINUTE_US


def at(text: str) -> int:
    return to_us(datetime.fromisoformat(text + "+00:00"))


def incidents(polls, now, hours=(), zones=None, closures=(), stale=None) -> list[tuple]:
    """(store, start, end or None, business seconds, down now) per incident."""
    found = report.find_incidents(
        engine_inputs(polls, hours, zones, closures),
        now,
        report.ReportOptions(stale_after_us=stale),
    )
    return [
        (
            str(store),
            int(start),
            None if is_open else int(end),
            int(held) / 1e6,
            bool(down),
        )
        for store, start, end, held, is_open, down in zip(
            found.stores,
            found.started_us,
            found.resolved_us,
            found.business_us,
            found.is_open,
            found.down_now,
            strict=True,
        )
    ]


# Docs/spec.md's worked example: open Monday 09:00–12:00 (UTC), polls 10:14 active and 11:15
# inactive.
EXAMPLE = [("s", at("2023-01-23 10:14"), True), ("s", at("2023-01-23 11:15"), False)]
EXAMPLE_HOURS = [("s", 0, "09:00", "12:00")]
UTC = {"s": "UTC"}


def test_worked_example_is_one_open_incident_from_the_midpoint():
    # Starts at the midpoint 10:44:30; business time to 12:00 is 1 h 15 min 30 s = 4530 s;
    # at 12:00 the store is closed, so it is not down now.
    assert incidents(EXAMPLE, at("2023-01-23 12:00"), EXAMPLE_HOURS, UTC) == [
        ("s", at("2023-01-23 10:44:30"), None, 4530.0, False)
    ]
    # At 11:30 it is open: down now, 45 min 30 s so far.
    assert incidents(EXAMPLE, at("2023-01-23 11:30"), EXAMPLE_HOURS, UTC) == [
        ("s", at("2023-01-23 10:44:30"), None, 2730.0, True)
    ]


def test_an_incident_longer_than_a_week_counts_all_its_business_time():
    # Still open a week later, Monday 10:00: 4530 s on the 23rd + 09:00–10:00 on the 30th.
    assert incidents(EXAMPLE, at("2023-01-30 10:00"), EXAMPLE_HOURS, UTC) == [
        ("s", at("2023-01-23 10:44:30"), None, 8130.0, True)
    ]


def test_stale_after_ends_an_incident_with_unknown_time():
    # With stale_after = 30 min the outage is 10:45–11:45 (known time around 11:15): resolved,
    # 1 h of business downtime.
    found = incidents(EXAMPLE, at("2023-01-23 12:00"), EXAMPLE_HOURS, UTC, stale=30 * MINUTE_US)
    assert found == [("s", at("2023-01-23 10:45"), at("2023-01-23 11:45"), 3600.0, False)]


def test_an_active_poll_resolves_at_the_midpoint():
    polls = [*EXAMPLE, ("s", at("2023-01-23 11:45"), True)]
    # Resolved at the midpoint of 11:15 and 11:45 = 11:30; 10:44:30–11:30 = 2730 s.
    assert incidents(polls, at("2023-01-23 12:00"), EXAMPLE_HOURS, UTC) == [
        ("s", at("2023-01-23 10:44:30"), at("2023-01-23 11:30"), 2730.0, False)
    ]


def test_a_first_poll_inactive_starts_the_incident_at_that_poll():
    polls = [("s", at("2023-01-23 09:30"), False)]
    # Open all day (no hours rows): 09:30–10:00 is 1800 s, down now.
    assert incidents(polls, at("2023-01-23 10:00"), zones=UTC) == [
        ("s", at("2023-01-23 09:30"), None, 1800.0, True)
    ]


def test_inactive_polls_inside_a_closure_are_no_incident():
    polls = [
        ("s", at("2023-01-23 09:30"), True),
        ("s", at("2023-01-23 10:30"), False),
        ("s", at("2023-01-23 11:30"), True),
    ]
    closure = [("s", "2023-01-23 10:00", "2023-01-23 11:00")]
    assert incidents(polls, at("2023-01-23 12:00"), EXAMPLE_HOURS, UTC, closure) == []


def test_no_polls_no_incidents():
    assert incidents([], at("2023-01-23 12:00")) == []


# --------------------------------------------------------------------------- random data

ZONES = ["UTC", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"]
NOW = at("2023-03-12 12:00")  # the day the US moves its clocks forward


@st.composite
def scenarios(draw):
    """A few stores, hours and closures near `now`, polls over ten days, and stale_after."""
    zone = draw(st.sampled_from(ZONES))
    polls, hours, zones, closures = [], [], {}, []
    for store in range(draw(st.integers(1, 3))):
        sid = f"store-{store}"
        if draw(st.booleans()):
            zones[sid] = zone
        for _ in range(draw(st.integers(0, 3))):
            start, end = draw(st.integers(0, 86399)), draw(st.integers(0, 86400))
            hours.append((sid, draw(st.integers(0, 6)), hms(start), hms(end)))
        for _ in range(draw(st.integers(0, 1))):
            first = datetime(2023, 3, 12) + timedelta(minutes=draw(st.integers(-5 * 1440, 0)))
            last = first + timedelta(minutes=draw(st.integers(1, 2 * 1440)))
            closures.append((sid, first.isoformat(sep=" "), last.isoformat(sep=" ")))
        for _ in range(draw(st.integers(1, 14))):
            offset = draw(st.integers(-10 * 86400, 3600)) * 1_000_000
            polls.append((sid, NOW + offset + draw(st.integers(0, 999_999)), draw(st.booleans())))
    stale = draw(st.one_of(st.none(), st.sampled_from([HOUR_US, 30 * MINUTE_US, 7 * HOUR_US])))
    return polls, hours, zones, closures, stale


def hms(seconds: int) -> str:
    return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


@settings(max_examples=examples(200), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_engine_incidents_equal_the_reference(scenario):
    polls, hours, zones, closures, stale = scenario
    expected = reference_incidents(polls, hours, zones, NOW, closures, stale)
    found = report.find_incidents(
        engine_inputs(polls, hours, zones, closures), NOW, report.ReportOptions(stale)
    )
    engine: dict[str, list[tuple]] = {}
    for index, store in enumerate(found.stores):
        engine.setdefault(str(store), []).append(
            (
                int(found.started_us[index]),
                None if found.is_open[index] else int(found.resolved_us[index]),
                int(found.business_us[index]),
                bool(found.down_now[index]),
            )
        )
    # The engine keeps whole µs (a midpoint may fall on half a µs): floor of the exact values.
    reference = {
        store: [
            (
                math.floor(start),
                None if end is None else math.floor(end),
                math.floor(held),
                down,
            )
            for start, end, held, down in rows
        ]
        for store, rows in expected.items()
        if rows
    }
    assert engine == reference
