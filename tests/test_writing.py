"""What the loader writes, on SQLite and MariaDB: exact store ids, no silently changed rows,
versioned hours, time zones and closures, and the purge of old versions."""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import Engine, event

import loader
from loading import sorted_runs, sources, stores, writing
from models import db
from tests.loading import (
    CLOSURES_HEADER,
    HOURS_HEADER,
    POLL_HEADER,
    contents,
    load,
    rows,
    scalar,
    write,
)

# 2023-01-25 00:00 UTC is 1672531200 + 24 days (2073600) = 1674604800 s.
AT_10_00 = 1674640800000000
AT_11_00 = 1674644400000000
AT_11_30 = 1674646200000000
AT_MIDNIGHT = 1674604800000000
POLLS_WITH_IDS = (
    "SELECT s.external_id, p.ts_us, p.active FROM polls p JOIN stores s ON s.id = p.store_key "
    "ORDER BY p.ts_us, p.active"
)
ORPHAN_POLLS = (
    "SELECT COUNT(*) FROM polls p LEFT JOIN stores s ON s.id = p.store_key WHERE s.id IS NULL"
)


# --------------------------------------------------------------------------- store ids


@pytest.mark.parametrize(
    "first, second",
    [
        ("abc", "ABC"),  # case
        ("store-x", "stóre-x"),  # accents
        ("\N{GRINNING FACE}", "\N{PILE OF POO}"),  # emoji: the same under utf8mb4_general_ci
        ("store-x", "store-x\N{COMBINING ACUTE ACCENT}"),  # one byte sequence more
        ("NULL", "\\N"),  # what LOAD DATA would read as NULL
    ],
)
def test_store_ids_that_differ_in_any_byte_are_different_stores(app, tmp_path, first, second):
    polls = write(
        tmp_path / "store_status.csv",
        POLL_HEADER + f"{first},active,2023-01-25 10:00:00 UTC\n"
        f"{second},inactive,2023-01-25 10:00:00 UTC\n",
    )
    load(app, polls=polls)
    load(app, polls=polls)  # again: each id must find its own store
    assert rows(app, POLLS_WITH_IDS) == [(second, AT_10_00, 0), (first, AT_10_00, 1)]
    assert scalar(app, "SELECT COUNT(*) FROM stores") == 2


def test_spaces_around_a_store_id_are_not_part_of_it(app, tmp_path):
    write(
        tmp_path / "store_status.csv",
        POLL_HEADER + "abc ,active,2023-01-25 10:00:00 UTC\n"
        "  abc,inactive,2023-01-25 11:00:00 UTC\n",
    )
    write(tmp_path / "timezones.csv", "store_id,timezone_str\n abc ,Asia/Tokyo\n")
    load(app, tmp_path)
    assert rows(app, "SELECT external_id FROM stores") == [("abc",)]
    assert rows(app, POLLS_WITH_IDS) == [("abc", AT_10_00, 1), ("abc", AT_11_00, 0)]


def test_ids_differing_in_case_over_three_loads_keep_every_poll_with_its_store(app, tmp_path):
    # On a case-blind column, the second store was dropped by LOAD DATA (a warning only), its
    # polls kept a key without a store, and a later new store took that key and its polls.
    loads = [
        "abc,active,2023-01-25 10:00:00 UTC\nABC,inactive,2023-01-25 10:00:00 UTC\n",
        "ABC,inactive,2023-01-25 11:00:00 UTC\n",
        "zzz,active,2023-01-25 11:30:00 UTC\n",
    ]
    for number, polls in enumerate(loads):
        load(app, polls=write(tmp_path / f"polls{number}.csv", POLL_HEADER + polls))
    assert scalar(app, ORPHAN_POLLS) == 0
    assert sorted(rows(app, "SELECT external_id FROM stores")) == [("ABC",), ("abc",), ("zzz",)]
    assert rows(app, POLLS_WITH_IDS) == [
        ("ABC", AT_10_00, 0),
        ("abc", AT_10_00, 1),
        ("ABC", AT_11_00, 0),
        ("zzz", AT_11_30, 1),
    ]


# A store's id → key, compared exactly: ids that differ only in case or accents among many.
MANY_IDS = [f"s{number}" for number in range(10)] + ["abc", "ABC", "ábc"]
STORE_KEYS = "SELECT external_id, id FROM stores"
POLLS_BY_ID = (
    "SELECT s.external_id, p.ts_us, p.active FROM polls p JOIN stores s ON s.id = p.store_key"
)
HOUR_US = 3_600_000_000


