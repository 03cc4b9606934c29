"""The HTTP API through Flask's test client, jobs inline and in real threads."""

from __future__ import annotations

import io
import time

import pandas as pd
import pytest

import loader
from models import db
from tests.conftest import SAMPLE, make_app


@pytest.fixture
def loaded_app(app):
    with app.app_context():
        loader.load(db.engine, SAMPLE)
    return app


def sample_store_count() -> int:
    return pd.read_csv(SAMPLE / "store_status.csv", dtype=str)["store_id"].nunique()


def test_trigger_then_get_returns_the_csv(loaded_app):
    client = loaded_app.test_client()
    response = client.post("/trigger_report")
    assert response.status_code == 202
    body = response.get_json()
    assert body["status"] in ("Running", "Complete") and len(body["report_id"]) == 32
    assert response.headers["Location"].endswith(f"/get_report/{body['report_id']}")
    got = client.get(f"/get_report/{body['report_id']}")
    assert got.status_code == 200
    assert got.headers["Content-Type"].startswith("text/csv")
    assert got.headers["X-Report-Status"] == "Complete"
    assert (
        got.headers["Content-Disposition"] == f"attachment; filename=report_{body['report_id']}.csv"
    )
    frame = pd.read_csv(io.BytesIO(got.data), dtype={"store_id": str})
    assert list(frame.columns) == [
        "store_id",
        "uptime_last_hour",
        "uptime_last_day",
        "uptime_last_week",
        "downtime_last_hour",
        "downtime_last_day",
        "downtime_last_week",
    ]
    assert len(frame) == sample_store_count()
    assert (frame["uptime_last_hour"] + frame["downtime_last_hour"]).le(60.0).all()


def test_as_of_is_used_and_reported(loaded_app):
    client = loaded_app.test_client()
    report_id = client.post("/trigger_report", json={"as_of": "2023-01-20T00:00:00Z"}).get_json()[
        "report_id"
    ]
    listing = client.get("/reports").get_json()["reports"]
    assert listing[0]["report_id"] == report_id
    assert listing[0]["as_of"] == "2023-01-20T00:00:00.000000Z"
    assert listing[0]["status"] == "Complete" and listing[0]["row_count"] > 0


@pytest.mark.parametrize(
    "body, content_type, fragment",
    [
        (b"{not json", "application/json", "JSON object"),
        (b"[1, 2]", "application/json", "JSON object"),
        (b'{"as_of": 5}', "application/json", "as_of must be a string"),
        (b'{"as_of": "yesterday"}', "application/json", "ISO-8601"),
        (b'{"as_of": "2023-01-20T00:00:00Z", "x": 1}', "application/json", "unknown field"),
        (b"as_of=2023", "application/x-www-form-urlencoded", "JSON object"),
    ],
)
def test_bad_trigger_bodies_get_400_with_the_reason(client, body, content_type, fragment):
    response = client.post("/trigger_report", data=body, content_type=content_type)
    assert response.status_code == 400
    payload = response.get_json()
    assert payload["error"] == "bad_request" and fragment in payload["message"]


@pytest.mark.parametrize(
    "report_id", ["0" * 32, "not-a-report", "..%2F..%2Fetc%2Fpasswd", "A" * 32, "f" * 5000]
)
def test_unknown_or_malformed_ids_get_404(client, report_id):
    response = client.get(f"/get_report/{report_id}")
    assert response.status_code == 404
    assert set(response.get_json()) == {"error", "message"}


def test_unknown_route_and_method_are_json_errors(client):
    assert client.get("/nope").get_json()["error"] == "not_found"
    response = client.delete("/trigger_report")
    assert response.status_code == 405 and response.get_json()["error"] == "method_not_allowed"


def test_oversized_body_is_refused(client):
    response = client.post(
        "/trigger_report", data=b"{" + b" " * 100_000 + b"}", content_type="application/json"
    )
    assert (
        response.status_code == 413 and response.get_json()["error"] == "request_entity_too_large"
    )


def test_healthz(client):
    assert client.get("/healthz").get_json() == {"status": "ok", "database": "ok"}


def test_running_report_shows_progress_then_completes_in_a_thread(database_url, tmp_path):
    app = make_app(database_url, tmp_path, REPORTS_INLINE=False)
    with app.app_context():
        loader.load(db.engine, SAMPLE)
    client = app.test_client()
    report_id = client.post("/trigger_report").get_json()["report_id"]
    seen = set()
    for _ in range(300):
        response = client.get(f"/get_report/{report_id}")
        seen.add(response.status_code)
        if response.status_code == 202:
            body = response.get_json()
            assert body["status"] == "Running" and 0.0 <= body["progress"] <= 1.0
        if response.status_code == 200:
            break
        time.sleep(0.05)
    assert response.status_code == 200
    assert len(pd.read_csv(io.BytesIO(response.data))) == sample_store_count()
    app.extensions["report_runner"].shutdown()


def test_failed_report_is_shown_with_its_error(loaded_app, monkeypatch):
    import report

    def explode(*args, **kwargs):
        raise RuntimeError("engine exploded")

    monkeypatch.setattr(report, "compute_report", explode)
    client = loaded_app.test_client()
    report_id = client.post("/trigger_report").get_json()["report_id"]
    response = client.get(f"/get_report/{report_id}")
    assert response.status_code == 422
    body = response.get_json()
    assert body["status"] == "Failed" and "engine exploded" in body["message"]
    assert client.get("/healthz").status_code == 200


def test_api_token_guards_everything_but_health(database_url, tmp_path):
    app = make_app(database_url, tmp_path, API_TOKEN="s3cret-token")
    client = app.test_client()
    assert client.post("/trigger_report").status_code == 401
    assert client.get("/reports", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert (
        client.get("/reports", headers={"Authorization": "Bearer s3cret-token"}).status_code == 200
    )
    assert client.get("/healthz").status_code == 200
