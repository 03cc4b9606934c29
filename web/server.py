"""Serve the app with waitress, protected against huge request bodies and slow clients.

waitress reads a whole request, headers and body, before the app sees it, so the app's limits
and its token check come too late to protect the server itself. Here:

- the server refuses a body larger than any endpoint accepts as soon as it has the headers;
- a connection that has not finished a request's headers HTTP_HEADER_TIMEOUT seconds after
  the request's first byte (or after it opened, if it has sent nothing) is closed: waitress
  has no such timeout, and its idle timeout is reset by every byte a slow client trickles;
- near the connection limit, the connections that have kept the server waiting longest on
  their client are closed first, so a new client is still accepted: those that have not
  finished their headers, idle keep-alives, bodies arriving slower than BODY_RATE_FLOOR, and
  answers their client does not read. A connection whose request runs is never closed, nor a
  body or an answer that moves on time;
- the server's own error answers are JSON in the service's shape, like the app's.
"""

from __future__ import annotations

import errno
import heapq
import json
import logging
import signal
import time
from collections.abc import Mapping
from typing import Any

from flask import Flask
from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.server import MultiSocketServer, TcpWSGIServer
from waitress.task import ErrorTask, ThreadedTaskDispatcher
from waitress.utilities import (
    BadRequest,
    Error,
    InternalServerError,
    RequestEntityTooLarge,
    RequestHeaderFieldsTooLarge,
)

from config import SettingsError

logger = logging.getLogger(__name__)

# Seconds between the server's looks for connections past a deadline. waitress' default (30)
# would let a 10 s header timeout run to 40 s.
CLEANUP_INTERVAL = 1
# Seconds a request's headers may take, from its first byte or the connection's opening,
# before shedding near the connection limit counts them overdue. A real client sends them at
# once; the grace covers the round of the event loop between accepting a connection and
# reading it.
HEADERS_GRACE = 1.0
# Bytes per second a request body must average, after HTTP_HEADER_TIMEOUT seconds of grace,
# to be safe from shedding near the connection limit: 128 kbit/s, below any real uploader's
# link, far above a byte every few seconds.
BODY_RATE_FLOOR = 16 * 1024


def adjustments(config: Mapping[str, Any]) -> dict[str, Any]:
    """waitress' settings from the app's."""
    for name in ("HTTP_HEADER_TIMEOUT", "HTTP_IDLE_TIMEOUT"):
        if config[name] <= 0:
            raise ValueError(f"{name} must be a positive number of seconds, not {config[name]!r}")
    largest_body = max(config["MAX_CONTENT_LENGTH"] or 0, config["INGEST_MAX_BYTES"])
    return {
        "host": config["HOST"],
        "port": config["PORT"],
        "threads": config["HTTP_THREADS"],
        "connection_limit": config["HTTP_CONNECTION_LIMIT"],
        # waitress refuses a Content-Length >= this one, so a body of exactly largest_body passes
        "max_request_body_size": largest_body + 1,
        "channel_timeout": config["HTTP_IDLE_TIMEOUT"],
        "cleanup_interval": CLEANUP_INTERVAL,
        # select() cannot watch a descriptor numbered 1024 or more; poll() can
        "asyncore_use_poll": True,
    }


# What waitress' parser says of a request it refuses may quote the request: this much of it.
DETAIL_CHARS = 200


class JsonErrorTask(ErrorTask):
    """waitress' own error answers (a body too large, a request it cannot parse) in the
    service's JSON shape, like every other error: `{"error": ..., "message": ...}`."""

    def execute(self) -> None:
        error = self.request.error
        body = json.dumps(
            {"error": error_name(error), "message": error_message(error, self.channel.adj)}
        ).encode()
        self.status = f"{error.code} {error.reason}"
        self.response_headers.append(("Content-Type", "application/json"))
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


def error_name(error: Error) -> str:
    """The app's names: Werkzeug's reason in snake case, `internal_error` for a 500."""
    if isinstance(error, InternalServerError):
        return "internal_error"
    return error.reason.lower().replace(" ", "_")


