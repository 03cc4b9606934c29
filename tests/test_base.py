"""What every route shares: errors, the token check, argument rules."""

from __future__ import annotations

import logging

from jobs import steps
from tests.conftest import make_app


def test_the_token_never_reaches_the_logs(sqlite_app, tmp_path, caplog, monkeypatch):
    # Requests with a right and a wrong token, one of which fails inside: the failure is
    # logged (so logging is on and captured), the token is not.
    token = "tok-" + "9" * 20
    app = make_app(sqlite_app.config["DATABASE_URL"], tmp_path, API_TOKEN=token)

    def explode(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(steps, "submit_report", explode)
    client = app.test_client()
    with caplog.at_level(logging.DEBUG):
        client.get("/reports", headers={"Authorization": f"Bearer {token}x"})
        failed = client.post("/trigger_report", headers={"Authorization": f"Bearer {token}"})
    assert failed.status_code == 500
    assert "unhandled error on POST /trigger_report" in caplog.text
    assert token not in caplog.text
