"""Fixtures: the app on a fresh database (SQLite and, where it answers, MariaDB)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest
from hypothesis import settings

from app import create_app
from models import db, init_schema
from tests.databases import admin_connection, create_database, drop_database
from tests.examples import QUICK_MAX_EXAMPLES

# `make test-fast` runs with --hypothesis-profile=quick (see tests/examples.py).
settings.register_profile("quick", max_examples=QUICK_MAX_EXAMPLES)

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data"
SHARED = ROOT.parent / "shared" / "data"
MARIADB_ADMIN_URL = os.environ.get("TEST_MARIADB_URL", "mysql+pymysql://root:@127.0.0.1:3306/test")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true")
MARIADB_REQUIRED = IN_CI or bool(os.environ.get("REQUIRE_MARIADB"))
CHROMIUM = Path("/usr/bin/chromium")
# Without the background-networking flags Chromium keeps calling services on a closed network.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def mariadb_unavailable_reason() -> str | None:
    """None when MariaDB answers; else why not (tests then skip, except in CI)."""
    try:
        admin_connection(MARIADB_ADMIN_URL).close()
    except Exception as exc:  # any failure to connect is a reason to skip
        return f"MariaDB at {MARIADB_ADMIN_URL} does not answer: {exc}"
    return None


def skip_unless_required(reason: str | None, required: bool, what: str) -> None:
    """A missing service (`reason` says why) skips the test, except where it is required (CI):
    there the test fails, so a run without it cannot pass unnoticed."""
    if reason is None:
        return
    if required:
        pytest.fail(f"{what} is required here (CI): {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def mariadb_server():
    skip_unless_required(mariadb_unavailable_reason(), MARIADB_REQUIRED, "MariaDB")
    return MARIADB_ADMIN_URL


def browser_unavailable_reason() -> str | None:
    """None when Playwright can drive Debian's Chromium; else why not."""
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install -r requirements-dev.txt)"
    return None


@pytest.fixture(scope="session")
def browser():
    """Headless Chromium driven by Playwright: skipped when absent, except in CI."""
    skip_unless_required(browser_unavailable_reason(), IN_CI, "the browser")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(params=["sqlite", pytest.param("mariadb", marks=pytest.mark.mariadb)])
def database_url(request, tmp_path):
    """A fresh, empty database of each engine (MariaDB: a database created and dropped here)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'test.sqlite3'}"
        return
    admin_url = request.getfixturevalue("mariadb_server")
    name = f"sm_test_{secrets.token_hex(4)}"
    try:
        yield create_database(admin_url, name)
    finally:
        drop_database(admin_url, name)


def make_app(database_url: str, tmp_path: Path, **settings):
    app = create_app(
        {
            "DATABASE_URL": database_url,
            "REPORTS_DIR": str(tmp_path / "reports"),
            "REPORTS_INLINE": True,
            "TESTING": True,
            "START_BACKGROUND": False,  # no lease keeper left renewing after the test's database
            **settings,
        }
    )
    with app.app_context():
        init_schema()
    return app


@pytest.fixture
def app(database_url, tmp_path):
    app = make_app(database_url, tmp_path)
    yield app
    app.extensions["report_executor"].shutdown()
    with app.app_context():
        db.engine.dispose()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def sqlite_app(tmp_path):
    """The app on SQLite only: for tests of HTTP parsing, where the engine makes no difference."""
    app = make_app(f"sqlite:///{tmp_path / 'test.sqlite3'}", tmp_path)
    yield app
    app.extensions["report_executor"].shutdown()
    with app.app_context():
        db.engine.dispose()


@pytest.fixture
def sqlite_client(sqlite_app):
    return sqlite_app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


@pytest.fixture
def live_server(database_url, tmp_path):
    """The real service (`python app.py`) on the sample data, over HTTP on a free port."""
    from tests.server import ServerProcess, run_cli

    assert run_cli(database_url, "load-data", str(SAMPLE)).returncode == 0
    server = ServerProcess(database_url, tmp_path / "reports", tmp_path / "server.log").start()
    yield server
    server.stop()
