"""Keep MariaDB's `polls` table packed while hourly uploads append to it.

A load writes its polls in key order, but an upload adds a poll to the end of each store's key
range, in the middle of the table's B-tree: pages split, half full, and the table grows past
the buffer pool while its rows barely do. After a committed load, `compact_polls_if_bloated`
compares the table's data pages with what its rows take in a freshly rebuilt table and, beyond
BLOAT_LIMIT, rebuilds it online (`ALTER TABLE polls FORCE`: reads and writes go on meanwhile).
One process at a time (a named server lock), at most once per `every_seconds` (the table's
`create_time` is the time of its last rebuild). SQLite needs none of this: nothing is done.

The sizes are InnoDB's statistics (`information_schema.tables`), refreshed by the server when
about a tenth of the rows have changed, so a table is compacted at that pace at the soonest.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, text

logger = logging.getLogger(__name__)

# Data bytes per poll in a freshly rebuilt table: loop-full's 1,956,570 polls take 75,104,256
# bytes of pages (38.4 each) after `OPTIMIZE TABLE`.
POLL_ROW_BYTES = 38.4
BLOAT_LIMIT = 1.25
# Below this a table fits the smallest buffer pool whatever its shape: not worth a rebuild.
MIN_COMPACTED_BYTES = 16 * 2**20
LOCK_NAME = "store_monitor.polls_compaction"

TABLE_SIZE = text(
    "SELECT data_length, TIMESTAMPDIFF(SECOND, create_time, NOW()) "
    "FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = 'polls'"
)
POLLS_STORED = text("SELECT COALESCE(SUM(polls_loaded), 0) FROM load_batches")


@dataclass(frozen=True)
class Compaction:
    """What a rebuild did: the table's data pages before and after, in bytes, and its time."""

    polls: int
    bytes_before: int
    bytes_after: int
    seconds: float

    def __str__(self) -> str:
        return (
            f"polls table compacted (ALTER TABLE polls FORCE, {self.polls} polls): "
            f"{self.bytes_before / 2**20:.1f} MB -> {self.bytes_after / 2**20:.1f} MB of data "
            f"pages in {self.seconds:.1f} s"
        )


def compact_polls_if_bloated(
    engine: Engine, every_seconds: float, bloat_limit: float | None = None
) -> Compaction | None:
    """Rebuild MariaDB's polls table if its pages exceed `bloat_limit` × what its rows need
    and its last rebuild is at least `every_seconds` old; return what was done, if anything.

    Another process compacting means nothing to do here: the lock is tried, never waited for.
    `bloat_limit` defaults to BLOAT_LIMIT.
    """
    if engine.dialect.name != "mysql":
        return None
    limit = BLOAT_LIMIT if bloat_limit is None else bloat_limit
    with engine.connect() as conn:
        if not conn.scalar(text("SELECT GET_LOCK(:name, 0)"), {"name": LOCK_NAME}):
            logger.info("polls table: another process is compacting it")
            return None
        try:
            if not _is_due(conn, every_seconds, limit):
                return None
            return _rebuild(conn)
        finally:
            conn.execute(text("SELECT RELEASE_LOCK(:name)"), {"name": LOCK_NAME})
            conn.commit()


def _is_due(conn: Connection, every_seconds: float, bloat_limit: float) -> bool:
    """Whether the last rebuild is old enough and the pages exceed the limit. The page count
    is InnoDB's statistic, which the server refreshes in the background once a tenth of the
    rows changed: it is refreshed here first (sampled, quick), so that whether a bloated table
    is rebuilt does not depend on when the server got round to it."""
    _, age_seconds = conn.execute(TABLE_SIZE).one()
    if age_seconds is not None and age_seconds < every_seconds:
        logger.info(
            "polls table: last rebuilt %d s ago, next rebuild after %d s (POLLS_COMPACT_SECONDS)",
            age_seconds,
            every_seconds,
        )
        return False
    conn.execute(text("ANALYZE TABLE polls")).all()
    data_bytes, _ = conn.execute(TABLE_SIZE).one()
    needed = int(conn.scalar(POLLS_STORED)) * POLL_ROW_BYTES
    return data_bytes > max(needed * bloat_limit, MIN_COMPACTED_BYTES)


def _rebuild(conn: Connection) -> Compaction:
    """Rebuild the table online (concurrent reads and writes go on) and say what it did."""
    before = int(conn.execute(TABLE_SIZE).one()[0])
    polls = int(conn.scalar(POLLS_STORED))
    started = time.perf_counter()
    conn.execute(text("ALTER TABLE polls FORCE, ALGORITHM=INPLACE, LOCK=NONE"))
    seconds = time.perf_counter() - started
    after = int(conn.execute(TABLE_SIZE).one()[0])
    done = Compaction(polls, before, after, seconds)
    logger.info("%s", done)
    return done
