"""Serve the app with waitress, protected against huge request bodies and slow clients.

waitress reads a whole request, headers and body, before the app sees it, so the app's limits
and its token check come too late to protect the server itself. Here:

- the server refuses a body larger than any endpoint accepts as soon as it has the headers;
- a connection that has not finished a request's headers HTTP_HEADER_TIMEOUT seconds after
  the request's first byte (or after it opened, if it has sent nothing) is closed: waitress
  has no such timeout, and its idle timeout is reset by every byte a slow client trickles;
- near the connection limit, the connections that have waited longest for headers are closed
  first, so a new client is still accepted.
"""

from __future__ import annotations

import heapq
import logging
import time
from collections.abc import Mapping
from typing import Any

from flask import Flask
from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.server import MultiSocketServer, TcpWSGIServer
from waitress.task import ThreadedTaskDispatcher

logger = logging.getLogger(__name__)

# Seconds between the server's looks for connections past a deadline. waitress' default (30)
# would let a 10 s header timeout run to 40 s.
CLEANUP_INTERVAL = 1


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


class HeaderTimedChannel(HTTPChannel):
    """A client connection that knows since when it has been waiting for a request's headers.

    `awaiting_headers_since` (time.time(), like waitress' own clocks) is when the current
    request's first byte arrived, or when the connection opened if it has sent nothing; None
    while no headers are awaited: a request's headers are complete, or the connection is idle
    between keep-alive requests (waitress' channel_timeout bounds that).
    """

    def __init__(self, server, sock, addr, adj, map=None) -> None:
        super().__init__(server, sock, addr, adj, map)
        self.awaiting_headers_since: float | None = self.creation_time
        self.timed_request = None  # the parser whose headers the clock is timing

    def received(self, data: bytes) -> bool:
        if not data:
            return super().received(data)
        now = time.time()
        result = super().received(data)
        request = self.request  # the request still being read, if any
        if request is None or request.headers_finished:
            self.awaiting_headers_since = None
        elif request is not self.timed_request:
            # a new request's first bytes, maybe after complete ones in the same read
            self.awaiting_headers_since = now
        self.timed_request = request
        return result

    def waiting_for_client(self) -> bool:
        """Whether the connection waits on its client alone: no request run, no answer sent."""
        return not (
            self.requests or self.total_outbufs_len or self.will_close or self.close_when_flushed
        )


class ProtectedServer(TcpWSGIServer):
    """waitress' TCP server with a header timeout and shedding of slow clients near its limit."""

    channel_class = HeaderTimedChannel

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
        for channel in self.active_channels.values():
            since = channel.awaiting_headers_since
            if since is not None and since < cutoff and channel.waiting_for_client():
                channel.will_close = True  # the event loop closes it
                self.timed_out += 1
        if self.timed_out:
            logger.warning(
                "closed %d connections that did not finish a request's headers within %s s",
                self.timed_out,
                self.header_timeout,
            )
        if self.shed:
            logger.warning(
                "closed %d connections waiting longest for a request, near the connection "
                "limit (%d)",
                self.shed,
                self.adj.connection_limit,
            )
        self.timed_out = self.shed = 0

    def readable(self) -> bool:
        if self.accepting:
            self.shed_waiting_connections()
        return super().readable()

    def shed_waiting_connections(self) -> None:
        """Near the limit, close connections waiting longest for headers, then idle ones."""
        # waitress counts its own sockets in the map too, and stops accepting at the limit
        free = self.adj.connection_limit - len(self._map)
        if free >= self.reserve:
            return
        free += sum(channel.will_close for channel in self.active_channels.values())
        if free >= self.reserve:
            return  # enough are closing already
        waiting = [
            channel for channel in self.active_channels.values() if channel.waiting_for_client()
        ]
        for channel in heapq.nsmallest(self.reserve - free, waiting, key=shedding_order):
            channel.will_close = True
            self.shed += 1


def shedding_order(channel: HeaderTimedChannel) -> tuple[bool, float]:
    """Connections waiting for headers first, longest first; then idle ones, longest first."""
    since = channel.awaiting_headers_since
    if since is None:
        return (True, channel.last_activity)
    return (False, since)


def create_server(app: Flask) -> ProtectedServer | MultiSocketServer:
    """One protected server per address HOST resolves to, sharing one event loop and threads."""
    adj = Adjustments(**adjustments(app.config))
    dispatcher = ThreadedTaskDispatcher()
    dispatcher.set_thread_count(adj.threads)
    socket_map: dict = {}
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
    for server in servers:
        logger.info("serving on http://%s:%s", server.effective_host, server.effective_port)
    if len(servers) == 1:
        return servers[0]
    listening = [(server.effective_host, server.effective_port) for server in servers]
    return MultiSocketServer(socket_map, adj, listening, dispatcher, servers[0].log_info)


def serve(app: Flask) -> None:
    """Serve `app` on HOST:PORT until the process is stopped."""
    create_server(app).run()
