"""End to end against a real server process over real HTTP, on SQLite and MariaDB."""

from __future__ import annotations

import io

import pandas as pd
import pytest
import requests

from tests.conftest import SAMPLE
from tests.server import wait_for_report


@pytest.mark.slow
def test_trigger_poll_download(live_server):
    response = requests.post(f"{live_server.url}/trigger_report", timeout=10)
    assert response.status_code == 202
    report_id = response.json()["report_id"]
    done = wait_for_report(live_server.url, report_id)
    assert done.status_code == 200 and done.headers["X-Report-Status"] == "Complete"
    assert f"filename=report_{report_id}.csv" in done.headers["Content-Disposition"]
    frame = pd.read_csv(io.StringIO(done.text), dtype={"store_id": str})
    assert frame.columns[0] == "store_id" and len(frame.columns) == 7
    stores = pd.read_csv(SAMPLE / "store_status.csv", dtype=str)["store_id"].nunique()
    assert len(frame) == stores and frame["store_id"].is_unique


@pytest.mark.slow
def test_errors_over_http(live_server):
    assert requests.get(f"{live_server.url}/get_report/{'0' * 32}", timeout=10).status_code == 404
    assert (
        requests.get(f"{live_server.url}/get_report/..%2F..%2Fapp.py", timeout=10).status_code
        == 404
    )
    bad = requests.post(
        f"{live_server.url}/trigger_report",
        data="{",
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert bad.status_code == 400 and bad.json()["error"] == "bad_request"
    assert requests.get(f"{live_server.url}/healthz", timeout=10).json()["status"] == "ok"
