"""A TCP proxy a test puts between the service and a shared broker, to cut it.

The brokers on this machine are shared: a test never stops or restarts them. It points the
service and its workers at a proxy instead, and cuts the proxy: every open connection is
closed and new ones are reset at once (as a restarting broker does), until it is restored.
`hang()` makes it swallow new connections without a word instead (an unreachable broker).
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading

BUFFER = 65536


class TcpProxy:
    """Forwards 127.0.0.1:<port> to `target`; `cut()` / `hang()` / `restore()` change what
    happens to connections."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.mode = "forward"
        self.lock = threading.Lock()
        self.open_sockets: set[socket.socket] = set()
        self.held: list[socket.socket] = []
        self.accepted = 0
        self.closed = False
        threading.Thread(target=self._accept_loop, name="proxy-accept", daemon=True).start()

    def url(self, broker_url: str) -> str:
        """`broker_url` with its port replaced by this proxy's."""
        return broker_url.replace(f":{self.target[1]}", f":{self.port}", 1)

    def cut(self) -> None:
        """Close every connection and reset new ones, until `restore()`."""
        with self.lock:
            self.mode = "cut"
            doomed, self.open_sockets = self.open_sockets, set()
        for sock in doomed:
            reset(sock)

    def hang(self) -> None:
        """Accept new connections and never answer them, until `restore()`."""
        with self.lock:
            self.mode = "hang"

    def restore(self) -> None:
        with self.lock:
            self.mode = "forward"
            held, self.held = self.held, []
        for sock in held:
            reset(sock)

    def close(self) -> None:
        self.closed = True
        self.cut()
        self.restore()
        self.listener.close()

    def _accept_loop(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                self.accepted += 1
                mode = self.mode
                if mode == "hang":
                    self.held.append(client)
            if mode == "cut":
                reset(client)
            elif mode == "forward":
                self._forward(client)

    def _forward(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            reset(client)
            return
        upstream.settimeout(None)
        with self.lock:
            self.open_sockets.update((client, upstream))
        for source, sink in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        """Copy bytes one way until either side closes; then close this side."""
        try:
            while data := source.recv(BUFFER):
                sink.sendall(data)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)
        with self.lock:
            self.open_sockets.discard(source)
        with contextlib.suppress(OSError):
            source.close()


def reset(sock: socket.socket) -> None:
    """Close at once, as a broker that goes away does: a thread reading it wakes up, the peer
    sees the connection end (a reset if it sends anything more)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
