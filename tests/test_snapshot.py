"""Reading from the database gives the report the engine computes from the raw CSV files,
whatever the shard size, and a snapshot is fixed: loads after it do not change it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import text

import loader
import report
from engine import timestamps
from jobs import results, snapshot, steps
from jobs.executors import InlineExecutor
from jobs.options import ReportRequest
from models import Report, ReportResult, db
from tests.conftest import SAMPLE, SHARED, make_app
from tests.moments import utc_micros, wall
from tests.reference import parse_hms


def raw_inputs(folder: Path) -> report.ReportInputs:
    """The engine's inputs straight from the CSV files, parsed with pandas and the standard
    library (not with the loader)."""
    sources = loader.find_sources(folder)
    polls = pd.read_csv(sources["polls"], dtype=str)
    hours = pd.read_csv(sources["hours"], dtype=str)
    zones = pd.read_csv(sources["timezones"], dtype=str)
    day = "dayOfWeek" if "dayOfWeek" in hours else "day"
    return report.ReportInputs(
        report.Polls.of(
            polls["store_id"], utc_micros(polls["timestamp_utc"]), polls["status"] == "active"
        ),
        report.WeeklyHours.of(
            hours["store_id"],
            hours[day].astype(int),
            [parse_hms(t) for t in hours["start_time_local"]],
            [parse_hms(t) for t in hours["end_time_local"]],
        ),
        report.StoreZones.of(zones["store_id"], zones["timezone_str"]),
    )


def raw_report(folder: Path, as_of_us: int | None, options=None) -> pd.DataFrame:
    result = report.compute_report(raw_inputs(folder), as_of_us, options)
    result["store_id"] = result["store_id"].astype(object)
    return result.sort_values("store_id").reset_index(drop=True)


def database_report(app, as_of_us: int | None, options=None) -> pd.DataFrame:
    """The stored table of a report computed through the job code."""
    request = ReportRequest(as_of_us, options or report.ReportOptions())
    with app.app_context():
        report_id = steps.submit_report(request, InlineExecutor())
        row = db.session.get(Report, report_id)
        assert row.status == "Complete", row.error
        return results.finished_table(row)


def micros(text: str) -> int:
    return int(pd.Timestamp(text).value // 1000)


AS_OF = [None, "2023-01-22T03:30:00Z", "2023-01-30T00:00:00Z", "2023-01-19T12:00:00Z"]


@pytest.mark.parametrize("as_of", AS_OF)
def test_report_from_database_equals_engine_on_files(app, as_of):
    # Early as_of values leave most polls after `now` and make the reader look back for
    # evidence before the window; late ones leave the window partly empty.
    as_of_us = micros(as_of) if as_of else None
    with app.app_context():
        loader.load(db.engine, SAMPLE)
    pd.testing.assert_frame_equal(database_report(app, as_of_us), raw_report(SAMPLE, as_of_us))


def test_options_from_database_equal_engine_on_files(app):
    options = report.ReportOptions(stale_after_us=2 * 3600 * 10**6, outages=True)
    with app.app_context():
        loader.load(db.engine, SAMPLE)
    got = database_report(app, None, options)
    pd.testing.assert_frame_equal(got, raw_report(SAMPLE, None, options))


@pytest.mark.parametrize("as_of", AS_OF[:2])
def test_sparse_original_sample_from_database_equals_engine(app, as_of):
    # The public sample has 1–9 polls per store: evidence is often days before the window.
    folder = SHARED / "loop"
    if not folder.exists():
        pytest.skip(f"original sample not found at {folder}")
    as_of_us = micros(as_of) if as_of else None
    with app.app_context():
        loader.load(db.engine, folder)
    pd.testing.assert_frame_equal(database_report(app, as_of_us), raw_report(folder, as_of_us))


def test_empty_database_gives_an_empty_report(app):
    result = database_report(app, None)
    assert list(result.columns) == report.BASE_COLUMNS and result.empty


def csv_with_shard_size(database_url: str, tmp_path: Path, shard_stores: int) -> bytes:
    app = make_app(database_url, tmp_path / str(shard_stores), REPORT_SHARD_STORES=shard_stores)
    with app.app_context():
        report_id = steps.submit_report(ReportRequest(), InlineExecutor())
        row = db.session.get(Report, report_id)
        assert row.status == "Complete", row.error
        stores = db.session.scalar(db.text("SELECT MAX(id) FROM stores"))
        assert row.shard_count == -(-stores // shard_stores)  # ceil: every key in one shard
        return results.local_csv(row).read_bytes()


@pytest.mark.slow  # the sample reported once per shard size
def test_csv_is_byte_identical_for_every_shard_size(database_url, tmp_path):
    # Shards of 1 store, of 7, and one shard holding all: the same bytes.
    app = make_app(database_url, tmp_path)
    with app.app_context():
        loader.load(db.engine, SAMPLE)
    sizes = [1, 7, 100_000]
    outputs = [csv_with_shard_size(database_url, tmp_path, size) for size in sizes]
    assert outputs[0] == outputs[1] == outputs[2]
    frame = pd.read_csv(SAMPLE / "store_status.csv", dtype=str)
    assert outputs[0].count(b"\n") == frame["store_id"].nunique() + 1


def test_a_snapshot_ignores_loads_after_it(app, tmp_path):
    # Fix the snapshot, then load new polls and replace every store's hours: a shard read
    # with the old watermark sees neither (hours are retired, not deleted).
    with app.app_context():
        loader.load(db.engine, SAMPLE)
        fixed = snapshot.fix_snapshot(db.engine, None)
        before = snapshot.read_shard(db.engine, fixed, 1, fixed.last_store_key + 1)
        hours = pd.read_csv(SAMPLE / "menu_hours.csv", dtype=str)
        hours = hours.assign(start_time_local="01:00:00", end_time_local="02:00:00")
        hours.to_csv(tmp_path / "menu_hours.csv", index=False)
        polls = pd.read_csv(SAMPLE / "store_status.csv", dtype=str).head(50)
        polls = polls.assign(timestamp_utc="2023-01-25 18:13:00 UTC", status="inactive")
        polls.to_csv(tmp_path / "store_status.csv", index=False)
        loader.load(db.engine, tmp_path)
        after = snapshot.read_shard(db.engine, fixed, 1, fixed.last_store_key + 1)
        latest = snapshot.read_shard(
            db.engine, snapshot.fix_snapshot(db.engine, None), 1, fixed.last_store_key + 1
        )
    for name in ("polls", "hours"):
        old, new = getattr(before.inputs, name), getattr(after.inputs, name)
        for column in old.__dataclass_fields__:
            assert np.array_equal(
                np.sort(np.asarray(getattr(old, column))), np.sort(np.asarray(getattr(new, column)))
            )
    assert set(latest.inputs.hours.start_s.tolist()) == {3600}
    assert latest.inputs.polls.ts_us.size > before.inputs.polls.ts_us.size


def test_a_poll_loaded_after_the_snapshot_just_before_its_week_is_not_seen(app, tmp_path):
    # Each store's latest poll before the week is looked up in any batch first: a later load's
    # poll one second before the week is then every store's latest there, and the read with
    # the old watermark must fall back to the latest of its own batches.
    with app.app_context():
        loader.load(db.engine, SAMPLE)
        fixed = snapshot.fix_snapshot(db.engine, None)
        before = snapshot.read_shard(db.engine, fixed, 1, fixed.last_store_key + 1)
        stores = pd.read_csv(SAMPLE / "store_status.csv", dtype=str)["store_id"].unique()
        instant = pd.Timestamp(fixed.now_us - snapshot.WEEK_US - 1_000_000, unit="us").floor("s")
        polls = pd.DataFrame(
            {
                "store_id": stores,
                "status": "inactive",
                "timestamp_utc": instant.strftime("%Y-%m-%d %H:%M:%S UTC"),
            }
        )
        polls.to_csv(tmp_path / "store_status.csv", index=False)
        loader.load(db.engine, polls=tmp_path / "store_status.csv")
        after = snapshot.read_shard(db.engine, fixed, 1, fixed.last_store_key + 1)
        later = snapshot.fix_snapshot(db.engine, fixed.now_us)
        latest = snapshot.read_shard(db.engine, later, 1, fixed.last_store_key + 1)
    old, new = before.inputs.polls, after.inputs.polls
    for column in old.__dataclass_fields__:
        assert np.array_equal(
            np.sort(np.asarray(getattr(old, column))), np.sort(np.asarray(getattr(new, column)))
        )
    seen_later = latest.inputs.polls.ts_us == instant.value // 1000
    assert seen_later.sum() == len(stores)  # the later watermark sees every one of them


def test_finished_report_is_stored_in_the_database(app):
    with app.app_context():
        loader.load(db.engine, SAMPLE)
    table = database_report(app, None)
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count()).select_from(ReportResult)) == 1
    assert len(table) == pd.read_csv(SAMPLE / "store_status.csv", dtype=str)["store_id"].nunique()


def test_closures_loaded_into_the_database_change_the_report_as_the_engine_says(app, tmp_path):
    # Every sample store closed for an afternoon, local time: the database report (with
    # `load-data`) equals the engine on the raw files plus the same closures.
    stores = pd.read_csv(SAMPLE / "store_status.csv", dtype=str)["store_id"].unique()
    closures = pd.DataFrame(
        {"store_id": stores, "start_local": "2023-01-24 12:00", "end_local": "2023-01-24 18:30"}
    )
    closures.to_csv(tmp_path / "closures.csv", index=False)
    with app.app_context():
        loader.load(db.engine, SAMPLE)
        loader.load(db.engine, closures=tmp_path / "closures.csv")
    raw = raw_inputs(SAMPLE)
    with_closures = report.ReportInputs(
        raw.polls,
        raw.hours,
        raw.zones,
        report.Closures.of(
            closures["store_id"],
            [wall("2023-01-24 12:00")] * len(stores),
            [wall("2023-01-24 18:30")] * len(stores),
        ),
    )
    expected = report.compute_report(with_closures)
    expected["store_id"] = expected["store_id"].astype(object)
    expected = expected.sort_values("store_id").reset_index(drop=True)
    got = database_report(app, None)
    pd.testing.assert_frame_equal(got, expected)
    assert not got.equals(raw_report(SAMPLE, None))  # the closures did change something


def shifted_polls(tmp_path: Path, copies: int) -> Path:
    """New polls: the sample's, moved by 1..copies seconds (same stores, all new instants)."""
    polls = pd.read_csv(SAMPLE / "store_status.csv", dtype=str)
    stamps = pd.to_datetime(polls["timestamp_utc"].str.removesuffix(" UTC"), format="ISO8601")
    frames = [
        polls.assign(
            timestamp_utc=(stamps + pd.Timedelta(seconds=shift)).dt.strftime(
                "%Y-%m-%d %H:%M:%S.%f UTC"
            )
        )
        for shift in range(1, copies + 1)
    ]
    path = tmp_path / "more_polls.csv"
    pd.concat(frames).to_csv(path, index=False)
    return path


