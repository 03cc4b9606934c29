"""The HTTP server's own protections: body limit, header timeout, slow-client shedding."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import resource
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from waitress.adjustments import Adjustments

import config
from tests.conftest import IN_CI, skip_unless_required
from tests.server import ServerProcess
from web import server as wsgi_server

MIB = 1024 * 1024
CROWD = 1050  # more than the default HTTP_CONNECTION_LIMIT (1000)
TOKEN = "a-token-the-crowd-does-not-have"
OPEN_FILES_NEEDED = 2048  # a crowd's sockets here, and the server's (it inherits this)


# --------------------------------------------------------------------------- helpers


@pytest.fixture
def start_server(tmp_path):
    """Start `python app.py` on an empty SQLite database with the given settings."""
    servers: list[ServerProcess] = []

    def start(**settings: str) -> ServerProcess:
        server = ServerProcess(
            f"sqlite:///{tmp_path / 'test.sqlite3'}",
            tmp_path / "reports",
            tmp_path / "server.log",
            **settings,
        )
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def open_files():
    """Raise this process's soft open-file limit for a crowd's sockets (a server started
    afterwards inherits it; it needs fewer: it sheds connections near its limit, 1000)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < OPEN_FILES_NEEDED:
        if hard != resource.RLIM_INFINITY and hard < OPEN_FILES_NEEDED:
            reason = f"needs {OPEN_FILES_NEEDED} open files (ulimit -n); the hard limit is {hard}"
            skip_unless_required(reason, IN_CI, "an open-file limit this high")
        resource.setrlimit(resource.RLIMIT_NOFILE, (OPEN_FILES_NEEDED, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def post_head(content_length: int) -> bytes:
    """The headers of a JSON POST, without its body."""
    return (
        f"POST /trigger_report HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {content_length}\r\n\r\n"
    ).encode()


def read_until_closed(sock: socket.socket) -> bytes:
    """What the server sends before it closes the connection (the socket's timeout bounds it)."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def proc_fds(pid: int) -> list[tuple[Path, str]]:
    """The process's open descriptors and what each points to (Linux /proc)."""
    fds = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            fds.append((fd, os.readlink(fd)))
        except FileNotFoundError:  # closed meanwhile
            continue
    return fds


def temp_bytes(pid: int, temp_dir: Path) -> int:
    """Bytes the process holds in `temp_dir`, counting unlinked temporary files it has open."""
    held = sum(
        fd.stat().st_size for fd, target in proc_fds(pid) if target.startswith(str(temp_dir))
    )
    return held + sum(path.stat().st_size for path in temp_dir.iterdir())


def open_sockets(pid: int) -> int:
    return sum(target.startswith("socket:") for _, target in proc_fds(pid))


needs_proc = pytest.mark.skipif(
    not Path("/proc/self/fd").is_dir(), reason="reads the server's descriptors from /proc"
)


# --------------------------------------------------------------------------- body limit


@pytest.mark.slow
@needs_proc
def test_a_body_over_the_limit_is_refused_from_its_headers(start_server, tmp_path):
    temp_dir = tmp_path / "server-tmp"
    temp_dir.mkdir()
    server = start_server(API_TOKEN="a-token-this-client-does-not-have", TMPDIR=str(temp_dir))
    address = ("127.0.0.1", server.port)

    # The incident: 300 MB sent without a token. Send its headers and first 4 MiB (waitress
    # spools a body over 512 KiB to a temporary file), then listen for up to 5 s.
    with socket.create_connection(address, timeout=5) as sock:
        answer: bytes | None
        try:
            sock.sendall(post_head(300_000_000) + bytes(4 * MIB))
            answer = read_until_closed(sock)
        except TimeoutError:
            answer = None  # still reading the body
        except OSError:
            answer = b""  # refused and closed while the body was still coming: a reset
        spooled = temp_bytes(server.process.pid, temp_dir)
    assert spooled == 0, f"{spooled} bytes of the body went to the server's temporary directory"
    assert answer is not None, "no answer in 5 s: the server was reading the body"

    # Headers alone: the answer comes before any of the body is sent.
    with socket.create_connection(address, timeout=5) as sock:
        started = time.monotonic()
        sock.sendall(post_head(300_000_000))
        answer = read_until_closed(sock)
        elapsed = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 413 Request Entity Too Large\r\n"), answer[:200]
    assert b"\r\nConnection: close\r\n" in answer
    assert elapsed < 2
    assert temp_bytes(server.process.pid, temp_dir) == 0


@pytest.mark.slow
def test_a_body_at_the_limit_reaches_the_app(start_server):
    server = start_server(INGEST_MAX_BYTES=str(MIB))  # larger than MAX_CONTENT_LENGTH (16 KiB)

    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(post_head(MIB + 1))  # one byte over: the server refuses it itself
        refused = read_until_closed(sock)
    head, _, body = refused.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413 "), refused[:200]
    assert b"\r\nContent-Type: application/json" in head  # JSON like the app's own errors
    assert json.loads(body) == {
        "error": "request_entity_too_large",
        "message": f"the body is larger than any endpoint accepts ({MIB} bytes)",
    }

    # Exactly the limit: the server reads it and hands it over; the app's own limit for this
    # endpoint (MAX_CONTENT_LENGTH) then answers, in JSON.
    at_limit = requests.post(
        f"{server.url}/trigger_report",
        data=b" " * MIB,
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert at_limit.status_code == 413
    assert at_limit.json()["error"] == "request_entity_too_large"


# --------------------------------------------------------------------------- slow clients


START = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: "  # headers, never finished
HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
HEALTHY = {"status": "ok", "database": "ok", "unevaluated_loads": 0}
OPENAPI = b"GET /openapi.json HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"  # about 30 KB of answer


@dataclass(frozen=True)
class Pattern:
    """How each connection of a crowd keeps the server waiting on it."""

    opening: bytes  # sent as soon as the connection is open
    trickle: bytes = b""  # then one byte of this a round, over and over
    reads: bool = True  # reads what the server sends, and reopens a connection it closes
    receive_buffer: int = 0  # SO_RCVBUF, when set: a small one fills up with unread answers


PATTERNS = {
    # headers begun and never finished, a byte a round
    "header-less": Pattern(START, trickle=b"a"),
    # one request answered, then nothing: a keep-alive waiting for its next request
    "idle": Pattern(HEALTHZ),
    # headers promising 1,000 bytes of body, then one byte a round
    "slow body": Pattern(post_head(1000) + b"{", trickle=b" "),
    # two requests at once, and never a byte of their answers read
    "unread answers": Pattern(OPENAPI * 2, reads=False, receive_buffer=4096),
}


class Crowd:
    """`count` connections that all follow `pattern`, each sending its next byte every round.

    One the server closes is opened again at the next round, as an attacker's tool would
    (when the pattern reads: one that never reads cannot tell).
    """

    def __init__(self, port: int, pattern: Pattern, count: int, interval: float) -> None:
        self.address = ("127.0.0.1", port)
        self.pattern, self.count, self.interval = pattern, count, interval
        self.sockets: list[socket.socket] = []
        self.bytes_sent: list[int] = []
        self.stopping = threading.Event()
        self.rounds = threading.Thread(target=self.play_until_stopped, daemon=True)

    def __enter__(self) -> Crowd:
        for _ in range(self.count):
            self.sockets.append(self.connect())
            self.bytes_sent.append(0)
        self.play()
        self.rounds.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stopping.set()
        self.rounds.join()
        for sock in self.sockets:
            sock.close()

    def connect(self) -> socket.socket:
        sock = socket.socket()
        if self.pattern.receive_buffer:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.pattern.receive_buffer)
        sock.setblocking(False)
        sock.connect_ex(self.address)  # completes in the background (loopback)
        return sock

    def play_until_stopped(self) -> None:
        while not self.stopping.wait(self.interval):
            self.play()

    def play(self) -> None:
        """One round: read what came (if the pattern reads), send the next bytes."""
        for index, sock in enumerate(self.sockets):
            if self.pattern.reads and not drained(sock):
                self.reopen(index)
                continue
            try:
                self.bytes_sent[index] += sock.send(self.next_bytes(index))
            except BlockingIOError:
                pass  # still connecting, or the server reads nothing more
            except OSError:
                if self.pattern.reads:
                    self.reopen(index)

    def next_bytes(self, index: int) -> bytes:
        """The rest of the opening, else the next byte of the trickle."""
        opening, trickle = self.pattern.opening, self.pattern.trickle
        sent = self.bytes_sent[index]
        if sent < len(opening):
            return opening[sent:]
        return trickle[(sent - len(opening)) % len(trickle) :][:1] if trickle else b""

    def reopen(self, index: int) -> None:
        self.sockets[index].close()
        self.sockets[index] = self.connect()
        self.bytes_sent[index] = 0


def drained(sock: socket.socket) -> bool:
    """Read whatever the server has sent; False once it has closed the connection.

    Never waits, if `sock` has no timeout (blocking or not).
    """
    while True:
        try:
            if not sock.recv(65536, socket.MSG_DONTWAIT):
                return False  # closed
        except BlockingIOError:
            return True  # nothing (more) to read: still open
        except OSError:
            return False  # reset


def closed(sock: socket.socket) -> bool:
    """Whether the server has closed (or answered) a never-finished request.

    Never waits, if `sock` has no timeout (blocking or not).
    """
    try:
        sock.recv(1, socket.MSG_DONTWAIT)  # b"" (closed) or an answer: either way, over
    except BlockingIOError:
        return False  # nothing to read: still waiting for the rest of the headers
    except OSError:
        return True  # reset
    return True


def wait_for(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


@pytest.mark.slow
@needs_proc
@pytest.mark.parametrize("pattern", PATTERNS.values(), ids=PATTERNS.keys())
def test_a_crowd_that_keeps_the_server_waiting_does_not_lock_out_a_real_client(
    start_server, open_files, pattern
):
    # The idle timeout (an hour) frees no place here: only shedding near the connection limit
    # (1000 by default) can. HTTP_HEADER_TIMEOUT (2 s) is also the grace of a slow body and of
    # an answer nobody reads.
    server = start_server(HTTP_HEADER_TIMEOUT="2", HTTP_IDLE_TIMEOUT="3600", API_TOKEN=TOKEN)
    with Crowd(server.port, pattern, CROWD, interval=1.0):
        full = wait_for(lambda: open_sockets(server.process.pid) >= 950, timeout=60)
        assert full, "the crowd never filled the server"
        response = requests.get(
            f"{server.url}/reports?limit=1",
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=60,
        )
    assert response.status_code == 200
    assert response.json() == {"reports": []}


@pytest.mark.slow
def test_unfinished_headers_and_idle_connections_are_closed_on_time(start_server):
    server = start_server(HTTP_HEADER_TIMEOUT="2", HTTP_IDLE_TIMEOUT="5")
    address = ("127.0.0.1", server.port)
    with contextlib.ExitStack() as stack:
        started = time.monotonic()
        silent = stack.enter_context(socket.create_connection(address))  # sends nothing
        trickling = stack.enter_context(socket.create_connection(address))  # a byte every 0.5 s
        idle = http.client.HTTPConnection(*address, timeout=5)  # one request, then kept alive
        stack.callback(idle.close)
        idle.request("GET", "/healthz")
        assert json.loads(idle.getresponse().read()) == HEALTHY
        idle.sock.settimeout(None)  # else recv waits out the timeout before trying MSG_DONTWAIT
        connections = {"silent": silent, "trickling": trickling, "idle": idle.sock}
        closed_after: dict[str, float] = {}
        sent = 0
        while len(closed_after) < len(connections) and time.monotonic() - started < 10:
            if "trickling" not in closed_after and time.monotonic() - started >= sent * 0.5:
                sent += trickling.send(START[sent : sent + 1])
            for name, sock in connections.items():
                if name not in closed_after and closed(sock):
                    closed_after[name] = time.monotonic() - started
            time.sleep(0.05)
    # Deadlines: 2 s for headers, 5 s idle; the server looks once a second (3 s of slack here).
    assert 2 <= closed_after["silent"] < 5
    assert 2 <= closed_after["trickling"] < 5
    assert sent >= 4  # it kept sending, so the idle timeout alone would not have closed it
    assert 5 <= closed_after["idle"] < 8  # waiting for a next request is not a header wait


# --------------------------------------------------------------------------- settings


@pytest.mark.parametrize(
    ("max_content_length", "ingest_max_bytes", "server_limit"),
    [
        (16 * 1024, 64 * MIB, 64 * MIB + 1),  # the defaults: uploads are the largest bodies
        (2 * MIB, 1 * MIB, 2 * MIB + 1),
        (None, 1 * MIB, 1 * MIB + 1),  # Flask's "no limit" leaves the uploads' limit
    ],
)
def test_the_server_refuses_only_bodies_no_endpoint_accepts(
    max_content_length, ingest_max_bytes, server_limit
):
    settings = config.defaults("instance") | {
        "MAX_CONTENT_LENGTH": max_content_length,
        "INGEST_MAX_BYTES": ingest_max_bytes,
    }
    # waitress refuses a Content-Length >= max_request_body_size: the largest body + 1
    assert wsgi_server.adjustments(settings)["max_request_body_size"] == server_limit


def test_the_defaults_make_valid_waitress_settings():
    adj = Adjustments(**wsgi_server.adjustments(config.defaults("instance")))
    assert (adj.channel_timeout, adj.connection_limit, adj.threads) == (30, 1000, 8)
    assert adj.max_request_body_size == 64 * MIB + 1
    assert adj.asyncore_use_poll  # select() fails on descriptors >= 1024


@pytest.mark.parametrize("name", ["HTTP_HEADER_TIMEOUT", "HTTP_IDLE_TIMEOUT"])
def test_timeouts_must_be_positive(name):
    with pytest.raises(ValueError, match=f"{name} must be a positive number of seconds, not 0"):
        wsgi_server.adjustments(config.defaults("instance") | {name: 0})


def test_timeouts_and_upload_limit_come_from_the_environment():
    environ = {"HTTP_HEADER_TIMEOUT": "2", "HTTP_IDLE_TIMEOUT": "5", "INGEST_MAX_BYTES": "1024"}
    assert config.from_environment(environ) == {
        "HTTP_HEADER_TIMEOUT": 2,
        "HTTP_IDLE_TIMEOUT": 5,
        "INGEST_MAX_BYTES": 1024,
    }


# --------------------------------------------------------------------------- in process


class Clock:
    """time.time() for waitress and the server module, moved by hand."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    clock = Clock(1000.0)
    monkeypatch.setattr(time, "time", clock)
    return clock


class QueuedTasks:
    """Stands in for waitress' thread pool: keeps the channels with a request to run."""

    def __init__(self) -> None:
        self.channels: list = []

    def add_task(self, channel) -> None:
        self.channels.append(channel)


@pytest.fixture
def make_server(clock):
    """A ProtectedServer on a free port whose event loop never runs: the test drives it."""
    servers, sockets, clients = [], [], {}

    def make(connection_limit=100, header_timeout=10, idle_timeout=30, **adjustments):
        adj = Adjustments(
            host="127.0.0.1",
            port=0,
            connection_limit=connection_limit,
            channel_timeout=idle_timeout,
            **adjustments,
        )
        server = wsgi_server.ProtectedServer(
            lambda environ, start_response: [],
            {},
            dispatcher=QueuedTasks(),
            adj=adj,
            header_timeout=header_timeout,
        )
        servers.append(server)
        return server

    def connect(server) -> wsgi_server.TimedChannel:
        """A client connection as the server sees it (the other end stays here)."""
        server_end, client_end = socket.socketpair()
        sockets.append(client_end)
        channel = server.channel_class(
            server, server_end, ("127.0.0.1", 0), server.adj, server._map
        )
        clients[channel] = client_end
        return channel

    make.connect = connect
    make.client = clients.__getitem__  # the client's end of a connection
    yield make
    for server in servers:
        for channel in list(server.active_channels.values()):
            channel.close()
        server.close()
    for sock in sockets:
        sock.close()


def test_the_header_clock_runs_from_a_requests_first_byte_to_its_last_header(make_server, clock):
    channel = make_server.connect(make_server())  # opens at 1000
    assert channel.awaiting_headers_since == 1000  # nothing sent: counted from the opening
    clock.now = 1004
    channel.received(b"GE")
    assert channel.awaiting_headers_since == 1004  # the first byte starts the request's clock
    clock.now = 1006
    channel.received(b"T / HTTP/1.1\r\nHost: x\r\n")
    assert channel.awaiting_headers_since == 1004  # later bytes do not restart it
    clock.now = 1007
    channel.received(b"\r\n")
    assert channel.awaiting_headers_since is None and len(channel.requests) == 1
    channel.requests.clear()  # served: the connection waits for a next request, idle
    clock.now = 1020
    channel.received(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HT")  # one whole, one begun
    assert channel.awaiting_headers_since == 1020 and len(channel.requests) == 1


def test_the_body_clock_runs_from_a_requests_last_header_to_its_last_byte(make_server, clock):
    channel = make_server.connect(make_server())
    clock.now = 1010
    channel.received(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
    assert (channel.awaiting_headers_since, channel.body_since) == (None, 1010)  # same read
    clock.now = 1012
    channel.received(b"defghi")
    assert channel.body_since == 1010  # later bytes do not restart it
    channel.received(b"j")
    assert channel.body_since is None and len(channel.requests) == 1
    channel.requests.clear()
    clock.now = 1030
    channel.received(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n")
    assert (channel.awaiting_headers_since, channel.body_since) == (1030, None)
    clock.now = 1032
    channel.received(b"\r\n")
    assert (channel.awaiting_headers_since, channel.body_since) == (None, 1032)
    clock.now = 1040
    channel.received(b"ab")
    assert channel.body_since == 1032


def closed_by_server(server, channel) -> bool:
    """Whether the server has closed the connection (not merely marked it for the loop)."""
    return channel not in server.active_channels.values()


def test_maintenance_closes_connections_past_their_header_or_idle_deadline(make_server, clock):
    server = make_server(header_timeout=10, idle_timeout=30)
    silent = make_server.connect(server)  # opened at 1000, sends nothing
    clock.now = 1005
    partial = make_server.connect(server)
    partial.received(b"GET / HTTP/1.1\r\n")  # headers begun at 1005
    idle = make_server.connect(server)
    idle.received(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    idle.requests.clear()  # served at 1005, then idle
    unread = make_server.connect(server)
    unread.received(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    unread.requests.clear()
    unread.total_outbufs_len = 1  # answered at 1005; its client never reads the answer
    busy = make_server.connect(server)
    busy.received(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /next HT")  # running + begun
    channels = {"silent": silent, "partial": partial, "idle": idle, "unread": unread, "busy": busy}

    def closing_after(now: float) -> set[str]:
        server.maintenance(now)
        return {
            name
            for name, channel in channels.items()
            if channel.will_close or closed_by_server(server, channel)
        }

    assert closing_after(1009.5) == set()
    assert closing_after(1010.5) == {"silent"}  # 10 s after it opened
    assert closing_after(1015.5) == {"silent", "partial"}  # 10 s after its first byte
    assert closing_after(1035.5) == {"silent", "partial", "idle", "unread"}  # 30 s idle
    # An unread answer's socket never turns writable, so the loop would never close it.
    assert closed_by_server(server, unread)
    assert closing_after(2000) == {"silent", "partial", "idle", "unread"}  # a running request


REQUEST = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
# Connections as the server sees them at 1050, with 20 s of grace for a body or an answer
# (HTTP_HEADER_TIMEOUT) and HEADERS_GRACE (1 s) for headers. Each is due (its client owes the
# next move) at the time in brackets; overdue ones are closed, the longest overdue first.
CONNECTIONS = [
    # (name, opened at, data received, last byte read or sent, answer unread)
    ("running", 1000, REQUEST + b"GET /next", None, False),  # never: its request runs
    ("idle 1020", 1010, REQUEST, 1020, False),  # [1020] its answer went at 1020
    ("slow body 1005", 1005, post_head(1000) + b"{", None, False),  # [1025 + 1/16384]
    ("unread answer 1010", 1000, REQUEST, 1010, True),  # [1030] its client last read at 1010
    ("headers 1035", 1030, b"GET / HTTP/1.1\r\n", None, False),  # [1036]
    ("idle 1040", 1040, REQUEST, 1040, False),  # [1040]
    ("new 1048", 1048, b"", None, False),  # [1049] opened at 1048, nothing sent
    ("read answer 1045", 1000, REQUEST, 1045, True),  # [1065] not yet
    ("body on time 1045", 1045, post_head(1000) + b"{", None, False),  # [1065] not yet
    ("new 1049.5", 1049.5, b"", None, False),  # [1050.5] not yet
]
SHEDDING_ORDER = [
    "idle 1020",
    "slow body 1005",
    "unread answer 1010",
    "headers 1035",
    "idle 1040",
    "new 1048",
]


@pytest.mark.parametrize(
    ("connection_limit", "shed"),
    [
        # 10 connections + waitress' listening socket and wake-up pipe = 12 places taken; one
        # is kept free (1% of the limit, at least 1). Each lower limit closes one more.
        (13, 0),
        (12, 1),
        (11, 2),
        (9, 4),
        (7, 6),
        (5, 6),  # no more: the others' clients owe nothing yet
    ],
)
def test_near_the_limit_the_longest_overdue_clients_are_closed_first(
    make_server, clock, connection_limit, shed
):
    server = make_server(connection_limit=connection_limit, header_timeout=20, idle_timeout=999)
    channels = {}
    for name, opened, data, last_activity, unread in CONNECTIONS:
        clock.now = opened
        channel = channels[name] = make_server.connect(server)
        channel.received(data)
        if last_activity is not None:
            channel.requests.clear()  # answered
            channel.last_activity = last_activity
        channel.total_outbufs_len = int(unread)
    assert len(server._map) == 12
    clock.now = 1050
    server.readable()
    server.readable()  # again: no more, the places are free now
    closed = {name for name, channel in channels.items() if closed_by_server(server, channel)}
    assert closed == set(SHEDDING_ORDER[:shed])
    # The loop collects what to watch right after shedding: a closed connection must not be
    # watched, or its stale event would close a connection accepted this round on its number.
    assert not any(channels[name].readable() or channels[name].writable() for name in closed)


@pytest.mark.parametrize(
    ("request_bytes", "status", "error", "message"),
    [
        (
            post_head(1001),
            b"413 Request Entity Too Large",
            "request_entity_too_large",
            "the body is larger than any endpoint accepts (1000 bytes)",
        ),
        (
            b"GET / HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 200 + b"\r\n\r\n",
            b"431 Request Header Fields Too Large",
            "request_header_fields_too_large",
            "the request's headers are larger than 150 bytes",
        ),
        (
            b"GET / HTTP/1.1\r\nHost: x\r\nno colon\r\n\r\n",
            b"400 Bad Request",
            "bad_request",
            "not a valid HTTP request: Invalid header",
        ),
        (
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"501 Not Implemented",
            "not_implemented",
            "Transfer-Encoding requested is not supported.",
        ),
    ],
    ids=["body too large", "headers too large", "bad header", "unknown transfer encoding"],
)
def test_the_servers_own_errors_are_json_like_the_apps(
    make_server, request_bytes, status, error, message
):
    server = make_server(max_request_body_size=1001, max_request_header_size=150)
    channel = make_server.connect(server)
    channel.received(request_bytes)
    assert server.task_dispatcher.channels == [channel]  # refused: an error answer is queued
    channel.service()  # what one of waitress' threads does with it
    client = make_server.client(channel)
    client.settimeout(5)
    head, _, body = client.recv(65536).partition(b"\r\n\r\n")
    assert head.split(b"\r\n")[0] in (b"HTTP/1.0 " + status, b"HTTP/1.1 " + status)
    assert b"\r\nContent-Type: application/json\r\n" in head + b"\r\n"
    assert b"\r\nConnection: close" in head
    assert json.loads(body) == {"error": error, "message": message}


@pytest.mark.slow
def test_the_smallest_connection_limit_allowed_still_answers(start_server):
    # 16: waitress' listening socket and wake-up pipe, a place kept free, and 13 for clients
    server = start_server(HTTP_CONNECTION_LIMIT="16")
    with contextlib.ExitStack() as stack:
        for _ in range(10):  # idle keep-alives, more than half the limit
            idle = stack.enter_context(socket.create_connection(("127.0.0.1", server.port)))
            idle.sendall(HEALTHZ)
        response = requests.get(f"{server.url}/healthz", timeout=30)
    assert response.json() == HEALTHY
