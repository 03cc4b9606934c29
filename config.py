"""Settings: defaults, then environment variables, each checked at start-up.

Only the application factory reads the environment. Every setting is declared once below with
its type, default and allowed range; a bad value stops the service at start-up with a message
that names the setting, the value and what is allowed.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import math
import os
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError


@dataclass(frozen=True)
class Setting:
    """One environment variable: its type, default, allowed range and what it does (the
    README's settings table and `flask --app app --help` show `help`)."""

    kind: type
    default: Any
    minimum: float | None = None
    maximum: float | None = None
    help: str = ""
    shown_default: str | None = None  # how the docs show a default the factory computes


MIB = 1024 * 1024
SQLITE_BUSY_TIMEOUT_MS = 30_000  # how long a SQLite connection waits for the write lock
SETTINGS: dict[str, Setting] = {
    "DATABASE_URL": Setting(
        str,
        None,
        help="SQLAlchemy URL of the database: SQLite (`sqlite:///path/file.sqlite3`) or "
        "MySQL/MariaDB (`mysql+pymysql://user:pass@host:3306/db`)",
        shown_default="sqlite:///instance/store_monitor.sqlite3",
    ),
    "REPORTS_DIR": Setting(
        str,
        None,
        help="where this machine writes report CSVs (a local copy of what the database holds)",
        shown_default="instance/reports",
    ),
    "API_TOKEN": Setting(
        str,
        None,
        help="an admin token: when set, every JSON endpoint but `/healthz` and `/openapi.json` "
        "needs `Authorization: Bearer <token>` (scheme in any letter case) with it or with a "
        "key's token (`flask keys create`; a key also turns authentication on)",
    ),
    "API_KEY_CACHE_SECONDS": Setting(
        int,
        2,
        0,
        5,
        help="how long an API process trusts what it read of a key (`flask keys`); a revoked "
        "key is refused by every process within this many seconds",
    ),
    # Report jobs
    "REPORT_WORKERS": Setting(
        int,
        2,
        1,
        256,
        help="threads per API process running report steps (embedded executor); with "
        "`REPORT_QUEUE`, the number of queued + running reports allowed",
    ),
    "REPORT_QUEUE": Setting(
        int,
        16,
        0,
        100_000,
        help="reports allowed to wait beyond `REPORT_WORKERS`; beyond that, 429",
    ),
    "REPORT_QUEUE_PER_KEY": Setting(
        int,
        4,
        1,
        100_000,
        help="queued + running reports one API key may have; beyond that, 429 for that key "
        "only (the admin `API_TOKEN` is counted only in the total)",
    ),
    "REPORT_SHARD_STORES": Setting(
        int,
        4000,
        1,
        10_000_000,
        help="stores per shard (4000: a worker computing one shard of loop-full stays near "
        "250–300 MB; the embedded server, with two shards at once, under 400 MB)",
    ),
    "REPORT_MAX_ATTEMPTS": Setting(
        int,
        3,
        1,
        100,
        help="tries of a report's start or of one shard before the report is Failed",
    ),
    "REPORT_DB_RETRIES": Setting(
        int,
        2,
        0,
        10,
        help="tries again after a lost database connection within a step, waiting 1, 2, 4… s",
    ),
    "REPORT_LEASE_SECONDS": Setting(
        float,
        30.0,
        1,
        3600,
        help="lease of a process on the rows it works on; renewed every third of it",
    ),
    "REPORT_REQUEUE_SECONDS": Setting(
        float,
        600.0,
        1,
        86_400,
        help="a step waiting in the broker longer than this is sent again; one the broker did "
        "not take, at the next keeper round",
    ),
    "REPORT_TTL_DAYS": Setting(
        float,
        30.0,
        1 / 1440,
        36_500,
        help="finished reports older than this are removed with their files (at start-up and "
        "after each report)",
    ),
    "REPORT_MAX_COUNT": Setting(
        int,
        1000,
        1,
        10_000_000,
        help="at most this many finished reports are kept; the oldest go first",
    ),
    "TRIGGER_LOCK_TIMEOUT_MS": Setting(
        int,
        2000,
        0,
        60_000,
        help="on SQLite, how long a trigger waits for the write lock (a load, report steps, "
        "other triggers hold it) before answering 503",
    ),
    "CELERY_BROKER_URL": Setting(
        str,
        None,
        help="unset: the embedded executor (threads of each API process); set (AMQP or Redis "
        "URL): API processes enqueue, `flask --app app worker` processes run the steps",
    ),
    "CELERY_CONNECT_TIMEOUT": Setting(
        float,
        3.0,
        0.1,
        60,
        help="seconds a step's send to the broker may take, tries included, before a trigger "
        "answers 503",
    ),
    # Alerts
    "ALERT_ALLOW_PRIVATE_URLS": Setting(
        int,
        0,
        0,
        1,
        help="1: webhooks may call private, loopback and link-local addresses (a local "
        "receiver, tests); 0: such URLs are refused when a rule is created and when it is sent",
    ),
    # HTTP
    "MAX_CONTENT_LENGTH": Setting(
        int,
        16 * 1024,
        1024,
        1024 * MIB,
        help="largest body of any request but an upload, in bytes (413)",
    ),
    "INGEST_MAX_BYTES": Setting(
        int,
        64 * MIB,
        1024,
        4096 * MIB,
        help="largest body of an upload in bytes, also after decompression (413)",
        shown_default="67108864 (64 MiB)",
    ),
    "INGEST_LOCK_TIMEOUT_MS": Setting(
        int,
        10_000,
        0,
        600_000,
        help="how long an upload waits for another load's lock before answering 503",
    ),
    "POLLS_COMPACT_SECONDS": Setting(
        float,
        3600.0,
        0,
        31_536_000,
        help="MariaDB: after a load, the polls table is rebuilt online (`ALTER TABLE polls "
        "FORCE`) when appends left its pages over 1.25x what its rows need, at most once in "
        "this many seconds",
    ),
    "HOST": Setting(str, "127.0.0.1", help="address `python app.py` listens on"),
    "PORT": Setting(int, 5000, 1, 65_535, help="port `python app.py` listens on"),
    "HTTP_THREADS": Setting(
        int, 8, 1, 1024, help="threads of `python app.py` (waitress) answering requests"
    ),
    # waitress counts its own sockets (a listening socket and a wake-up pipe per address) and
    # the places shedding keeps free within the limit: below 16 a server may never answer.
    "HTTP_CONNECTION_LIMIT": Setting(
        int,
        1000,
        16,
        100_000,
        help="open connections of `python app.py`, its own two per address included; near it, "
        "the connections whose clients keep it waiting longest are closed",
    ),
    "HTTP_HEADER_TIMEOUT": Setting(
        float,
        10.0,
        0.1,
        3600,
        help="seconds a client has to finish a request's headers, from its first byte (or "
        "from connecting, if it sends nothing); then the connection is closed. Near the "
        "connection limit, also the grace of a request's body (then at least 16 KiB/s) and of "
        "an answer its client does not read",
    ),
    "HTTP_IDLE_TIMEOUT": Setting(
        float,
        30.0,
        0.1,
        86_400,
        help="seconds a keep-alive connection may wait for its next request, or an answer for "
        "its client to read it",
    ),
}
ENVIRONMENT_SETTINGS = {name: setting.kind for name, setting in SETTINGS.items()}


class SettingsError(click.ClickException):
    """A setting has a value the service cannot run with (a click exception, so `flask ...`
    commands print it as one line, without a traceback)."""


def defaults(instance_path: str) -> dict[str, Any]:
    """Embedded SQLite under instance/, reports beside it: nothing to set up to try it."""
    instance = Path(instance_path)
    values = {name: setting.default for name, setting in SETTINGS.items()}
    values["DATABASE_URL"] = f"sqlite:///{instance / 'store_monitor.sqlite3'}"
    values["REPORTS_DIR"] = str(instance / "reports")
    values["REPORTS_INLINE"] = False  # tests: run jobs in the calling thread
    values["START_BACKGROUND"] = True  # tests: no lease keeper thread unless asked for
    return values


def from_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    """Typed settings from environment variables that are set and non-empty.

    A variable set to blanks only is refused: for API_TOKEN it would turn authentication off
    without a word.
    """
    settings: dict[str, Any] = {}
    for name, kind in ENVIRONMENT_SETTINGS.items():
        value = environ.get(name, "")
        raw = value.strip()
        if not raw:
            if value:
                raise SettingsError(
                    f"environment variable {name} is blank: unset it or set a value"
                )
            continue
        try:
            settings[name] = kind(raw)
        except ValueError as exc:
            raise SettingsError(
                f"environment variable {name}={raw!r} is not a valid {kind.__name__}"
            ) from exc
    return settings


def validate(config: Mapping[str, Any]) -> None:
    """Refuse values outside each setting's range (and NaN, infinity), naming the setting;
    a blank API_TOKEN; a DATABASE_URL that names no database the service runs on."""
    for name, setting in SETTINGS.items():
        value = config.get(name)
        if value is None or setting.kind is str:
            continue
        if isinstance(value, float) and not math.isfinite(value):
            raise SettingsError(f"{name}={value!r}: must be a finite number")
        low, high = setting.minimum, setting.maximum
        if (low is not None and value < low) or (high is not None and value > high):
            raise SettingsError(f"{name}={value!r}: must be between {low:g} and {high:g}")
    token = config.get("API_TOKEN")
    if token is not None and not token.strip():
        raise SettingsError("API_TOKEN is blank: unset it, or set a token")
    check_database_url(config["DATABASE_URL"])


DATABASE_EXAMPLES = "sqlite:///path/file.sqlite3 or mysql+pymysql://user:pass@host:3306/db"


def check_database_url(database_url: str) -> None:
    """Refuse a URL that does not parse, names an engine other than SQLite and MySQL/MariaDB,
    or a driver that is not installed (the URL is shown without its password)."""
    try:
        url = make_url(database_url)
    except ArgumentError:  # the value is not shown: it may hold a password
        raise SettingsError(f"DATABASE_URL is not a database URL ({DATABASE_EXAMPLES})") from None
    shown = url.render_as_string(hide_password=True)
    if url.get_backend_name() not in ("sqlite", "mysql"):
        raise SettingsError(
            f"DATABASE_URL={shown}: Store Monitor runs on SQLite or MySQL/MariaDB "
            f"({DATABASE_EXAMPLES})"
        )
    try:
        url.get_dialect().import_dbapi()
    except (NoSuchModuleError, ImportError) as exc:
        raise SettingsError(f"DATABASE_URL={shown}: no such driver installed ({exc})") from None


@contextlib.contextmanager
def connection_errors_named(database_url: str) -> Iterator[None]:
    """Turn a failure to connect to the database into a SettingsError naming DATABASE_URL.

    A failure to connect carries no SQL statement; an error of a statement goes on as it is.
    """
    try:
        yield
    except DBAPIError as exc:
        if exc.statement is not None:
            raise
        shown = make_url(database_url).render_as_string(hide_password=True)
        reason = " ".join(str(exc.orig).split())  # one line
        raise SettingsError(f"DATABASE_URL={shown}: cannot connect: {reason}") from exc


def prepare_reports_dir(path: str) -> None:
    """Create REPORTS_DIR if it is missing; refuse one that cannot be made or written to."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise SettingsError(
            f"REPORTS_DIR={path!r} is not a usable directory: {exc.strerror}"
        ) from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise SettingsError(f"REPORTS_DIR={path!r} is not writable by this process")


# --------------------------------------------------------------------------- docs

README_MARKERS = ("<!-- settings:start -->", "<!-- settings:end -->")


def shown_default(setting: Setting) -> str | None:
    """The default as the docs show it; None when unset."""
    if setting.shown_default is not None:
        return setting.shown_default
    if setting.default is None:
        return None
    if isinstance(setting.default, float):
        return f"{setting.default:g}"
    return str(setting.default)


def settings_table() -> str:
    """The README's settings table (Markdown), one row per setting."""
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    for name, setting in SETTINGS.items():
        default = shown_default(setting)
        shown = "unset" if default is None else f"`{default}`"
        lines.append(f"| `{name}` | {shown} | {setting.help} |")
    return "\n".join(lines) + "\n"


def with_settings_table(readme: str) -> str:
    """`readme` with settings_table() between its settings markers."""
    start, end = README_MARKERS
    head, found_start, rest = readme.partition(start + "\n")
    _, found_end, tail = rest.partition(end)
    if not (found_start and found_end):
        raise ValueError(f"no {start} ... {end} block to hold the settings table")
    return head + start + "\n" + settings_table() + end + tail


def main(paths: list[str]) -> None:
    """`python -m config README.md`: rewrite the settings table in each file (without a file:
    print it)."""
    if not paths:
        print(settings_table(), end="")
    for name in paths:
        path = Path(name)
        text = path.read_text(encoding="utf-8")
        updated = with_settings_table(text)
        if updated != text:
            path.write_text(updated, encoding="utf-8")
            print(f"{name}: settings table updated")


# --------------------------------------------------------------------------- the engine


def engine_options(database_url: str) -> dict[str, Any]:
    """Driver options: utf8mb4 and live connections on MySQL; a lock timeout on SQLite."""
    if database_url.startswith("mysql"):
        # No LOAD DATA LOCAL here: a server may ask such a connection for any file. Loads
        # open connections of their own that allow it (loader.loading_engine).
        return {
            "pool_pre_ping": True,
            "pool_recycle": 3600,
            "connect_args": {"charset": "utf8mb4"},
        }
    if database_url.startswith("sqlite"):
        return {"connect_args": {"timeout": 30, "check_same_thread": False}}
    return {}


def configure_logging() -> None:
    """A serving or working process logs INFO and up with a time stamp and its pid (no-op if
    logging is already set up)."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"
    )


M_ARENA_MAX = -8  # glibc's mallopt parameter


def limit_malloc_arenas(arenas: int = 2) -> None:
    """Cap glibc's malloc arenas for this process.

    glibc gives threads arenas of their own (up to eight per core) and keeps freed memory in
    them: with report threads beside request threads, a server's peak RSS on loop-full was
    ~400 MB with the default and ~350 MB with two arenas, at no measurable cost in speed.
    Elsewhere than glibc this does nothing.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").mallopt(M_ARENA_MAX, arenas)


def environment() -> Mapping[str, str]:
    return os.environ


if __name__ == "__main__":
    main(sys.argv[1:])