def test_a_report_during_a_load_sees_all_of_it_or_none(app, tmp_path, monkeypatch):
    # Forced order (a hook, not timing): the load has written its polls but not committed; a
    # snapshot is fixed and two shards are read; the load commits; the other two shards are
    # read with the same snapshot. The watermark must hold: the snapshot reads the data as it
    # was before the load, entirely, and a snapshot fixed afterwards reads all of the load.
    as_of = timestamps.parse_iso_instant("2023-01-26T00:00:00Z")
    with app.app_context():
        loader.load(db.engine, SAMPLE)
        before_rows = polls_read(as_of)
    record_batch = loader._record_batch
    mid_load: list[tuple[snapshot.Snapshot, int]] = []

    def read_before_commit(conn, batch, *args):
        record_batch(conn, batch, *args)
        with app.app_context():  # another connection, while the load is uncommitted
            fixed = snapshot.fix_snapshot(db.engine, as_of)
            mid_load.append((fixed, shard_polls(fixed, (1, 51))))

    monkeypatch.setattr(loader, "_record_batch", read_before_commit)
    run_load(app, shifted_polls(tmp_path, 8))
    monkeypatch.setattr(loader, "_record_batch", record_batch)
    [(fixed, first_half)] = mid_load
    with app.app_context():
        second_half = shard_polls(fixed, (101, 151))
        last = db.session.scalar(text("SELECT last_batch FROM data_state"))
        db.session.commit()
        after_rows = polls_read(as_of)
    assert (fixed.batch, last) == (1, 2)
    assert first_half + second_half == before_rows
    assert after_rows > before_rows


