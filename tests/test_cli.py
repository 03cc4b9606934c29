"""The command line: init-db, load-data, generate-data and report, through Flask's runner."""

from __future__ import annotations

import pandas as pd

import report
from tests.conftest import SAMPLE


def test_init_db_is_idempotent(runner):
    assert runner.invoke(args=["init-db"]).exit_code == 0
    assert "schema ready" in runner.invoke(args=["init-db"]).output


def test_load_data_then_report(runner, tmp_path):
    result = runner.invoke(args=["load-data", str(SAMPLE)])
    assert result.exit_code == 0, result.output
    assert "polls:" in result.output and "batch 1 committed" in result.output
    again = runner.invoke(args=["load-data", str(SAMPLE), "--if-empty"])
    assert "nothing to do" in again.output
    out = tmp_path / "report.csv"
    result = runner.invoke(args=["report", "--as-of", "2023-01-24T00:00:00Z", "--out", str(out)])
    assert result.exit_code == 0, result.output
    report_id = result.output.split()[0]
    assert len(report_id) == 32 and str(out) in result.output
    frame = pd.read_csv(out, dtype={"store_id": str})
    polls = pd.read_csv(SAMPLE / "store_status.csv", dtype=str)
    instants = report.parse_utc_timestamps(polls["timestamp_utc"])
    as_of = report.parse_iso_instant("2023-01-24T00:00:00Z")
    assert len(frame) == polls.loc[instants <= as_of, "store_id"].nunique()  # stores polled by then


def test_load_data_reports_errors_and_exits_non_zero(runner, tmp_path):
    (tmp_path / "timezones.csv").write_text("store_id,timezone_str\n1,Not/AZone\n")
    result = runner.invoke(args=["load-data", str(tmp_path)])
    assert result.exit_code != 0
    assert "database unchanged" in result.output and "line 2" in result.output


def test_report_rejects_a_bad_as_of(runner):
    result = runner.invoke(args=["report", "--as-of", "tomorrow"])
    assert result.exit_code == 2 and "ISO-8601" in result.output


def test_generate_data_writes_loadable_files(runner, tmp_path):
    out = tmp_path / "generated"
    result = runner.invoke(
        args=["generate-data", str(out), "--stores", "30", "--days", "2", "--seed", "3"]
    )
    assert result.exit_code == 0, result.output
    polls = pd.read_csv(out / "store_status.csv", dtype=str)
    assert polls["timestamp_utc"].str.endswith(" UTC").all()
    assert set(polls["status"]) <= {"active", "inactive"}
    loaded = runner.invoke(args=["load-data", str(out)])
    assert loaded.exit_code == 0 and "0 rejected" in loaded.output
