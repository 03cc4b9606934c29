"""Command line: `flask --app app init-db | load-data | generate-data | report`.

Thin doors into the same code the service uses: `loader.load`, `jobs.execute_report`.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click
from flask import Flask, current_app
from flask.cli import with_appcontext

import generator
import jobs
import loader
import report
from models import LoadBatch, Report, db, init_schema


def register(app: Flask) -> None:
    for command in (init_db_command, load_data_command, generate_data_command, report_command):
        app.cli.add_command(command)


@click.command("init-db")
@with_appcontext
def init_db_command() -> None:
    """Create the database schema (idempotent)."""
    init_schema()
    click.echo(f"schema ready: {db.engine.url.render_as_string(hide_password=True)}")


class TerminalProgress:
    """Prints rows/s and percent of file on a terminal, at most a few times a second."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.last_print = 0.0
        self.last_kind = ""

    def __call__(self, kind: str, done_bytes: int, total_bytes: int, rows: int) -> None:
        now = time.perf_counter()
        if now - self.last_print < 0.25 and kind == self.last_kind:
            return
        if kind != self.last_kind and self.last_kind:
            click.echo(err=True)
        self.last_print, self.last_kind = now, kind
        rate = rows / max(now - self.started, 1e-9)
        percent = 100 * min(done_bytes / total_bytes, 1.0)
        click.echo(
            f"\r{kind}: {percent:5.1f}%  {rows:,} rows  {rate:,.0f} rows/s   ", nl=False, err=True
        )


@click.command("load-data")
@with_appcontext
@click.argument(
    "folder", required=False, type=click.Path(exists=True, file_okay=False, path_type=Path)
)
@click.option(
    "--polls", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Polls CSV."
)
@click.option(
    "--hours",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Business hours CSV.",
)
@click.option(
    "--timezones",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Time zones CSV.",
)
@click.option(
    "--closures",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Closures CSV (store_id,start_local,end_local).",
)
@click.option(
    "--skip-invalid", is_flag=True, help="Load valid rows; write the others to *.rejects.csv."
)
@click.option("--if-empty", is_flag=True, help="Do nothing if the database already holds polls.")
def load_data_command(folder, polls, hours, timezones, closures, skip_invalid, if_empty) -> None:
    """Load a folder of CSVs (polls, hours, time zones, closures; .csv or .csv.gz) in one
    transaction."""
    init_schema()
    if if_empty and db.session.execute(db.select(db.func.count()).select_from(LoadBatch)).scalar():
        click.echo("database already loaded; nothing to do (--if-empty)")
        return
    progress = TerminalProgress() if sys.stderr.isatty() else None
    try:
        summary = loader.load(
            db.engine,
            folder,
            polls=polls,
            hours=hours,
            timezones=timezones,
            closures=closures,
            skip_invalid=skip_invalid,
            progress=progress,
        )
    except loader.LoadError as exc:
        if progress:
            click.echo(err=True)
        raise click.ClickException(f"load failed, database unchanged:\n{exc}") from exc
    if progress:
        click.echo(err=True)
    click.echo(str(summary))


@click.command("generate-data")
@with_appcontext
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--stores", default=200, show_default=True, type=click.IntRange(1, 10_000_000))
@click.option("--days", default=7, show_default=True, type=click.IntRange(1, 366))
@click.option("--seed", default=1, show_default=True, type=int)
@click.option(
    "--end", default="2023-01-25T18:13:22Z", show_default=True, help="Last poll instant (UTC)."
)
def generate_data_command(out_dir: Path, stores: int, days: int, seed: int, end: str) -> None:
    """Write realistic polls, hours and time zones in the original CSV format."""
    try:
        end_us = report.parse_iso_instant(end)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--end") from exc
    paths = generator.write_dataset(out_dir, stores=stores, days=days, seed=seed, end_us=end_us)
    for path in paths:
        click.echo(str(path))


@click.command("report")
@with_appcontext
@click.option("--as-of", default=None, help="ISO-8601 instant (default: the latest poll).")
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), help="Also copy the CSV here."
)
def report_command(as_of: str | None, out: Path | None) -> None:
    """Compute a report now, with the same job code as the API; print its id and path."""
    init_schema()
    try:
        as_of_us = report.parse_iso_instant(as_of) if as_of else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--as-of") from exc
    report_id = jobs.create_report(as_of_us)
    reports_dir = current_app.config["REPORTS_DIR"]
    jobs.execute_report(report_id, reports_dir)
    row = db.session.get(Report, report_id)
    db.session.refresh(row)
    if row.status != "Complete":
        raise click.ClickException(f"report {report_id} failed: {row.error}")
    path = jobs.report_path(reports_dir, report_id)
    if out:
        out.write_bytes(path.read_bytes())
    click.echo(f"{report_id} {out or path} ({row.row_count} stores)")
