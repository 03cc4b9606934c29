"""Settings: checked at start-up through both doors (`python app.py`, `flask --app app ...`),
refused in one line that names the setting; their help makes the README's settings table."""

from __future__ import annotations

import math
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

import config
from app import create_app
from tests.server import FLASK, ROOT, clean_environment, free_port, run_cli

APP = (sys.executable, "app.py")
INIT_DB = (*FLASK, "init-db")
SECRET = "s3cret-password"


# --------------------------------------------------------------------------- the README


def test_the_readme_settings_table_is_generated_from_the_settings():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert config.with_settings_table(readme) == readme, (
        "the README's settings table is out of date: run `.venv/bin/python -m config README.md`"
    )


def test_every_setting_says_what_it_does():
    assert [name for name, setting in config.SETTINGS.items() if not setting.help] == []


def test_the_table_has_a_row_per_setting_with_its_default():
    rows = config.settings_table().splitlines()[2:]
    assert [row.split(" | ")[0] for row in rows] == [f"| `{name}`" for name in config.SETTINGS]
    assert "| `HTTP_CONNECTION_LIMIT` | `1000` |" in config.settings_table()
    assert "| `API_TOKEN` | unset |" in config.settings_table()


def test_a_file_without_the_markers_is_refused():
    with pytest.raises(ValueError, match="settings:start"):
        config.with_settings_table("# A README without a settings block\n")


# --------------------------------------------------------------------------- in process


def test_a_variable_set_to_blanks_is_refused_not_taken_as_unset():
    # API_TOKEN of spaces used to turn authentication off without a word.
    with pytest.raises(config.SettingsError, match="environment variable API_TOKEN is blank"):
        config.from_environment({"API_TOKEN": "   "})
    assert config.from_environment({"API_TOKEN": "", "PORT": ""}) == {}  # empty: unset


def test_a_blank_token_in_a_test_mapping_is_refused_too():
    settings = config.defaults("instance") | {"API_TOKEN": " "}
    with pytest.raises(config.SettingsError, match="API_TOKEN is blank"):
        config.validate(settings)


@pytest.mark.parametrize("limit", [1, 3, 15])
def test_a_connection_limit_the_server_cannot_answer_with_is_refused(limit):
    # waitress counts its listening socket and wake-up pipe (per address) within the limit,
    # and shedding keeps a place free: below 16 a server may never answer.
    settings = config.defaults("instance") | {"HTTP_CONNECTION_LIMIT": limit}
    with pytest.raises(config.SettingsError, match=r"HTTP_CONNECTION_LIMIT=.*between 16 and"):
        config.validate(settings)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("not a url", "DATABASE_URL is not a database URL (sqlite:///path"),
        (
            f"postgresql://monitor:{SECRET}@db-host/store_monitor",
            "DATABASE_URL=postgresql://monitor:***@db-host/store_monitor: Store Monitor runs "
            "on SQLite or MySQL/MariaDB",
        ),
        (f"mysql+nosuchdriver://monitor:{SECRET}@db-host/sm", "no such driver installed"),
    ],
)
def test_a_database_url_the_service_cannot_use_is_refused_without_its_password(url, message):
    with pytest.raises(config.SettingsError) as refused:
        config.check_database_url(url)
    assert message in refused.value.message and SECRET not in refused.value.message


def test_the_supported_database_urls_pass():
    config.check_database_url("sqlite:///instance/store_monitor.sqlite3")
    config.check_database_url("mysql+pymysql://root:@127.0.0.1:3306/store_monitor")


# --------------------------------------------------------------------------- both doors


def run_until_exit(command: tuple[str, ...], **settings: str) -> subprocess.CompletedProcess:
    """Run `command` with only `settings` from the environment; it must exit by itself."""
    return subprocess.run(
        [*command],
        cwd=ROOT,
        env=clean_environment(**settings),
        capture_output=True,
        text=True,
        timeout=120,
    )


def working_settings(tmp_path: Path) -> dict[str, str]:
    return {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'test.sqlite3'}",
        "REPORTS_DIR": str(tmp_path / "reports"),
        "PORT": str(free_port()),
    }


def a_file(tmp_path: Path) -> str:
    path = tmp_path / "a-file"
    path.write_text("not a folder\n")
    return str(path)


