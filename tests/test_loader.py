"""The loader on real SQLite and MariaDB: round trip, idempotence, appends, bad input."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import text

import loader
import report
from models import db
from tests.conftest import SAMPLE

TABLES = ["stores", "polls", "business_hours", "store_timezones", "load_batches", "data_state"]


def contents(app) -> dict[str, list]:
    """Every row of every data table, sorted: to prove a failed load changed nothing."""
    with app.app_context(), db.engine.connect() as conn:
        return {
            name: sorted(map(tuple, conn.execute(text(f"SELECT * FROM {name}")).all()), key=repr)
            for name in TABLES
        }


def write(path: Path, content: str | bytes) -> Path:
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def load(app, *args, **kwargs):
    with app.app_context():
        return loader.load(db.engine, *args, **kwargs)


def scalar(app, sql: str):
    with app.app_context(), db.engine.connect() as conn:
        return conn.execute(text(sql)).scalar()


def test_sample_round_trip(app):
    summary = load(app, SAMPLE)
    polls = pd.read_csv(SAMPLE / "store_status.csv", dtype=str)
    unique = polls.drop_duplicates(["store_id", "timestamp_utc"])
    by_kind = {item.kind: item for item in summary.files}
    assert by_kind["polls"].loaded == len(unique) == scalar(app, "SELECT COUNT(*) FROM polls")
    assert by_kind["polls"].duplicates == len(polls) - len(unique)
    assert scalar(app, "SELECT COUNT(*) FROM business_hours") == len(
        pd.read_csv(SAMPLE / "menu_hours.csv")
    )
    # One poll read back exactly: the 64-bit id as text and the instant to the microsecond.
    row = polls.iloc[0]
    key = scalar(app, f"SELECT id FROM stores WHERE external_id = '{row.store_id}'")
    instant = report.parse_utc_timestamps(pd.Series([row.timestamp_utc]))[0]
    stored = scalar(app, f"SELECT active FROM polls WHERE store_key = {key} AND ts_us = {instant}")
    assert bool(stored) == (row.status == "active")


def test_reload_is_idempotent_and_appends_only_new_polls(app, tmp_path):
    polls = (SAMPLE / "store_status.csv").read_text().splitlines(keepends=True)
    first = write(tmp_path / "first.csv", "".join(polls[: len(polls) // 2]))
    load(app, polls=first)
    count_first = scalar(app, "SELECT COUNT(*) FROM polls")
    summary = load(app, polls=SAMPLE / "store_status.csv")
    total = scalar(app, "SELECT COUNT(*) FROM polls")
    assert summary.files[0].loaded == total - count_first > 0
    before = contents(app)
    again = load(app, polls=SAMPLE / "store_status.csv")
    assert again.files[0].loaded == 0
    assert again.files[0].duplicates == again.files[0].rows_read
    after = contents(app)
    assert after["polls"] == before["polls"] and after["stores"] == before["stores"]


def test_hours_and_timezones_replace_only_the_stores_in_the_file(app, tmp_path):
    write(
        tmp_path / "menu_hours.csv",
        "store_id,day,start_time_local,end_time_local\n1,0,09:00:00,17:00:00\n"
        "1,1,09:00,17:00\n2,0,10:00:00,11:00:00\n",
    )
    write(tmp_path / "timezones.csv", "store_id,timezone_str\n1,America/Denver\n2,Asia/Tokyo\n")
    load(app, tmp_path)
    write(
        tmp_path / "menu_hours.csv",
        "store_id,dayOfWeek,start_time_local,end_time_local\n1,4,08:00:00,09:00:00\n",
    )
    write(tmp_path / "timezones.csv", "store_id,timezone_str\n1,Europe/Paris\n")
    load(app, tmp_path)
    with app.app_context(), db.engine.connect() as conn:
        hours = conn.execute(
            text(
                "SELECT s.external_id, h.day_of_week, h.start_s, h.end_s FROM business_hours h "
                "JOIN stores s ON s.id = h.store_key WHERE h.retired_batch IS NULL ORDER BY 1, 2"
            )
        ).all()
        zones = conn.execute(
            text(
                "SELECT s.external_id, z.timezone_str FROM store_timezones z "
                "JOIN stores s ON s.id = z.store_key WHERE z.retired_batch IS NULL ORDER BY 1"
            )
        ).all()
    assert [tuple(r) for r in hours] == [
        ("1", 4, 8 * 3600, 9 * 3600),
        ("2", 0, 10 * 3600, 11 * 3600),
    ]
    assert [tuple(r) for r in zones] == [("1", "Europe/Paris"), ("2", "Asia/Tokyo")]


def test_gzip_input_loads_like_plain(app, tmp_path):
    gz = tmp_path / "store_status.csv.gz"
    with open(SAMPLE / "store_status.csv", "rb") as source, gzip.open(gz, "wb") as target:
        shutil.copyfileobj(source, target)
    summary = load(app, tmp_path)
    unique = pd.read_csv(SAMPLE / "store_status.csv", dtype=str).drop_duplicates(
        ["store_id", "timestamp_utc"]
    )
    assert summary.files[0].loaded == len(unique)


POLL_HEADER = "store_id,status,timestamp_utc\n"
GOOD_POLL = "11,active,2023-01-22 12:09:39.388884 UTC\n"


@pytest.mark.parametrize(
    "name, content, expected",
    [
        (
            "store_status.csv",
            POLL_HEADER + GOOD_POLL + "12,actve,2023-01-22 12:09:39 UTC\n",
            ["line 3", "column status", "'actve'"],
        ),
        (
            "store_status.csv",
            POLL_HEADER + GOOD_POLL + "12,active,2023-01-22 25:09:39 UTC\n",
            ["line 3", "column timestamp_utc", "2023-01-22 25:09:39 UTC"],
        ),
        (
            "store_status.csv",
            POLL_HEADER + GOOD_POLL + ",active,2023-01-22 12:00:00 UTC\n",
            ["line 3", "column store_id", "empty store_id"],
        ),
        (
            "store_status.csv",
            POLL_HEADER + GOOD_POLL + "9" * 200 + ",active,2023-01-22 12:00:00 UTC\n",
            ["line 3", "longer than 64"],
        ),
        (
            "store_status.csv",
            POLL_HEADER + GOOD_POLL + "13,active,3023-01-22 12:00:00 UTC\n",
            ["line 3", "between 1970 and 2100"],
        ),
        (
            "store_status.csv",
            POLL_HEADER + GOOD_POLL + "13,active,1969-12-31 12:00:00 UTC\n",
            ["line 3", "between 1970 and 2100"],
        ),
        (
            "store_status.csv",
            POLL_HEADER + GOOD_POLL + "1\x004,active,2023-01-22 12:00:00 UTC\n",
            ["line 3", "control characters"],
        ),
        (
            "store_status.csv",
            POLL_HEADER + GOOD_POLL + "14,active,2023-01-22 12:00:00 UTC,extra\n",
            ["line 3", "expected 3 fields, found 4"],
        ),
        (
            "store_status.csv",
            "store_id,status\n11,active\n",
            ["line 1", "missing column(s) timestamp_utc"],
        ),
        (
            "store_status.csv",
            "store_id;status;timestamp_utc\n11;active;2023-01-22 12:09:39 UTC\n",
            ["wrong delimiter"],
        ),
        ("store_status.csv", "", ["file is empty"]),
        (
            "store_status.csv",
            (POLL_HEADER + GOOD_POLL).encode() + b"15,activ\xe9,2023-01-22 12:00:00 UTC\n",
            ["line 3", "not UTF-8"],
        ),
        ("store_status.csv", b"\xff\xfes\x00t\x00", ["line 1", "not UTF-8"]),
        (
            "menu_hours.csv",
            "store_id,day,start_time_local,end_time_local\n1,7,09:00:00,17:00:00\n",
            ["line 2", "column day", "'7'"],
        ),
        (
            "menu_hours.csv",
            "store_id,day,start_time_local,end_time_local\n1,1,9am,17:00:00\n",
            ["line 2", "column start_time_local", "'9am'"],
        ),
        (
            "menu_hours.csv",
            "store_id,day,start_time_local,end_time_local\n1,1,09:00:00,24:30:00\n",
            ["line 2", "column end_time_local"],
        ),
        (
            "menu_hours.csv",
            "store_id,start_time_local,end_time_local\n1,09:00:00,17:00:00\n",
            ["missing column(s) dayOfWeek (or day)"],
        ),
        (
            "timezones.csv",
            "store_id,timezone_str\n1,America/Chicago\n2,Mars/Olympus\n",
            ["line 3", "column timezone_str", "unknown IANA", "'Mars/Olympus'"],
        ),
    ],
)
def test_bad_input_is_rejected_whole_with_a_precise_message(app, tmp_path, name, content, expected):
    load(app, SAMPLE)
    before = contents(app)
    path = write(tmp_path / name, content)
    with pytest.raises(loader.LoadError) as caught:
        load(app, tmp_path)
    message = str(caught.value)
    assert str(path) in message
    for fragment in expected:
        assert fragment in message
    assert contents(app) == before


def test_errors_are_listed_up_to_twenty_then_counted(app, tmp_path):
    rows = "".join(f"{n},maybe,2023-01-22 12:00:00 UTC\n" for n in range(30))
    write(tmp_path / "store_status.csv", POLL_HEADER + rows)
    with pytest.raises(loader.LoadError) as caught:
        load(app, tmp_path)
    assert len(caught.value.errors) == 20 and caught.value.error_count == 30
    assert "... and 10 more invalid rows" in str(caught.value)
    assert scalar(app, "SELECT COUNT(*) FROM polls") == 0


def test_quotes_bom_and_crlf_are_accepted(app, tmp_path):
    content = (
        '\ufeffstore_id,status,timestamp_utc\r\n"11","active","2023-01-22T12:09:39Z"\r\n'
        "12,inactive,2023-01-22 12:09:39 UTC\r\n"
    )
    write(tmp_path / "store_status.csv", content)
    summary = load(app, tmp_path)
    assert summary.files[0].loaded == 2


def test_skip_invalid_loads_the_rest_and_writes_rejects(app, tmp_path):
    write(
        tmp_path / "store_status.csv",
        POLL_HEADER + GOOD_POLL + "12,actve,2023-01-22 12:09:39 UTC\n"
        "13,inactive,not a time\n" + GOOD_POLL,
    )
    summary = load(app, tmp_path, skip_invalid=True)
    polls = summary.files[0]
    assert (polls.rows_read, polls.loaded, polls.duplicates, polls.rejected) == (4, 1, 1, 2)
    rejects = pd.read_csv(polls.rejects_path, dtype=str)
    assert rejects["line"].tolist() == ["3", "4"]
    assert (
        rejects["reason"].str.contains("status").iloc[0]
        and rejects["reason"].str.contains("timestamp").iloc[1]
    )


def test_a_bad_file_in_a_folder_rolls_back_the_good_ones(app, tmp_path):
    shutil.copy(SAMPLE / "store_status.csv", tmp_path)
    write(tmp_path / "timezones.csv", "store_id,timezone_str\n1,Nowhere/Land\n")
    before = contents(app)
    with pytest.raises(loader.LoadError):
        load(app, tmp_path)
    assert contents(app) == before


def test_folder_without_inputs_and_missing_schema_are_clear_errors(app, tmp_path):
    with pytest.raises(loader.LoadError, match="no input files found"):
        load(app, tmp_path)
