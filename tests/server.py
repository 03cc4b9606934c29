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


FLASK = (sys.executable, "-m", "flask", "--app", "app")


def spawn(
    command: tuple[str, ...], environment: dict[str, str], log_path: Path
) -> subprocess.Popen:
    """Start `command` in a process group of its own (killable as a whole), logging to a file."""
    log = open(log_path, "ab")  # noqa: SIM115 - owned by the child process
    return subprocess.Popen(
        [*command],
        cwd=ROOT,
        env=environment,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


class ServerProcess:
    """The service as a user runs it (`python app.py`, or `command`); `kill()` is a real
    SIGKILL of its whole process group (a server's worker processes die with it)."""

    command = (sys.executable, "app.py")

    def __init__(self, database_url: str, reports_dir: Path, log_path: Path, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.environment = clean_environment(
            DATABASE_URL=database_url, REPORTS_DIR=str(reports_dir), PORT=str(self.port), **env
        )
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 30.0) -> ServerProcess:
        self.process = spawn(self.command, self.environment, self.log_path)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_path.read_text()[-2000:]}")
            try:
                if self.ready():
                    return self
            except requests.RequestException:  # not listening yet, or busy starting
                pass
            time.sleep(0.1)
        raise TimeoutError(f"server not ready in {timeout} s")

    def ready(self) -> bool:
        """Answering, and done evaluating the loads committed before it started (so that what
        a test does next never races the start-up evaluation)."""
        answer = requests.get(f"{self.url}/healthz", timeout=1)
        return answer.status_code == 200 and answer.json().get("unevaluated_loads") == 0

    def kill(self) -> None:
        """SIGKILL the process and every process of its group: no cleanup, no goodbye."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()

    def owns(self, pid: int) -> bool:
        """Whether `pid` is this process or one of its group (e.g. a worker child)."""
        try:
            return self.process is not None and os.getpgid(pid) == self.process.pid
        except ProcessLookupError:
            return False


class GunicornProcess(ServerProcess):
    """The service under gunicorn with several worker processes: `gunicorn -w N`."""

    def __init__(self, *args, workers: int = 4, **env: str) -> None:
        super().__init__(*args, **env)
        self.command = (
            sys.executable,
            "-m",
            "gunicorn",
            "-w",
            str(workers),
            "-b",
            f"127.0.0.1:{self.port}",
            "app:create_app()",
        )


class WorkerProcess:
    """A Celery worker as a user runs it: `flask --app app worker --concurrency N`."""

    def __init__(
        self, database_url: str, broker_url: str, log_path: Path, concurrency: int = 1, **env: str
    ) -> None:
        self.environment = clean_environment(
            DATABASE_URL=database_url, CELERY_BROKER_URL=broker_url, **env
        )
        self.concurrency = concurrency
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 60.0) -> WorkerProcess:
        command = (*FLASK, "worker", f"--concurrency={self.concurrency}")
        self.process = spawn(command, self.environment, self.log_path)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited: {self.log_path.read_text()[-2000:]}")
            if b" ready." in self.log_path.read_bytes():
                return self
            time.sleep(0.2)
        raise TimeoutError(f"worker not ready in {timeout} s: {self.log_path.read_text()[-2000:]}")

    kill = ServerProcess.kill
    stop = ServerProcess.stop
    owns = ServerProcess.owns


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