def polls_at_hours(ids: list[str], hours: range) -> tuple[str, list[tuple]]:
    """A polls CSV with a poll of each id at each hour from 2023-01-25 10:00 UTC (the hour
    first, so an id's polls are far apart), and the rows it must store: (id, ts_us, active)."""
    lines, expected = [], []
    for hour in hours:
        for number, store_id in enumerate(ids):
            active = (number + hour) % 2
            lines.append(f"{store_id},{'active' if active else 'inactive'},")
            lines[-1] += f"2023-01-25 {10 + hour:02d}:00:00 UTC\n"
            expected.append((store_id, AT_10_00 + hour * HOUR_US, active))
    return POLL_HEADER + "".join(lines), sorted(expected)


@pytest.fixture
def store_memory(monkeypatch) -> list[tuple[int, int]]:
    """Small bounds on the stores remembered, lookups of 2 ids, reads of 64 bytes (a chunk
    of about two rows); returns (bound, size) of a store memory after each remember()."""
    monkeypatch.setattr(stores, "KNOWN_STORES_LIMIT", 4)
    monkeypatch.setattr(stores, "LOAD_STORES_LIMIT", 3)
    monkeypatch.setattr(stores, "LOOKUP_ROWS", 2)
    monkeypatch.setattr(sources, "BATCH_BYTES", 64)
    sizes: list[tuple[int, int]] = []
    remember = stores.KnownStores.remember

    def remember_and_measure(self, ids, keys) -> None:
        remember(self, ids, keys)
        sizes.append((self.limit, len(self)))

    monkeypatch.setattr(stores.KnownStores, "remember", remember_and_measure)
    return sizes


def test_a_load_of_more_stores_than_remembered_gives_every_id_one_key(app, tmp_path, store_memory):
    polls, expected = polls_at_hours(MANY_IDS, range(3))
    load(app, polls=write(tmp_path / "polls1.csv", polls))
    first_keys = dict(rows(app, STORE_KEYS))
    assert sorted(first_keys) == sorted(MANY_IDS)  # 13 stores, each id once
    assert sorted(rows(app, POLLS_BY_ID)) == expected
    # Again with 5 new ids among them: stored ids keep their keys, new ones get new keys.
    more_ids = [*MANY_IDS[::-1], "Ábc", "s10", "s11", "s12", "s13"]
    more_polls, more_expected = polls_at_hours(more_ids, range(3, 5))
    summary = load(app, polls=write(tmp_path / "polls2.csv", more_polls))
    assert summary.files[0].loaded == 36  # 18 ids × 2 hours
    keys = dict(rows(app, STORE_KEYS))
    assert sorted(keys) == sorted(more_ids)
    assert {store_id: keys[store_id] for store_id in MANY_IDS} == first_keys
    assert sorted(keys.values()) == list(range(1, 19))
    assert scalar(app, ORPHAN_POLLS) == 0
    assert sorted(rows(app, POLLS_BY_ID)) == sorted(expected + more_expected)
    assert all(size <= bound for bound, size in store_memory)
    assert (3, 3) in store_memory  # the loads' own memory was full, and started over


def test_a_load_records_each_of_its_stores_once_however_many_chunks(
    app, tmp_path, store_memory, monkeypatch
):
    # Chunks of about two rows: many parts of given keys, merged every 2 parts.
    monkeypatch.setattr(stores, "GIVEN_PARTS_MERGED", 2)
    load(app, polls=write(tmp_path / "polls1.csv", polls_at_hours(MANY_IDS[:5], range(2))[0]))
    polls, _ = polls_at_hours(MANY_IDS[3:], range(2, 5))
    load(app, polls=write(tmp_path / "polls2.csv", polls))
    keys = dict(rows(app, STORE_KEYS))
    recorded = rows(app, "SELECT store_key FROM batch_stores WHERE batch = 2 ORDER BY store_key")
    assert [key for (key,) in recorded] == sorted(keys[store_id] for store_id in MANY_IDS[3:])


