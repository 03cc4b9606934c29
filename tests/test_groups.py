"""Store groups: loaded like hours (versioned per group), and reports scoped to them, on real
SQLite and MariaDB."""

from __future__ import annotations

import numpy as np
import pytest

from jobs import snapshot, steps
from jobs.executors import InlineExecutor
from jobs.options import ReportRequest
from loading.validation import LoadError
from models import db
from tests.conftest import SAMPLE, make_app
from tests.loading import load, rows, scalar, write
from tests.owners import (
    GROUPS_HEADER,
    NO_DATA_STORE,
    NORTH,
    SOUTH,
    bearer,
    create_keys,
    groups_csv,
    load_sample_with_groups,
    rows_by_store,
)

CURRENT_MEMBERS = (
    "SELECT g.group_id, s.external_id FROM store_groups g JOIN stores s ON s.id = g.store_key "
    "WHERE g.retired_batch IS NULL ORDER BY g.group_id, s.external_id"
)


def members(app) -> list[tuple]:
    return rows(app, CURRENT_MEMBERS)


# --------------------------------------------------------------------------- loading


def test_a_group_in_a_new_file_gets_exactly_its_stores_and_others_are_kept(app, tmp_path):
    path = write(tmp_path / "g.csv", GROUPS_HEADER + "a,1\na,2\nb,2\nb,3\n")
    load(app, groups=path)
    write(path, GROUPS_HEADER + "a,1\na,9\n")
    summary = load(app, groups=path)
    # a: {1, 2} -> {1, 9}; b untouched (not in the file).
    assert members(app) == [("a", "1"), ("a", "9"), ("b", "2"), ("b", "3")]
    assert (summary.files[0].loaded, summary.files[0].unchanged) == (2, 0)
    again = load(app, groups=path)
    # The same file again: 2 rows unchanged, nothing stored, the membership as it was.
    assert (again.files[0].loaded, again.files[0].unchanged) == (0, 2)
    assert members(app) == [("a", "1"), ("a", "9"), ("b", "2"), ("b", "3")]


def test_a_store_without_data_is_kept_as_a_store(app, tmp_path):
    path = write(tmp_path / "g.csv", GROUPS_HEADER + f"a,{NO_DATA_STORE}\n")
    load(app, groups=path)
    assert scalar(app, "SELECT COUNT(*) FROM stores WHERE external_id = :id", id=NO_DATA_STORE) == 1
    assert members(app) == [("a", NO_DATA_STORE)]


def test_repeated_rows_of_a_group_are_stored_once(app, tmp_path):
    summary = load(app, groups=write(tmp_path / "g.csv", GROUPS_HEADER + "a,1\na,1\na,2\n"))
    assert (summary.files[0].loaded, summary.files[0].duplicates) == (2, 1)


@pytest.mark.parametrize(
    ("group", "reason"),
    [
        ("a b", "group_id is not 1 to 64 letters"),
        ("", "group_id is not 1 to 64 letters"),
        ("x" * 65, "group_id is not 1 to 64 letters"),
        ("ä", "group_id is not 1 to 64 letters"),
    ],
)
def test_a_bad_group_id_is_refused_with_its_line_and_nothing_loads(app, tmp_path, group, reason):
    path = write(tmp_path / "g.csv", GROUPS_HEADER + f"ok-1.x_y,1\n{group},2\n")
    with pytest.raises(LoadError) as refused:
        load(app, groups=path)
    error = refused.value.errors[0]
    assert (error.line, error.column) == (3, "group_id")
    assert reason in error.reason
    assert members(app) == []


