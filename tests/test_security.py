"""Who may use what: every route of the app against every kind of caller, and what readers of
two groups can learn of each other's stores (nothing)."""

from __future__ import annotations

import secrets

import pytest
from sqlalchemy import text

from models import db
from tests.conftest import make_app
from tests.owners import (
    NORTH,
    SOUTH,
    bearer,
    create_keys,
    groups_csv,
    load_sample_with_groups,
)

CALLERS = ("none", "poller", "reader-north", "reader-south", "admin")
CSV = {"Content-Type": "text/csv"}
# One request per route, and the status each caller gets, in the order of CALLERS. `{north}`
# is a report of the north reader, `{north_store}` a store only north holds, `{north_rule}`
# an alert rule of the north reader, `{admin_rule}` one of the admin.
HOOK = "http://127.0.0.1:9/hook"
ROUTES = {
    "static": ("GET", "/static/common.js", {}, (200, 200, 200, 200, 200)),
    "api.openapi": ("GET", "/openapi.json", {}, (200, 200, 200, 200, 200)),
    "api.healthz": ("GET", "/healthz", {}, (200, 200, 200, 200, 200)),
    "api.trigger_report": ("POST", "/trigger_report", {"json": {}}, (401, 403, 202, 202, 202)),
    "api.get_report": ("GET", "/get_report/{north}", {}, (401, 403, 200, 404, 200)),
    "api.list_reports": ("GET", "/reports", {}, (401, 403, 200, 200, 200)),
    "api.whoami": ("GET", "/whoami", {}, (401, 200, 200, 200, 200)),
    "ingest.polls": (
        "POST",
        "/polls",
        {
            "data": "store_id,status,timestamp_utc\n1,active,2023-01-20 10:00:00 UTC\n",
            "headers": CSV,
        },
        (401, 200, 403, 403, 200),
    ),
    "ingest.hours": (
        "POST",
        "/business_hours",
        {"data": "store_id,day,start_time_local,end_time_local\n1,0,09:00,17:00\n", "headers": CSV},
        (401, 200, 403, 403, 200),
    ),
    "ingest.timezones": (
        "POST",
        "/timezones",
        {"data": "store_id,timezone_str\n1,UTC\n", "headers": CSV},
        (401, 200, 403, 403, 200),
    ),
    "ingest.closures": (
        "POST",
        "/closures",
        {
            "data": "store_id,start_local,end_local\n1,2023-01-10 00:00,2023-01-11 00:00\n",
            "headers": CSV,
        },
        (401, 200, 403, 403, 200),
    ),
    "ingest.groups": (
        "POST",
        "/store_groups",
        {"data": groups_csv({"extra": ["1"]}), "headers": CSV},
        (401, 200, 403, 403, 200),
    ),
    "web.reports_page": ("GET", "/", {}, (200, 200, 200, 200, 200)),
    "web.report_page": ("GET", "/report/{north}", {}, (200, 200, 200, 200, 200)),
    "web.store_page": ("GET", "/store?id={north_store}", {}, (200, 200, 200, 200, 200)),
    "web.legacy_store_link": ("GET", "/stores/{north_store}", {}, (301, 301, 301, 301, 301)),
    "web.report_summary": ("GET", "/reports/{north}/summary", {}, (401, 403, 200, 404, 200)),
    "web.report_stores": ("GET", "/reports/{north}/stores", {}, (401, 403, 200, 404, 200)),
    "web.store_timeline": (
        "GET",
        "/store/timeline?id={north_store}",
        {},
        (401, 403, 200, 404, 200),
    ),
    "incidents.list_incidents": (
        "GET",
        f"/incidents?state=all&group={NORTH}",
        {},
        (401, 403, 200, 404, 200),
    ),
    "incidents.list_rules": ("GET", "/alerts", {}, (401, 403, 200, 200, 200)),
    "incidents.create_rule": (
        "POST",
        "/alerts",
        {"json": {"url": HOOK, "secret": "s", "after": "15m", "group": NORTH}},
        (401, 403, 201, 404, 201),
    ),
    "incidents.list_deliveries": (
        "GET",
        "/alerts/{north_rule}/deliveries",
        {},
        (401, 403, 200, 404, 200),
    ),
    # Readers first: neither may delete the admin's rule; then the admin does.
    "incidents.delete_rule": ("DELETE", "/alerts/{admin_rule}", {}, (401, 403, 404, 404, 204)),
}


@pytest.fixture
def owners(database_url, tmp_path):
    """The sample with north and south, a key of each role, and a report of each reader and
    of the admin: (client, tokens, groups, report ids)."""
    app = make_app(database_url, tmp_path, ALERT_ALLOW_PRIVATE_URLS=1)
    groups = load_sample_with_groups(app, tmp_path)
    tokens = create_keys(app)
    client = app.test_client()
    reports = {}
    for name in ("reader-north", "reader-south", "admin"):
        answer = client.post("/trigger_report", json={}, headers=bearer(tokens[name]))
        assert answer.status_code == 202
        reports[name] = answer.json["report_id"]
    yield app, client, tokens, groups, reports
    app.extensions["report_executor"].shutdown()
    with app.app_context():
        db.engine.dispose()