BAD_SETTINGS = {
    # name: (settings from tmp_path, what the one line says)
    "unparsable DATABASE_URL": (
        lambda tmp_path: {"DATABASE_URL": f"monitor:{SECRET}@db-host"},
        "DATABASE_URL is not a database URL",
    ),
    "DATABASE_URL of another engine": (
        lambda tmp_path: {"DATABASE_URL": f"postgresql://monitor:{SECRET}@db-host/sm"},
        "DATABASE_URL=postgresql://monitor:***@db-host/sm: Store Monitor runs on SQLite or",
    ),
    "DATABASE_URL nothing listens on": (
        lambda tmp_path: {
            "DATABASE_URL": f"mysql+pymysql://monitor:{SECRET}@127.0.0.1:{free_port()}/sm"
        },
        ": cannot connect: (2003, \"Can't connect to MySQL server on '127.0.0.1'",
    ),
    "DATABASE_URL in a missing folder": (
        lambda tmp_path: {"DATABASE_URL": f"sqlite:///{tmp_path}/missing/test.sqlite3"},
        "test.sqlite3: cannot connect: unable to open database file",
    ),
    "REPORTS_DIR that is a file": (
        lambda tmp_path: {"REPORTS_DIR": a_file(tmp_path)},
        "a-file' is not a usable directory: File exists",
    ),
    "API_TOKEN of spaces": (
        lambda tmp_path: {"API_TOKEN": "   "},
        "environment variable API_TOKEN is blank: unset it or set a value",
    ),
    "HTTP_CONNECTION_LIMIT of 3": (
        lambda tmp_path: {"HTTP_CONNECTION_LIMIT": "3"},
        "HTTP_CONNECTION_LIMIT=3: must be between 16 and 100000",
    ),
}
DOORS = [
    pytest.param((APP, "cannot start: "), id="python app.py", marks=pytest.mark.slow),
    pytest.param((INIT_DB, "Error: "), id="flask --app app init-db"),
]


@pytest.mark.slow  # a real process per setting and door
@pytest.mark.parametrize("door", DOORS)
@pytest.mark.parametrize("case", BAD_SETTINGS.values(), ids=BAD_SETTINGS.keys())
def test_a_bad_setting_stops_the_service_with_one_line_naming_it(tmp_path, door, case):
    command, prefix = door
    settings, message = case
    done = run_until_exit(command, **(working_settings(tmp_path) | settings(tmp_path)))
    assert done.returncode == 1, done.stderr[-2000:]
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr[-2000:]
    assert lines[0].startswith(prefix) and message in lines[0], lines[0]
    assert SECRET not in done.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    ("host", "message"),
    [
        ("192.0.2.1", "HOST='192.0.2.1': not an address of this machine"),  # TEST-NET-1
        (
            "no-such-host.invalid",
            "HOST='no-such-host.invalid': not an address, nor a name that resolves",
        ),
    ],
)
def test_a_host_the_server_cannot_listen_on_stops_it_with_one_line(tmp_path, host, message):
    done = run_until_exit(APP, **working_settings(tmp_path), HOST=host)
    assert done.returncode == 1
    assert done.stderr.splitlines() == [f"cannot start: {message}"]


@pytest.mark.slow
def test_a_port_in_use_stops_the_server_with_one_line(tmp_path):
    settings = working_settings(tmp_path)
    with socket.socket() as other_server:
        other_server.bind(("127.0.0.1", 0))
        other_server.listen()
        port = other_server.getsockname()[1]
        done = run_until_exit(APP, **(settings | {"PORT": str(port)}))
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"cannot start: PORT={port}: already in use on 127.0.0.1 (another server listens there)"
    ]
    # Refused before any start-up work: the database was reached, no table was created.
    with sqlite3.connect(tmp_path / "test.sqlite3") as database:
        assert database.execute("SELECT name FROM sqlite_master").fetchall() == []


@pytest.mark.parametrize(
    "name, value, fragment",
    [
        ("REPORT_TTL_DAYS", 0.0, "REPORT_TTL_DAYS=0.0: must be between"),
        ("REPORT_TTL_DAYS", -1.0, "REPORT_TTL_DAYS=-1.0: must be between"),
        ("REPORT_TTL_DAYS", math.inf, "must be a finite number"),
        ("REPORT_TTL_DAYS", math.nan, "must be a finite number"),
        ("REPORT_MAX_COUNT", 0, "REPORT_MAX_COUNT=0: must be between 1"),
        ("REPORT_WORKERS", 0, "REPORT_WORKERS=0"),
        ("REPORT_SHARD_STORES", 0, "REPORT_SHARD_STORES=0"),
    ],
)
def test_bad_settings_stop_start_up_with_a_clear_message(tmp_path, name, value, fragment):
    with pytest.raises(config.SettingsError, match=fragment.replace("(", "\\(")):
        create_app({"DATABASE_URL": f"sqlite:///{tmp_path / 'x.sqlite3'}", name: value})


@pytest.mark.slow
def test_bad_environment_values_stop_start_up(tmp_path):
    for raw in ("inf", "nan", "0", "-1", "soon"):
        done = run_cli(f"sqlite:///{tmp_path / 'x.sqlite3'}", "init-db", REPORT_TTL_DAYS=raw)
        assert done.returncode != 0
        assert "REPORT_TTL_DAYS" in done.stderr and "Traceback" not in done.stderr, done.stderr