def test_the_known_stores_start_over_when_full_and_keep_the_newest():
    known = stores.KnownStores(3)
    known.remember(np.array(["a", "b"], dtype=object), np.array([1, 2]))
    known.remember(np.array(["b", "c"], dtype=object), np.array([2, 3]))
    assert len(known) == 3
    known.remember(np.array(["d", "e"], dtype=object), np.array([4, 5]))
    assert known.lookup(np.array(["a", "c", "d", "e"], dtype=object)).tolist() == [-1, -1, 4, 5]
    known.remember(np.array(list("fghij"), dtype=object), np.arange(6, 11))
    assert known.lookup(np.array(list("efghij"), dtype=object)).tolist() == [-1, -1, -1, 8, 9, 10]


def test_a_process_remembers_stores_of_a_few_databases_only():
    remembered = [stores.known_stores(f"test-database-{number}") for number in range(6)]
    again = [stores.known_stores(f"test-database-{number}") for number in range(6)]
    assert [a is b for a, b in zip(remembered, again, strict=True)] == [False] * 6
    assert stores.known_stores("test-database-5") is again[5]


def test_stores_loaded_again_cost_no_lookup(app, tmp_path):
    # The stores of an hourly upload (14 k in the full data) are remembered by the process:
    # only the first load of them asks the database for their ids.
    ids = [f"store-{number}" for number in range(3000)]
    lookups = [0, 0, 0]  # queries of each load that look ids up
    hour = 0

    def count_lookups(_conn, _cursor, statement, *_args) -> None:
        if "external_id" in statement and "stores" in statement:
            lookups[hour] += 1

    event.listen(Engine, "before_cursor_execute", count_lookups)
    try:
        for hour in range(3):
            polls, _ = polls_at_hours(ids, range(hour, hour + 1))
            load(app, polls=write(tmp_path / f"polls{hour}.csv", polls))
    finally:
        event.remove(Engine, "before_cursor_execute", count_lookups)
    assert lookups == [1, 0, 0]  # 3,000 new ids: one query (LOOKUP_ROWS at a time)
    assert scalar(app, "SELECT COUNT(*) FROM polls") == 9000


def test_rows_the_database_would_change_fail_the_load(app):
    # MySQL/MariaDB's LOAD DATA clips a value out of range and only warns; the load must say
    # so. SQLite stores the value as sent. Either way, no row may be stored changed.
    store_key_out_of_range = 2**40
    frame = pd.DataFrame(
        {"store_key": [1, store_key_out_of_range], "ts_us": [5, 5], "active": [1, 0], "batch": 1}
    )
    with app.app_context(), loader.loading_engine(db.engine).connect() as conn:
        try:
            writing.bulk_insert(conn, "polls", frame, skip_duplicates=True)
        except loader.LoadError as error:
            assert "Out of range value for column 'store_key'" in str(error)
        else:
            stored = conn.exec_driver_sql("SELECT store_key FROM polls ORDER BY 1").all()
            assert [key for (key,) in stored] == [1, store_key_out_of_range]
        conn.rollback()


def test_duplicate_polls_alone_are_no_reason_to_fail(app):
    frame = pd.DataFrame({"store_key": [1, 1, 1], "ts_us": [5, 5, 6], "active": 1, "batch": 1})
    with app.app_context(), loader.loading_engine(db.engine).begin() as conn:
        assert writing.bulk_insert(conn, "polls", frame, skip_duplicates=True) == 2
        assert writing.bulk_insert(conn, "polls", frame, skip_duplicates=True) == 0


@pytest.mark.parametrize("statement_bytes", [1 << 20, 40])
@pytest.mark.parametrize("separator", ["", writing.TEXT_SEPARATOR])
def test_insert_rows_stores_every_value_as_sent(app, monkeypatch, statement_bytes, separator):
    # On MySQL/MariaDB the rows become literals (40 bytes: a statement a row or two), a
    # column's texts escaped in one call, or one by one when one holds the separator.
    monkeypatch.setattr(writing, "STATEMENT_BYTES", statement_bytes)
    texts = ["it's", "back\\slash \\N", "%s %(x)s", "\N{PILE OF POO} ó", "", None, "NULL"]
    texts[0] += separator
    frame = pd.DataFrame(
        {"id": range(1, len(texts) + 1), "label": texts, "flag": [True, False] * 3 + [True]}
    )
    with app.app_context(), db.engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE scratch (id BIGINT PRIMARY KEY, label TEXT, flag INT)")
        try:
            assert writing.insert_rows(conn, "scratch", frame) == len(texts)
            again = writing.insert_rows(conn, "scratch", frame, writing.insert_ignoring(conn))
            stored = conn.exec_driver_sql("SELECT id, label, flag FROM scratch ORDER BY id").all()
        finally:
            conn.exec_driver_sql("DROP TABLE scratch")
    assert again == 0
    assert [tuple(row) for row in stored] == [
        (index + 1, label, int(flag))
        for index, (label, flag) in enumerate(zip(texts, frame["flag"], strict=True))
    ]


