"""Command line: `flask --app app init-db | load-data | generate-data | report | worker | keys`.

Thin doors into the same code the service uses: `loader.load`, `jobs.steps.submit_report`; `worker`
runs Celery workers for the same job steps.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from flask import Flask, current_app
from flask.cli import AppGroup, ScriptInfo, with_appcontext

import config
import loader
import report
from engine import timestamps
from jobs import results, steps
from jobs.errors import QueueFull, ServiceBusy
from jobs.executors import InlineExecutor
from jobs.leases import LeaseKeeper
from jobs.options import ReportRequest
from loading import generator
from models import KeyRole, LoadBatch, Report, ReportStatus, db, init_schema
from web import keys

ABOUT = """Store Monitor: how long each store was up and down during its business hours over
the last hour, day and week, from sparse polls. `python app.py` serves the API and the web page;
these commands set up the database, load data and compute reports with the same code."""
SETTINGS_INTRO = """Settings come from environment variables (unset or empty: the default); one the
service cannot run with stops a command, or the server, with a one-line message naming it:"""


def register(app: Flask) -> None:
    """Give the app its commands, in a group that describes the service (see ServiceCommands)."""
    commands = ServiceCommands(app.name, commands=app.cli.commands)  # blueprints' ones too
    for command in COMMANDS:
        commands.add_command(command)
    app.cli = commands


class ServiceCommands(AppGroup):
    """The app's commands.

    `flask --app app --help` is the help of Flask's own group, whose text is generic and
    printed before the app is loaded. The app is loaded to list these commands, before that
    group's epilog is printed: listing them gives it an epilog that says what the service is
    and which settings it reads.
    """

    def list_commands(self, ctx: click.Context) -> list[str]:
        ctx.command.epilog = overview()
        return super().list_commands(ctx)


def overview() -> str:
    """What the service is and its settings, each with its default (from config.SETTINGS)."""
    name_width = max(map(len, config.SETTINGS)) + 2
    help_width = 76 - name_width  # Click indents an epilog by 2 of its 78 columns
    lines = []
    for name, setting in config.SETTINGS.items():
        default = config.shown_default(setting)
        text = setting.help.replace("`", "") + (f" [default: {default}]" if default else "")
        wrapped = textwrap.wrap(text, help_width) or [""]
        lines.append(name.ljust(name_width) + wrapped[0])
        lines.extend(" " * name_width + line for line in wrapped[1:])
    # "\b": Click keeps that paragraph's lines as they are
    return "\n\n".join([ABOUT, SETTINGS_INTRO, "\b\n" + "\n".join(lines)])


class ServiceCommand(click.Command):
    """A command whose failure to connect to the database is one line naming DATABASE_URL."""

    def invoke(self, ctx: click.Context) -> Any:
        app = ctx.ensure_object(ScriptInfo).load_app()
        with config.connection_errors_named(app.config["DATABASE_URL"]):
            return super().invoke(ctx)


@click.command("init-db", cls=ServiceCommand)
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


INPUT_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)
FOUND_IN_FOLDER = "in FOLDER"


@click.command(
    "load-data", cls=ServiceCommand, short_help="Load polls, hours, time zones and closures."
)
@with_appcontext
@click.argument(
    "folder", required=False, type=click.Path(exists=True, file_okay=False, path_type=Path)
)
@click.option("--polls", type=INPUT_FILE, show_default=FOUND_IN_FOLDER, help="Polls CSV.")
@click.option("--hours", type=INPUT_FILE, show_default=FOUND_IN_FOLDER, help="Business hours CSV.")
@click.option("--timezones", type=INPUT_FILE, show_default=FOUND_IN_FOLDER, help="Time zones CSV.")
@click.option(
    "--closures",
    type=INPUT_FILE,
    show_default=FOUND_IN_FOLDER,
    help="Closures CSV (store_id,start_local,end_local).",
)
@click.option(
    "--groups",
    type=INPUT_FILE,
    show_default=FOUND_IN_FOLDER,
    help="Store groups CSV (group_id,store_id).",
)
@click.option(
    "--skip-invalid", is_flag=True, help="Load valid rows; write the others to *.rejects.csv."
)
@click.option("--if-empty", is_flag=True, help="Do nothing if the database already holds polls.")
def load_data_command(
    folder, polls, hours, timezones, closures, groups, skip_invalid, if_empty
) -> None:
    """Load a folder of CSVs (polls, hours, time zones, closures, store groups; .csv or .csv.gz)
    in one transaction."""
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
            groups=groups,
            skip_invalid=skip_invalid,
            progress=progress,
            compact_every_seconds=current_app.config["POLLS_COMPACT_SECONDS"],
        )
    except loader.LoadError as exc:
        if progress:
            click.echo(err=True)
        raise click.ClickException(f"load failed, database unchanged:\n{exc}") from exc
    if progress:
        click.echo(err=True)
    click.echo(str(summary))
    click.echo(
        "incidents and alerts: evaluated by the serving processes (at start-up, or within "
        f"{current_app.config['REPORT_LEASE_SECONDS'] / 3:g} s while they run)"
    )


@click.command(
    "generate-data", cls=ServiceCommand, short_help="Write a realistic data set of CSVs."
)
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
        end_us = timestamps.parse_iso_instant(end)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--end") from exc
    paths = generator.write_dataset(out_dir, stores=stores, days=days, seed=seed, end_us=end_us)
    for path in paths:
        click.echo(str(path))


def option_parser(parse: Callable[[str], int]) -> Callable[..., int | None]:
    """A click callback: `parse` the option's text; a ValueError is a usage error (exit 2)."""

    def callback(_ctx, _param, value: str | None) -> int | None:
        if value is None:
            return None
        try:
            return parse(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from exc

    return callback


parse_stale_after = option_parser(timestamps.parse_duration)
parse_as_of = option_parser(timestamps.parse_iso_instant)


@click.command("report", cls=ServiceCommand, short_help="Compute a report now; print its id.")
@with_appcontext
@click.option(
    "--as-of", callback=parse_as_of, show_default="the latest poll", help="ISO-8601 instant."
)
@click.option(
    "--stale-after",
    callback=parse_stale_after,
    show_default="none: no unknown time",
    help="Count time farther than this from any poll as unknown (90s, 30m, 2h, 1d, PT2H).",
)
@click.option("--outages", is_flag=True, help="Add outage counts and the longest outage.")
@click.option(
    "--group",
    "groups",
    multiple=True,
    callback=lambda _ctx, _param, value: tuple(value) or None,
    show_default="every store",
    help="Cover only this group's stores (repeat for several).",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    show_default="none: only REPORTS_DIR",
    help="Also copy the CSV here.",
)
def report_command(
    as_of: int | None,
    stale_after: int | None,
    outages: bool,
    groups: tuple[str, ...] | None,
    out: Path | None,
) -> None:
    """Compute a report now, with the same job code as the API; print its id and path."""
    init_schema()
    request = ReportRequest(as_of, report.ReportOptions(stale_after, outages), groups)
    keeper = LeaseKeeper(current_app._get_current_object(), sweep=False)
    keeper.start()  # renews this command's leases, so no server or worker takes its shards
    try:
        report_id = steps.submit_report(request, InlineExecutor())
    except (QueueFull, ServiceBusy) as exc:
        raise click.ClickException(f"cannot start a report now: {exc}") from exc
    finally:
        keeper.stop()
    row = db.session.get(Report, report_id, populate_existing=True)
    if row.status != ReportStatus.COMPLETE:
        raise click.ClickException(f"report {report_id} failed: {row.error}")
    try:
        path = results.local_csv(row)
    except OSError as exc:  # REPORTS_DIR cannot be written: the table is in the database
        if not out:
            raise click.ClickException(
                f"report {report_id} is complete, but its CSV could not be written ({exc}); "
                "give --out, or fetch it from the API"
            ) from exc
        out.write_bytes(results.csv_bytes(results.finished_table(row)))
        click.echo(f"{report_id} {out} ({row.row_count} stores)")
        return
    if out:
        out.write_bytes(path.read_bytes())
    click.echo(f"{report_id} {out or path} ({row.row_count} stores)")


@click.command("worker", cls=ServiceCommand, short_help="Run a Celery worker for report jobs.")
@with_appcontext
@click.option(
    "--concurrency",
    type=click.IntRange(1, 256),
    default=None,
    show_default="one per CPU",
    help="Processes.",
)
@click.option("--loglevel", default="INFO", show_default=True)
def worker_command(concurrency: int | None, loglevel: str) -> None:
    """Run a Celery worker for report jobs (needs CELERY_BROKER_URL)."""
    celery_app = current_app.extensions.get("celery")
    if celery_app is None:
        raise click.UsageError("set CELERY_BROKER_URL (an AMQP or Redis URL) to run workers")
    init_schema()
    config.configure_logging()
    # Each worker process needs a node name of its own on the broker.
    name = f"store-monitor-{os.getpid()}@%h"
    arguments = [
        "worker",
        f"--hostname={name}",
        f"--loglevel={loglevel}",
        "--prefetch-multiplier=1",
        "--without-mingle",
    ]
    if concurrency:
        arguments.append(f"--concurrency={concurrency}")
    celery_app.worker_main(arguments)


@click.group("keys", cls=AppGroup, short_help="Create, list and revoke API keys.")
def keys_group() -> None:
    """API keys: an admin does everything; a reader sees its groups' reports and stores; a
    poller only pushes data. Once a key exists, every API request needs one (or API_TOKEN)."""


@keys_group.command("create", cls=ServiceCommand, short_help="Create a key; print its token once.")
@with_appcontext
@click.argument("name")
@click.option(
    "--role", required=True, type=click.Choice([str(role) for role in KeyRole]), help="Its role."
)
@click.option("--group", "groups", multiple=True, help="A reader's group (repeat for several).")
def keys_create_command(name: str, role: str, groups: tuple[str, ...]) -> None:
    """Create a key; its token is printed alone on the last line, this once only."""
    init_schema()
    try:
        token = keys.create_key(name, KeyRole(role), groups)
    except keys.KeyRefused as exc:
        raise click.ClickException(str(exc)) from exc
    scope = f" of {', '.join(sorted(set(groups)))}" if groups else ""
    click.echo(f"key {name!r} created: {role}{scope}. Its token (shown this once only):")
    click.echo(token)


@keys_group.command("list", cls=ServiceCommand, short_help="List the keys (never a token).")
@with_appcontext
def keys_list_command() -> None:
    """Name, role, groups, created, last used and revoked of every key (never a token)."""
    init_schema()
    click.echo("name\trole\tgroups\tcreated\tlast_used\trevoked")
    for key in keys.list_keys():
        groups = ",".join(json.loads(key.groups)) or "-"
        moments = [key.created_at, key.last_used_at, key.revoked_at]
        shown = [
            moment.isoformat(timespec="seconds") + "Z" if moment else "-" for moment in moments
        ]
        click.echo("\t".join([key.name, key.role, groups, *shown]))


@keys_group.command("revoke", cls=ServiceCommand, short_help="Revoke a key.")
@with_appcontext
@click.argument("name")
def keys_revoke_command(name: str) -> None:
    """Revoke a key: every API process refuses it within API_KEY_CACHE_SECONDS."""
    init_schema()
    try:
        keys.revoke_key(name)
    except keys.KeyRefused as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"key {name!r} revoked")


COMMANDS = (
    init_db_command,
    load_data_command,
    generate_data_command,
    report_command,
    worker_command,
    keys_group,
)
