"""Parsers of instants, local date-times and durations: ASCII only, ranges, messages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest
import tzdata

from engine import timestamps
from tests.conftest import ROOT


@pytest.mark.parametrize(
    "text",
    [
        "٢h",  # ARABIC-INDIC DIGIT TWO
        "２h",  # FULLWIDTH DIGIT TWO
        "PT90ſ",  # LATIN SMALL LETTER LONG S: "ſ".upper() == "S"
        "PT٩0M",
        "1ｄ",  # FULLWIDTH d
    ],
)
def test_durations_are_ascii_only(text):
    with pytest.raises(ValueError, match="not a duration"):
        timestamps.parse_duration(text)


@pytest.mark.parametrize(
    "text, micros",
    [("90s", 90_000_000), ("pt90m", 5_400_000_000), (" P1DT2H ", 93_600_000_000)],
)
def test_ascii_durations_still_read(text, micros):
    assert timestamps.parse_duration(text) == micros


def test_instants_and_wall_times_are_ascii_only():
    with pytest.raises(ValueError, match="not an ISO-8601 instant"):
        timestamps.parse_iso_instant("٢٠٢٣-01-22T12:00:00Z")
    times = timestamps.parse_local_times(pa.array(["٠٩:00", "09:00"]))
    assert times.tolist() == [timestamps.INVALID, 9 * 3600]
    closures = timestamps.parse_local_datetimes(pa.array(["٢٠٢٣-01-22 10:00"]))
    assert closures.malformed.tolist() == [True]


def test_messages_quote_at_most_200_characters_of_a_value():
    with pytest.raises(ValueError) as caught:
        timestamps.parse_duration("9" * 100_000)
    assert len(str(caught.value)) < 400 and "(100000 characters)" in str(caught.value)


def test_local_datetimes_from_1900_to_2100_are_valid_the_rest_out_of_range():
    # 1969-12-31 21:25 is 2 h 35 min before 1970 = -9300 s; 1900-01-01 is 25,567 days before
    # (70 years, 17 of them leap) = -2,208,988,800 s.
    parsed = timestamps.parse_local_datetimes(
        pa.array(
            [
                "1969-12-31 21:25:00",
                "1900-01-01 00:00",
                "2100-01-01 00:00",
                "1899-12-31 23:59:59",
                "2100-01-01 00:00:01",
                "2023-02-30 10:00",
                "yesterday",
            ]
        )
    )
    assert parsed.valid.tolist() == [True, True, True, False, False, False, False]
    assert parsed.values[:2].tolist() == [-9300, -2_208_988_800]
    assert parsed.out_of_range.tolist() == [False, False, False, True, True, False, False]
    assert parsed.malformed.tolist() == [False] * 5 + [True, True]


def test_utc_stamps_tell_the_wrong_format_from_the_wrong_year():
    parsed = timestamps.parse_utc_instants(
        pa.array(["2023-01-22 12:09:39.388884 UTC", "yesterday", "3023-01-22T00:00:00Z"])
    )
    assert parsed.malformed.tolist() == [False, True, False]
    assert parsed.out_of_range.tolist() == [False, False, True]
    assert parsed.values[0] == 1_674_389_379_388_884


def test_zones_come_from_the_pinned_package_whatever_the_system_holds(tmp_path):
    # A system folder of zones (PYTHONTZPATH) where "America/Chicago" holds Tokyo's rules.
    # 2023-01-23 15:30 UTC is 09:30 in Chicago (UTC-6), inside its Monday 09:00-10:00; in
    # Tokyo (UTC+9) it is 00:30 on Tuesday, outside.
    fake = tmp_path / "zoneinfo" / "America"
    fake.mkdir(parents=True)
    tokyo = Path(tzdata.__file__).parent / "zoneinfo" / "Asia" / "Tokyo"
    (fake / "Chicago").write_bytes(tokyo.read_bytes())
    code = (
        "import numpy as np, report\n"
        "inputs = report.ReportInputs(report.Polls.of(), "
        "report.WeeklyHours.of(['s'], [0], [32400], [36000]), "
        "report.StoreZones.of(['s'], ['America/Chicago']))\n"
        "at = np.array([1674487800000000])\n"
        "print(report.in_business_hours(inputs, np.array(['s']), at).tolist())\n"
        "from loading import validation\n"
        "print('localtime' in validation.ZONE_NAMES.to_pylist())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={"PYTHONTZPATH": str(tmp_path / "zoneinfo"), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
    )
    assert done.stdout.split() == ["[True]", "False"], done.stderr
