"""The report engine against SPEC: hand-computed cases, a reference, properties, full data."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import report
from tests.reference import reference_report

COLUMNS = report.REPORT_COLUMNS[1:]


def frames(polls, hours=(), zones=()):
    """Build the three input frames from tuples (store, status, timestamp) etc."""
    poll_frame = pd.DataFrame(polls, columns=["store_id", "status", "timestamp_utc"])
    hours_frame = pd.DataFrame(
        list(hours), columns=["store_id", "dayOfWeek", "start_time_local", "end_time_local"]
    )
    zone_frame = pd.DataFrame(list(zones), columns=["store_id", "timezone_str"])
    return poll_frame, hours_frame, zone_frame


def run(polls, hours=(), zones=(), now=None) -> dict:
    """Return {store_id: (up_h, up_d, up_w, down_h, down_d, down_w)}."""
    result = report.compute_report(*frames(polls, hours, zones), now=now)
    return {row[0]: tuple(row[1:]) for row in result.itertuples(index=False)}


UTC = [("s", "UTC")]


def test_spec_worked_example():
    # Mon 2023-01-23 09:00–12:00 UTC; 10:14 active, 11:15 inactive; midpoint 10:44:30.
    # hour [11:00,12:00): inactive → 0 / 60 min. day: active 09:00–10:44:30 = 1.7417 h,
    # inactive 10:44:30–12:00 = 1.2583 h. The week holds only this Monday's hours.
    got = run(
        [("s", "active", "2023-01-23 10:14:00 UTC"), ("s", "inactive", "2023-01-23 11:15:00 UTC")],
        [("s", 0, "09:00:00", "12:00:00")],
        UTC,
        now="2023-01-23 12:00:00+00:00",
    )
    assert got == {"s": (0.0, 1.74, 1.74, 60.0, 1.26, 1.26)}


def test_store_without_hours_is_open_all_week():
    # 24×7: active at now−2 h, inactive at now−30 min → midpoint now−75 min.
    # hour: inactive 60 min. day: active 24 − 1.25 = 22.75 h, down 1.25 h.
    # week: active 168 − 1.25 = 166.75 h (the first poll owns all time before it).
    got = run(
        [("s", "active", "2023-01-23 10:00:00 UTC"), ("s", "inactive", "2023-01-23 11:30:00 UTC")],
        zones=UTC,
        now="2023-01-23 12:00:00+00:00",
    )
    assert got == {"s": (0.0, 22.75, 166.75, 60.0, 1.25, 1.25)}


def test_store_with_monday_only_is_closed_other_days():
    # Open Mon 09:00–17:00 UTC only; now Wed 12:00. Hour and day windows hold no business
    # time (0 / 0); the week holds Mon 2023-01-23 09:00–17:00 = 8 h, all active.
    got = run(
        [("s", "active", "2023-01-23 10:00:00 UTC")],
        [("s", 0, "09:00", "17:00")],
        UTC,
        now="2023-01-25 12:00:00Z",
    )
    assert got == {"s": (0.0, 0.0, 8.0, 0.0, 0.0, 0.0)}


def test_missing_timezone_means_chicago():
    # No timezone row: Mon 09:00–10:00 America/Chicago = 15:00–16:00 UTC in January (CST).
    # now 15:30 UTC, active poll 15:10 → last hour [14:30, 15:30) holds 30 business min, active.
    got = run(
        [("s", "active", "2023-01-23 15:10:00 UTC")],
        [("s", 0, "09:00", "10:00")],
        now="2023-01-23 15:30:00Z",
    )
    assert got["s"][0] == 30.0 and got["s"][3] == 0.0


def test_overnight_period_crosses_midnight():
    # Mon 22:00 → 02:00 Tue (UTC). Polls Mon 22:30 active, Tue 00:30 inactive → midpoint 23:30.
    # now Tue 01:00. hour [00:00, 01:00): inactive 60. day: business Mon 22:00–Tue 01:00 = 3 h,
    # active 22:00–23:30 = 1.5 h. week [prev Tue 01:00, now) also holds prev Tue 01:00–02:00 =
    # 1 h, owned by the first poll (active): up 2.5 h, down 1.5 h.
    got = run(
        [("s", "active", "2023-01-23 22:30:00 UTC"), ("s", "inactive", "2023-01-24 00:30:00 UTC")],
        [("s", 0, "22:00:00", "02:00:00")],
        UTC,
        now="2023-01-24 01:00:00Z",
    )
    assert got == {"s": (0.0, 1.5, 2.5, 60.0, 1.5, 1.5)}


def test_start_equal_end_is_open_24_hours():
    # Tue 10:00–10:00 → Tue 10:00 to Wed 10:00. now Wed 12:00; active poll Tue 12:00.
    # day [Tue 12:00, Wed 12:00): business Tue 12:00–Wed 10:00 = 22 h. hour: closed.
    got = run(
        [("s", "active", "2023-01-24 12:00:00 UTC")],
        [("s", 1, "10:00:00", "10:00:00")],
        UTC,
        now="2023-01-25 12:00:00Z",
    )
    assert got == {"s": (0.0, 22.0, 24.0, 0.0, 0.0, 0.0)}


def test_end_235959_means_end_of_day():
    # Mon 00:00–23:59:59 and Tue 00:00–01:00 touch: open without a gap across midnight.
    # now Tue 00:30, active poll Mon 23:00 → hour [Mon 23:30, Tue 00:30) is 60.00 business min
    # (59.98 if 23:59:59 were taken literally). day [Mon 00:30, Tue 00:30) = 23.5 + 0.5 = 24 h;
    # week [prev Tue 00:30, now) = prev Tue 00:30–01:00 + Mon 24 h + Tue 00:00–00:30 = 25 h.
    got = run(
        [("s", "active", "2023-01-23 23:00:00 UTC")],
        [("s", 0, "00:00:00", "23:59:59"), ("s", 1, "00:00:00", "01:00:00")],
        UTC,
        now="2023-01-24 00:30:00Z",
    )
    assert got == {"s": (60.0, 24.0, 25.0, 0.0, 0.0, 0.0)}


def test_overlapping_and_touching_periods_count_once():
    # Mon 09–12, 11–13 (overlap), 13–14 (touches), 09–12 again (duplicate) → 09:00–14:00 = 5 h.
    got = run(
        [("s", "active", "2023-01-23 10:00:00 UTC")],
        [
            ("s", 0, "09:00", "12:00"),
            ("s", 0, "11:00", "13:00"),
            ("s", 0, "13:00", "14:00"),
            ("s", 0, "09:00", "12:00"),
        ],
        UTC,
        now="2023-01-23 15:00:00Z",
    )
    assert got == {"s": (0.0, 5.0, 5.0, 0.0, 0.0, 0.0)}


def test_dst_gap_start_moves_to_end_of_gap():
    # Chicago springs forward Sun 2023-03-12 02:00 CST → 03:00 CDT. Open Sun 02:30–05:00:
    # 02:30 does not exist → 03:00 CDT = 08:00 UTC; 05:00 CDT = 10:00 UTC → 2 h (not 1.5 or 2.5).
    got = run(
        [("s", "active", "2023-03-12 09:00:00 UTC")],
        [("s", 6, "02:30", "05:00")],
        [("s", "America/Chicago")],
        now="2023-03-12 12:00:00Z",
    )
    assert got["s"][1] == 2.0


def test_dst_overlap_takes_first_occurrence():
    # Chicago falls back Sun 2023-11-05 02:00 CDT → 01:00 CST. Open Sun 01:30–03:00:
    # 01:30 occurs twice → first (CDT, UTC−5) = 06:30 UTC; 03:00 CST = 09:00 UTC → 2.5 h.
    got = run(
        [("s", "active", "2023-11-05 07:00:00 UTC")],
        [("s", 6, "01:30", "03:00")],
        [("s", "America/Chicago")],
        now="2023-11-05 12:00:00Z",
    )
    assert got["s"][1] == 2.5


def test_overnight_period_across_dst_change():
    # Chicago, Sat 2023-03-11 22:00 → Sun 04:00 (end ≤ start). 22:00 CST = Sun 04:00 UTC,
    # Sun 04:00 CDT = 09:00 UTC → 5 business hours (6 on the wall clock). Poll at 06:00 UTC.
    # hour [11:00, 12:00 UTC): closed.
    got = run(
        [("s", "inactive", "2023-03-12 06:00:00 UTC")],
        [("s", 5, "22:00", "04:00")],
        [("s", "America/Chicago")],
        now="2023-03-12 12:00:00Z",
    )
    assert got == {"s": (0.0, 0.0, 0.0, 0.0, 5.0, 5.0)}


def test_polls_outside_hours_are_not_evidence():
    # Open Mon 09–12 UTC. 08:00 inactive and 13:00 inactive are outside; 10:00 active is the
    # only evidence → all 3 business hours active.
    got = run(
        [
            ("s", "inactive", "2023-01-23 08:00:00 UTC"),
            ("s", "active", "2023-01-23 10:00:00 UTC"),
            ("s", "inactive", "2023-01-23 13:00:00 UTC"),
        ],
        [("s", 0, "09:00", "12:00")],
        UTC,
        now="2023-01-23 13:30:00Z",
    )
    assert got == {"s": (0.0, 3.0, 3.0, 0.0, 0.0, 0.0)}


def test_store_with_only_polls_outside_hours_uses_all_polls():
    # Open Mon 09–12 UTC; polls 08:00 active and 12:30 inactive (both outside) → fallback:
    # midpoint 10:15 → active 09:00–10:15 = 1.25 h, inactive 10:15–12:00 = 1.75 h.
    got = run(
        [("s", "active", "2023-01-23 08:00:00 UTC"), ("s", "inactive", "2023-01-23 12:30:00 UTC")],
        [("s", 0, "09:00", "12:00")],
        UTC,
        now="2023-01-23 13:00:00Z",
    )
    assert got == {"s": (0.0, 1.25, 1.25, 0.0, 1.75, 1.75)}


def test_single_poll_days_before_the_window_owns_everything():
    # 24×7; one inactive poll 10 days before now → the whole week is inactive.
    got = run([("s", "inactive", "2023-01-13 12:00:00 UTC")], zones=UTC, now="2023-01-23 12:00:00Z")
    assert got == {"s": (0.0, 0.0, 0.0, 60.0, 24.0, 168.0)}


def test_polls_after_now_are_ignored_and_a_poll_at_now_counts():
    # 24×7: active now−2 h, inactive exactly at now → midpoint now−1 h: last hour inactive.
    # The inactive poll after now is ignored (else the day would change).
    got = run(
        [
            ("s", "active", "2023-01-23 10:00:00 UTC"),
            ("s", "inactive", "2023-01-23 12:00:00 UTC"),
            ("s", "inactive", "2023-01-23 12:00:01 UTC"),
        ],
        zones=UTC,
        now="2023-01-23 12:00:00Z",
    )
    assert got == {"s": (0.0, 23.0, 167.0, 60.0, 1.0, 1.0)}


def test_default_now_is_latest_poll_and_stores_need_a_poll():
    # now defaults to the latest poll (b's, 12:00). Store c has hours only, d only a poll after
    # a future `now` would exclude; here every store with a poll at or before now is listed.
    polls = [
        ("a", "active", "2023-01-23 11:00:00 UTC"),
        ("b", "inactive", "2023-01-23 12:00:00 UTC"),
    ]
    got = run(polls, [("c", 0, "09:00", "12:00")], UTC)
    assert set(got) == {"a", "b"}
    assert got["a"][0] == 60.0 and got["b"][3] == 60.0
    assert set(run(polls, now="2023-01-23 11:30:00Z")) == {"a"}


def test_no_polls_gives_an_empty_report_with_the_columns():
    result = report.compute_report(*frames([]), now=None)
    assert list(result.columns) == report.REPORT_COLUMNS and len(result) == 0


def test_rounding_is_half_up():
    # 24×7: inactive at now−15 s, active at now → midpoint now−7.5 s: 0.125 min up → 0.13,
    # 59.875 min down → 59.88 (banker's rounding would give 0.12 and 59.88).
    got = run(
        [("s", "inactive", "2023-01-23 11:59:45 UTC"), ("s", "active", "2023-01-23 12:00:00 UTC")],
        zones=UTC,
    )
    assert got["s"][0] == 0.13 and got["s"][3] == 59.88


@pytest.mark.parametrize(
    "store_id",
    ["8139926242460185114", "18446744073709551615", "0b3c0a1e-8c5b-4d43-9a3f-1f1a3e0c9d2e"],
)
def test_store_ids_stay_exact(store_id):
    got = run([(store_id, "active", "2023-01-23 12:00:00 UTC")], zones=[(store_id, "UTC")])
    assert list(got) == [store_id]


def test_integer_store_ids_above_2_53_stay_exact():
    ids = np.array([9_007_199_254_740_993, 8_139_926_242_460_185_114], dtype=np.int64)
    polls = pd.DataFrame({"store_id": ids, "status": ["active"] * 2, "timestamp_utc": [0, 1]})
    result = report.compute_report(polls, frames([])[1], frames([])[2])
    assert result["store_id"].tolist() == sorted(ids.tolist())


def test_duplicate_polls_count_once():
    # An exact duplicate row changes nothing: 24×7, one active poll → all active.
    poll = ("s", "active", "2023-01-23 12:00:00 UTC")
    assert run([poll, poll], zones=UTC) == run([poll], zones=UTC)


# --------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    "text, expected",
    [
        ("2023-01-22 12:09:39.388884 UTC", "2023-01-22 12:09:39.388884"),
        ("2023-01-22 12:09:39 UTC", "2023-01-22 12:09:39"),
        ("2023-01-22 12:09:39.3 UTC", "2023-01-22 12:09:39.3"),
        ("2023-01-22 12:09:39.38888 UTC", "2023-01-22 12:09:39.38888"),
        ("2023-01-22T12:09:39Z", "2023-01-22 12:09:39"),
        ("2023-01-22T12:09:39.5+00:00", "2023-01-22 12:09:39.5"),
        ("2023-01-22T14:09:39+02:00", "2023-01-22 12:09:39"),
    ],
)
def test_parse_utc_timestamps_accepts_the_formats(text, expected):
    expected_us = (pd.Timestamp(expected) - pd.Timestamp(0)) // pd.Timedelta(microseconds=1)
    assert report.parse_utc_timestamps(pd.Series([text]))[0] == expected_us


@pytest.mark.parametrize(
    "text",
    [
        "yesterday",
        "",
        "2023-13-01 00:00:00 UTC",
        "1969-12-31 23:59:59 UTC",
        "2999-01-01 00:00:00 UTC",
    ],
)
def test_parse_utc_timestamps_marks_bad_values(text):
    assert report.parse_utc_timestamps(pd.Series([text]))[0] == -1


def test_parse_local_times():
    values = pd.Series(["09:00:00", "9:30", "23:59:59", "24:00", "ab", "12:61", "", None])
    expected = [32400, 34200, 86399, -1, -1, -1, -1, -1]
    assert report.parse_local_times(values).tolist() == expected


def test_day_column_accepts_both_names():
    assert report.day_column(["store_id", "day"]) == "day"
    assert report.day_column(["store_id", "dayOfWeek"]) == "dayOfWeek"
    assert report.day_column(["store_id"]) is None


def test_report_module_does_not_import_flask_or_the_database():
    code = (
        "import sys, report; bad = {'flask', 'sqlalchemy', 'models'} & set(sys.modules); print(bad)"
    )
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True)
    assert out.stdout.strip() == "set()", out.stderr


# --------------------------------------------------------------------------- properties

# DST changes: zone, local date, wall times at and inside the gap or the repeated hour.
TRANSITIONS = [
    ("America/Chicago", "2023-03-12", ["02:00", "02:30", "03:00"]),
    ("America/Chicago", "2023-11-05", ["01:00", "01:30", "02:00"]),
    ("Europe/London", "2023-03-26", ["01:00", "01:30", "02:00"]),
    ("Europe/London", "2023-10-29", ["01:00", "01:30", "02:00"]),
    ("Australia/Lord_Howe", "2023-04-02", ["01:30", "01:45", "02:00"]),
    ("Australia/Lord_Howe", "2023-10-01", ["02:00", "02:15", "02:30"]),
    ("America/Santiago", "2023-04-01", ["23:00", "23:30", "00:00"]),
    ("America/Santiago", "2023-09-03", ["00:00", "00:30", "01:00"]),
    ("Asia/Kolkata", "2023-01-25", ["00:00", "05:30"]),
    ("UTC", "2023-01-25", ["00:00", "12:00"]),
]
ANY_TIME = st.one_of(
    st.just("23:59:59"),
    st.integers(0, 86399).map(lambda s: f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}"),
)


@st.composite
def scenarios(draw):
    """A few stores around one DST change, hours often starting or ending inside it."""
    zone, day, critical = draw(st.sampled_from(TRANSITIONS))
    change = pd.Timestamp(day)
    now_us = change.value // 1000 + draw(st.integers(-1 * 86400, 4 * 86400)) * 1_000_000
    weekday = st.one_of(
        st.sampled_from([(change.day_of_week - 1) % 7, change.day_of_week]), st.integers(0, 6)
    )
    wall_time = st.one_of(st.sampled_from(critical), ANY_TIME)
    polls, hours, zones = [], [], {}
    for store in range(draw(st.integers(1, 3))):
        sid = f"store-{store}"
        if draw(st.integers(0, 3)) > 0:
            zones[sid] = zone
        for _ in range(draw(st.integers(0, 4))):
            hours.append((sid, draw(weekday), draw(wall_time), draw(wall_time)))
        for _ in range(draw(st.integers(1, 12))):
            offset_s = draw(st.integers(-9 * 86400, 3600))
            polls.append((sid, now_us + offset_s * 1_000_000, draw(st.booleans())))
    return polls, hours, zones, now_us


def engine_report(polls, hours, zones, now_us):
    poll_frame = pd.DataFrame(polls, columns=["store_id", "timestamp_utc", "status"])
    poll_frame["timestamp_utc"] = poll_frame["timestamp_utc"].astype("int64")
    hours_frame = pd.DataFrame(
        hours, columns=["store_id", "day", "start_time_local", "end_time_local"]
    )
    zone_frame = pd.DataFrame(list(zones.items()), columns=["store_id", "timezone_str"])
    result = report.compute_report(poll_frame, hours_frame, zone_frame, now=now_us)
    return {row[0]: tuple(row[1:]) for row in result.itertuples(index=False)}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_engine_equals_reference(scenario):
    polls, hours, zones, now_us = scenario
    assert engine_report(*scenario) == reference_report(polls, hours, zones, now_us)


@settings(max_examples=200, deadline=None)
@given(scenarios())
def test_uptime_plus_downtime_is_business_time(scenario):
    polls, hours, zones, now_us = scenario
    poll_frame = pd.DataFrame(polls, columns=["store_id", "timestamp_utc", "status"])
    hours_frame = pd.DataFrame(
        hours, columns=["store_id", "day", "start_time_local", "end_time_local"]
    )
    zone_frame = pd.DataFrame(list(zones.items()), columns=["store_id", "timezone_str"])
    prepared = report.prepare_polls(poll_frame, now_us)
    assume(prepared.codes.size > 0)
    week = now_us - report.WINDOWS_US["week"]
    first = min(int(prepared.instants.min()), week)
    intervals = report.business_intervals(
        hours_frame, zone_frame, prepared.store_ids, first, now_us
    )
    evidence = report.evidence_mask(prepared, intervals)
    business = report.business_clock(intervals, week, now_us)
    active = report.active_clock(prepared, evidence, business, week, now_us)
    codes = np.arange(len(prepared.store_ids))
    at_now = np.full(codes.size, now_us)
    for length in report.WINDOWS_US.values():
        start = np.full(codes.size, now_us - length)
        business_us = business.until(codes, at_now) - business.until(codes, start)
        up_us = active.until(codes, at_now) - active.until(codes, start)
        assert np.all((up_us >= 0) & (up_us <= business_us) & (business_us <= length))


# --------------------------------------------------------------------------- full data

FULL = Path(__file__).resolve().parents[2] / "shared" / "data" / "loop-full"


def business_hours_per_window(polls, hours, zones) -> dict[str, np.ndarray]:
    """Business time of every store in each window, in the report's units (sorted ids)."""
    now = int(polls["timestamp_utc"].max())
    store_ids = pd.Index(sorted(polls["store_id"].unique()))
    week = now - report.WINDOWS_US["week"]
    intervals = report.business_intervals(hours, zones, store_ids, week, now)
    clock = report.business_clock(intervals, week, now)
    codes = np.arange(len(store_ids))
    at_now = clock.until(codes, np.full(codes.size, now))
    result = {}
    for name, length in report.WINDOWS_US.items():
        micros = at_now - clock.until(codes, np.full(codes.size, now - length))
        unit = report.US_PER_MINUTE if name == "hour" else report.US_PER_HOUR
        result[name] = micros / unit
    return result