@pytest.fixture
def rules(owners) -> dict[str, int]:
    """An alert rule of the north reader and one of the admin: name → rule id."""
    _, client, tokens, _, _ = owners
    made = {}
    for name in ("reader-north", "admin"):
        rule = {"url": HOOK, "secret": "s", "after": "15m"}
        answer = client.post("/alerts", json=rule, headers=bearer(tokens[name]))
        assert answer.status_code == 201
        made[name] = answer.json["id"]
    return made


def routes_of(app) -> set[str]:
    return {rule.endpoint for rule in app.url_map.iter_rules()}


def test_every_route_has_an_entry(owners):
    app = owners[0]
    assert routes_of(app) == set(ROUTES), "a route without an entry in ROUTES (or one gone)"
    for rule in app.url_map.iter_rules():
        method = ROUTES[rule.endpoint][0]
        assert method in rule.methods, rule


def test_every_route_answers_each_caller_as_the_table_says(owners, rules):
    _, client, tokens, groups, reports = owners
    north_only = sorted(set(groups[NORTH]) - set(groups[SOUTH]))[0]
    answers = {}
    for endpoint, (method, path, request, _) in ROUTES.items():
        url = path.format(
            north=reports["reader-north"],
            north_store=north_only,
            north_rule=rules["reader-north"],
            admin_rule=rules["admin"],
        )
        answers[endpoint] = tuple(
            client.open(
                url,
                method=method,
                headers=request_headers(request, tokens, caller),
                **{k: v for k, v in request.items() if k != "headers"},
            ).status_code
            for caller in CALLERS
        )
    assert answers == {endpoint: expected for endpoint, (*_, expected) in ROUTES.items()}


def request_headers(request: dict, tokens: dict[str, str], caller: str) -> dict[str, str]:
    return {**request.get("headers", {}), **bearer(tokens.get(caller))}


def test_a_reader_cannot_tell_another_owners_report_from_a_missing_one(owners):
    _, client, tokens, groups, reports = owners
    south = bearer(tokens["reader-south"])
    missing = secrets.token_hex(16)
    for report_id in (reports["reader-north"], reports["admin"], missing):
        for path in ("/get_report/{}", "/reports/{}/summary", "/reports/{}/stores"):
            answer = client.get(path.format(report_id), headers=south)
            assert answer.status_code == 404
            assert answer.json == {
                "error": "not_found",
                "message": f"no report with id {report_id}",
            }
        timeline = client.get(
            f"/store/timeline?id={groups[SOUTH][0]}&report={report_id}", headers=south
        )
        assert timeline.status_code == 404
        assert timeline.json["message"] == f"no report with id {report_id}"


def test_a_reader_lists_only_reports_within_its_groups(owners):
    _, client, tokens, _, reports = owners
    for reader in ("reader-north", "reader-south"):
        listed = client.get("/reports", headers=bearer(tokens[reader])).json["reports"]
        assert [row["report_id"] for row in listed] == [reports[reader]]
    everything = client.get("/reports", headers=bearer(tokens["admin"])).json["reports"]
    assert {row["report_id"] for row in everything} == set(reports.values())


def test_a_reader_cannot_tell_another_owners_store_from_a_missing_one(owners):
    _, client, tokens, groups, _ = owners
    south_only = sorted(set(groups[SOUTH]) - set(groups[NORTH]))[0]
    for store in (south_only, "no-such-store"):
        answer = client.get(f"/store/timeline?id={store}", headers=bearer(tokens["reader-north"]))
        assert answer.status_code == 404
        assert answer.json == {"error": "not_found", "message": f"no store with id {store!r}"}
    shared = sorted(set(groups[SOUTH]) & set(groups[NORTH]))[0]
    for reader in ("reader-north", "reader-south"):
        assert (
            client.get(f"/store/timeline?id={shared}", headers=bearer(tokens[reader])).status_code
            == 200
        )


def test_no_token_is_stored_in_clear_or_shown_in_a_page(owners):
    app, client, tokens, _, reports = owners
    with app.app_context(), db.engine.connect() as conn:
        dumped = repr(
            [conn.execute(text(f"SELECT * FROM {table}")).all() for table in db.metadata.tables]
        )
    pages = ["/", f"/report/{reports['admin']}", "/store?id=1", "/reports"]
    shown = "".join(
        client.get(page, headers=bearer(tokens["admin"])).data.decode() for page in pages
    )
    for token in tokens.values():
        assert token not in dumped
        assert token not in shown