def error_message(error: Error, adj: Adjustments) -> str:
    """What the client did wrong, in the app's words where waitress' would mislead."""
    if isinstance(error, RequestEntityTooLarge):  # the limit waitress states is one byte over
        return (
            f"the body is larger than any endpoint accepts ({adj.max_request_body_size - 1} bytes)"
        )
    if isinstance(error, RequestHeaderFieldsTooLarge):
        return f"the request's headers are larger than {adj.max_request_header_size} bytes"
    if isinstance(error, InternalServerError):  # the app answers its own errors; this is rarer
        return "an unexpected error occurred; it has been logged"
    detail = str(error.body)[:DETAIL_CHARS]
    if isinstance(error, BadRequest):
        return f"not a valid HTTP request: {detail}"
    return detail


class TimedChannel(HTTPChannel):
    """A client connection that knows since when it has been waiting on its client.

    Clocks (time.time(), like waitress' own): `awaiting_headers_since` is when the current
    request's first byte arrived, or when the connection opened if it has sent nothing; None
    while no headers are awaited. `body_since` is when the current request's headers ended,
    while its body is still coming; None otherwise. waitress' `last_activity` is the last byte
    read or sent: for an idle keep-alive, the end of its last answer; for an answer waiting to
    be sent, the last bytes its client took.
    """

    error_task_class = JsonErrorTask

    def __init__(self, server, sock, addr, adj, map=None) -> None:
        super().__init__(server, sock, addr, adj, map)
        self.awaiting_headers_since: float | None = self.creation_time
        self.body_since: float | None = None
        self.timed_request = None  # the parser whose headers and body the clocks are timing

    def received(self, data: bytes) -> bool:
        if not data:
            return super().received(data)
        now = time.time()
        result = super().received(data)
        request = self.request  # the request still being read, if any
        if request is None:
            self.awaiting_headers_since = self.body_since = None
        elif request is not self.timed_request:
            # a new request's first bytes, maybe after complete ones in the same read
            headers_done = request.headers_finished
            self.awaiting_headers_since = None if headers_done else now
            self.body_since = now if headers_done else None
        elif request.headers_finished and self.body_since is None:
            self.awaiting_headers_since, self.body_since = None, now
        self.timed_request = request
        return result

    def waiting_for_client(self) -> bool:
        """Whether the connection waits on its client alone: no request run, no answer sent."""
        return not (
            self.requests or self.total_outbufs_len or self.will_close or self.close_when_flushed
        )

    def client_due(self, grace: float) -> float | None:
        """When the client was due to make its next move; None while the server has it.

        Headers are due HEADERS_GRACE after their first byte (or the opening), a next request
        on an idle keep-alive at once (closing it costs its client a reconnection, no work); a
        body `grace` seconds after its headers, then at BODY_RATE_FLOOR; an answer's next bytes
        `grace` seconds after the client last took some. A running request, or a connection
        already closing, owes nothing.
        """
        if self.will_close or self.requests or self._fileno is None:
            return None
        if self.total_outbufs_len:
            return self.last_activity + grace
        if self.close_when_flushed:
            return None
        if self.awaiting_headers_since is not None:
            return self.awaiting_headers_since + HEADERS_GRACE
        if self.body_since is not None and self.request is not None:
            return self.body_since + grace + self.request.body_bytes_received / BODY_RATE_FLOOR
        return self.last_activity

    # A channel the server closed while the event loop was collecting what to watch (shedding
    # runs there) must not be watched: its descriptor number may be reused by a connection
    # accepted in the same round, which the stale event would then close.
    def readable(self) -> bool:
        return self._fileno is not None and super().readable()

    def writable(self) -> bool:
        return self._fileno is not None and super().writable()


