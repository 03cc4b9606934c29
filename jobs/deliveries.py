"""Sending alert events to their webhooks: claimed with leases, signed, retried with backoff.

An event row is Pending until a 2xx answer (Delivered) or until its retry period ran out
(Failed). A process sends an event only after claiming it with one conditional update that
only one process can win (a lease, as report steps have): a process killed mid-delivery
leaves a lease that runs out, and another process sends the event again (the receiver drops
the duplicate by its `id`). A rule's events of one store go out in the order they were made:
an event waits while an earlier one of the same rule and store is still Pending.

    attempt n fails at t  →  next attempt at t + 1 min × 2^(n−1), or Failed once that lies
                             more than RETRY_PERIOD after the event was made

The clock is a parameter (`clock`), so tests move time instead of waiting for it.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import ipaddress
import logging
import socket
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol
from urllib.parse import urlsplit

from flask import Flask, current_app
from sqlalchemy import and_, insert, or_, select, update
from sqlalchemy.orm import aliased

from jobs.executors import process_owner
from models import AlertAttempt, AlertEvent, AlertRule, DeliveryStatus, db, utcnow

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Store-Monitor-Signature"
TIMEOUT_SECONDS = 5.0
FIRST_RETRY = timedelta(minutes=1)
RETRY_PERIOD = timedelta(hours=24)
LEASE = timedelta(seconds=60)  # far beyond one attempt (a 5 s timeout per network step)
MAX_RESPONSE_BYTES = 64 * 1024
EVENTS_PER_ROUND = 100
Clock = Callable[[], datetime]


class Runner(Protocol):
    """Something that has work done when kicked (now, on a thread, or by workers)."""

    def kick(self) -> None: ...

    def shutdown(self) -> None: ...


class UnsafeUrl(ValueError):
    """A webhook URL the service will not call (scheme, or an address it must not reach)."""


# --------------------------------------------------------------------------- addresses


def check_url(url: str, allow_private: bool) -> list[str] | None:
    """Refuse anything but http(s) to a host whose addresses are all public (unless
    `allow_private`): a webhook must not make the service call its own network. Returns the
    checked addresses to connect to, in the resolver's order (None when `allow_private`: any
    will do), so that a second lookup cannot lead elsewhere (DNS rebinding)."""
    if not url.isascii() or any(char.isspace() or ord(char) < 32 for char in url):
        raise UnsafeUrl("the url must be ASCII without spaces (percent-encode the rest)")
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise UnsafeUrl(f"the url is not valid: {exc}") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UnsafeUrl("the url must be http:// or https:// with a host")
    if allow_private:
        return None
    try:
        found = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise UnsafeUrl(f"the url's host does not resolve: {parts.hostname}") from exc
    for *_, address in found:
        if not is_public(address[0]):
            raise UnsafeUrl(
                f"the url's host {parts.hostname} resolves to {address[0]}, a private, "
                "loopback or link-local address (set ALERT_ALLOW_PRIVATE_URLS=1 to allow)"
            )
    return list(dict.fromkeys(str(address[0]) for *_, address in found))


def is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return not (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    )


# --------------------------------------------------------------------------- one request


def connect_to_first(addresses: list[str], port: int, timeout: float) -> socket.socket:
    """A connection to the first of the checked addresses that answers (each within
    `timeout`), as a lookup by name would try them."""
    failure: OSError | None = None
    for address in addresses:
        try:
            sock = socket.create_connection((address, port), timeout)
        except OSError as exc:
            failure = exc
            continue
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock
    raise failure or OSError("no address to connect to")


class PinnedHTTP(http.client.HTTPConnection):
    """An HTTP connection to the addresses `check_url` checked (the Host header still names
    the host); without them, to whatever the host resolves to."""

    addresses: list[str] | None = None

    def connect(self) -> None:
        if self.addresses is None:
            super().connect()
            return
        self.sock = connect_to_first(self.addresses, self.port, self.timeout)


class PinnedHTTPS(http.client.HTTPSConnection):
    """HTTPS to the checked addresses; the certificate is still checked against the host."""

    addresses: list[str] | None = None

    def connect(self) -> None:
        if self.addresses is None:
            super().connect()
            return
        sock = connect_to_first(self.addresses, self.port, self.timeout)
        try:
            self.sock = self._context.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()  # a failed handshake leaves no socket open
            raise


def signature(secret: str, body: bytes) -> str:
    """The header value receivers check: sha256=<hex HMAC-SHA256 of the raw body>."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Outcome:
    """What one attempt got: the receiver's status code, or why there was none."""

    status_code: int | None = None
    error: str | None = None

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def post(url: str, body: bytes, secret: str, allow_private: bool) -> Outcome:
    """POST the body, signed; read at most MAX_RESPONSE_BYTES of the answer. Redirects are
    not followed (a redirect could lead to an address that was refused)."""
    try:
        addresses = check_url(url, allow_private)
    except UnsafeUrl as exc:
        return Outcome(error=str(exc)[:255])
    parts = urlsplit(url)
    https = parts.scheme == "https"
    kind = PinnedHTTPS if https else PinnedHTTP
    # The port given, not left to http.client, which misreads a bare IPv6 host without one.
    port = parts.port or (443 if https else 80)
    connection = kind(parts.hostname, port, timeout=TIMEOUT_SECONDS)
    connection.addresses = addresses
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "store-monitor",
        SIGNATURE_HEADER: signature(secret, body),
    }
    try:
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        response.read(MAX_RESPONSE_BYTES)
        return Outcome(status_code=response.status)
    except (OSError, http.client.HTTPException) as exc:
        return Outcome(error=f"{type(exc).__name__}: {exc}"[:255])
    finally:
        connection.close()