@pytest.fixture(scope="module")
def full_data():
    if not (FULL / "store_status.csv.gz").exists():
        pytest.skip(f"full data set not found at {FULL}")
    polls = pd.read_csv(FULL / "store_status.csv.gz", dtype=str)
    polls["timestamp_utc"] = report.parse_utc_timestamps(polls["timestamp_utc"])
    hours = pd.read_csv(FULL / "menu_hours.csv", dtype={"store_id": str})
    zones = pd.read_csv(next(FULL.glob("bq-results-*.csv")), dtype=str)
    return polls, hours, zones


@pytest.mark.slow
def test_full_data_invariant_and_reference_sample(full_data):
    polls, hours, zones = full_data
    result = report.compute_report(polls, hours, zones)
    assert len(result) == polls["store_id"].nunique()
    business = business_hours_per_window(polls, hours, zones)
    for name, expected in business.items():
        total = result[f"uptime_last_{name}"] + result[f"downtime_last_{name}"]
        # Each of the two is rounded to 0.01, so their sum is within 0.01 of business time.
        assert np.all(np.abs(total.to_numpy() - expected) <= 0.0100001)
    now_us = int(polls["timestamp_utc"].max())
    sample = set(result["store_id"].sample(200, random_state=7))
    picked = polls[polls["store_id"].isin(sample)]
    expected = reference_report(
        list(
            zip(
                picked["store_id"],
                picked["timestamp_utc"],
                picked["status"] == "active",
                strict=True,
            )
        ),
        list(hours[hours["store_id"].isin(sample)].itertuples(index=False, name=None)),
        dict(zones[zones["store_id"].isin(sample)].itertuples(index=False, name=None)),
        now_us,
    )
    got = {
        row[0]: tuple(row[1:])
        for row in result[result["store_id"].isin(sample)].itertuples(index=False)
    }
    assert got == expected
