"""Database schema: stores, polls, business hours, time zones, loads and reports.

One schema for SQLite and MySQL/MariaDB. External store ids (64-bit integers or UUIDs, at most
64 characters) live only in `stores`; the big `polls` table uses a compact integer key.
Instants are int64 microseconds since the Unix epoch (UTC): exact, zone-free, fast to read.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import ClassVar

from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import BigInteger, Boolean, DateTime, Float, Integer, SmallInteger, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

STORE_ID_MAX_LENGTH = 64
TIMEZONE_MAX_LENGTH = 64


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)


def utcnow() -> datetime:
    """Naive UTC now: DATETIME columns hold UTC without a zone on both engines."""
    return datetime.now(UTC).replace(tzinfo=None)


class Store(db.Model):
    """A store's external id and the compact key the other tables use."""

    __tablename__ = "stores"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    external_id: Mapped[str] = mapped_column(String(STORE_ID_MAX_LENGTH), unique=True)


class Poll(db.Model):
    """One observation. The primary key (store, instant) dedups appends and serves the report's
    per-store time-range reads; `batch` is the load that wrote it (the read watermark)."""

    __tablename__ = "polls"
    __table_args__: ClassVar[dict] = {"sqlite_with_rowid": False}
    store_key: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    ts_us: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    active: Mapped[bool] = mapped_column(Boolean)
    batch: Mapped[int] = mapped_column(Integer)


class BusinessHours(db.Model):
    """A weekly opening period in local wall time (seconds after midnight, as given)."""

    __tablename__ = "business_hours"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    store_key: Mapped[int] = mapped_column(Integer, index=True)
    day_of_week: Mapped[int] = mapped_column(SmallInteger)  # 0 = Monday
    start_s: Mapped[int] = mapped_column(Integer)
    end_s: Mapped[int] = mapped_column(Integer)


class StoreTimezone(db.Model):
    __tablename__ = "store_timezones"
    store_key: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    timezone_str: Mapped[str] = mapped_column(String(TIMEZONE_MAX_LENGTH))


class DataState(db.Model):
    """Single row: the last committed load batch. Loads lock it, so batches commit in order."""

    __tablename__ = "data_state"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    last_batch: Mapped[int] = mapped_column(Integer, default=0)


class LoadBatch(db.Model):
    """One committed load: what it read and wrote, and the span of its polls."""

    __tablename__ = "load_batches"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    started_at: Mapped[datetime] = mapped_column(DateTime)
    finished_at: Mapped[datetime] = mapped_column(DateTime)
    sources: Mapped[str] = mapped_column(Text)
    polls_loaded: Mapped[int] = mapped_column(Integer, default=0)
    polls_duplicate: Mapped[int] = mapped_column(Integer, default=0)
    rows_rejected: Mapped[int] = mapped_column(Integer, default=0)
    min_ts_us: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    max_ts_us: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class ReportStatus(enum.StrEnum):
    RUNNING = "Running"
    COMPLETE = "Complete"
    FAILED = "Failed"


class Report(db.Model):
    """A report job: its state transitions, the snapshot it read and where its CSV lives."""

    __tablename__ = "reports"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), default=ReportStatus.RUNNING, index=True)
    requested_as_of_us: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    as_of_us: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    batch: Mapped[int | None] = mapped_column(Integer, nullable=True)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    row_count: Mapped[int | None] = mapped_column(Integer, nullable=True)
    file_name: Mapped[str | None] = mapped_column(String(255), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)


def init_schema() -> None:
    """Create missing tables and the data-state row (idempotent)."""
    db.create_all()
    if db.session.get(DataState, 1) is None:
        db.session.add(DataState(id=1, last_batch=0))
        db.session.commit()
