"""The loader on real SQLite and MariaDB: round trip, idempotence, appends, bad input."""

from __future__ import annotations

import gzip
import shutil
import subprocess
import sys
import weakref
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import text

import loader
from app import create_app
from jobs import results, steps
from jobs.executors import InlineExecutor
from jobs.options import ReportRequest
from loading import rejects, sources, writing
from models import Report, db
from tests.conftest import ROOT, SAMPLE
from tests.loading import (
    CLOSURES_HEADER,
    GOOD_POLL,
    HOURS_HEADER,
    POLL_HEADER,
    contents,
    load,
    rows,
    scalar,
    short_lock_wait,
    write,
)
from tests.server import clean_environment


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
    # The first poll read back exactly: the 64-bit id as text and the instant to the
    # microsecond. 6996349301360474194,active,2023-01-21 08:18:11.10252 UTC:
    # 2023-01-01 is 1672531200 s; + 20 days (1728000) + 08:18:11 (29891) = 1674289091 s,
    # and .10252 s = 102520 us.
    stored = rows(
        app,
        "SELECT p.active FROM polls p JOIN stores s ON s.id = p.store_key "
        "WHERE s.external_id = '6996349301360474194' AND p.ts_us = 1674289091102520",
    )
    assert stored == [(1,)]


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
        (  # the machine's own zone, whatever it is set to: no IANA name
            "timezones.csv",
            "store_id,timezone_str\n1,localtime\n",
            ["line 2", "column timezone_str", "unknown IANA", "'localtime'"],
        ),
        (
            "store_status.csv",
            POLL_HEADER + GOOD_POLL + "13,active,yesterday\n",
            ["line 3", "not a UTC timestamp such as 2023-01-22 12:09:39.388884 UTC or ISO-8601"],
        ),
        (
            "closures.csv",
            CLOSURES_HEADER + "1,1899-12-31 23:00,1900-01-01 10:00\n",
            [
                "line 2",
                "column start_local",
                "'1899-12-31 23:00'",
                "out of range: closures must be from 1900-01-01 00:00 to 2100-01-01 00:00",
            ],
        ),
        (
            "closures.csv",
            CLOSURES_HEADER + "1,2099-12-31 23:00,2100-01-01 00:00:01\n",
            ["line 2", "column end_local", "from 1900-01-01 00:00 to 2100-01-01 00:00"],
        ),
        (  # 24:00 ends a day; it cannot start one
            "menu_hours.csv",
            HOURS_HEADER + "1,1,24:00,10:00:00\n",
            ["line 2", "column start_time_local", "'24:00'"],
        ),
        (
            "closures.csv",
            CLOSURES_HEADER + "1,2023-01-23 09:00,2023-01-23 10:00\n"
            "1,2023-02-30 10:00,2023-03-01 10:00\n",
            ["line 3", "column start_local", "'2023-02-30 10:00'", "YYYY-MM-DD HH:MM[:SS]"],
        ),
        (
            "closures.csv",
            CLOSURES_HEADER + "1,2023-01-23 09:00,2023-01-23 24:00\n",
            ["line 2", "column end_local", "'2023-01-23 24:00'"],
        ),
        (
            "closures.csv",
            CLOSURES_HEADER + "1,2023-01-23 10:00,2023-01-23 10:00:00\n",
            ["line 2", "column end_local", "end_local is not after start_local"],
        ),
        (
            "closures.csv",
            CLOSURES_HEADER + "1,2023-01-23 10:00,2023-01-22 10:00\n",
            ["line 2", "column end_local", "not after start_local", "'2023-01-22 10:00'"],
        ),
        (
            "closures.csv",
            CLOSURES_HEADER + " ,2023-01-23 10:00,2023-01-23 11:00\n",
            ["line 2", "column store_id", "empty store_id"],
        ),
        (
            "closures.csv",
            CLOSURES_HEADER + "7" * 65 + ",2023-01-23 10:00,2023-01-23 11:00\n",
            ["line 2", "column store_id", "longer than 64"],
        ),
        (
            "closures.csv",
            "store_id,start_local\n1,2023-01-23 10:00\n",
            ["line 1", "missing column(s) end_local", "'store_id,start_local'"],
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


@pytest.mark.parametrize("size", [100_000, 1_000_000])  # a field within the csv module's
def test_a_huge_header_is_quoted_cut_short(app, tmp_path, size):  # limit (128 KB), beyond it
    header = "store_id," + "x" * size
    write(tmp_path / "store_status.csv", header + "\n1,2\n")
    with pytest.raises(loader.LoadError) as caught:
        load(app, tmp_path)
    message = caught.value.message
    assert message.startswith("line 1: missing column(s) ")
    assert message.endswith(f"... ({len(header)} characters))") and len(message) < 400


def test_errors_are_listed_up_to_twenty_then_counted(app, tmp_path):
    rows = "".join(f"{n},maybe,2023-01-22 12:00:00 UTC\n" for n in range(30))
    write(tmp_path / "store_status.csv", POLL_HEADER + rows)
    with pytest.raises(loader.LoadError) as caught:
        load(app, tmp_path)
    assert len(caught.value.errors) == 20 and caught.value.error_count == 30
    assert "... and 10 more invalid rows" in str(caught.value)
    assert scalar(app, "SELECT COUNT(*) FROM polls") == 0


@pytest.mark.parametrize(
    "bad_row",
    ["x\n", "1,maybe,2023-01-22 12:00:00 UTC\n"],  # a malformed row; a row with a bad value
)
def test_an_input_is_refused_once_1000_errors_are_counted(app, tmp_path, monkeypatch, bad_row):
    # 20,000 bad rows in blocks of 1 KB: reading stops after a little more than 1,000.
    monkeypatch.setattr(sources, "BATCH_BYTES", 1024)
    write(tmp_path / "store_status.csv", POLL_HEADER + bad_row * 20_000)
    with pytest.raises(loader.LoadError) as caught:
        load(app, tmp_path)
    count = caught.value.error_count
    assert 1000 <= count < 1300
    assert caught.value.message == (
        f"at least {count} invalid rows (reading stopped there); nothing was loaded"
    )
    assert [error.line for error in caught.value.errors] == list(range(2, 22))
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


def test_a_folder_without_inputs_is_a_clear_error(app, tmp_path):
    with pytest.raises(loader.LoadError, match="no input files found"):
        load(app, tmp_path)


def test_a_database_without_schema_is_a_clear_error(database_url, tmp_path):
    # A fresh database where `init-db` never ran (the `app` fixture would have run it).
    app = create_app(
        {"DATABASE_URL": database_url, "REPORTS_DIR": str(tmp_path / "reports"), "TESTING": True}
    )
    try:
        with pytest.raises(loader.LoadError, match="run `flask --app app init-db` first"):
            load(app, SAMPLE)
    finally:
        app.extensions["report_executor"].shutdown()
        with app.app_context():
            db.engine.dispose()


# --------------------------------------------------------------------------- closures


def test_closures_load_as_local_wall_seconds_and_replace_a_stores_earlier_ones(app, tmp_path):
    # 2023-01-23 00:00 is 1672531200 + 22 days (1900800) = 1674432000 wall seconds;
    # 09:00 adds 32400, 17:30:15 adds 63015; 2023-12-24 00:00 is 1672531200 + 357 days
    # (30844800) = 1703376000, 2023-12-26 00:00 is 1703548800.
    write(
        tmp_path / "closures.csv",
        CLOSURES_HEADER + "1,2023-01-23 09:00,2023-01-23 17:30:15\n"
        "2, 2023-12-24 00:00:00 ,2023-12-26 00:00\n",
    )
    summary = load(app, tmp_path)
    assert (summary.files[0].kind, summary.files[0].loaded) == ("closures", 2)
    current = (
        "SELECT s.external_id, c.start_local_s, c.end_local_s, c.batch FROM closures c "
        "JOIN stores s ON s.id = c.store_key WHERE c.retired_batch IS NULL ORDER BY 1, 2"
    )
    assert rows(app, current) == [
        ("1", 1674464400, 1674495015, 1),
        ("2", 1703376000, 1703548800, 1),
    ]
    # A new file for store 1 replaces store 1's closures only (the old row is kept, retired).
    other = write(tmp_path / "more.csv", CLOSURES_HEADER + "1,2023-01-23 10:00,2023-01-23 11:00\n")
    load(app, closures=other)
    assert rows(app, current) == [
        ("1", 1674468000, 1674471600, 2),
        ("2", 1703376000, 1703548800, 1),
    ]
    assert rows(app, "SELECT start_local_s, batch FROM closures WHERE retired_batch = 2") == [
        (1674464400, 1)
    ]


def test_a_closure_across_the_epoch_loads_and_counts(app, tmp_path):
    # A store in Chicago (CST, UTC-6, in January 1970), open 24x7, closed 1969-12-31 17:00 to
    # 19:00 local = 1969-12-31 23:00 to 1970-01-01 01:00 UTC. Stored as wall seconds before
    # 1970: 17:00 on 1969-12-31 is -7 h = -25200 s, 19:00 is -18000 s.
    write(tmp_path / "timezones.csv", "store_id,timezone_str\ns,America/Chicago\n")
    write(tmp_path / "closures.csv", CLOSURES_HEADER + "s,1969-12-31 17:00,1969-12-31 19:00:00\n")
    # Polls: 00:00 UTC active (inside the closure: no evidence), 01:30 UTC inactive.
    write(
        tmp_path / "store_status.csv",
        POLL_HEADER + "s,active,1970-01-01 00:00:00 UTC\ns,inactive,1970-01-01 01:30:00 UTC\n",
    )
    load(app, tmp_path)
    assert rows(app, "SELECT start_local_s, end_local_s FROM closures") == [(-25200, -18000)]
    # As of 1970-01-01 02:00 UTC (7200 s): the only evidence is inactive. Business time: last
    # hour 60 min; last day 24 h - 2 h closed = 22 h; last week 168 h - 2 h = 166 h.
    with app.app_context():
        request = ReportRequest(as_of_us=7_200_000_000)
        row = db.session.get(Report, steps.submit_report(request, InlineExecutor()))
        assert row.status == "Complete", row.error
        lines = results.local_csv(row).read_text().splitlines()
    assert lines[1] == "s,0.00,0.00,0.00,60.00,22.00,166.00"


# --------------------------------------------------------------------------- the spec's points


def test_status_is_read_in_any_letter_case_with_spaces_around(app, tmp_path):
    write(
        tmp_path / "store_status.csv",
        POLL_HEADER + "1,ACTIVE,2023-01-25 10:00:00 UTC\n"
        "2, Inactive ,2023-01-25 10:00:00 UTC\n"
        "3,aCtIvE ,2023-01-25 10:00:00 UTC\n",
    )
    assert load(app, tmp_path).files[0].loaded == 3
    stored = "SELECT s.external_id, p.active FROM polls p JOIN stores s ON s.id = p.store_key"
    assert sorted(rows(app, stored)) == [("1", 1), ("2", 0), ("3", 1)]


TEN_O_CLOCK_US = 1674640800000000  # 2023-01-25 10:00:00 UTC: 1672531200 + 24 days + 10 h


@pytest.mark.parametrize("several_runs", [False, True])
def test_of_two_polls_at_one_instant_the_first_loaded_is_kept(
    app, tmp_path, monkeypatch, several_runs
):
    # Store 2's polls need sorting and its duplicates are neighbours; store 1's are far apart.
    # With several runs (tiny read blocks, a buffer of two polls) the file is written in
    # several sorted runs, and store 1's duplicates fall in different runs.
    runs = []
    real_bulk_insert = writing.bulk_insert
    monkeypatch.setattr(
        writing,
        "bulk_insert",
        lambda conn, table, frame, **kw: (
            runs.append(len(frame)) or real_bulk_insert(conn, table, frame, **kw)
        ),
    )
    if several_runs:
        monkeypatch.setattr(sources, "BATCH_BYTES", 64)
        monkeypatch.setattr(writing, "POLL_BUFFER_ROWS", 2)
    write(
        tmp_path / "store_status.csv",
        POLL_HEADER + "2,active,2023-01-25 11:00:00 UTC\n"
        "2,inactive,2023-01-25 10:00:00 UTC\n"
        "2,active,2023-01-25 10:00:00 UTC\n"
        "1,inactive,2023-01-25 10:00:00 UTC\n"
        "9,active,2023-01-25 09:00:00 UTC\n"
        "9,active,2023-01-25 08:00:00 UTC\n"
        "9,active,2023-01-25 07:00:00 UTC\n"
        "1,active,2023-01-25 10:00:00 UTC\n",
    )
    summary = load(app, tmp_path)
    assert len(runs) >= 3 if several_runs else len(runs) == 1
    assert (summary.files[0].loaded, summary.files[0].duplicates) == (6, 2)
    # A later load with the other status changes nothing either.
    later = write(tmp_path / "later.csv", POLL_HEADER + "2,active,2023-01-25 10:00:00 UTC\n")
    assert load(app, polls=later).files[0].duplicates == 1
    at_ten = (
        "SELECT s.external_id, p.active FROM polls p JOIN stores s ON s.id = p.store_key "
        f"WHERE p.ts_us = {TEN_O_CLOCK_US} ORDER BY 1"
    )
    assert rows(app, at_ten) == [("1", 0), ("2", 0)]


def test_hours_may_end_at_24_00_and_be_24_hours_from_23_59_59(app, tmp_path):
    write(
        tmp_path / "menu_hours.csv",
        HOURS_HEADER + "1,0,09:00,24:00\n1,1,09:00:00,24:00:00\n1,2,23:59:59,23:59:59\n",
    )
    assert load(app, tmp_path).files[0].loaded == 3
    stored = "SELECT day_of_week, start_s, end_s FROM business_hours ORDER BY 1"
    # 09:00 = 32400 s, 24:00 = 86400 s, 23:59:59 = 86399 s: stored as written.
    assert rows(app, stored) == [(0, 32400, 86400), (1, 32400, 86400), (2, 86399, 86399)]


# --------------------------------------------------------------------------- hostile input


def test_a_load_that_waits_too_long_for_another_is_a_clear_error(app):
    load(app, SAMPLE)
    before = contents(app)
    with app.app_context():
        short_lock_wait(db.engine)
        with db.engine.connect() as other_load:
            # What a load does first: take the write lock on the data-state row.
            other_load.execute(text("UPDATE data_state SET last_batch = last_batch WHERE id = 1"))
            with pytest.raises(loader.LoadError) as caught:
                loader.load(db.engine, SAMPLE)
            other_load.rollback()
    assert str(caught.value) == (
        "database: another load is writing; try again when it has finished"
    )
    assert contents(app) == before


def test_a_file_that_is_not_csv_is_named_but_never_quoted(app, tmp_path):
    private = write(tmp_path / "private.txt", "root:x:0:0:hunter2:/root:/bin/bash\nmore\n")
    link = tmp_path / "polls.csv"
    link.symlink_to(private)  # as `--polls` pointing at a system file
    with pytest.raises(loader.LoadError) as caught:
        load(app, polls=link)
    message = str(caught.value)
    assert message == (
        f"{link}: line 1: not a CSV file of polls: expected the columns "
        "store_id,status,timestamp_utc"
    )


def test_an_upload_keeps_its_first_rejects_in_memory_under_its_label(app, tmp_path, monkeypatch):
    monkeypatch.setattr(rejects, "MAX_KEPT_REJECTS", 10)
    folder = tmp_path / "upload"
    folder.mkdir()
    body = write(
        folder / "upload.tmp",
        POLL_HEADER
        + GOOD_POLL
        + "".join(f"{n},maybe,2023-01-22 12:00:00 UTC\n" for n in range(12)),
    )
    upload = loader.Source("polls", body, "request body")
    with app.app_context():
        summary = loader.load_sources(
            db.engine, [upload], skip_invalid=True, rejects=loader.RejectsTo.MEMORY
        )
        with pytest.raises(loader.LoadError, match=r"^request body: 12 invalid rows"):
            loader.load_sources(db.engine, [upload])
    polls = summary.files[0]
    assert (polls.path, polls.loaded, polls.rejected, polls.rejects_path) == (
        "request body",
        1,
        12,
        None,
    )
    assert len(polls.rejected_rows) == 10
    assert polls.rejected_rows[0] == loader.RowError(
        3, "status", "maybe", "status is not 'active' or 'inactive'"
    )
    assert [path.name for path in folder.iterdir()] == ["upload.tmp"]  # no rejects file


# Loads with skip_invalid in a fresh process and prints how much its peak RSS grew (KB). The
# peak is VmHWM, the high-water mark of this process's own memory: `ru_maxrss` would start
# from the parent's size at fork, which is larger than what is measured here.
MEASURED_LOAD = """
import re, sys
from app import create_app
import loader
from models import db
def peak_kb():
    with open("/proc/self/status") as status:
        return int(re.search(r"VmHWM:\\s+(\\d+) kB", status.read()).group(1))
app = create_app({"DATABASE_URL": sys.argv[1], "REPORTS_DIR": sys.argv[2], "TESTING": True})
with app.app_context():
    before = peak_kb()
    summary = loader.load(db.engine, sys.argv[3], skip_invalid=True)
    after = peak_kb()
polls = summary.files[0]
print(after - before, polls.rows_read, polls.loaded, polls.rejected, polls.rejects_path)
"""


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="peak RSS read from /proc")
def test_millions_of_bad_rows_with_skip_invalid_keep_memory_bounded(app, database_url, tmp_path):
    # 2,000,000 bad rows: a million with a field too many first (the parser reports them one by
    # one to its callback while it looks for a first chunk: none comes between them), then a
    # million with a bad status. Before rejects were streamed, every one was kept in memory
    # (over 3 GB for a few million rows); now only counts, the first errors and about a chunk
    # are. Measured as the growth of the peak RSS of a fresh process, so Arrow's buffers count.
    too_many_fields = b"1,active,2023-01-22 12:00:00 UTC,extra\n"
    bad_status = b"1,maybe,2023-01-22 12:00:00 UTC\n"
    folder = tmp_path / "bad"
    folder.mkdir()
    data = POLL_HEADER.encode() + too_many_fields * 1_000_000 + bad_status * 1_000_000
    (folder / "store_status.csv.gz").write_bytes(gzip.compress(data, compresslevel=1))
    arguments = [database_url, str(tmp_path / "reports"), str(folder)]
    done = subprocess.run(
        [sys.executable, "-c", MEASURED_LOAD, *arguments],
        cwd=ROOT,
        env=clean_environment(),
        capture_output=True,
        text=True,
        check=True,
    )
    growth_kb, rows_read, loaded, rejected, rejects_path = done.stdout.split()
    assert (int(rows_read), int(loaded), int(rejected)) == (2_000_000, 0, 2_000_000)
    assert int(growth_kb) < 200 * 1024, f"peak RSS grew by {int(growth_kb) // 1024} MB"
    with open(rejects_path, "rb") as rejected_rows:
        assert sum(1 for _ in rejected_rows) == 2_000_001  # header + every rejected row