class ProtectedServer(TcpWSGIServer):
    """waitress' TCP server with a header timeout and shedding of slow clients near its limit."""

    channel_class = TimedChannel

    def __init__(self, application, map=None, *, header_timeout: float, **kw) -> None:
        self.header_timeout = header_timeout
        self.timed_out = self.shed = 0  # connections closed since the last log line
        super().__init__(application, map, **kw)
        # Shedding keeps this many places free, so the server never stops accepting for them.
        self.reserve = max(1, self.adj.connection_limit // 100)

    def maintenance(self, now: float) -> None:
        """Close idle connections (waitress) and those past the header timeout."""
        super().maintenance(now)
        cutoff = now - self.header_timeout
        for channel in list(self.active_channels.values()):
            since = channel.awaiting_headers_since
            if since is not None and since < cutoff and channel.waiting_for_client():
                channel.will_close = True  # the event loop closes it
                self.timed_out += 1
            elif channel.will_close and channel.total_outbufs_len and not channel.requests:
                # idle past HTTP_IDLE_TIMEOUT with an answer its client does not read: the
                # loop would close it only once the client reads (the socket turns writable)
                channel.handle_close()
        self.log_closed_connections()

    def log_closed_connections(self) -> None:
        if self.timed_out:
            logger.warning(
                "closed %d connections that did not finish a request's headers within %s s",
                self.timed_out,
                self.header_timeout,
            )
        if self.shed:
            logger.warning(
                "closed %d connections that kept the server waiting longest on their client, "
                "near the connection limit (%d)",
                self.shed,
                self.adj.connection_limit,
            )
        self.timed_out = self.shed = 0

    def readable(self) -> bool:
        if self.accepting:
            self.shed_waiting_connections()
        return super().readable()

    def shed_waiting_connections(self) -> None:
        """Near the limit, close the connections whose client is overdue longest."""
        # waitress counts its own sockets in the map too, and stops accepting at the limit
        free = self.adj.connection_limit - len(self._map)
        if free >= self.reserve:
            return
        channels = list(self.active_channels.values())
        free += sum(channel.will_close and not channel.total_outbufs_len for channel in channels)
        if free >= self.reserve:
            return  # enough are closing already (the loop closes them this round)
        now = time.time()
        overdue = []
        for channel in channels:
            due = channel.client_due(self.header_timeout)
            if due is not None and due <= now:
                overdue.append((due, channel))
        for _, channel in heapq.nsmallest(self.reserve - free, overdue, key=lambda pair: pair[0]):
            channel.handle_close()  # at once: an unread answer's socket never turns writable
            self.shed += 1


def create_server(app: Flask) -> ProtectedServer | MultiSocketServer:
    """One protected server per address HOST resolves to, sharing one event loop and threads.

    The servers listen from here on (connections wait until `run()`); an address that cannot
    be listened on is a SettingsError naming HOST or PORT.
    """
    host, port = app.config["HOST"], app.config["PORT"]
    try:
        adj = Adjustments(**adjustments(app.config))
    except ValueError:  # waitress' message ("Invalid host/port specified.") names neither
        raise SettingsError(f"HOST={host!r}: not an address, nor a name that resolves") from None
    dispatcher = ThreadedTaskDispatcher()
    dispatcher.set_thread_count(adj.threads)
    socket_map: dict = {}
    try:
        servers = [
            ProtectedServer(
                app,
                socket_map,
                dispatcher=dispatcher,
                adj=adj,
                sockinfo=sockinfo,
                header_timeout=app.config["HTTP_HEADER_TIMEOUT"],
            )
            for sockinfo in adj.listen
        ]
    except OSError as exc:
        dispatcher.shutdown()
        raise SettingsError(cannot_listen(exc, host, port)) from None
    if len(servers) == 1:
        return servers[0]
    listening = [(server.effective_host, server.effective_port) for server in servers]
    return MultiSocketServer(socket_map, adj, listening, dispatcher, servers[0].log_info)


def cannot_listen(exc: OSError, host: str, port: int) -> str:
    """Why the server cannot listen, naming the setting to change."""
    if exc.errno == errno.EADDRINUSE:
        return f"PORT={port}: already in use on {host} (another server listens there)"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"HOST={host!r}: not an address of this machine"
    return f"cannot listen on HOST={host!r}, PORT={port}: {exc.strerror}"


def serve(app: Flask) -> None:
    """Serve `app` on HOST:PORT until the process is stopped."""
    run(create_server(app))


def run(server: ProtectedServer | MultiSocketServer) -> None:
    """Serve until the process is stopped, saying where. Ctrl-C and SIGTERM (`kill`, a
    service manager) both stop it cleanly: requests get a few seconds to finish and the exit
    handlers run (they remove this process's upload folders)."""
    signal.signal(signal.SIGTERM, _interrupt)
    if isinstance(server, MultiSocketServer):
        addresses = server.effective_listen
    else:
        addresses = [(server.effective_host, server.effective_port)]
    for host, port in addresses:
        logger.info("serving on http://%s:%s", host, port)
    server.run()  # returns once interrupted, after waitress's own shutdown
    logger.info("stopped")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