def test_load_data_finds_store_groups_by_name(runner, app, tmp_path):
    for name in ("store_status.csv", "menu_hours.csv", "timezones.csv"):
        (tmp_path / name).write_bytes((SAMPLE / name).read_bytes())
    write(tmp_path / "store_groups.csv", groups_csv({NORTH: ["1", "2"]}))
    result = runner.invoke(args=["load-data", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "groups: " in result.output
    other = write(tmp_path / "other.csv", groups_csv({SOUTH: ["3"]}))
    result = runner.invoke(args=["load-data", "--groups", str(other)])
    assert result.exit_code == 0, result.output
    assert members(app) == [(NORTH, "1"), (NORTH, "2"), (SOUTH, "3")]


def test_post_store_groups_loads_like_the_file(client, app):
    body = groups_csv({NORTH: ["1", "2"]}).encode()
    answer = client.post("/store_groups", data=body, headers={"Content-Type": "text/csv"})
    assert answer.status_code == 200, answer.json
    assert (answer.json["kind"], answer.json["stored"]) == ("groups", 2)
    bad = client.post(
        "/store_groups", data=GROUPS_HEADER + "no way,1\n", headers={"Content-Type": "text/csv"}
    )
    assert bad.status_code == 422
    assert bad.json["errors"][0]["column"] == "group_id"
    assert members(app) == [(NORTH, "1"), (NORTH, "2")]


def test_a_report_reads_the_membership_as_of_its_batch(app, tmp_path):
    path = write(tmp_path / "g.csv", GROUPS_HEADER + "a,1\na,2\n")
    first = load(app, groups=path).batch
    write(path, GROUPS_HEADER + "a,3\n")
    second = load(app, groups=path).batch
    with app.app_context():
        keys_then = snapshot.scope_store_keys(db.engine, first, ("a",))
        keys_now = snapshot.scope_store_keys(db.engine, second, ("a",))
        key_of = dict(rows(app, "SELECT external_id, id FROM stores"))
    assert keys_then.tolist() == [key_of["1"], key_of["2"]]
    assert keys_now.tolist() == [key_of["3"]]


# --------------------------------------------------------------------------- scoped reports


def report_text(client, token: str | None, **body) -> tuple[str, dict]:
    answer = client.post("/trigger_report", json=body, headers=bearer(token))
    assert answer.status_code == 202, answer.json
    fetched = client.get(answer.headers["Location"], headers=bearer(token))
    assert fetched.status_code == 200
    return fetched.data.decode(), answer.json


@pytest.mark.parametrize("stores_per_shard", [4000, 7])
def test_scoped_reports_give_each_store_the_full_reports_bytes(
    database_url, tmp_path, stores_per_shard
):
    app = make_app(database_url, tmp_path, REPORT_SHARD_STORES=stores_per_shard)
    groups = load_sample_with_groups(app, tmp_path)
    tokens = create_keys(app)
    client = app.test_client()
    options = {"as_of": "2023-01-24T10:00:00Z", "stale_after": "2h", "outages": True}
    full, _ = report_text(client, tokens["admin"], **options)
    full_rows = rows_by_store(full)
    for group, token in ((NORTH, tokens["reader-north"]), (SOUTH, tokens["reader-south"])):
        scoped, _ = report_text(client, token, **options)
        assert scoped.splitlines()[0] == full.splitlines()[0]
        scoped_rows = rows_by_store(scoped)
        # Exactly the group's stores that the full report has (the one without data: absent).
        assert set(scoped_rows) == set(groups[group]) & set(full_rows)
        assert NO_DATA_STORE not in scoped_rows
        assert all(line == full_rows[store] for store, line in scoped_rows.items())
        # In the full report's order.
        assert list(scoped_rows) == [store for store in full_rows if store in scoped_rows]
    named, _ = report_text(client, tokens["admin"], group=SOUTH, **options)
    assert rows_by_store(named) == {
        store: line for store, line in full_rows.items() if store in groups[SOUTH]
    }
    app.extensions["report_executor"].shutdown()
    with app.app_context():
        db.engine.dispose()


def test_a_report_records_its_scope_and_key(client, app, tmp_path):
    load_sample_with_groups(app, tmp_path)
    tokens = create_keys(app)
    _, answer = report_text(client, tokens["reader-north"])
    listed = client.get("/reports", headers=bearer(tokens["admin"])).json["reports"][0]
    assert listed["report_id"] == answer["report_id"]
    assert (listed["scope"], listed["created_by"]) == ([NORTH], "reader-north")
    report_text(client, tokens["admin"])
    everything = client.get("/reports", headers=bearer(tokens["admin"])).json["reports"][0]
    assert (everything["scope"], everything["created_by"]) == (None, "admin")


def test_a_reader_may_not_name_a_group_of_another_and_an_admin_no_unknown_group(
    client, app, tmp_path
):
    load_sample_with_groups(app, tmp_path)
    tokens = create_keys(app)
    for token, group in ((tokens["reader-north"], SOUTH), (tokens["admin"], "nobody")):
        answer = client.post("/trigger_report", json={"group": group}, headers=bearer(token))
        assert answer.status_code == 404
        assert answer.json["message"] == f"no group named {group!r}"
    assert client.get("/reports", headers=bearer(tokens["admin"])).json["reports"] == []
    bad = client.post("/trigger_report", json={"group": None}, headers=bearer(tokens["admin"]))
    assert bad.status_code == 400


def test_the_report_command_takes_a_group(runner, app, tmp_path):
    groups = load_sample_with_groups(app, tmp_path)
    out = tmp_path / "north.csv"
    result = runner.invoke(args=["report", "--group", NORTH, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert set(rows_by_store(out.read_text())) <= set(groups[NORTH])
    assert f"({len(rows_by_store(out.read_text()))} stores)" in result.output


# --------------------------------------------------------------------------- fairness


def test_one_key_filling_its_share_gets_429_and_the_others_do_not(database_url, tmp_path):
    app = make_app(database_url, tmp_path, REPORT_QUEUE_PER_KEY=2, REPORT_QUEUE=16)
    load_sample_with_groups(app, tmp_path)
    tokens = create_keys(app)
    client = app.test_client()
    with app.app_context():
        for _ in range(2):  # queued, never run: nothing executes queued steps here
            steps.submit_report(
                ReportRequest(groups=(NORTH,), created_by="reader-north"), _NeverRuns()
            )
    refused = client.post("/trigger_report", json={}, headers=bearer(tokens["reader-north"]))
    assert refused.status_code == 429
    assert "reader-north" in refused.json["message"]
    assert refused.headers["Retry-After"] == "5"
    other = client.post("/trigger_report", json={}, headers=bearer(tokens["reader-south"]))
    assert other.status_code == 202
    app.extensions["report_executor"].shutdown()
    with app.app_context():
        db.engine.dispose()


class _NeverRuns(InlineExecutor):
    """An executor that keeps what it is given queued (a report that stays Queued)."""

    def enqueue_start(self, report_id: str) -> None:
        return None


def test_scoped_shards_hold_at_most_their_share_of_the_scopes_stores():
    fixed = snapshot.Snapshot(batch=1, now_us=0, last_store_key=100)
    members = np.array([3, 5, 9, 10, 20])
    # Two stores a shard: [3, 6) holds 3 and 5; [9, 11) holds 9 and 10; [20, 21) holds 20.
    assert steps.scope_ranges(fixed, members, 2) == [(3, 6), (9, 11), (20, 21)]
    assert steps.scope_ranges(fixed, members, 4000) == [(3, 21)]
    assert steps.scope_ranges(fixed, np.array([], dtype=np.int64), 2) == []


def test_a_scoped_shard_reads_only_its_groups_stores(app, tmp_path):
    groups = load_sample_with_groups(app, tmp_path)
    with app.app_context():
        fixed = snapshot.fix_snapshot(db.engine, None)
        read = snapshot.read_shard(db.engine, fixed, 1, fixed.last_store_key + 1, (NORTH,))
    north = set(groups[NORTH])
    inputs = read.inputs
    for store_keys in (inputs.polls.store, inputs.hours.store, inputs.zones.store):
        assert set(read.external_ids.reindex(np.unique(store_keys))) <= north
    assert set(read.external_ids) == north  # every north store has a row in `stores`
