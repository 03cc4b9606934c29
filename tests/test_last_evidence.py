"""How stores' timelines end (`jobs/last_evidence.py`): what is kept of them, and that four
remembered polls give a store that gets one new poll the incidents all its polls give.

Hand-computed ends, and on random polls (hours in a zone with a DST change, a closure) the
engine's incidents from the remembered polls against its incidents from every poll.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import report
from jobs import incidents, last_evidence
from tests.examples import examples
from tests.moments import engine_inputs
from tests.reference import to_us

NONE = last_evidence.NONE


def at(text: str) -> int:
    return to_us(datetime.fromisoformat(text + "+00:00"))


def frame_of(inputs: report.ReportInputs, now_us: int):
    return incidents.engine_frame(report.find_incidents(inputs, now_us))


MONDAY_HOURS = [(store, 0, "09:00", "17:00") for store in (1, 2, 3, 4)]
IN_UTC = {store: "UTC" for store in (1, 2, 3, 4)}


def test_ends_hold_the_latest_evidence_and_the_poll_before_the_open_incident():
    polls = [
        (1, at("2023-01-23 08:00"), True),  # outside business hours: no evidence
        (1, at("2023-01-23 09:30"), True),
        (1, at("2023-01-23 10:30"), False),  # the open incident's first poll
        (1, at("2023-01-23 11:30"), False),
        (1, at("2023-01-23 18:00"), True),  # outside again
        (2, at("2023-01-23 08:00"), False),  # never inside business hours: all its evidence
        (3, at("2023-01-23 09:10"), True),
        (3, at("2023-01-23 12:10"), True),
        (4, at("2023-01-23 10:00"), False),  # down from its first evidence poll
        (4, at("2023-01-23 11:00"), False),
    ]
    inputs = engine_inputs(polls, MONDAY_HOURS, IN_UTC)
    now = at("2023-01-23 18:00")
    ends = last_evidence.ends_of(report.find_incidents(inputs, now).ends, np.array([1, 2, 3, 4]))
    assert ends.store.tolist() == [1, 2, 3, 4]
    assert ends.inside.tolist() == [True, False, True, True]
    latest = ["2023-01-23 11:30", "2023-01-23 08:00", "2023-01-23 12:10", "2023-01-23 11:00"]
    assert ends.last_us.tolist() == [at(text) for text in latest]
    assert ends.last_active.tolist() == [False, False, True, False]
    assert ends.open_first_us.tolist() == [
        at("2023-01-23 10:30"),
        at("2023-01-23 08:00"),
        NONE,
        at("2023-01-23 10:00"),
    ]
    assert ends.before_open_us.tolist() == [at("2023-01-23 09:30"), NONE, NONE, NONE]


def ends_of_rows(*rows) -> last_evidence.Ends:
    table = np.array(rows, dtype=np.int64).reshape(-1, 6)
    return last_evidence.Ends(
        table[:, 0],
        table[:, 1].astype(bool),
        table[:, 2],
        table[:, 3].astype(bool),
        table[:, 4],
        table[:, 5],
    )


def test_ends_of_more_stores_than_the_limit_are_not_kept_and_drop_what_was(monkeypatch):
    monkeypatch.setattr(last_evidence, "MAX_KEPT_STORES", 2)
    last_evidence.forget()

    def ends_of(count: int) -> last_evidence.Ends:
        keys = np.arange(count, dtype=np.int64)
        flags = np.zeros(count, dtype=bool)
        return last_evidence.Ends(keys, flags, keys, flags, keys * 0 + NONE, keys * 0 + NONE)

    first, second = (1, 10, "a"), (2, 20, "b")
    last_evidence.keep("db", first, ends_of(2))
    assert last_evidence.kept("db", first).store.tolist() == [0, 1]
    last_evidence.keep("db", second, ends_of(3))
    assert last_evidence.kept("db", first) is None and last_evidence.kept("db", second) is None
    last_evidence.forget()


def test_advancing_replaces_drops_and_moves_entries():
    before = ends_of_rows(
        (1, 1, 100, 1, NONE, NONE),  # read again: replaced
        (2, 1, 100, 0, 50, 40),  # a new poll inside business hours: its latest evidence moves
        (3, 1, 100, 1, NONE, NONE),  # several new polls, not read: no longer known
        (4, 1, 100, 1, NONE, NONE),  # untouched
        (6, 1, 100, 1, NONE, NONE),  # a new poll outside business hours: no evidence
        (7, 0, 100, 1, NONE, NONE),  # all its polls are evidence: the new one too
        (8, 0, 100, 1, NONE, NONE),  # its first poll inside business hours: no longer known
    )
    fresh = ends_of_rows((1, 1, 300, 0, 300, 100), (5, 1, 200, 1, NONE, NONE))
    moved = report.Polls.of(
        np.array([8, 2, 6, 7]), np.array([250, 250, 250, 250]), np.array([True, False, True, True])
    )
    inside = np.array([True, True, False, False])
    after = before.advanced(np.array([1, 3, 5]), fresh, moved, inside)
    table = np.column_stack(
        [
            after.store,
            after.inside,
            after.last_us,
            after.last_active,
            after.open_first_us,
            after.before_open_us,
        ]
    )
    assert table.tolist() == [
        [1, 1, 300, 0, 300, 100],
        [2, 1, 250, 0, 50, 40],
        [4, 1, 100, 1, NONE, NONE],
        [5, 1, 200, 1, NONE, NONE],
        [6, 1, 100, 1, NONE, NONE],
        [7, 0, 250, 1, NONE, NONE],
    ]


# Sunday 2023-03-12: New York moves its clocks forward at 07:00 UTC. The store opens 09:00-17:00
# local on weekdays and overnight 22:00-02:00 on Sunday, with a closure on Monday afternoon.
BASE = datetime(2023, 3, 11)
STORE = 7
HOURS = [(STORE, day, "09:00", "17:00") for day in range(5)] + [(STORE, 6, "22:00", "02:00")]
ZONES = {STORE: "America/New_York"}
CLOSURES = [(STORE, "2023-03-13 13:00", "2023-03-13 15:00")]
SPAN_MINUTES = 4 * 24 * 60


@st.composite
def histories(draw):
    """Polls of one store, each (minute, active), and one later poll."""
    minutes = draw(st.lists(st.integers(0, SPAN_MINUTES), min_size=4, max_size=30, unique=True))
    polls = sorted((minute, draw(st.integers(0, 2)) > 0) for minute in minutes)
    after = draw(st.integers(1, 24 * 60))
    return polls, (polls[-1][0] + after, draw(st.booleans()))


def at_minute(minute: int) -> int:
    return to_us((BASE + timedelta(minutes=minute)).replace(tzinfo=UTC))


@settings(
    max_examples=examples(300),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(histories())
def test_remembered_polls_give_the_incidents_of_all_polls(history):
    polls, (new_minute, new_active) = history
    rows = [(STORE, at_minute(minute), active) for minute, active in polls]
    previous_now = rows[-1][1]
    inputs = engine_inputs(rows, HOURS, ZONES, CLOSURES)
    store = STORE
    ends = last_evidence.ends_of(
        report.find_incidents(inputs, previous_now).ends, np.array([store])
    )
    new = (STORE, at_minute(new_minute), new_active)
    everything = engine_inputs([*rows, new], HOURS, ZONES, CLOSURES)
    new_inside = report.in_business_hours(everything, np.array([STORE]), np.array([new[1]]))[0]
    assume(ends.inside[0] or not new_inside)  # a first poll inside changes the whole timeline
    remembered = last_evidence.timeline_polls(
        ends, report.Polls.of(np.array([store]), np.array([new[1]]), np.array([new_active]))
    )
    from_memory = report.ReportInputs(
        remembered, everything.hours, everything.zones, everything.closures
    )
    now = new[1]
    expected = frame_of(everything, now)
    open_first = int(ends.open_first_us[0])
    bound = open_first if open_first != NONE else previous_now + 1
    expected = expected[expected["first_poll_us"] >= bound].reset_index(drop=True)
    assert frame_of(from_memory, now).to_dict("records") == expected.to_dict("records")
