"""The report engine against docs/spec.md: hand-computed cases, a reference, properties, full data.

Inputs are written as text here and converted with the standard library (never with the
service's own parsers), so every expected number is independent of the code under test.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import report
from tests.examples import examples
from tests.moments import engine_inputs, utc_micros, wall
from tests.reference import (
    parse_hms,
    reference_measures,
    reference_report,
    round_units,
    to_us,
)

MINUTE_US = 60_000_000
HOUR_US = 60 * MINUTE_US


def at(text: str) -> int:
    """Epoch µs of a UTC wall time written ``YYYY-MM-DD HH:MM[:SS[.ffffff]]``."""
    return to_us(datetime.fromisoformat(text + "+00:00"))


def inputs(polls=(), hours=(), zones=(), closures=()) -> report.ReportInputs:
    """Engine inputs from readable tuples: polls (store, status, UTC time), hours (store,
    weekday, start, end), zones (store, zone), closures (store, local start, local end)."""
    return report.ReportInputs(
        polls=report.Polls.of(
            [p[0] for p in polls], [at(p[2]) for p in polls], [p[1] == "active" for p in polls]
        ),
        hours=report.WeeklyHours.of(
            [h[0] for h in hours],
            [h[1] for h in hours],
            [parse_hms(h[2]) for h in hours],
            [parse_hms(h[3]) for h in hours],
        ),
        zones=report.StoreZones.of([z[0] for z in zones], [z[1] for z in zones]),
        closures=report.Closures.of(
            [c[0] for c in closures], [wall(c[1]) for c in closures], [wall(c[2]) for c in closures]
        ),
    )


def run(polls, hours=(), zones=(), now=None, closures=(), stale=None, outages=False) -> dict:
    """Return {store_id: row values after store_id} for the given options."""
    options = report.ReportOptions(stale_after_us=stale, outages=outages)
    result = report.compute_report(
        inputs(polls, hours, zones, closures), at(now) if now else None, options
    )
    return {row[0]: tuple(row[1:]) for row in result.itertuples(index=False)}


UTC = [("s", "UTC")]
MONDAY = "2023-01-23"  # a Monday (weekday 0)


def test_spec_worked_example():
    # Mon 09:00–12:00 UTC; 10:14 active, 11:15 inactive; midpoint 10:44:30.
    # hour [11:00,12:00): inactive → 0 / 60 min. day: active 09:00–10:44:30 = 1.7417 h,
    # inactive 10:44:30–12:00 = 1.2583 h. The week holds only this Monday's hours.
    got = run(
        [("s", "active", f"{MONDAY} 10:14"), ("s", "inactive", f"{MONDAY} 11:15")],
        [("s", 0, "09:00:00", "12:00:00")],
        UTC,
        now=f"{MONDAY} 12:00",
    )
    assert got == {"s": (0.0, 1.74, 1.74, 60.0, 1.26, 1.26)}


def test_store_without_hours_is_open_all_week():
    # 24×7: active at now−2 h, inactive at now−30 min → midpoint now−75 min.
    # hour: inactive 60 min. day: active 24 − 1.25 = 22.75 h, down 1.25 h.
    # week: active 168 − 1.25 = 166.75 h (the first poll owns all time before it).
    got = run(
        [("s", "active", f"{MONDAY} 10:00"), ("s", "inactive", f"{MONDAY} 11:30")],
        zones=UTC,
        now=f"{MONDAY} 12:00",
    )
    assert got == {"s": (0.0, 22.75, 166.75, 60.0, 1.25, 1.25)}


def test_store_with_monday_only_is_closed_other_days():
    # Open Mon 09:00–17:00 UTC only; now Wed 12:00. Hour and day windows hold no business
    # time (0 / 0); the week holds Mon 2023-01-23 09:00–17:00 = 8 h, all active.
    got = run(
        [("s", "active", f"{MONDAY} 10:00")],
        [("s", 0, "09:00", "17:00")],
        UTC,
        now="2023-01-25 12:00",
    )
    assert got == {"s": (0.0, 0.0, 8.0, 0.0, 0.0, 0.0)}


def test_missing_timezone_means_chicago():
    # No timezone row: Mon 09:00–10:00 America/Chicago = 15:00–16:00 UTC in January (CST).
    # now 15:30 UTC, active poll 15:10 → last hour [14:30, 15:30) holds 30 business min, active.
    got = run(
        [("s", "active", f"{MONDAY} 15:10")],
        [("s", 0, "09:00", "10:00")],
        now=f"{MONDAY} 15:30",
    )
    assert got["s"][0] == 30.0 and got["s"][3] == 0.0


def test_overnight_period_crosses_midnight():
    # Mon 22:00 → 02:00 Tue (UTC). Polls Mon 22:30 active, Tue 00:30 inactive → midpoint 23:30.
    # now Tue 01:00. hour [00:00, 01:00): inactive 60. day: business Mon 22:00–Tue 01:00 = 3 h,
    # active 22:00–23:30 = 1.5 h. week [prev Tue 01:00, now) also holds prev Tue 01:00–02:00 =
    # 1 h, owned by the first poll (active): up 2.5 h, down 1.5 h.
    got = run(
        [("s", "active", f"{MONDAY} 22:30"), ("s", "inactive", "2023-01-24 00:30")],
        [("s", 0, "22:00:00", "02:00:00")],
        UTC,
        now="2023-01-24 01:00",
    )
    assert got == {"s": (0.0, 1.5, 2.5, 60.0, 1.5, 1.5)}


def test_start_equal_end_is_open_24_hours():
    # Tue 10:00–10:00 → Tue 10:00 to Wed 10:00. now Wed 12:00; active poll Tue 12:00.
    # day [Tue 12:00, Wed 12:00): business Tue 12:00–Wed 10:00 = 22 h. hour: closed.
    got = run(
        [("s", "active", "2023-01-24 12:00")],
        [("s", 1, "10:00:00", "10:00:00")],
        UTC,
        now="2023-01-25 12:00",
    )
    assert got == {"s": (0.0, 22.0, 24.0, 0.0, 0.0, 0.0)}


def test_start_and_end_235959_compared_as_written_is_24_hours():
    # Mon 23:59:59–23:59:59: start = end as written → Mon 23:59:59 to Tue 23:59:59 (24 h), not
    # "until end of day" (1 s). now Wed 00:00: hour [Tue 23:00, Wed 00:00) holds 59:59 min →
    # 59.98; the day [Tue 00:00, Wed 00:00) holds Tue 00:00–23:59:59 = 23.9997 h → 24.00; the
    # week holds all 24 h.
    got = run(
        [("s", "active", "2023-01-24 12:00")],
        [("s", 0, "23:59:59", "23:59:59")],
        UTC,
        now="2023-01-25 00:00",
    )
    assert got == {"s": (59.98, 24.0, 24.0, 0.0, 0.0, 0.0)}


@pytest.mark.parametrize("end", ["23:59:59", "24:00", "24:00:00"])
def test_end_of_day_spellings_mean_midnight(end):
    # Mon 00:00–<end> and Tue 00:00–01:00 touch: open without a gap across midnight.
    # now Tue 00:30, active poll Mon 23:00 → hour [Mon 23:30, Tue 00:30) is 60.00 business min
    # (59.98 if 23:59:59 were taken literally). day [Mon 00:30, Tue 00:30) = 23.5 + 0.5 = 24 h;
    # week [prev Tue 00:30, now) = prev Tue 00:30–01:00 + Mon 24 h + Tue 00:00–00:30 = 25 h.
    got = run(
        [("s", "active", f"{MONDAY} 23:00")],
        [("s", 0, "00:00:00", end), ("s", 1, "00:00:00", "01:00:00")],
        UTC,
        now="2023-01-24 00:30",
    )
    assert got == {"s": (60.0, 24.0, 25.0, 0.0, 0.0, 0.0)}


def test_overlapping_and_touching_periods_count_once():
    # Mon 09–12, 11–13 (overlap), 13–14 (touches), 09–12 again (duplicate) → 09:00–14:00 = 5 h.
    got = run(
        [("s", "active", f"{MONDAY} 10:00")],
        [
            ("s", 0, "09:00", "12:00"),
            ("s", 0, "11:00", "13:00"),
            ("s", 0, "13:00", "14:00"),
            ("s", 0, "09:00", "12:00"),
        ],
        UTC,
        now=f"{MONDAY} 15:00",
    )
    assert got == {"s": (0.0, 5.0, 5.0, 0.0, 0.0, 0.0)}


def test_dst_gap_start_moves_to_end_of_gap():
    # Chicago springs forward Sun 2023-03-12 02:00 CST → 03:00 CDT. Open Sun 02:30–05:00:
    # 02:30 does not exist → 03:00 CDT = 08:00 UTC; 05:00 CDT = 10:00 UTC → 2 h (not 1.5 or 2.5).
    got = run(
        [("s", "active", "2023-03-12 09:00")],
        [("s", 6, "02:30", "05:00")],
        [("s", "America/Chicago")],
        now="2023-03-12 12:00",
    )
    assert got["s"][1] == 2.0


def test_business_between_counts_hours_minus_closures_and_says_whether_the_end_is_inside():
    # Chicago springs forward Sun 2023-03-12: open 02:30–05:00 is 08:00–10:00 UTC (as above).
    # A closure 04:00–04:30 CDT (09:00–09:30 UTC) leaves 1.5 h. s2 (no hours) is open always.
    shops = inputs(
        hours=[("s1", 6, "02:30", "05:00")],
        zones=[("s1", "America/Chicago")],
        closures=[("s1", "2023-03-12 04:00", "2023-03-12 04:30")],
    )
    stores = np.array(["s1", "s2"])
    held, inside = report.business_between(
        shops, stores, at("2023-03-12 07:00"), at("2023-03-12 09:45")
    )
    assert held.tolist() == [4_500_000_000, 9_900_000_000]  # 08:00–09:00, 09:30–09:45; 2 h 45
    assert inside.tolist() == [True, True]  # 09:45 UTC is after the closure, before 10:00
    held, inside = report.business_between(
        shops, stores, at("2023-03-12 09:10"), at("2023-03-12 11:00")
    )
    assert held.tolist() == [1_800_000_000, 6_600_000_000]  # 09:30–10:00; 1 h 50 min
    assert inside.tolist() == [False, True]


def test_dst_overlap_takes_first_occurrence():
    # Chicago falls back Sun 2023-11-05 02:00 CDT → 01:00 CST. Open Sun 01:30–03:00:
    # 01:30 occurs twice → first (CDT, UTC−5) = 06:30 UTC; 03:00 CST = 09:00 UTC → 2.5 h.
    got = run(
        [("s", "active", "2023-11-05 07:00")],
        [("s", 6, "01:30", "03:00")],
        [("s", "America/Chicago")],
        now="2023-11-05 12:00",
    )
    assert got["s"][1] == 2.5


def test_overnight_period_across_dst_change():
    # Chicago, Sat 2023-03-11 22:00 → Sun 04:00 (end ≤ start). 22:00 CST = Sun 04:00 UTC,
    # Sun 04:00 CDT = 09:00 UTC → 5 business hours (6 on the wall clock). Poll at 06:00 UTC.
    # hour [11:00, 12:00 UTC): closed.
    got = run(
        [("s", "inactive", "2023-03-12 06:00")],
        [("s", 5, "22:00", "04:00")],
        [("s", "America/Chicago")],
        now="2023-03-12 12:00",
    )
    assert got == {"s": (0.0, 0.0, 0.0, 0.0, 5.0, 5.0)}


def test_polls_outside_hours_are_not_evidence():
    # Open Mon 09–12 UTC. 08:00 inactive and 13:00 inactive are outside; 10:00 active is the
    # only evidence → all 3 business hours active.
    got = run(
        [
            ("s", "inactive", f"{MONDAY} 08:00"),
            ("s", "active", f"{MONDAY} 10:00"),
            ("s", "inactive", f"{MONDAY} 13:00"),
        ],
        [("s", 0, "09:00", "12:00")],
        UTC,
        now=f"{MONDAY} 13:30",
    )
    assert got == {"s": (0.0, 3.0, 3.0, 0.0, 0.0, 0.0)}


def test_store_with_only_polls_outside_hours_uses_all_polls():
    # Open Mon 09–12 UTC; polls 08:00 active and 12:30 inactive (both outside) → fallback:
    # midpoint 10:15 → active 09:00–10:15 = 1.25 h, inactive 10:15–12:00 = 1.75 h.
    got = run(
        [("s", "active", f"{MONDAY} 08:00"), ("s", "inactive", f"{MONDAY} 12:30")],
        [("s", 0, "09:00", "12:00")],
        UTC,
        now=f"{MONDAY} 13:00",
    )
    assert got == {"s": (0.0, 1.25, 1.25, 0.0, 1.75, 1.75)}


def test_single_poll_days_before_the_window_owns_everything():
    # 24×7; one inactive poll 10 days before now → the whole week is inactive.
    got = run([("s", "inactive", "2023-01-13 12:00")], zones=UTC, now=f"{MONDAY} 12:00")
    assert got == {"s": (0.0, 0.0, 0.0, 60.0, 24.0, 168.0)}


def test_old_evidence_inside_hours_beats_a_newer_poll_outside():
    # Open Mon 09–12 UTC. Evidence: Mon 2023-01-09 10:00 inactive (two weeks back, inside hours).
    # Mon 2023-01-16 08:00 active is outside hours → not evidence. now Mon 2023-01-23 12:00:
    # the week [Mon 16 12:00, now) holds Mon 23 09–12 = 3 h, owned by the old inactive poll.
    got = run(
        [("s", "inactive", "2023-01-09 10:00"), ("s", "active", "2023-01-16 08:00")],
        [("s", 0, "09:00", "12:00")],
        UTC,
        now=f"{MONDAY} 12:00",
    )
    assert got == {"s": (0.0, 0.0, 0.0, 60.0, 3.0, 3.0)}


def test_polls_after_now_are_ignored_and_a_poll_at_now_counts():
    # 24×7: active now−2 h, inactive exactly at now → midpoint now−1 h: last hour inactive.
    # The inactive poll after now is ignored (else the day would change).
    got = run(
        [
            ("s", "active", f"{MONDAY} 10:00"),
            ("s", "inactive", f"{MONDAY} 12:00"),
            ("s", "inactive", f"{MONDAY} 12:00:01"),
        ],
        zones=UTC,
        now=f"{MONDAY} 12:00",
    )
    assert got == {"s": (0.0, 23.0, 167.0, 60.0, 1.0, 1.0)}


def test_default_now_is_latest_poll_and_stores_need_a_poll():
    # now defaults to the latest poll (b's, 12:00). Store c has hours only: not in the report.
    polls = [("a", "active", f"{MONDAY} 11:00"), ("b", "inactive", f"{MONDAY} 12:00")]
    got = run(polls, [("c", 0, "09:00", "12:00")], UTC)
    assert set(got) == {"a", "b"}
    assert got["a"][0] == 60.0 and got["b"][3] == 60.0
    assert set(run(polls, now=f"{MONDAY} 11:30")) == {"a"}


def test_no_polls_gives_an_empty_report_with_the_columns():
    result = report.compute_report(inputs())
    assert list(result.columns) == report.BASE_COLUMNS and len(result) == 0


def test_rounding_is_half_up():
    # 24×7: inactive at now−15 s, active at now → midpoint now−7.5 s: 0.125 min up → 0.13,
    # 59.875 min down → 59.88 (banker's rounding would give 0.12 and 59.88).
    got = run(
        [("s", "inactive", f"{MONDAY} 11:59:45"), ("s", "active", f"{MONDAY} 12:00")],
        zones=UTC,
    )
    assert got["s"][0] == 0.13 and got["s"][3] == 59.88


def test_midpoint_on_half_a_microsecond_is_exact():
    # 24×7: inactive at 11:59:59.400001, active at now = 12:00 → 599,999 µs apart, midpoint
    # 11:59:59.7000005. Uptime = 299,999.5 µs = 0.0049999 min → 0.00 (a midpoint rounded to
    # whole µs, 11:59:59.700000, would give 300,000 µs = 0.005 min → 0.01).
    got = run(
        [("s", "inactive", f"{MONDAY} 11:59:59.400001"), ("s", "active", f"{MONDAY} 12:00")],
        zones=UTC,
    )
    assert got["s"][0] == 0.0 and got["s"][3] == 60.0


@pytest.mark.parametrize(
    "store_id",
    ["8139926242460185114", "18446744073709551615", "0b3c0a1e-8c5b-4d43-9a3f-1f1a3e0c9d2e"],
)
def test_store_ids_stay_exact(store_id):
    got = run([(store_id, "active", f"{MONDAY} 12:00")], zones=[(store_id, "UTC")])
    assert list(got) == [store_id]


def test_integer_store_keys_above_2_53_stay_exact():
    keys = np.array([9_007_199_254_740_993, 8_139_926_242_460_185_114], dtype=np.int64)
    polls = report.Polls.of(keys, [0, 1], [True, True])
    result = report.compute_report(report.ReportInputs(polls))
    assert result["store_id"].tolist() == sorted(keys.tolist())


def test_duplicate_instants_keep_the_first_poll():
    # Two polls of one store at the same instant: the first given wins (docs/spec.md). 24×7.
    first_active = run(
        [("s", "active", f"{MONDAY} 12:00"), ("s", "inactive", f"{MONDAY} 12:00")], zones=UTC
    )
    first_inactive = run(
        [("s", "inactive", f"{MONDAY} 12:00"), ("s", "active", f"{MONDAY} 12:00")], zones=UTC
    )
    assert first_active["s"][0] == 60.0 and first_inactive["s"][3] == 60.0


def test_memory_does_not_grow_with_the_distance_to_now():
    # One store open every day, polled in 2023, reported as of 2099: business intervals are
    # built for the week before `now` and the days around the poll only (about 14), not for
    # the 76 years between (about 27,000).
    data = inputs(
        [("s", "inactive", f"{MONDAY} 10:00")],
        [("s", day, "09:00", "17:00") for day in range(7)],
        UTC,
    )
    state = report.build_state(data, at("2099-12-31 23:59:59"), report.ReportOptions())
    assert state.business.codes.size < 20
    result = report.compute_report(data, at("2099-12-31 23:59:59"))
    # now is Thu 23:59:59: the last hour is closed, the day holds 09–17 (8 h), the week 56 h,
    # all owned by the one inactive poll.
    assert tuple(result.iloc[0, 1:]) == (0.0, 0.0, 0.0, 0.0, 8.0, 56.0)


# --------------------------------------------------------------------------- options


def test_options_spec_worked_example():
    # docs/spec.md §8 "Worked example with both options": stale 30 min, outages.
    # Known 09:44–10:44 (active) and 10:45–11:45 (inactive). hour: up 0, down 45, unknown
    # 15 min. day = week (only this Monday's 09–12 is in either window): up 1, down 1,
    # unknown 1 h. One outage 10:45–11:45.
    got = run(
        [("s", "active", f"{MONDAY} 10:14"), ("s", "inactive", f"{MONDAY} 11:15")],
        [("s", 0, "09:00", "12:00")],
        UTC,
        now=f"{MONDAY} 12:00",
        stale=30 * MINUTE_US,
        outages=True,
    )
    assert got == {"s": (0.0, 1.0, 1.0, 45.0, 1.0, 1.0, 15.0, 1.0, 1.0, 1, 1, 1, 1.0, 1.0)}


def test_options_columns_follow_spec_order():
    only_stale = report.ReportOptions(stale_after_us=HOUR_US).columns()
    both = report.ReportOptions(stale_after_us=HOUR_US, outages=True).columns()
    only_outages = report.ReportOptions(outages=True).columns()
    assert only_stale[7:] == ["unknown_last_hour", "unknown_last_day", "unknown_last_week"]
    assert both[10:] == [
        "outages_last_hour",
        "outages_last_day",
        "outages_last_week",
        "longest_outage_last_day",
        "longest_outage_last_week",
    ]
    assert only_outages[:7] == report.BASE_COLUMNS and len(only_outages) == 12


def test_closure_inside_business_hours_removes_time_and_evidence():
    # Open Mon 09–17 UTC, closed Mon 12:00–14:00 → business 09–12 and 14–17 = 6 h. The 13:00
    # inactive poll falls in the closure: not evidence. Evidence 10:00 active, 15:00 inactive,
    # midpoint 12:30 → up 09–12 = 3 h, down 14–17 = 3 h; hour [16, 17): down 60 min.
    # (Without the closure: midpoint 11:30 with the 13:00 poll → up 2.5 h.)
    got = run(
        [
            ("s", "active", f"{MONDAY} 10:00"),
            ("s", "inactive", f"{MONDAY} 13:00"),
            ("s", "inactive", f"{MONDAY} 15:00"),
        ],
        [("s", 0, "09:00", "17:00")],
        UTC,
        now=f"{MONDAY} 17:00",
        closures=[("s", f"{MONDAY} 12:00", f"{MONDAY} 14:00")],
        outages=True,
    )
    # One outage from 12:30 on: 3 h of business time in the day, 1 h in the hour.
    assert got == {"s": (0.0, 3.0, 3.0, 60.0, 3.0, 3.0, 1, 1, 1, 3.0, 3.0)}


def test_closure_across_business_hours_and_the_night():
    # Open Mon and Tue 09–17 UTC; closed Mon 15:00 → Tue 11:00: business Mon 09–15 (6 h) and
    # Tue 11–17 (6 h). All active. day [Mon 17:00, Tue 17:00): 6 h; week: 12 h.
    got = run(
        [("s", "active", f"{MONDAY} 10:00"), ("s", "active", "2023-01-24 16:00")],
        [("s", 0, "09:00", "17:00"), ("s", 1, "09:00", "17:00")],
        UTC,
        now="2023-01-24 17:00",
        closures=[("s", f"{MONDAY} 15:00", "2023-01-24 11:00")],
    )
    assert got == {"s": (60.0, 6.0, 12.0, 0.0, 0.0, 0.0)}


@pytest.mark.parametrize(
    "closure, day_hours",
    [
        # 01:00 CST = 07:00 UTC; 04:00 CDT = 09:00 UTC: 2 real hours (3 on the wall clock).
        (("2023-03-12 01:00", "2023-03-12 04:00"), 22.0),
        # 02:30 does not exist → 03:00 CDT = 08:00 UTC; 04:00 CDT = 09:00 UTC: 1 h.
        (("2023-03-12 02:30", "2023-03-12 04:00"), 23.0),
    ],
)
def test_closure_over_a_dst_change_of_a_store_without_hours(closure, day_hours):
    # No hours rows: open 24×7 minus the closure. Chicago springs forward Sun 2023-03-12
    # 02:00 → 03:00. Active poll at now = 12:00 UTC; day [Mar 11 12:00, Mar 12 12:00).
    got = run(
        [("s", "active", "2023-03-12 12:00")],
        zones=[("s", "America/Chicago")],
        now="2023-03-12 12:00",
        closures=[("s", *closure)],
    )
    assert got == {"s": (60.0, day_hours, 168.0 - 24.0 + day_hours, 0.0, 0.0, 0.0)}


def test_a_closure_before_and_across_the_epoch_is_converted_exactly():
    # Chicago is UTC-6 in January 1970. Open 24x7 but closed 1969-12-31 17:00 to 19:00 local =
    # 1969-12-31 23:00 to 1970-01-01 01:00 UTC (wall seconds -25200 and -18000, negative).
    # The 00:00 UTC active poll falls in the closure: no evidence; the 01:30 inactive poll is
    # all the evidence. now = 02:00 UTC: hour [01:00, 02:00) 60 min down; day [1969-12-31
    # 02:00, 02:00) 24 h - 2 h = 22 h down; week 168 h - 2 h = 166 h down.
    # (Without the closure: midpoint 00:45, 22.75 h up in the day.)
    got = run(
        [("s", "active", "1970-01-01 00:00"), ("s", "inactive", "1970-01-01 01:30")],
        zones=[("s", "America/Chicago")],
        now="1970-01-01 02:00",
        closures=[("s", "1969-12-31 17:00", "1969-12-31 19:00")],
    )
    assert got == {"s": (0.0, 0.0, 0.0, 60.0, 22.0, 166.0)}
    # One closure from 1900: Chicago kept local mean time (UTC-5:50:36) until 1883, so 1900 is
    # CST; closed from 1900-01-01 00:00 local (06:00 UTC) to 1970-01-01 00:30 local (06:30
    # UTC): the day [1969-12-31 02:00, 1970-01-01 02:00) has 0 h of business time.
    got = run(
        [("s", "inactive", "1970-01-01 01:30")],
        zones=[("s", "America/Chicago")],
        now="1970-01-01 02:00",
        closures=[("s", "1900-01-01 00:00", "1970-01-01 00:30")],
    )
    assert got == {"s": (0.0, 0.0, 0.0, 0.0, 0.0, 0.0)}


def test_stale_gaps_at_both_ends_and_between_polls():
    # 24×7 UTC, stale 1 h: 10:00 active knows 09–11, 14:00 inactive knows 13–15; 11–13 and
    # everything before 09:00 and after 15:00 is unknown. now Mon 18:00.
    # hour [17, 18): unknown 60. day: up 2, down 2, unknown 20. week: unknown 164.
    got = run(
        [("s", "active", f"{MONDAY} 10:00"), ("s", "inactive", f"{MONDAY} 14:00")],
        zones=UTC,
        now=f"{MONDAY} 18:00",
        stale=HOUR_US,
    )
    assert got == {"s": (0.0, 2.0, 2.0, 0.0, 2.0, 2.0, 60.0, 20.0, 164.0)}


def test_distance_exactly_stale_after_is_known():
    # 24×7 UTC, stale 30 min, inactive polls at 10:00 and 11:00 (exactly 2 × 30 min apart):
    # their midpoint 10:30 is exactly 30 min from both → known: one outage 09:30–11:30.
    # now 11:30. hour [10:30, 11:30): down 60. day: down 2 h, unknown 22 h.
    got = run(
        [("s", "inactive", f"{MONDAY} 10:00"), ("s", "inactive", f"{MONDAY} 11:00")],
        zones=UTC,
        now=f"{MONDAY} 11:30",
        stale=30 * MINUTE_US,
        outages=True,
    )
    assert got == {"s": (0.0, 0.0, 0.0, 60.0, 2.0, 2.0, 0.0, 22.0, 166.0, 1, 1, 1, 2.0, 2.0)}


def test_one_microsecond_beyond_stale_after_splits_the_outage():
    # As above with the second poll 1 µs later: an unknown sliver (10:30:00, 10:30:00.000001)
    # splits the outage in two. The first ends at 10:30 = the hour window's start: no business
    # time in the hour, so it counts in the day (2) but not in the hour (1).
    got = run(
        [("s", "inactive", f"{MONDAY} 10:00"), ("s", "inactive", f"{MONDAY} 11:00:00.000001")],
        zones=UTC,
        now=f"{MONDAY} 11:30",
        stale=30 * MINUTE_US,
        outages=True,
    )
    assert got["s"][9:12] == (1, 2, 2)


def test_unknown_time_splits_outages():
    # 24×7 UTC, stale 1 h: inactive at 10:00 (knows 09–11) and 13:00 (knows 12–14): unknown
    # 11–12 → two outages of 2 h. now 14:00. hour [13, 14): one outage, 60 min down.
    # Without stale_after they are one outage over all time.
    polls = [("s", "inactive", f"{MONDAY} 10:00"), ("s", "inactive", f"{MONDAY} 13:00")]
    got = run(polls, zones=UTC, now=f"{MONDAY} 14:00", stale=HOUR_US, outages=True)
    assert got == {"s": (0.0, 0.0, 0.0, 60.0, 4.0, 4.0, 0.0, 20.0, 164.0, 1, 2, 2, 2.0, 2.0)}
    plain = run(polls, zones=UTC, now=f"{MONDAY} 14:00", outages=True)
    assert plain["s"][6:] == (1, 1, 1, 24.0, 168.0)


def test_an_outage_spans_a_closed_night():
    # Open Mon and Tue 09–17 UTC. Mon 16:00 inactive owns until Tue 01:00, Tue 10:00 inactive
    # until 11:00, Tue 12:00 active after: one outage (…, Tue 11:00) across the closed night.
    # now Tue 17:00. day: business Tue 09–17: down 09–11 = 2 h, up 6 h; one outage of 2 h.
    # week: Mon 09–17 + Tue 09–17 = 16 h: down 10 h, up 6 h; the same outage, 10 h long.
    # hour [16, 17): active; no outage.
    got = run(
        [
            ("s", "inactive", f"{MONDAY} 16:00"),
            ("s", "inactive", "2023-01-24 10:00"),
            ("s", "active", "2023-01-24 12:00"),
        ],
        [("s", 0, "09:00", "17:00"), ("s", 1, "09:00", "17:00")],
        UTC,
        now="2023-01-24 17:00",
        outages=True,
    )
    assert got == {"s": (60.0, 6.0, 6.0, 0.0, 2.0, 10.0, 0, 1, 1, 2.0, 10.0)}


def test_an_outage_crossing_the_window_start_counts_only_its_part_inside():
    # 24×7 UTC: inactive 10:30, active 12:00 → outage (…, 11:15). now 12:00.
    # hour [11:00, 12:00): 15 min of it → counted, down 15. day: [Sun 12:00, Mon 11:15) = 23.25 h.
    # week: [prev Mon 12:00, Mon 11:15) = 167.25 h.
    got = run(
        [("s", "inactive", f"{MONDAY} 10:30"), ("s", "active", f"{MONDAY} 12:00")],
        zones=UTC,
        now=f"{MONDAY} 12:00",
        outages=True,
    )
    assert got == {"s": (45.0, 0.75, 0.75, 15.0, 23.25, 167.25, 1, 1, 1, 23.25, 167.25)}


def test_closures_change_only_their_store():
    # Both 24×7 in UTC; a is closed from Mon 11:00 on: its last hour holds no business time.
    polls = [("a", "active", f"{MONDAY} 10:00"), ("b", "inactive", f"{MONDAY} 10:00")]
    zones = [("a", "UTC"), ("b", "UTC")]
    without = run(polls, zones=zones, now=f"{MONDAY} 12:00")
    closure = [("a", f"{MONDAY} 11:00", "2023-01-24 00:00")]
    closed = run(polls, zones=zones, now=f"{MONDAY} 12:00", closures=closure)
    assert closed["b"] == without["b"]
    assert closed["a"] == (0.0, 23.0, 167.0, 0.0, 0.0, 0.0)


# --------------------------------------------------------------------------- timeline


def test_timeline_pieces_add_up_to_the_report_row():
    data = inputs(
        [("s", "active", f"{MONDAY} 10:14"), ("s", "inactive", f"{MONDAY} 11:15")],
        [("s", 0, "09:00", "12:00")],
        UTC,
    )
    options = report.ReportOptions(stale_after_us=30 * MINUTE_US, outages=True)
    timeline = report.store_timeline(data, "s", at(f"{MONDAY} 12:00"), options)
    tick = report.TICKS_PER_US
    business = timeline.business
    assert business.starts.tolist() == [at(f"{MONDAY} 09:00") * tick]
    assert business.ends.tolist() == [at(f"{MONDAY} 12:00") * tick]
    segments = timeline.segments
    kinds = [
        (start // tick, report.STATUSES[s])
        for start, s in zip(segments.starts, segments.status, strict=True)
    ]
    assert kinds[1:4] == [
        (at(f"{MONDAY} 09:44"), "active"),
        (at(f"{MONDAY} 10:44"), "unknown"),
        (at(f"{MONDAY} 10:45"), "inactive"),
    ]
    outages = timeline.outages
    assert list(zip(outages.starts // tick, outages.ends // tick, strict=True)) == [
        (at(f"{MONDAY} 10:45"), at(f"{MONDAY} 11:45"))
    ]
    assert timeline.polls.evidence.tolist() == [True, True]
    assert timeline.row["downtime_last_hour"] == 45.0
    assert report.store_timeline(data, "other", at(f"{MONDAY} 12:00")) is None


def test_timeline_segments_join_neighbours_of_one_status_and_tile_the_week():
    # Three active polls, then two inactive ones, 24×7 in UTC, no stale_after: two segments,
    # active from the week's start to the midpoint 10:30 of 10:00 and 11:00, inactive after.
    polls = [("s", "active", f"{MONDAY} 0{h}:00") for h in (8, 9)]
    polls += [("s", "active", f"{MONDAY} 10:00")]
    polls += [("s", "inactive", f"{MONDAY} {h}:00") for h in (11, 12)]
    now = at(f"{MONDAY} 13:00")
    timeline = report.store_timeline(inputs(polls, zones=UTC), "s", now)
    tick = report.TICKS_PER_US
    segments = timeline.segments
    assert [report.STATUSES[s] for s in segments.status] == ["active", "inactive"]
    assert segments.starts.tolist() == [timeline.week_start, at(f"{MONDAY} 10:30") * tick]
    assert segments.ends.tolist() == [at(f"{MONDAY} 10:30") * tick, now * tick]


def test_report_module_imports_no_flask_database_or_parsers():
    code = (
        "import sys, report; bad = {'flask', 'sqlalchemy', 'models', 'loader'} & set(sys.modules);"
    )
    code += " print(sorted(bad))"
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True)
    assert out.stdout.strip() == "[]", out.stderr


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
    st.sampled_from(["23:59:59", "24:00:00", "00:00:00"]),
    st.integers(0, 86399).map(lambda s: f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}"),
)
STALE = st.one_of(st.none(), st.sampled_from([HOUR_US, 30 * MINUTE_US, 1, 7_200_000_001]))


@st.composite
def scenarios(draw):
    """A few stores around one DST change: hours and closures often starting or ending
    inside it, polls at any microsecond, options drawn too."""
    zone, day, critical = draw(st.sampled_from(TRANSITIONS))
    change = datetime.fromisoformat(day)
    now_us = to_us(datetime.fromisoformat(day + "T00:00+00:00")) + draw(
        st.integers(-86400 * 10**6, 4 * 86400 * 10**6)
    )
    weekday = st.one_of(
        st.sampled_from([(change.weekday() - 1) % 7, change.weekday()]), st.integers(0, 6)
    )
    wall_time = st.one_of(st.sampled_from(critical), ANY_TIME)
    polls, hours, zones, closures = [], [], {}, []
    for store in range(draw(st.integers(1, 3))):
        sid = f"store-{store}"
        if draw(st.integers(0, 3)) > 0:
            zones[sid] = zone
        for _ in range(draw(st.integers(0, 4))):
            start = draw(wall_time)
            start = "00:00:00" if start.startswith("24") else start
            hours.append((sid, draw(weekday), start, draw(wall_time)))
        for _ in range(draw(st.integers(0, 2))):
            first = change + timedelta(minutes=draw(st.integers(-3 * 1440, 2 * 1440)))
            last = first + timedelta(minutes=draw(st.integers(1, 2 * 1440)))
            closures.append((sid, first.isoformat(sep=" "), last.isoformat(sep=" ")))
        for _ in range(draw(st.integers(1, 12))):
            offset_us = draw(st.integers(-9 * 86400 * 10**6, 3600 * 10**6))
            polls.append((sid, now_us + offset_us, draw(st.booleans())))
    return polls, hours, zones, closures, now_us, draw(STALE), draw(st.booleans())


def engine_frame(polls, hours, zones, closures, now_us, stale, outages) -> pd.DataFrame:
    data = engine_inputs(polls, hours, zones, closures)
    options = report.ReportOptions(stale_after_us=stale, outages=outages)
    return report.compute_report(data, now_us, options)


def as_rows(frame: pd.DataFrame) -> dict:
    return {row[0]: tuple(row[1:]) for row in frame.itertuples(index=False)}


@settings(max_examples=examples(400), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_engine_equals_reference(scenario):
    polls, hours, zones, closures, now_us, stale, outages = scenario
    expected = reference_report(polls, hours, zones, now_us, closures, stale, outages)
    assert as_rows(engine_frame(*scenario)) == expected


@settings(max_examples=examples(200), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_uptime_downtime_and_unknown_add_up_to_reference_business_time(scenario):
    # Business time comes from the reference (its own interval arithmetic); the engine's three
    # numbers are each rounded to 0.01, so their sum is within 0.015 of it.
    polls, hours, zones, closures, now_us, _, _ = scenario
    frame = engine_frame(polls, hours, zones, closures, now_us, HOUR_US, False)
    measures = reference_measures(polls, hours, zones, now_us, closures, HOUR_US)
    for row in frame.itertuples(index=False):
        for name, unit in (("hour", MINUTE_US), ("day", HOUR_US), ("week", HOUR_US)):
            total = (
                getattr(row, f"uptime_last_{name}")
                + getattr(row, f"downtime_last_{name}")
                + getattr(row, f"unknown_last_{name}")
            )
            business = float(measures[row.store_id][f"business_{name}"]) / unit
            assert abs(total - business) <= 0.0150001


@settings(max_examples=examples(200), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_outage_lengths_in_a_window_add_up_to_its_downtime(scenario):
    # Exact, in ticks: the business time of every outage inside a window (counted ones have
    # positive length, the others zero) sums to the window's downtime from the status clock.
    polls, hours, zones, closures, now_us, stale, _ = scenario
    frame = engine_frame(polls, hours, zones, closures, now_us, stale, True)
    data = engine_inputs(polls, hours, zones, closures)
    options = report.ReportOptions(stale_after_us=stale, outages=True)
    state = report.build_state(data, now_us, options)
    outages = report.find_outages(state.evidence, None if stale is None else stale * 2)
    inactive = report.SegmentClock.over(state.clock, state.evidence, ~state.evidence.active)
    codes = np.arange(state.polls.stores.size)
    for name, length in report.WINDOWS_US.items():
        start = state.now_tick - length * report.TICKS_PER_US
        inside = state.clock.between(
            outages.codes,
            np.maximum(outages.starts, start),
            np.minimum(outages.ends, state.now_tick),
        )
        summed = np.bincount(outages.codes, weights=inside, minlength=codes.size)
        down = inactive.until(codes, np.full(codes.size, state.now_tick)) - inactive.until(
            codes, np.full(codes.size, start)
        )
        assert summed.astype(np.int64).tolist() == down.tolist()
        assert (
            frame[f"outages_last_{name}"].tolist()
            == np.bincount(outages.codes[inside > 0], minlength=codes.size).tolist()
        )


# --------------------------------------------------------------------------- full data

FULL = Path(__file__).resolve().parents[2] / "shared" / "data" / "loop-full"


@pytest.fixture(scope="module")
def full_data():
    if not (FULL / "store_status.csv.gz").exists():
        pytest.skip(f"full data set not found at {FULL}")
    polls = pd.read_csv(FULL / "store_status.csv.gz", dtype=str)
    hours = pd.read_csv(FULL / "menu_hours.csv", dtype=str)
    zones = pd.read_csv(next(FULL.glob("bq-results-*.csv")), dtype=str)
    return polls, hours, zones


@pytest.mark.slow
def test_full_data_business_time_and_a_sample_against_the_reference(full_data):
    polls, hours, zones = full_data
    micros = utc_micros(polls["timestamp_utc"])
    data = report.ReportInputs(
        report.Polls.of(polls["store_id"], micros, polls["status"] == "active"),
        report.WeeklyHours.of(
            hours["store_id"],
            hours["dayOfWeek" if "dayOfWeek" in hours else "day"].astype(int),
            [parse_hms(t) for t in hours["start_time_local"]],
            [parse_hms(t) for t in hours["end_time_local"]],
        ),
        report.StoreZones.of(zones["store_id"], zones["timezone_str"]),
    )
    result = report.compute_report(data)
    assert len(result) == polls["store_id"].nunique()
    now_us = int(micros.max())
    day_name = "dayOfWeek" if "dayOfWeek" in hours else "day"
    hour_rows = list(
        zip(
            hours["store_id"],
            hours[day_name].astype(int),
            hours["start_time_local"],
            hours["end_time_local"],
            strict=True,
        )
    )
    zone_map = dict(zip(zones["store_id"], zones["timezone_str"], strict=True))
    # Business time of every store from the reference (one poll each is enough for it).
    one_poll = [(store, now_us, True) for store in result["store_id"]]
    business = reference_measures(one_poll, hour_rows, zone_map, now_us)
    for row in result.itertuples(index=False):
        for name, unit in (("hour", MINUTE_US), ("day", HOUR_US), ("week", HOUR_US)):
            total = getattr(row, f"uptime_last_{name}") + getattr(row, f"downtime_last_{name}")
            expected = float(business[row.store_id][f"business_{name}"]) / unit
            assert abs(total - expected) <= 0.0100001, (row.store_id, name)
    sample = set(result["store_id"].sample(200, random_state=7))
    picked = polls["store_id"].isin(sample).to_numpy()
    expected_rows = reference_report(
        list(
            zip(
                polls["store_id"][picked],
                micros[picked].tolist(),
                (polls["status"][picked] == "active").tolist(),
                strict=True,
            )
        ),
        [row for row in hour_rows if row[0] in sample],
        {store: zone for store, zone in zone_map.items() if store in sample},
        now_us,
    )
    got = as_rows(result[result["store_id"].isin(sample)])
    assert got == expected_rows


def test_reference_rounding_helper_is_half_up():
    # The reference's own rounding, checked by hand: 0.125 min → 0.13, 0.115 h → 0.12.
    assert round_units(7_500_000, MINUTE_US) == 0.13
    assert round_units(414_000_000, HOUR_US) == 0.12