# --------------------------------------------------------------------------- rows


def due_events(now: datetime, limit: int = EVENTS_PER_ROUND) -> list[int]:
    """Pending events due at `now`, free to claim, with no earlier Pending event of the same
    rule and store (in order per rule and store)."""
    earlier = aliased(AlertEvent)
    blocked = (
        select(earlier.id)
        .where(
            earlier.rule_id == AlertEvent.rule_id,
            earlier.store_key == AlertEvent.store_key,
            earlier.status == DeliveryStatus.PENDING,
            earlier.id < AlertEvent.id,
        )
        .exists()
    )
    query = (
        select(AlertEvent.id)
        .where(
            AlertEvent.status == DeliveryStatus.PENDING,
            AlertEvent.next_attempt_at <= now,
            or_(AlertEvent.owner.is_(None), AlertEvent.lease_expires_at < now),
            ~blocked,
        )
        .order_by(AlertEvent.id)
        .limit(limit)
    )
    ids = list(db.session.scalars(query))
    db.session.commit()
    return ids


def claim(event_row: int, owner: str, now: datetime) -> bool:
    """Pending, due and free → ours until now + LEASE; only one process can win it."""
    changed = db.session.execute(
        update(AlertEvent)
        .where(
            AlertEvent.id == event_row,
            AlertEvent.status == DeliveryStatus.PENDING,
            AlertEvent.next_attempt_at <= now,
            or_(AlertEvent.owner.is_(None), AlertEvent.lease_expires_at < now),
        )
        .values(owner=owner, lease_expires_at=now + LEASE, attempts=AlertEvent.attempts + 1)
    ).rowcount
    db.session.commit()
    return changed == 1


def settle(event_row: int, owner: str, outcome: Outcome, now: datetime) -> None:
    """Record the attempt; Delivered, or Pending again after the backoff, or Failed.

    The transaction starts with a write to the event's row (which changes nothing), so it
    holds the write lock before it reads: on SQLite a transaction that read first cannot write
    once another process has committed meanwhile ("database is locked" at once), and the
    attempt, already sent, would be sent again."""
    db.session.execute(
        update(AlertEvent).where(AlertEvent.id == event_row).values(owner=AlertEvent.owner),
        execution_options={"synchronize_session": False},
    )
    event = db.session.get(AlertEvent, event_row)
    if event is None:  # its rule was deleted meanwhile
        db.session.commit()
        return
    values: dict = {"owner": None, "lease_expires_at": None}
    if outcome.delivered:
        values["status"] = DeliveryStatus.DELIVERED
    else:
        retry_at = now + FIRST_RETRY * 2 ** (max(event.attempts, 1) - 1)
        if retry_at - event.created_at > RETRY_PERIOD:
            values["status"] = DeliveryStatus.FAILED
        values["next_attempt_at"] = retry_at
    db.session.execute(
        insert(AlertAttempt).values(
            event_row=event_row,
            rule_id=event.rule_id,
            attempted_at=now,
            status_code=outcome.status_code,
            error=outcome.error,
        )
    )
    db.session.execute(
        update(AlertEvent)
        .where(and_(AlertEvent.id == event_row, AlertEvent.owner == owner))
        .values(**values)
    )
    db.session.commit()