def test_one_bad_row_at_the_end_of_a_big_file_loads_nothing(app, tmp_path):
    source = pd.read_csv(SAMPLE / "store_status.csv", dtype=str)
    big = pd.concat([source] * 10, ignore_index=True)
    path = tmp_path / "store_status.csv"
    big.to_csv(path, index=False)
    with open(path, "a") as handle:
        handle.write("42,active,2023-02-30 00:00:00 UTC\n")
    with pytest.raises(loader.LoadError, match=f"line {len(big) + 2}"), app.app_context():
        loader.load(db.engine, tmp_path)
    with app.app_context():
        assert db.session.execute(text("SELECT COUNT(*) FROM polls")).scalar() == 0


# --------------------------------------------------------------------------- bounded memory


@pytest.mark.parametrize("check_first", [False, True])  # load-data; an upload
@pytest.mark.parametrize(
    "name, header, row, column",
    [
        ("store_status.csv", POLL_HEADER, "{n},active,2023-01-22 12:00:00 UTC\n", "ts_us"),
        ("menu_hours.csv", HOURS_HEADER, "{n},1,09:00,17:00\n", "start_s"),
    ],
)
def test_a_load_holds_the_checked_values_of_a_chunk_or_two_not_of_the_input(
    app, tmp_path, monkeypatch, check_first, name, header, row, column
):
    # 6,000 rows in chunks of about 150: each chunk's checked values are followed with a weak
    # reference. When the load takes its lock and whenever it writes, at most the chunks in
    # hand may still be alive, never all those read so far (memory bounded by a chunk).
    monkeypatch.setattr(sources, "BATCH_BYTES", 4096)
    monkeypatch.setattr(writing, "POLL_BUFFER_ROWS", 1)  # the poll writer's own buffer
    body = write(tmp_path / name, header + "".join(row.format(n=n) for n in range(6000)))
    followed: list[weakref.ref] = []
    alive: list[int] = []
    check_chunk, next_batch, bulk_insert = (
        loader.check_chunk,
        loader._next_batch,
        writing.bulk_insert,
    )

    def followed_check(kind, chunk):
        checked = check_chunk(kind, chunk)
        followed.append(weakref.ref(checked.values[column]))
        return checked

    def count_alive(function):
        def counted(*args, **kwargs):
            alive.append(sum(reference() is not None for reference in followed))
            return function(*args, **kwargs)

        return counted

    monkeypatch.setattr(loader, "check_chunk", followed_check)
    monkeypatch.setattr(loader, "_next_batch", count_alive(next_batch))
    monkeypatch.setattr(writing, "bulk_insert", count_alive(bulk_insert))
    kind = "polls" if name == "store_status.csv" else "hours"
    with app.app_context():
        loader.load_sources(
            db.engine, [loader.Source(kind, body, "upload")], check_first=check_first
        )
    assert len(followed) >= 25 * (2 if check_first else 1)
    assert max(alive) <= 2, alive
