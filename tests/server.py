"""Run the real service (`python app.py`) in a child process on a free local port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
# Only these pass from the shell to a child process: the service's own settings never do, so
# a stray API_TOKEN or DATABASE_URL in the developer's shell cannot change a test.
INHERITED = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "PYTHONDONTWRITEBYTECODE")


def clean_environment(**settings: str) -> dict[str, str]:
    """The environment of a child process: the basics of the shell plus `settings`."""
    inherited = {name: os.environ[name] for name in INHERITED if name in os.environ}
    return {**inherited, **settings}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """The service as a user runs it; `kill()` is a real SIGKILL."""

    def __init__(self, database_url: str, reports_dir: Path, log_path: Path, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.environment = clean_environment(
            DATABASE_URL=database_url, REPORTS_DIR=str(reports_dir), PORT=str(self.port), **env
        )
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 30.0) -> ServerProcess:
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child process
        self.process = subprocess.Popen(
            [sys.executable, "app.py"],
            cwd=ROOT,
            env=self.environment,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_path.read_text()[-2000:]}")
            try:
                if requests.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except requests.ConnectionError:
                time.sleep(0.1)
        raise TimeoutError(f"server did not answer in {timeout} s")

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


def run_cli(database_url: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    environment = clean_environment(DATABASE_URL=database_url, **env)
    return subprocess.run(
        [sys.executable, "-m", "flask", "--app", "app", *args],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )


def wait_for_report(
    base_url: str, report_id: str, timeout: float = 120.0, **kwargs
) -> requests.Response:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = requests.get(f"{base_url}/get_report/{report_id}", timeout=10, **kwargs)
        if response.status_code != 202:
            return response
        time.sleep(0.1)
    raise TimeoutError(f"report {report_id} still running after {timeout} s")
