"""The brokers of this machine (shared: never stopped), for tests that need a real one."""

from __future__ import annotations

import os
import socket

from tests.conftest import IN_CI, skip_unless_required

BROKERS = {
    "rabbitmq": ("amqp://guest:guest@127.0.0.1:5672//", 5672),
    "redis": ("redis://127.0.0.1:6379/0", 6379),
}
BROKER_REQUIRED = IN_CI or bool(os.environ.get("REQUIRE_BROKER"))


def broker_url(name: str) -> str:
    """The broker's URL; the test skips when it does not answer (except where required)."""
    url, port = BROKERS[name]
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError as exc:
        reason = f"{name} broker at 127.0.0.1:{port} does not answer: {exc}"
        skip_unless_required(reason, BROKER_REQUIRED, "a broker")
    return url


def broker_port(name: str) -> int:
    return BROKERS[name][1]