def test_literal_rows_refuse_values_they_cannot_write_exactly(app):
    # A zone-aware time or a float has no one right literal: refused, never guessed.
    with app.app_context(), db.engine.connect() as conn:
        if conn.dialect.name != "mysql":
            pytest.skip("literal rows are written on MySQL/MariaDB only")
        for value in (datetime(2023, 1, 1, tzinfo=UTC), 0.5):
            frame = pd.DataFrame({"value": pd.Series([value], dtype=object)})
            with pytest.raises(TypeError, match="no SQL literal"):
                list(writing.literal_rows(conn, frame, {}))


# --------------------------------------------------------------------------- versions

CURRENT_HOURS = (
    "SELECT s.external_id, h.day_of_week, h.start_s, h.end_s, h.batch FROM business_hours h "
    "JOIN stores s ON s.id = h.store_key WHERE h.retired_batch IS NULL ORDER BY 1, 2, 3"
)


def test_a_load_retires_the_rows_of_changed_stores_and_leaves_the_others(app, tmp_path):
    hours = tmp_path / "menu_hours.csv"
    write(hours, HOURS_HEADER + "1,0,09:00,17:00\n1,1,09:00,17:00\n2,0,10:00,11:00\n")
    load(app, tmp_path)
    # Store 1 changes one period; store 2 sends the same row with other spellings.
    write(hours, HOURS_HEADER + "1,1,09:00,17:00\n1,0,08:00,17:00\n2,0,10:00:00, 11:00\n")
    summary = load(app, tmp_path)
    assert (summary.files[0].loaded, summary.files[0].unchanged) == (2, 1)
    # 08:00 = 28800 s, 09:00 = 32400, 10:00 = 36000, 11:00 = 39600, 17:00 = 61200.
    assert rows(app, CURRENT_HOURS) == [
        ("1", 0, 28800, 61200, 2),
        ("1", 1, 32400, 61200, 2),
        ("2", 0, 36000, 39600, 1),
    ]
    retired = "SELECT day_of_week, start_s, batch, retired_batch FROM business_hours "
    assert rows(app, retired + "WHERE retired_batch IS NOT NULL ORDER BY 1") == [
        (0, 32400, 1, 2),
        (1, 32400, 1, 2),
    ]


@pytest.mark.parametrize("block_bytes", [pytest.param(64, marks=pytest.mark.slow), 2 << 20])
def test_identical_rows_of_a_store_are_stored_once(app, tmp_path, monkeypatch, block_bytes):
    # Each row is sent 300 times; with 64-byte read blocks the repeats fall in different
    # chunks, so the database, not the chunk, has to merge them. A zone repeated keeps the
    # last zone of the store.
    monkeypatch.setattr(sources, "BATCH_BYTES", block_bytes)
    write(tmp_path / "menu_hours.csv", HOURS_HEADER + "1,0,09:00,17:00\n1,1,09:00,17:00\n" * 300)
    write(
        tmp_path / "closures.csv", CLOSURES_HEADER + "1,2023-12-24 00:00,2023-12-26 00:00\n" * 300
    )
    zones = "".join(f"1,{zone}\n" for zone in ["Asia/Tokyo", "Europe/Paris"] * 150)
    write(tmp_path / "timezones.csv", "store_id,timezone_str\n" + zones + "1,America/Denver\n")
    summary = load(app, tmp_path)
    assert [(item.kind, item.loaded, item.duplicates) for item in summary.files] == [
        ("timezones", 1, 300),
        ("hours", 2, 598),
        ("closures", 1, 299),
    ]
    assert rows(app, "SELECT COUNT(*) FROM business_hours") == [(2,)]
    assert rows(app, "SELECT COUNT(*) FROM closures") == [(1,)]
    assert rows(app, "SELECT timezone_str FROM store_timezones") == [("America/Denver",)]
    # The same rows sent again, once each: nothing changes.
    write(tmp_path / "menu_hours.csv", HOURS_HEADER + "1,1,09:00,17:00\n1,0,09:00,17:00\n")
    again = load(app, hours=tmp_path / "menu_hours.csv").files[0]
    assert (again.loaded, again.unchanged, again.duplicates) == (0, 2, 0)


