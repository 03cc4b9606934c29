"""Settings: defaults, then environment variables. Only the application factory reads them."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ENVIRONMENT_SETTINGS: dict[str, type] = {
    "DATABASE_URL": str,
    "REPORTS_DIR": str,
    "REPORT_WORKERS": int,
    "REPORT_QUEUE": int,
    "REPORT_TTL_DAYS": float,
    "API_TOKEN": str,
    "MAX_CONTENT_LENGTH": int,
    "HOST": str,
    "PORT": int,
    "HTTP_THREADS": int,
    "HTTP_CONNECTION_LIMIT": int,
    "INGEST_MAX_BYTES": int,
    "HTTP_HEADER_TIMEOUT": int,
    "HTTP_IDLE_TIMEOUT": int,
}


def defaults(instance_path: str) -> dict[str, Any]:
    """Embedded SQLite under instance/, reports beside it: nothing to set up to try it."""
    instance = Path(instance_path)
    return {
        "DATABASE_URL": f"sqlite:///{instance / 'store_monitor.sqlite3'}",
        "REPORTS_DIR": str(instance / "reports"),
        "REPORT_WORKERS": 2,
        "REPORT_QUEUE": 16,
        "REPORT_TTL_DAYS": 30.0,
        "API_TOKEN": None,
        "MAX_CONTENT_LENGTH": 16 * 1024,
        "REPORTS_INLINE": False,  # tests: run jobs in the request thread
        "HOST": "127.0.0.1",
        "PORT": 5000,
        "HTTP_THREADS": 8,
        "HTTP_CONNECTION_LIMIT": 1000,  # open client connections (waitress' default is 100)
        "INGEST_MAX_BYTES": 64 * 1024 * 1024,  # largest body of a data upload
        "HTTP_HEADER_TIMEOUT": 10,  # seconds to send a request's headers
        "HTTP_IDLE_TIMEOUT": 30,  # seconds a keep-alive connection may wait between requests
    }


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
            raise ValueError(
                f"environment variable {name}={raw!r} is not a valid {kind.__name__}"
            ) from exc
    return settings


def engine_options(database_url: str) -> dict[str, Any]:
    """Driver options: LOAD DATA LOCAL and utf8mb4 on MySQL; a lock timeout on SQLite."""
    if database_url.startswith("mysql"):
        return {
            "pool_pre_ping": True,
            "pool_recycle": 3600,
            "connect_args": {"local_infile": True, "charset": "utf8mb4"},
        }
    if database_url.startswith("sqlite"):
        return {"connect_args": {"timeout": 30, "check_same_thread": False}}
    return {}


def environment() -> Mapping[str, str]:
    return os.environ
