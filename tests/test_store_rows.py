"""Hours, zones and closures kept between evaluations: always the rows a read would find."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pytest
from sqlalchemy import text

from jobs import snapshot, store_rows
from loading import writing
from models import db
from tests.conftest import SAMPLE
from tests.loading import HOURS_HEADER, load, rows, scalar, write

STORE = "2914615253234349417"  # a store of the sample with hours
LATER = datetime(2031, 1, 1)


@pytest.fixture(autouse=True)
def nothing_kept():
    store_rows.forget()
    yield
    store_rows.forget()


def rows_read(app, fixed: snapshot.Snapshot) -> list[list[tuple]]:
    """The rows as a report shard reads them: every store's, as of the snapshot."""
    keys = {"batch": fixed.batch, "low_key": 0, "high_key": fixed.last_store_key + 1}
    with app.app_context(), db.engine.connect() as conn:
        snapshot.prepare_session(conn)
        parts = (
            snapshot.read_hours(conn, keys),
            snapshot.read_zones(conn, keys),
            snapshot.read_closures(conn, keys),
        )
    return [as_rows(part) for part in parts]


def as_rows(part) -> list[tuple]:
    columns = [getattr(part, name) for name in part.__dataclass_fields__]
    return sorted(zip(*(column.tolist() for column in columns), strict=True))


def kept(app) -> tuple[snapshot.Snapshot, store_rows.StoreRows | None]:
    with app.app_context():
        fixed = snapshot.fix_snapshot(db.engine, None)
        return fixed, store_rows.current(db.engine, fixed)


def kept_rows(rows: store_rows.StoreRows) -> list[list[tuple]]:
    return [as_rows(rows.hours), as_rows(rows.zones), as_rows(rows.closures)]


def test_kept_rows_are_read_again_exactly_when_a_load_or_a_purge_changed_them(app, tmp_path):
    load(app, SAMPLE)
    first_snapshot, first = kept(app)
    assert first is not None and kept_rows(first) == rows_read(app, first_snapshot)
    # Polls only: the same rows, not read again.
    polls = write(tmp_path / "polls.csv", f"store_id,status,timestamp_utc\n{STORE},active,"
                  "2023-01-25 20:00:00 UTC\n")  # fmt: skip
    load(app, polls=polls)
    second_snapshot, second = kept(app)
    assert second is first
    # New hours for one store: read again, with them.
    hours = write(tmp_path / "hours.csv", HOURS_HEADER + f"{STORE},0,06:00,07:00\n")
    load(app, hours=hours)
    third_snapshot, third = kept(app)
    assert third is not first and kept_rows(third) == rows_read(app, third_snapshot)
    key = scalar(app, "SELECT id FROM stores WHERE external_id = :id", id=STORE)
    assert [row for row in kept_rows(third)[0] if row[0] == key] == [(key, 0, 6 * 3600, 7 * 3600)]
    # A snapshot older than the change reads its own rows.
    with app.app_context():
        assert store_rows.current(db.engine, second_snapshot) is None
    # A purge of the retired rows: read again (the same rows are current).
    with app.app_context(), db.engine.begin() as conn:
        assert writing.purge_retired(conn, third_snapshot.batch) > 0
    _, fourth = kept(app)
    assert fourth is not third and kept_rows(fourth) == kept_rows(third)


def test_nothing_is_kept_beyond_the_limit(app, monkeypatch):
    load(app, SAMPLE)
    monkeypatch.setattr(store_rows, "STORES_LIMIT", 10)
    assert kept(app)[1] is None


def test_a_database_restored_and_loaded_again_is_read_again(app):
    # A backup restored at the same address (same instance id) and the same batch number
    # loaded again: the row counts may repeat, the batch's start does not.
    load(app, SAMPLE)
    _, first = kept(app)
    with app.app_context(), db.engine.begin() as conn:
        conn.execute(text("UPDATE load_batches SET started_at = :at"), {"at": LATER})
    _, again = kept(app)
    assert first is not None and again is not None and again is not first


def test_kept_ids_are_those_of_the_stores_and_follow_new_stores_and_a_restore(app, tmp_path):
    def ids_of(keys: list[int]) -> list[str]:
        with app.app_context():
            return store_rows.external_ids(db.engine, np.array(keys)).tolist()

    def stored(keys: list[int]) -> list[str]:
        found = dict(rows(app, "SELECT id, external_id FROM stores"))
        return [found[key] for key in keys]

    load(app, SAMPLE)
    last = scalar(app, "SELECT MAX(id) FROM stores")
    keys = [last, 1, 2, last]
    assert ids_of(keys) == stored(keys)
    # A new store is read (only newer keys are); a restored database with another store at a
    # kept key is noticed by the last kept key's id.
    write(
        tmp_path / "polls.csv",
        "store_id,status,timestamp_utc\nnew-store,active,2031-01-01 00:00:00\n",
    )
    load(app, polls=tmp_path / "polls.csv")
    assert ids_of([last + 1, 1]) == ["new-store", stored([1])[0]]
    with app.app_context(), db.engine.begin() as conn:
        conn.execute(
            text("UPDATE stores SET external_id = 'restored' WHERE id = :key"), {"key": last + 1}
        )
        conn.execute(text("UPDATE stores SET external_id = 'other' WHERE id = 1"))
    assert ids_of([1, last + 1]) == ["other", "restored"]
    with pytest.raises(LookupError):
        ids_of([last + 2])  # no such store
