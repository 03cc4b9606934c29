"""API keys: created and revoked by `flask keys`, looked up by every request.

A key is a name, a role, its groups (a reader's) and the SHA-256 of its token. The token is
256 random bits, shown once when the key is created and stored nowhere: a request's token is
hashed and looked up by its hash, and the stored hash compared in constant time.

Every API process asks the database, and trusts what it read for at most
API_KEY_CACHE_SECONDS: a key revoked by `flask keys revoke` (another process) is refused by
every process within that time. The clock is the app's `key_clock` extension (monotonic
seconds), so tests move time instead of waiting for it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from flask import Flask
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError, OperationalError

from models import KEY_NAME_MAX_LENGTH, ApiKey, KeyRole, db, utcnow

TOKEN_PREFIX = "smk_"
TOKEN_BYTES = 32  # 256 bits
KEY_NAME_PATTERN = re.compile(rf"^[A-Za-z0-9._-]{{1,{KEY_NAME_MAX_LENGTH}}}$")
# A key's `last_used_at` is written at most this often per process: a request must not write.
LAST_USED_PRECISION = timedelta(minutes=1)
# Entries remembered per process (unknown tokens too): beyond it the cache starts afresh, so
# random tokens cannot grow it.
MAX_CACHED = 10_000
Clock = Callable[[], float]


class KeyRefused(Exception):
    """A key cannot be created or revoked as asked (the message says why)."""


@dataclass(frozen=True)
class KeyRecord:
    """What a request needs of a key: who it is, what it may do, over which groups."""

    id: int
    name: str
    role: KeyRole
    groups: tuple[str, ...]
    last_used_at: datetime | None


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)


# --------------------------------------------------------------------------- flask keys


def create_key(name: str, role: KeyRole, groups: tuple[str, ...]) -> str:
    """Store a new key; return its token (the only time it exists outside the caller)."""
    if not KEY_NAME_PATTERN.fullmatch(name):
        raise KeyRefused(
            f"a key name is 1 to {KEY_NAME_MAX_LENGTH} letters, digits, '-', '_' or '.'"
        )
    if role == KeyRole.READER and not groups:
        raise KeyRefused("a reader key needs at least one --group")
    if role != KeyRole.READER and groups:
        raise KeyRefused("only reader keys have groups")
    token = new_token()
    key = ApiKey(
        name=name,
        role=str(role),
        groups=json.dumps(sorted(set(groups))),
        token_sha256=token_hash(token),
        created_at=utcnow(),
    )
    db.session.add(key)
    try:
        db.session.commit()
    except IntegrityError as exc:
        db.session.rollback()
        raise KeyRefused(f"a key named {name!r} exists already") from exc
    return token


def list_keys() -> list[ApiKey]:
    keys = db.session.scalars(select(ApiKey).order_by(ApiKey.name)).all()
    db.session.commit()
    return list(keys)


def revoke_key(name: str) -> None:
    revoked = db.session.execute(
        update(ApiKey)
        .where(ApiKey.name == name, ApiKey.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    db.session.commit()
    if revoked.rowcount != 1:
        raise KeyRefused(f"no key named {name!r} that is not revoked already")


# --------------------------------------------------------------------------- lookups


class KeyCache:
    """Keys by token hash, and whether any key exists, each trusted for `ttl` seconds."""

    def __init__(self, ttl: float, clock: Clock = time.monotonic) -> None:
        self.ttl, self.clock = ttl, clock
        self.lock = threading.Lock()
        self.entries: dict[str, tuple[float, KeyRecord | None]] = {}
        self.keys_exist = False
        self.keys_checked_at: float | None = None

    def any_keys(self) -> bool:
        """Whether any key exists (revoked ones too: revoking the last key opens nothing).
        Once true it stays true (keys are never deleted); false is asked again after `ttl`,
        so the first key created closes every process within that time."""
        now = self.clock()
        fresh = self.keys_checked_at is not None and now - self.keys_checked_at < self.ttl
        if self.keys_exist or fresh:
            return self.keys_exist
        self.keys_exist = db.session.scalar(select(ApiKey.id).limit(1)) is not None
        db.session.commit()
        self.keys_checked_at = now
        return self.keys_exist

    def find(self, token: str) -> KeyRecord | None:
        """The unrevoked key whose token this is, or None."""
        digest = token_hash(token)
        now = self.clock()
        with self.lock:
            cached = self.entries.get(digest)
        if cached is not None and now - cached[0] < self.ttl:
            return cached[1]
        record = _stored_key(digest)
        with self.lock:
            if len(self.entries) >= MAX_CACHED:
                self.entries.clear()
            self.entries[digest] = (now, record)
        if record is not None:
            _note_use(record)
        return record


def _stored_key(digest: str) -> KeyRecord | None:
    row = db.session.scalar(select(ApiKey).where(ApiKey.token_sha256 == digest))
    record = None
    if (
        row is not None
        and row.revoked_at is None
        and hmac.compare_digest(row.token_sha256.encode(), digest.encode())
    ):
        record = KeyRecord(
            row.id, row.name, KeyRole(row.role), tuple(json.loads(row.groups)), row.last_used_at
        )
    db.session.commit()
    return record


def _note_use(record: KeyRecord) -> None:
    """Write when the key was last used, at most once per LAST_USED_PRECISION; a database
    busy with a write skips it (it is a hint, not a record)."""
    now = utcnow()
    if record.last_used_at is not None and now - record.last_used_at < LAST_USED_PRECISION:
        return
    try:
        db.session.execute(update(ApiKey).where(ApiKey.id == record.id).values(last_used_at=now))
        db.session.commit()
    except OperationalError:
        db.session.rollback()


def key_cache(app: Flask) -> KeyCache:
    """The app's cache of keys (its clock: the `key_clock` extension, if a test set one)."""
    cache = app.extensions.get("key_cache")
    if cache is None:
        clock = app.extensions.get("key_clock", time.monotonic)
        cache = KeyCache(app.config["API_KEY_CACHE_SECONDS"], clock)
        app.extensions["key_cache"] = cache
    return cache