def send_one(event_row: int, owner: str, clock: Clock, allow_private: bool) -> bool:
    """Claim, send and settle one event; False when another process had it."""
    if not claim(event_row, owner, clock()):
        return False
    event = db.session.get(AlertEvent, event_row)
    rule = db.session.get(AlertRule, event.rule_id) if event else None
    if rule is None or event is None:  # deleted with its rule meanwhile
        db.session.commit()
        return False
    url, secret, body, rule_id = rule.url, rule.secret, event.body, rule.id
    db.session.commit()  # no transaction stays open while the receiver takes its time
    outcome = post(url, body.encode(), secret, allow_private)
    logger.info("alert event %s of rule %s: %s", event_row, rule_id, outcome)
    settle(event_row, owner, outcome, clock())
    return True


def deliver_due(clock: Clock = utcnow, owner: str | None = None) -> int:
    """Send every due event (round after round, so a delivered event lets the next of its
    store go); return how many attempts were made."""
    owner = owner or process_owner()
    allow_private = current_app.config["ALERT_ALLOW_PRIVATE_URLS"]
    attempts = 0
    while True:
        sent = sum(
            send_one(event_row, owner, clock, allow_private) for event_row in due_events(clock())
        )
        attempts += sent
        if sent == 0:
            return attempts


# --------------------------------------------------------------------------- who sends


class BackgroundRounds:
    """Runs `work` on one background thread of this process, inside the app context; a kick
    while a round runs makes it run once more, so nothing is left waiting for the next kick.
    Kicks never wait for the work (a slow receiver or evaluation never holds a request)."""

    def __init__(self, app: Flask, work: Callable[[], object], name: str) -> None:
        self.app = app
        self.work = work
        self.name = name
        self.pool = ThreadPoolExecutor(1, thread_name_prefix=name)
        self.lock = threading.Lock()
        self.queued = False

    def kick(self) -> None:
        with self.lock:
            if self.queued:
                return
            self.queued = True
        self.pool.submit(self._round)

    def _round(self) -> None:
        with self.lock:
            self.queued = False
        with self.app.app_context():
            try:
                self.work()
            except Exception:  # the database may be away: the next kick tries again
                logger.exception("%s: a round stopped", self.name)
                db.session.rollback()

    def shutdown(self) -> None:
        self.pool.shutdown(wait=True)


class InlineRunner:
    """Sends at once in the caller's thread (tests; commands)."""

    def __init__(self, clock: Clock = utcnow) -> None:
        self.clock = clock

    def kick(self) -> None:
        deliver_due(self.clock)

    def shutdown(self) -> None:
        pass


class CeleryRunner:
    """Leaves sending to the workers: a task per kick (the workers' lease keepers also send
    what is due, so a kick the broker missed delays, never loses, an event)."""

    def __init__(self, celery_app) -> None:
        self.celery = celery_app

    def kick(self) -> None:
        try:
            self.celery.send_task("store_monitor.deliver_alerts", retry=False)
        except Exception as exc:  # the broker is away: a worker's keeper sends it later
            logger.warning("alert deliveries: not queued (%s); a worker sends them later", exc)

    def shutdown(self) -> None:
        pass


def kick(app: Flask | None = None) -> None:
    """Have due events sent by whoever sends for this app."""
    (app or current_app).extensions["alert_runner"].kick()
