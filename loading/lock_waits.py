"""Bounded waits for the database's write lock, for loads and triggers.

On SQLite a load holds the only write lock for its whole transaction; a request must not wait
for it as long as a background job may. These set, for one connection's transaction, how long
to wait, and put the connection back as it was.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine


class LockWaitTimeout(Exception):
    """The write lock was not had within the time allowed."""


_WRITERS: dict[str, threading.Lock] = {}
_WRITERS_LOCK = threading.Lock()


@contextmanager
def writers_in_turn(engine: Engine, lock_wait_ms: int | None) -> Iterator[None]:
    """On SQLite, loads of one process queue on a lock of their own before the database's.

    SQLite lets a waiting writer poll with growing sleeps, so under concurrent uploads some
    wait far longer than others; a process lock hands over at once. Other engines queue
    fairly on their own row lock.
    """
    if engine.dialect.name != "sqlite":
        yield
        return
    with _WRITERS_LOCK:
        lock = _WRITERS.setdefault(str(engine.url), threading.Lock())
    timeout = -1 if lock_wait_ms is None else lock_wait_ms / 1000
    if not lock.acquire(timeout=timeout):
        raise LockWaitTimeout("another writer of this process held the lock too long")
    try:
        yield
    finally:
        lock.release()


@contextmanager
def bounded_lock_wait(conn: Connection, milliseconds: int | None) -> Iterator[None]:
    """Wait at most this long for another writer's lock, on this connection (SQLite's busy
    timeout, MariaDB's lock wait timeout), then put the connection's own setting back: it
    returns to a pool others use."""
    if milliseconds is None:
        yield
        return
    if conn.dialect.name == "sqlite":
        previous = conn.exec_driver_sql("PRAGMA busy_timeout").scalar()
        setting, restore = (
            f"PRAGMA busy_timeout = {int(milliseconds)}",
            f"PRAGMA busy_timeout = {previous}",
        )
    else:
        seconds = max(1, -(-int(milliseconds) // 1000))
        setting = f"SET SESSION innodb_lock_wait_timeout = {seconds}"
        restore = "SET SESSION innodb_lock_wait_timeout = DEFAULT"
    conn.exec_driver_sql(setting)
    conn.commit()
    try:
        yield
    finally:
        if conn.in_transaction():
            conn.rollback()
        conn.exec_driver_sql(restore)
        conn.commit()