def test_a_store_that_had_repeated_rows_gets_them_once_when_its_rows_come_again(app, tmp_path):
    # Rows stored twice by an earlier version of the loader are not "the same rows" as the
    # same rows once: the store's rows are replaced by the set.
    load(app, hours=write(tmp_path / "menu_hours.csv", HOURS_HEADER + "1,0,09:00,17:00\n"))
    with app.app_context(), loader.loading_engine(db.engine).begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO business_hours (store_key, day_of_week, start_s, end_s, batch) "
            "SELECT store_key, day_of_week, start_s, end_s, batch FROM business_hours"
        )
    summary = load(app, hours=tmp_path / "menu_hours.csv").files[0]
    assert (summary.loaded, summary.unchanged) == (1, 0)
    assert rows(app, CURRENT_HOURS) == [("1", 0, 32400, 61200, 2)]  # batch 2 replaced both


def distinct_hours(store: str, count: int) -> str:
    """`count` different hours rows of one store: Monday, from 00:00:00 + n seconds to 23:00."""
    return "".join(f"{store},0,00:{n // 60:02d}:{n % 60:02d},23:00\n" for n in range(count))


def distinct_closures(store: str, count: int) -> str:
    """`count` different closures of one store, one a day from 2023-01-01."""
    days = pd.date_range("2023-01-01", periods=count, freq="D").strftime("%Y-%m-%d")
    return "".join(f"{store},{day} 10:00,{day} 11:00\n" for day in days)


@pytest.mark.parametrize("block_bytes", [512, 2 << 20])  # the store's rows in many chunks or one
@pytest.mark.parametrize(
    "name, header, rows_of, what",
    [
        ("menu_hours.csv", HOURS_HEADER, distinct_hours, "business-hours rows"),
        ("closures.csv", CLOSURES_HEADER, distinct_closures, "closures"),
    ],
)
def test_a_store_may_have_at_most_1000_hours_rows_or_closures(
    app, tmp_path, monkeypatch, block_bytes, name, header, rows_of, what
):
    monkeypatch.setattr(sources, "BATCH_BYTES", block_bytes)
    # 1000 different rows of one store (plus repeats) are fine...
    write(tmp_path / name, header + rows_of("full", 1000) + rows_of("full", 10) + rows_of("o", 3))
    summary = load(app, tmp_path).files[0]
    assert (summary.loaded, summary.duplicates) == (1003, 10)
    before = contents(app)
    # ... one more is refused, naming the store and the limit, and nothing is stored.
    write(tmp_path / name, header + rows_of("o", 2) + rows_of("crowded", 1001))
    with pytest.raises(loader.LoadError) as caught:
        load(app, tmp_path)
    assert str(caught.value) == (
        f"{tmp_path / name}: store 'crowded' has more than 1000 different {what}, the most a "
        "store may have; nothing was loaded"
    )
    assert contents(app) == before


def test_sending_the_same_files_again_stores_nothing_new(app, tmp_path):
    write(tmp_path / "menu_hours.csv", HOURS_HEADER + "1,0,09:00,17:00\n2,6,22:00,02:00\n")
    write(
        tmp_path / "timezones.csv",
        "store_id,timezone_str\n1,Asia/Tokyo\n2,Europe/Paris\n2,America/Denver\n",
    )
    write(tmp_path / "closures.csv", CLOSURES_HEADER + "1,2023-12-24 00:00,2023-12-26 00:00\n")
    load(app, tmp_path)
    before = contents(app)
    summary = load(app, tmp_path)
    after = contents(app)
    for table in ("business_hours", "store_timezones", "closures", "stores", "polls"):
        assert after[table] == before[table], table
    assert [(item.kind, item.loaded, item.unchanged) for item in summary.files] == [
        ("timezones", 0, 2),
        ("hours", 0, 2),
        ("closures", 0, 1),
    ]
    # One zone per store: the last row of store 2 is its zone.
    zone = "SELECT timezone_str FROM store_timezones z JOIN stores s ON s.id = z.store_key "
    assert rows(app, zone + "WHERE s.external_id = '2'") == [("America/Denver",)]


