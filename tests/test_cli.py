"""The command line: init-db, load-data, generate-data and report, through Flask's runner."""

from __future__ import annotations

import re

import click
import pandas as pd
from sqlalchemy import text

import cli
import config
from models import db
from tests.conftest import SAMPLE
from tests.loading import CLOSURES_HEADER, rows, short_lock_wait, write
from tests.server import run_cli


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
    # One row per store polled by then: 199 of the sample's 200 stores, counted on the text
    # (every stamp there reads `YYYY-MM-DD HH:MM:SS[.f] UTC`, so text order is time order):
    # awk -F, 'NR>1 && $3 < "2023-01-24 00:00:00.000001" {print $1}' | sort -u | wc -l
    assert len(frame) == 199


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


def test_load_data_takes_closures_by_name_or_option(runner, app, tmp_path):
    write(tmp_path / "closures.csv", CLOSURES_HEADER + "1,2023-01-23 09:00,2023-01-23 10:00\n")
    result = runner.invoke(args=["load-data", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "closures: " in result.output and "1 loaded" in result.output
    other = write(tmp_path / "other.csv", CLOSURES_HEADER + "1,2023-01-24 09:00,2023-01-24 10:00\n")
    result = runner.invoke(args=["load-data", "--closures", str(other)])
    assert result.exit_code == 0, result.output
    # 2023-01-24 00:00 is 1672531200 + 23 days (1987200) = 1674518400; 09:00 adds 32400.
    current = "SELECT start_local_s, end_local_s FROM closures WHERE retired_batch IS NULL"
    assert rows(app, current) == [(1674550800, 1674554400)]


def test_load_data_that_waits_too_long_for_another_load_says_so(runner, app):
    with app.app_context():
        short_lock_wait(db.engine)
        with db.engine.connect() as other_load:
            other_load.execute(text("UPDATE data_state SET last_batch = last_batch WHERE id = 1"))
            result = runner.invoke(args=["load-data", str(SAMPLE)])
            other_load.rollback()
    assert result.exit_code == 1
    assert result.output == (
        "Error: load failed, database unchanged:\n"
        "database: another load is writing; try again when it has finished\n"
    )


def test_report_options_give_the_same_numbers_as_the_api(runner, app, tmp_path):
    assert runner.invoke(args=["load-data", str(SAMPLE)]).exit_code == 0
    out = tmp_path / "report.csv"
    command = ["report", "--stale-after", "PT90M", "--outages", "--out", str(out)]
    result = runner.invoke(args=command)
    assert result.exit_code == 0, result.output
    client = app.test_client()
    report_id = client.post("/trigger_report", json={"stale_after": "90m", "outages": True})
    api_csv = client.get(f"/get_report/{report_id.get_json()['report_id']}").data
    assert out.read_bytes() == api_csv
    assert api_csv.split(b"\n", 1)[0].endswith(b",longest_outage_last_day,longest_outage_last_week")


def test_report_refuses_a_bad_stale_after_as_a_usage_error(runner):
    for value in ("0m", "-2h", "2 hours", "soon"):
        result = runner.invoke(args=["report", "--stale-after", value])
        assert result.exit_code == 2 and "--stale-after" in result.output, result.output


def test_report_works_when_another_writer_commits_right_before_it(runner, app, tmp_path):
    # init_schema ends its reads: on SQLite a transaction that reads first fails at once when
    # another writer commits before it writes.
    assert runner.invoke(args=["load-data", str(SAMPLE)]).exit_code == 0
    from jobs import options, states, steps
    from jobs.executors import InlineExecutor
    from models import init_schema

    with app.app_context():
        init_schema()
        with db.engine.begin() as other:  # another process's write, committed
            other.execute(text("UPDATE service_locks SET uses = uses + 1"))
        report_id = steps.submit_report(options.ReportRequest(), InlineExecutor())
        assert states.fresh_report(report_id).status == "Complete"


def test_the_flask_help_says_what_the_service_is_and_which_settings_it_reads(tmp_path):
    done = run_cli(f"sqlite:///{tmp_path / 'test.sqlite3'}", "--help", COLUMNS="80")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "  Store Monitor: how long each store was up and down during its business hours" in lines
    commands = lines[lines.index("Commands:") + 1 :]
    commands = commands[: commands.index("")]
    assert not [line for line in commands if line.endswith("...")]  # none cut short
    for command in cli.COMMANDS:
        whole = command.get_short_help_str(limit=200)
        pattern = rf"  {command.name} +{re.escape(whole)}"
        assert any(re.fullmatch(pattern, line) for line in commands), command.name
    listed = [line.split()[0] for line in lines if re.match(r"  [A-Z][A-Z_]+  ", line)]
    assert listed == list(config.SETTINGS)  # each setting, from config.SETTINGS
    # Names are padded to the longest (ALERT_ALLOW_PRIVATE_URLS) and two spaces.
    assert "  PORT                      port python app.py listens on [default: 5000]" in lines


def test_every_option_that_takes_a_value_shows_its_default(runner):
    for command in cli.COMMANDS:
        for param in command.params:
            if isinstance(param, click.Option) and not param.is_flag:
                assert param.show_default, f"{command.name} {param.opts[0]}"
    result = runner.invoke(args=["report", "--help"])
    assert "ISO-8601 instant.  [default: (the latest poll)]" in result.output
