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
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click


@dataclass(frozen=True)
class Setting:
    kind: type
    default: Any
    minimum: float | None = None
    maximum: float | None = None


MIB = 1024 * 1024
SETTINGS: dict[str, Setting] = {
    "DATABASE_URL": Setting(str, None),  # default: instance/store_monitor.sqlite3
    "REPORTS_DIR": Setting(str, None),  # default: instance/reports
    "API_TOKEN": Setting(str, None),
    # Report jobs
    "REPORT_WORKERS": Setting(int, 2, 1, 256),
    "REPORT_QUEUE": Setting(int, 16, 0, 100_000),
    "REPORT_SHARD_STORES": Setting(int, 4000, 1, 10_000_000),
    "REPORT_MAX_ATTEMPTS": Setting(int, 3, 1, 100),
    "REPORT_DB_RETRIES": Setting(int, 2, 0, 10),
    "REPORT_LEASE_SECONDS": Setting(float, 30.0, 1, 3600),
    "REPORT_REQUEUE_SECONDS": Setting(float, 600.0, 1, 86_400),
    "REPORT_TTL_DAYS": Setting(float, 30.0, 1 / 1440, 36_500),
    "REPORT_MAX_COUNT": Setting(int, 1000, 1, 10_000_000),
    "TRIGGER_LOCK_TIMEOUT_MS": Setting(int, 2000, 0, 60_000),
    "CELERY_BROKER_URL": Setting(str, None),
    "CELERY_CONNECT_TIMEOUT": Setting(float, 3.0, 0.1, 60),
    # HTTP
    "MAX_CONTENT_LENGTH": Setting(int, 16 * 1024, 1024, 1024 * MIB),
    "INGEST_MAX_BYTES": Setting(int, 64 * MIB, 1024, 4096 * MIB),
    "INGEST_LOCK_TIMEOUT_MS": Setting(int, 10_000, 0, 600_000),
    "HOST": Setting(str, "127.0.0.1"),
    "PORT": Setting(int, 5000, 1, 65_535),
    "HTTP_THREADS": Setting(int, 8, 1, 1024),
    "HTTP_CONNECTION_LIMIT": Setting(int, 1000, 1, 100_000),
    "HTTP_HEADER_TIMEOUT": Setting(float, 10.0, 0.1, 3600),
    "HTTP_IDLE_TIMEOUT": Setting(float, 30.0, 0.1, 86_400),
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
    """Typed settings from environment variables that are set and non-empty."""
    settings: dict[str, Any] = {}
    for name, kind in ENVIRONMENT_SETTINGS.items():
        raw = environ.get(name, "").strip()
        if not raw:
            continue
        try:
            settings[name] = kind(raw)
        except ValueError as exc:
            raise SettingsError(
                f"environment variable {name}={raw!r} is not a valid {kind.__name__}"
            ) from exc
    return settings


def validate(config: Mapping[str, Any]) -> None:
    """Refuse values outside each setting's range (and NaN, infinity), naming the setting."""
    for name, setting in SETTINGS.items():
        value = config.get(name)
        if value is None or setting.kind is str:
            continue
        if isinstance(value, float) and not math.isfinite(value):
            raise SettingsError(f"{name}={value!r}: must be a finite number")
        low, high = setting.minimum, setting.maximum
        if (low is not None and value < low) or (high is not None and value > high):
            raise SettingsError(f"{name}={value!r}: must be between {low:g} and {high:g}")


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