def test_purge_retired_deletes_only_versions_retired_by_the_given_batch(app, tmp_path):
    zones = tmp_path / "timezones.csv"
    for batch_zone in ("Asia/Tokyo", "Europe/Paris", "America/Denver"):  # batches 1, 2, 3
        load(app, timezones=write(zones, f"store_id,timezone_str\n1,{batch_zone}\n"))
    everything = "SELECT timezone_str, batch, retired_batch FROM store_timezones ORDER BY batch"
    assert rows(app, everything) == [
        ("Asia/Tokyo", 1, 2),
        ("Europe/Paris", 2, 3),
        ("America/Denver", 3, None),
    ]
    with app.app_context(), loader.loading_engine(db.engine).begin() as conn:
        assert writing.purge_retired(conn, 2) == 1
    assert rows(app, everything) == [("Europe/Paris", 2, 3), ("America/Denver", 3, None)]


# --------------------------------------------------------------------------- polls in key order

BATCH_POLLS_WITH_IDS = (
    "SELECT s.external_id, b.polls, b.first_ts_us, b.least_active, b.most_active "
    "FROM batch_polls b JOIN stores s ON s.id = b.store_key ORDER BY s.external_id"
)


def test_a_load_larger_than_the_buffer_is_written_in_key_order_first_duplicate_kept(
    app, tmp_path, monkeypatch
):
    # 240 polls of 6 stores in a scrambled order, every tenth one repeating an earlier
    # (store, instant) with the other status. A buffer of 7 polls and merge blocks of 1 poll a
    # run make dozens of runs and steps; the database must still receive the whole load in
    # (store key, instant) order, and keep of each repeated pair its first row in the file.
    monkeypatch.setattr(sources, "BATCH_BYTES", 256)
    monkeypatch.setattr(writing, "POLL_BUFFER_ROWS", 7)
    monkeypatch.setattr(sorted_runs, "MIN_RUN_BLOCK_ROWS", 1)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the runs are spilled
    sent: list[pd.DataFrame] = []
    real_bulk_insert = writing.bulk_insert

    def recorded(conn, table, frame, **options):
        if table == "polls":
            sent.append(frame[["store_key", "ts_us"]].copy())
        return real_bulk_insert(conn, table, frame, **options)

    monkeypatch.setattr(writing, "bulk_insert", recorded)
    lines, first_status = [], {}
    for n in range(240):
        store, minute = f"s{(n * 7) % 6}", (n * 37) % 200
        if n % 10 == 9:
            store, minute = lines[n - 5][:2]
        status = "active" if (n // 3) % 2 else "inactive"
        if (store, minute) in first_status:
            status = "inactive" if first_status[(store, minute)] == "active" else "active"
        first_status.setdefault((store, minute), status)
        lines.append((store, minute, status))
    body = "".join(
        f"{store},{status},2023-01-25 {minute // 60:02d}:{minute % 60:02d}:00 UTC\n"
        for store, minute, status in lines
    )
    summary = load(app, polls=write(tmp_path / "store_status.csv", POLL_HEADER + body))

    keys = pd.concat(sent, ignore_index=True)
    in_order = keys.sort_values(["store_key", "ts_us"], kind="stable").index
    assert len(sent) > 3 and list(keys.index) == list(in_order)
    assert summary.files[0].loaded == len(first_status)
    assert summary.files[0].duplicates == 240 - len(first_status)
    stored = rows(app, POLLS_WITH_IDS)
    expected = [
        (store, AT_MIDNIGHT + minute * 60_000_000, int(status == "active"))
        for (store, minute), status in first_status.items()
    ]
    assert sorted(stored) == sorted(expected)
    assert list(tmp_path.glob("sorted-runs-*")) == []
    # What the load sent per store, over every block and run (`models.BatchPolls`): each row
    # counted, the repeats the database skipped too.
    sent_per_store = pd.DataFrame(lines, columns=["store", "minute", "status"])
    sent_per_store["active"] = (sent_per_store["status"] == "active").astype(int)
    expected_summary = [
        (
            store,
            len(part),
            AT_MIDNIGHT + part["minute"].min() * 60_000_000,
            part["active"].min(),
            part["active"].max(),
        )
        for store, part in sent_per_store.groupby("store")
    ]
    assert rows(app, BATCH_POLLS_WITH_IDS) == expected_summary
