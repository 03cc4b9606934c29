"""Helpers of the loader tests: write inputs, load them into the app's database, read back."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import event, text

import loader
from models import db

TABLES = [
    "stores",
    "polls",
    "business_hours",
    "store_timezones",
    "closures",
    "store_groups",
    "load_batches",
    "data_state",
]
POLL_HEADER = "store_id,status,timestamp_utc\n"
HOURS_HEADER = "store_id,day,start_time_local,end_time_local\n"
CLOSURES_HEADER = "store_id,start_local,end_local\n"
GOOD_POLL = "11,active,2023-01-22 12:09:39.388884 UTC\n"


def contents(app) -> dict[str, list]:
    """Every row of every data table, sorted: to prove a failed load changed nothing."""
    with app.app_context(), db.engine.connect() as conn:
        cursor = conn.connection.cursor()  # plain DB-API rows: tens of thousands, read fast
        try:
            return {name: sorted(_all_rows(cursor, name), key=repr) for name in TABLES}
        finally:
            cursor.close()


def _all_rows(cursor, table: str) -> list[tuple]:
    cursor.execute(f"SELECT * FROM {table}")
    return [tuple(row) for row in cursor.fetchall()]


def write(path: Path, content: str | bytes) -> Path:
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def load(app, *args, **kwargs) -> loader.LoadSummary:
    with app.app_context():
        return loader.load(db.engine, *args, **kwargs)


def scalar(app, sql: str, **params):
    with app.app_context(), db.engine.connect() as conn:
        return conn.execute(text(sql), params).scalar()


def rows(app, sql: str, **params) -> list[tuple]:
    with app.app_context(), db.engine.connect() as conn:
        return [tuple(row) for row in conn.execute(text(sql), params).all()]


def short_lock_wait(engine) -> None:
    """Make new connections give up waiting for a lock after a fraction of a second."""

    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection, _record) -> None:
        cursor = dbapi_connection.cursor()
        if engine.dialect.name == "sqlite":
            cursor.execute("PRAGMA busy_timeout=200")
        else:
            cursor.execute("SET SESSION innodb_lock_wait_timeout=1")
        cursor.close()

    engine.dispose()