def shard_polls(fixed: snapshot.Snapshot, shard_starts: tuple[int, ...]) -> int:
    """Polls read by the shards of 50 stores starting at `shard_starts`."""
    parts = [snapshot.read_shard(db.engine, fixed, low, low + 50) for low in shard_starts]
    return sum(part.inputs.polls.ts_us.size for part in parts)


def polls_read(as_of: int) -> int:
    fixed = snapshot.fix_snapshot(db.engine, as_of)
    return snapshot.read_shard(
        db.engine, fixed, 1, fixed.last_store_key + 1
    ).inputs.polls.ts_us.size


def run_load(app, path: Path) -> None:
    with app.app_context():
        loader.load(db.engine, polls=path)


def test_integer_reads_give_every_row_or_fail(app, monkeypatch):
    # On MySQL/MariaDB rows cross packed (PACKED_STORES stores a value); a value the server
    # cuts short must fail the read, never drop rows.
    monkeypatch.setattr(snapshot, "PACKED_STORES", 3)
    with app.app_context():
        loader.load(db.engine, SAMPLE)
    sql = "SELECT id AS store_key, id * 2 AS twice FROM stores WHERE id <= :last"
    with app.app_context(), db.engine.connect() as conn:
        rows = snapshot.integer_table(conn, sql, {"last": 10}, ["store_key", "twice"])
        assert sorted(rows.tolist()) == [[key, 2 * key] for key in range(1, 11)]
        if conn.dialect.name == "mysql":
            conn.exec_driver_sql("SET SESSION group_concat_max_len = 8")
            with pytest.raises(RuntimeError, match="lost values"):
                snapshot.integer_table(conn, sql, {"last": 10}, ["store_key", "twice"])
        conn.invalidate()  # its session settings are not the pool's
