"""A report's stored results and files: atomic writes, only REPORTS_DIR read."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pandas as pd
import pytest

import loader
from jobs import errors, results
from models import db
from tests.conftest import SAMPLE


def test_a_write_that_dies_half_way_leaves_no_file_and_the_report_is_still_served(app, monkeypatch):
    # The local CSV is a copy of the table stored in the database: if writing it fails (disk
    # full at the rename), no partial file is left and the report is served all the same.
    with app.app_context():
        loader.load(db.engine, SAMPLE)
    real_replace, failures = os.replace, []

    def replace_failing_once(source, target):
        if not failures:
            failures.append(target)
            raise OSError(28, "No space left on device")
        real_replace(source, target)

    monkeypatch.setattr(results.os, "replace", replace_failing_once)
    client = app.test_client()
    report_id = client.post("/trigger_report").get_json()["report_id"]
    reports_dir = Path(app.config["REPORTS_DIR"])
    assert failures and list(reports_dir.iterdir()) == []
    response = client.get(f"/get_report/{report_id}")
    assert response.status_code == 200
    frame = pd.read_csv(io.BytesIO(response.data), dtype={"store_id": str})
    assert len(frame) == pd.read_csv(SAMPLE / "store_status.csv")["store_id"].nunique()
    assert [path.name for path in reports_dir.iterdir()] == [f"report_{report_id}.csv"]


def test_report_files_are_only_read_from_the_reports_dir(tmp_path):
    assert results.report_path(tmp_path, "f" * 32) == tmp_path / f"report_{'f' * 32}.csv"
    for hostile in ["../" * 3 + "etc/passwd", "F" * 32, "f" * 31, "f" * 33, "", "f" * 31 + "\n"]:
        with pytest.raises(errors.ReportNotFound):
            results.report_path(tmp_path, hostile)
