"""Which database errors are worth trying again, and a step's retries; what a client is told.

A lock in the way (a deadlock, a lock wait timeout, SQLite's "database is locked") is tried
again soon; a lost or refused connection again on a new connection, a few times, waiting
longer each time; anything else goes through at once. The log keeps the details of a failure,
the client gets a short reason without SQL or server paths.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import Any

from flask import current_app
from sqlalchemy.exc import DBAPIError, OperationalError

from models import db

logger = logging.getLogger(__name__)

# MySQL/MariaDB codes worth trying again: a lock wait timeout or a deadlock (another
# transaction was in the way: try again at once), and a lost or refused connection (wait, open
# a new one). SQLite says "database is locked".
LOCK_CODES = {1205, 1213}
CONNECTION_CODES = {2002, 2003, 2006, 2013, 2055}
LOCK_RETRIES = 6


def transient_kind(exc: Exception) -> str | None:
    """ "lock", "connection" or None (not worth trying again)."""
    if not isinstance(exc, DBAPIError):
        return None
    if exc.connection_invalidated:
        return "connection"
    code = (getattr(exc.orig, "args", None) or [None])[0]
    if code in LOCK_CODES or (isinstance(exc, OperationalError) and "locked" in str(exc.orig)):
        return "lock"
    return "connection" if code in CONNECTION_CODES else None


def with_database_retries(step: Callable[[], Any], report_id: str) -> Any:
    """Run a step; when a lock was in the way try again soon (up to LOCK_RETRIES times), when the
    connection was lost try again on a new one (REPORT_DB_RETRIES times, waiting 1, 2, 4… s);
    then let the error through."""
    tries = {"lock": 0, "connection": 0}
    limits = {"lock": LOCK_RETRIES, "connection": current_app.config["REPORT_DB_RETRIES"]}
    while True:
        try:
            return step()
        except Exception as exc:
            db.session.rollback()
            kind = transient_kind(exc)
            if kind is None or tries[kind] >= limits[kind]:
                raise
            tries[kind] += 1
            logger.warning(
                "report %s: database %s error, try %d of %d: %s",
                report_id,
                kind,
                tries[kind],
                limits[kind],
                short_reason(exc),
            )
            if kind == "connection":
                db.engine.dispose()  # drop pooled connections that may be dead too
                time.sleep(min(2 ** (tries[kind] - 1), 8))
            else:
                time.sleep(0.05 * 2 ** tries[kind] * (1 + random.random()))


def short_reason(exc: Exception) -> str:
    """What the client is told: no SQL text, no server paths (the log keeps the details)."""
    if isinstance(exc, DBAPIError):
        code = getattr(exc.orig, "args", [None])[0]
        return f"the database failed ({type(exc.orig).__name__}{f' {code}' if code else ''})"
    if isinstance(exc, MemoryError):
        return "out of memory"
    if isinstance(exc, OSError):
        return "could not write the report file"
    return f"internal error ({type(exc).__name__})"
