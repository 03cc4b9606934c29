"""Worker heartbeats: each process that runs steps taken from a broker (a Celery worker
process) says it is alive, so any API process can tell whether workers are there without
asking the broker."""

from __future__ import annotations

import os
import socket
from datetime import timedelta

from sqlalchemy import delete, func, insert, select, update

from models import Worker, db, utcnow

# A worker's keeper records a heartbeat at least this often; one seen within WORKER_SEEN_SECONDS
# counts as there; rows of workers gone for a day are deleted.
HEARTBEAT_SECONDS = 20
WORKER_SEEN_SECONDS = 60
WORKER_FORGOTTEN_AFTER = timedelta(days=1)


def record_heartbeat(name: str) -> None:
    """Say that worker `name` (this process) is alive now."""
    now = utcnow()
    seen = db.session.execute(update(Worker).where(Worker.name == name).values(last_seen=now))
    if seen.rowcount == 0:
        db.session.execute(
            insert(Worker).values(
                name=name,
                host=socket.gethostname()[:255],
                pid=os.getpid(),
                started_at=now,
                last_seen=now,
            )
        )
        db.session.execute(delete(Worker).where(Worker.last_seen < now - WORKER_FORGOTTEN_AFTER))
    db.session.commit()


def forget_worker(name: str) -> None:
    """A worker process that stops says so at once (others would only age out)."""
    db.session.execute(delete(Worker).where(Worker.name == name))
    db.session.commit()


def workers_seen() -> int:
    """Worker processes whose heartbeat is at most WORKER_SEEN_SECONDS old."""
    since = utcnow() - timedelta(seconds=WORKER_SEEN_SECONDS)
    count = db.session.scalar(
        select(func.count()).select_from(Worker).where(Worker.last_seen >= since)
    )
    db.session.commit()
    return int(count or 0)
