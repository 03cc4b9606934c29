"""Database schema: stores, polls, business hours, time zones, closures, store groups, loads,
reports and API keys.

One schema for SQLite and MySQL/MariaDB. External store ids (64-bit integers or UUIDs, at most
64 characters) live only in `stores`, compared byte for byte on every engine; the big `polls`
table uses a compact integer key. Instants are int64 microseconds since the Unix epoch (UTC):
exact, zone-free, fast to read.

Versions: every row a load writes carries its `batch`. Polls are only ever added; hours, time
zones, closures and group memberships are replaced by marking the old rows `retired_batch`
instead of deleting them, so a report reading "as of batch W" sees exactly the rows with
`batch <= W AND (retired_batch IS NULL OR retired_batch > W)`, whatever loaded since.
"""

from __future__ import annotations

import enum
import secrets
from datetime import UTC, datetime
from typing import Any, ClassVar

import click
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    Text,
    inspect,
    null,
)
from sqlalchemy import Enum as SqlEnum
from sqlalchemy.dialects import mysql
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

STORE_ID_MAX_LENGTH = 64
GROUP_ID_MAX_LENGTH = 64
KEY_NAME_MAX_LENGTH = 64
TIMEZONE_MAX_LENGTH = 64
SCHEMA_VERSION = 8  # raise when a table changes; init-db refuses other versions
# MySQL/MariaDB compare text with the database's default collation, which ignores case and
# accents (utf8mb4_general_ci): store ids must be binary there. SQLite compares bytes already.
EXACT_TEXT = String(STORE_ID_MAX_LENGTH).with_variant(
    mysql.VARCHAR(STORE_ID_MAX_LENGTH, charset="utf8mb4", collation="utf8mb4_bin"), "mysql"
)
# MySQL's DATETIME keeps whole seconds unless told otherwise: reports created in the same
# second must still list in the order they were created.
MOMENT = DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql")
# LargeBinary is a 64 KB BLOB on MySQL: report results need LONGBLOB.
BLOB = LargeBinary().with_variant(mysql.LONGBLOB(), "mysql")


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
    external_id: Mapped[str] = mapped_column(EXACT_TEXT, unique=True)


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
    """A weekly opening period in local wall time (seconds after midnight, as written:
    23:59:59 is 86399, 24:00 is 86400)."""

    __tablename__ = "business_hours"
    __table_args__ = (Index("ix_business_hours_store_version", "store_key", "retired_batch"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    store_key: Mapped[int] = mapped_column(Integer)
    day_of_week: Mapped[int] = mapped_column(SmallInteger)  # 0 = Monday
    start_s: Mapped[int] = mapped_column(Integer)
    end_s: Mapped[int] = mapped_column(Integer)
    batch: Mapped[int] = mapped_column(Integer)
    retired_batch: Mapped[int | None] = mapped_column(Integer, nullable=True)


class StoreTimezone(db.Model):
    """A store's IANA zone name (one current row per store)."""

    __tablename__ = "store_timezones"
    __table_args__ = (Index("ix_store_timezones_store_version", "store_key", "retired_batch"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    store_key: Mapped[int] = mapped_column(Integer)
    timezone_str: Mapped[str] = mapped_column(String(TIMEZONE_MAX_LENGTH))
    batch: Mapped[int] = mapped_column(Integer)
    retired_batch: Mapped[int | None] = mapped_column(Integer, nullable=True)


class Closure(db.Model):
    """A planned closure [start, end) in the store's local wall time (seconds since
    1970-01-01 00:00 on the local clock; the zone is applied when a report reads it)."""

    __tablename__ = "closures"
    __table_args__ = (Index("ix_closures_store_version", "store_key", "retired_batch"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    store_key: Mapped[int] = mapped_column(Integer)
    start_local_s: Mapped[int] = mapped_column(BigInteger)
    end_local_s: Mapped[int] = mapped_column(BigInteger)
    batch: Mapped[int] = mapped_column(Integer)
    retired_batch: Mapped[int | None] = mapped_column(Integer, nullable=True)


class StoreGroupMember(db.Model):
    """A store's membership of a group (a set of stores one owner is responsible for),
    versioned like hours: a load that names a group replaces the group's whole membership."""

    __tablename__ = "store_groups"
    __table_args__ = (
        Index("ix_store_groups_group_version", "group_id", "retired_batch"),
        Index("ix_store_groups_store", "store_key"),
    )
    VERSIONED_BY: ClassVar[str] = "group_id"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    group_id: Mapped[str] = mapped_column(EXACT_TEXT)
    store_key: Mapped[int] = mapped_column(Integer)
    batch: Mapped[int] = mapped_column(Integer)
    retired_batch: Mapped[int | None] = mapped_column(Integer, nullable=True)


class DataState(db.Model):
    """Single row: the last committed load batch. Loads lock it, so batches commit in order."""

    __tablename__ = "data_state"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    last_batch: Mapped[int] = mapped_column(Integer, default=0)
    schema_version: Mapped[int] = mapped_column(Integer, default=SCHEMA_VERSION)
    # Random, set when the schema is created: tells this database from another at the same
    # address (a process remembers store keys per database).
    instance_id: Mapped[str] = mapped_column(String(32), default=lambda: secrets.token_hex(16))


class LoadBatch(db.Model):
    """One committed load: what it read and wrote, and the span of its polls."""

    __tablename__ = "load_batches"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    started_at: Mapped[datetime] = mapped_column(MOMENT)
    finished_at: Mapped[datetime] = mapped_column(MOMENT)
    sources: Mapped[str] = mapped_column(Text)
    polls_loaded: Mapped[int] = mapped_column(Integer, default=0)
    polls_duplicate: Mapped[int] = mapped_column(Integer, default=0)
    rows_rejected: Mapped[int] = mapped_column(Integer, default=0)
    min_ts_us: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    max_ts_us: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class ReportStatus(enum.StrEnum):
    """A report's state (RQ's job states are the model): Queued waits for a worker."""

    QUEUED = "Queued"
    RUNNING = "Running"
    COMPLETE = "Complete"
    FAILED = "Failed"


ACTIVE_STATES = (ReportStatus.QUEUED, ReportStatus.RUNNING)


def stored_as_text(states: type[enum.Enum]) -> SqlEnum:
    """An enum column holding its values as short text (no native enum, no CHECK), the same on
    SQLite and MySQL/MariaDB."""
    return SqlEnum(
        states,
        native_enum=False,
        create_constraint=False,
        length=16,
        values_callable=lambda members: [member.value for member in members],
    )


STATUS = stored_as_text(ReportStatus)


class JobStep:
    """What a report and each of its shards share: a state, the attempts made, when the
    current attempt started and ended, the rows it produced and, while a process works on it
    or holds it queued, that process (`owner`) and its lease. `jobs.states` owns every change.

    `SWEPT_STATES` are the states in which a row whose lease ran out is queued again by a
    sweep; `report_key` is the column holding the report's id; `step_columns`/`step_is` name
    a row as (report id, shard number or NULL).
    """

    SWEPT_STATES: ClassVar[tuple[ReportStatus, ...]] = ()
    status: Mapped[ReportStatus] = mapped_column(STATUS, default=ReportStatus.QUEUED, index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # Indexed: a process renews its leases by owner, and must lock only its own rows.
    owner: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(MOMENT, nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(MOMENT, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(MOMENT, nullable=True)
    row_count: Mapped[int | None] = mapped_column(Integer, nullable=True)


class Report(JobStep, db.Model):
    """A report job: options, the snapshot it reads (fixed when it starts), its shards' progress,
    its state transitions and, while a process works on it, that process's lease.

    A Running report is worked on through its shards; it has an owner of its own only while it
    is planned (Queued) or assembled."""

    __tablename__ = "reports"
    SWEPT_STATES: ClassVar[tuple[ReportStatus, ...]] = (ReportStatus.QUEUED,)
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    options: Mapped[str] = mapped_column(Text, default="{}")  # JSON
    requested_as_of_us: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    as_of_us: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    batch: Mapped[int | None] = mapped_column(Integer, nullable=True)
    shard_count: Mapped[int | None] = mapped_column(Integer, nullable=True)
    shards_done: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(MOMENT, default=utcnow, index=True)
    file_name: Mapped[str | None] = mapped_column(String(255), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    # The groups whose stores it covers (a JSON list, also one `report_groups` row each);
    # NULL: every store. `created_by` is the name of the key that asked for it.
    scope: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_by: Mapped[str | None] = mapped_column(String(KEY_NAME_MAX_LENGTH), nullable=True)

    @classmethod
    def report_key(cls) -> Any:
        return cls.id

    @classmethod
    def step_columns(cls) -> tuple:
        return cls.id.label("report_id"), null().label("shard")

    @classmethod
    def step_is(cls, report_id: str, shard: int | None = None) -> list:
        return [cls.id == report_id]

    @property
    def progress(self) -> float:
        """Shards done / shards (1 once Complete)."""
        if self.status == ReportStatus.COMPLETE:
            return 1.0
        return self.shards_done / self.shard_count if self.shard_count else 0.0


class ReportShard(JobStep, db.Model):
    """One contiguous range of store keys [key_low, key_high) of a report, and its result."""

    __tablename__ = "report_shards"
    SWEPT_STATES: ClassVar[tuple[ReportStatus, ...]] = (ReportStatus.QUEUED, ReportStatus.RUNNING)
    report_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    shard: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    key_low: Mapped[int] = mapped_column(Integer)
    key_high: Mapped[int] = mapped_column(Integer)
    result: Mapped[bytes | None] = mapped_column(BLOB, nullable=True)

    @classmethod
    def report_key(cls) -> Any:
        return cls.report_id

    @classmethod
    def step_columns(cls) -> tuple:
        return cls.report_id.label("report_id"), cls.shard.label("shard")

    @classmethod
    def step_is(cls, report_id: str, shard: int | None = None) -> list:
        return [cls.report_id == report_id, cls.shard == shard]


class ReportGroup(db.Model):
    """One group of a scoped report: a reader sees a report when all its groups are its own."""

    __tablename__ = "report_groups"
    report_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    group_id: Mapped[str] = mapped_column(EXACT_TEXT, primary_key=True)


STEP_MODELS = (ReportShard, Report)  # shards, then reports: the lock order of every step


class ReportResult(db.Model):
    """A finished report's table (Arrow IPC, compressed): any API process on any machine can
    serve the report from it without the assembling machine's file."""

    __tablename__ = "report_results"
    report_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    data: Mapped[bytes] = mapped_column(BLOB)


class Worker(db.Model):
    """A process that runs report steps taken from a broker (one Celery worker process), as
    last seen by its lease keeper: any API process can tell whether workers are there without
    asking the broker."""

    __tablename__ = "workers"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)  # its owner name on rows
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(MOMENT)
    last_seen: Mapped[datetime] = mapped_column(MOMENT, index=True)


class ServiceLock(db.Model):
    """A row a transaction updates first to run alone among its kind (e.g. counting active
    reports before adding one), without holding the loads' lock."""

    __tablename__ = "service_locks"
    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    uses: Mapped[int] = mapped_column(BigInteger, default=0)


class KeyRole(enum.StrEnum):
    """What an API key may do: everything, read its groups' reports, or only push data."""

    ADMIN = "admin"
    READER = "reader"
    POLLER = "poller"


class ApiKey(db.Model):
    """A named API key: its role, its groups (readers), and the SHA-256 of its token (the
    token itself is shown once, when created, and stored nowhere)."""

    __tablename__ = "api_keys"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(
        String(KEY_NAME_MAX_LENGTH).with_variant(
            mysql.VARCHAR(KEY_NAME_MAX_LENGTH, charset="utf8mb4", collation="utf8mb4_bin"),
            "mysql",
        ),
        unique=True,
    )
    role: Mapped[str] = mapped_column(String(16))
    groups: Mapped[str] = mapped_column(Text, default="[]")  # JSON list of group ids
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(MOMENT, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(MOMENT, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(MOMENT, nullable=True)


TRIGGER_LOCK = "trigger"  # serialises counting and creating reports
ALERTS_LOCK = "alerts"  # serialises evaluations of incidents and alert rules
SERVICE_LOCKS = (TRIGGER_LOCK, ALERTS_LOCK)


class BatchStore(db.Model):
    """A store a load batch wrote rows for: what an evaluation of incidents looks at. Kept
    until the batch is evaluated (`alerts.forget_evaluated_batches`), as are `BatchPolls`."""

    __tablename__ = "batch_stores"
    __table_args__: ClassVar[dict] = {"sqlite_with_rowid": False}
    batch: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    store_key: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)


class BatchPolls(db.Model):
    """What a load batch sent for a store's polls: how many, the first instant, the least and
    the most status (a repeat of a poll the database already holds, which it skips, is
    counted too). Of the polls an evaluation sees as new (all after its previous `now`), this
    never says less than they are: one poll is that poll, and alike statuses are theirs. It
    spares reading them. Batches loaded before the table existed have no rows: their stores
    are read."""

    __tablename__ = "batch_polls"
    __table_args__: ClassVar[dict] = {"sqlite_with_rowid": False}
    batch: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    store_key: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    polls: Mapped[int] = mapped_column(Integer)
    first_ts_us: Mapped[int] = mapped_column(BigInteger)
    least_active: Mapped[bool] = mapped_column(Boolean)
    most_active: Mapped[bool] = mapped_column(Boolean)


class EvidencedStore(db.Model):
    """A store with a poll inside its business hours minus closures, as its current hours,
    zone and closures say (its evidence is those polls, docs/spec.md): what lets an evaluation
    leave alone a store whose new polls are all active. A store missing here is read in full,
    so the table may lag, never lead: rows are written with the incidents, and each store an
    evaluation reads (among them every store whose hours, zone or closures changed) is added
    or removed as that read found."""

    __tablename__ = "evidenced_stores"
    __table_args__: ClassVar[dict] = {"sqlite_with_rowid": False}
    store_key: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)


class AlertState(db.Model):
    """Single row: the last load batch whose stores incidents and alerts were evaluated for."""

    __tablename__ = "alert_state"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    evaluated_batch: Mapped[int] = mapped_column(Integer, default=0)
    now_us: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class Incident(db.Model):
    """An outage of a store as of the last evaluation (docs/spec.md, "Incidents"), in µs.

    Rows of a store are rewritten by each evaluation that covers it; `first_poll_us` tells
    which part of its history an evaluation read again."""

    __tablename__ = "incidents"
    __table_args__ = (
        Index("ix_incidents_open_started", "is_open", "started_us"),
        Index("ix_incidents_started", "started_us"),
    )
    store_key: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    started_us: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    first_poll_us: Mapped[int] = mapped_column(BigInteger)
    resolved_us: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    business_us: Mapped[int] = mapped_column(BigInteger)
    is_open: Mapped[bool] = mapped_column(Boolean)
    down_now: Mapped[bool] = mapped_column(Boolean)


class AlertRule(db.Model):
    """A webhook: where to POST, the secret that signs each body, after how much business
    downtime an incident is announced, and which stores it watches. `created_now_us` is the
    data's `now` when it was made: incidents resolved before that are never announced."""

    __tablename__ = "alert_rules"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    url: Mapped[str] = mapped_column(String(2048))
    secret: Mapped[str] = mapped_column(String(256))
    after_us: Mapped[int] = mapped_column(BigInteger)
    stale_after_us: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    created_at: Mapped[datetime] = mapped_column(MOMENT, default=utcnow)
    created_now_us: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # The groups whose stores it watches (a JSON list; NULL: every store) and the name of the
    # key that made it (NULL: an admin token or no authentication): a reader sees its own.
    scope: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_by: Mapped[str | None] = mapped_column(String(KEY_NAME_MAX_LENGTH), nullable=True)


class DeliveryStatus(enum.StrEnum):
    """An event's delivery: Pending (due at `next_attempt_at`), Delivered, or Failed (given up
    after the retry period)."""

    PENDING = "Pending"
    DELIVERED = "Delivered"
    FAILED = "Failed"


DELIVERY_STATUS = stored_as_text(DeliveryStatus)


class AlertEvent(db.Model):
    """One announcement of a rule about an incident, with the exact body it sends.

    The unique key (rule, store, incident start, event) makes it exist once, whichever
    processes evaluate and however often; `id` orders a rule's events of a store. While a
    process sends it, it holds a lease (`owner`, `lease_expires_at`), as report steps do."""

    __tablename__ = "alert_events"
    __table_args__ = (
        Index("ux_alert_events_once", "rule_id", "store_key", "started_us", "event", unique=True),
        Index("ix_alert_events_due", "status", "next_attempt_at"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    event_id: Mapped[str] = mapped_column(String(32), unique=True)
    rule_id: Mapped[int] = mapped_column(Integer)
    store_key: Mapped[int] = mapped_column(Integer)
    started_us: Mapped[int] = mapped_column(BigInteger)
    event: Mapped[str] = mapped_column(String(32))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(MOMENT)
    status: Mapped[DeliveryStatus] = mapped_column(DELIVERY_STATUS, default=DeliveryStatus.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(MOMENT)
    owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(MOMENT, nullable=True)


class AlertAttempt(db.Model):
    """One try at sending an event: the receiver's status code, or why there was none."""

    __tablename__ = "alert_attempts"
    __table_args__ = (Index("ix_alert_attempts_event", "event_row"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    event_row: Mapped[int] = mapped_column(Integer)
    rule_id: Mapped[int] = mapped_column(Integer, index=True)
    attempted_at: Mapped[datetime] = mapped_column(MOMENT)
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[str | None] = mapped_column(String(255), nullable=True)


class SchemaError(click.ClickException):
    """The database holds tables of an older, incompatible layout (a click exception, so a
    command prints it as one line)."""


def init_schema() -> None:
    """Create missing tables and the data-state row (idempotent, safe from several processes)."""
    _refuse_old_layout()
    db.create_all()
    missing = [] if db.session.get(DataState, 1) else [DataState(id=1, last_batch=0)]
    missing += [] if db.session.get(AlertState, 1) else [AlertState(id=1, evaluated_batch=0)]
    missing += [
        ServiceLock(name=name, uses=0)
        for name in SERVICE_LOCKS
        if not db.session.get(ServiceLock, name)
    ]
    for row in missing:
        db.session.add(row)
        try:
            db.session.commit()
        except IntegrityError:  # another process created it first
            db.session.rollback()
    db.session.commit()  # end the reads: the caller's next transaction may have to write first


def _refuse_old_layout() -> None:
    inspector = inspect(db.engine)
    tables = set(inspector.get_table_names())
    required = {"store_timezones": "batch", "business_hours": "batch", "reports": "shard_count"}
    outdated = [
        name
        for name, column in required.items()
        if name in tables and column not in {c["name"] for c in inspector.get_columns(name)}
    ]
    if not outdated and "data_state" in tables:
        columns = {c["name"] for c in inspector.get_columns("data_state")}
        version = (
            db.session.scalar(db.text("SELECT schema_version FROM data_state WHERE id = 1"))
            if "schema_version" in columns
            else 1
        )
        db.session.commit()
        if version not in (None, SCHEMA_VERSION):
            outdated = [f"data_state (schema version {version}, expected {SCHEMA_VERSION})"]
    if outdated:
        raise SchemaError(
            f"the database holds tables of an older layout ({', '.join(outdated)}): create a new "
            "database (or drop its tables) and run `flask --app app init-db`, then load the data"
        )
