"""API keys: `flask keys`, tokens never kept in clear, revocation seen by every API process."""

from __future__ import annotations

import base64
import hashlib
import logging

import pytest
from sqlalchemy import text

from models import db
from tests.conftest import make_app
from tests.owners import NORTH, SOUTH, bearer, create_keys, load_sample_with_groups
from web import base, keys


def test_create_prints_the_token_alone_on_the_last_line_and_stores_only_its_hash(runner, app):
    result = runner.invoke(args=["keys", "create", "owner-1", "--role", "reader", "--group", NORTH])
    assert result.exit_code == 0, result.output
    token = result.output.splitlines()[-1]
    assert token.startswith(keys.TOKEN_PREFIX) and " " not in token
    # 256 random bits: 32 bytes, URL-safe base64 without padding (43 characters).
    assert len(base64.urlsafe_b64decode(token.removeprefix(keys.TOKEN_PREFIX) + "=")) == 32
    with app.app_context(), db.engine.connect() as conn:
        stored = conn.execute(text("SELECT * FROM api_keys")).mappings().one()
    assert stored["token_sha256"] == hashlib.sha256(token.encode()).hexdigest()
    assert token not in repr(dict(stored))
    assert (stored["name"], stored["role"], stored["groups"]) == ("owner-1", "reader", '["north"]')


def test_list_shows_keys_without_tokens_and_revoke_marks_them(runner, app):
    created = runner.invoke(args=["keys", "create", "pusher", "--role", "poller"])
    token = created.output.splitlines()[-1]
    assert runner.invoke(args=["keys", "revoke", "pusher"]).exit_code == 0
    listed = runner.invoke(args=["keys", "list"])
    assert listed.exit_code == 0
    header, line = listed.output.splitlines()
    assert header.split("\t") == ["name", "role", "groups", "created", "last_used", "revoked"]
    name, role, groups, created_at, last_used, revoked = line.split("\t")
    assert (name, role, groups, last_used) == ("pusher", "poller", "-", "-")
    assert created_at.endswith("Z") and revoked.endswith("Z")
    assert token not in listed.output
    again = runner.invoke(args=["keys", "revoke", "pusher"])
    assert again.exit_code == 1
    assert "no key named 'pusher' that is not revoked already" in again.output


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["r", "--role", "reader"], "a reader key needs at least one --group"),
        (["p", "--role", "poller", "--group", "g"], "only reader keys have groups"),
        (["bad name", "--role", "admin"], "a key name is 1 to 64 letters"),
    ],
)
def test_create_refuses_what_cannot_work(runner, arguments, message):
    result = runner.invoke(args=["keys", "create", *arguments])
    assert result.exit_code == 1
    assert message in result.output


def test_a_name_is_taken_once(runner):
    assert runner.invoke(args=["keys", "create", "ops", "--role", "admin"]).exit_code == 0
    again = runner.invoke(args=["keys", "create", "ops", "--role", "admin"])
    assert again.exit_code == 1
    assert "a key named 'ops' exists already" in again.output


def test_authentication_is_required_once_a_key_exists_even_a_revoked_one(client, app):
    clock = Clock()
    app.extensions["key_clock"] = clock
    assert client.get("/reports").status_code == 200  # neither API_TOKEN nor a key: open
    tokens = create_keys(app)
    clock.now += 1.9  # "no key" is trusted for API_KEY_CACHE_SECONDS (2)
    assert client.get("/reports").status_code == 200
    clock.now += 0.2
    assert client.get("/reports").status_code == 401
    assert client.get("/reports", headers=bearer(tokens["admin"])).status_code == 200
    with app.app_context():
        for name in tokens:
            keys.revoke_key(name)
    assert client.get("/reports").status_code == 401


def test_api_token_stays_an_admin_token_beside_keys(database_url, tmp_path):
    app = make_app(database_url, tmp_path, API_TOKEN="the-admin-token")
    client = app.test_client()
    create_keys(app)
    assert client.get("/reports", headers=bearer("the-admin-token")).status_code == 200
    assert client.get("/reports", headers=bearer("the-admin-token!")).status_code == 401
    with app.app_context():
        db.engine.dispose()


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_key_revoked_elsewhere_is_refused_by_another_process_within_the_cache_time(
    database_url, tmp_path
):
    server = make_app(database_url, tmp_path, API_KEY_CACHE_SECONDS=2)
    clock = Clock()
    server.extensions["key_clock"] = clock
    command_side = make_app(database_url, tmp_path)  # a second process on the same database
    tokens = create_keys(command_side)
    client = server.test_client()
    assert client.get("/reports", headers=bearer(tokens["reader-north"])).status_code == 200
    result = command_side.test_cli_runner().invoke(args=["keys", "revoke", "reader-north"])
    assert result.exit_code == 0, result.output
    clock.now += 1.9  # still trusted: read 1.9 s ago
    assert client.get("/reports", headers=bearer(tokens["reader-north"])).status_code == 200
    clock.now += 0.2  # 2.1 s: read again, revoked
    assert client.get("/reports", headers=bearer(tokens["reader-north"])).status_code == 401
    assert client.get("/reports", headers=bearer(tokens["reader-south"])).status_code == 200
    for app in (server, command_side):
        with app.app_context():
            db.engine.dispose()


def test_the_cache_time_cannot_exceed_five_seconds(database_url, tmp_path):
    from config import SettingsError

    with pytest.raises(SettingsError, match="API_KEY_CACHE_SECONDS"):
        make_app(database_url, tmp_path, API_KEY_CACHE_SECONDS=6)


def test_tokens_are_compared_in_constant_time(client, app, monkeypatch):
    tokens = create_keys(app)
    compared: list[tuple[bytes, bytes]] = []
    real = keys.hmac.compare_digest

    def spy(given, expected):
        compared.append((given, expected))
        return real(given, expected)

    monkeypatch.setattr(keys.hmac, "compare_digest", spy)
    monkeypatch.setattr(base.hmac, "compare_digest", spy)
    app.config["API_TOKEN"] = "the-admin-token"
    assert client.get("/reports", headers=bearer(tokens["admin"])).status_code == 200
    digest = hashlib.sha256(tokens["admin"].encode()).hexdigest().encode()
    # The admin token first, then the stored hash of the key.
    assert compared == [(tokens["admin"].encode(), b"the-admin-token"), (digest, digest)]


def test_last_used_is_written_and_no_token_reaches_the_log(client, app, caplog):
    caplog.set_level(logging.DEBUG)
    tokens = create_keys(app)
    for token in tokens.values():
        client.get("/reports", headers=bearer(token))
        client.get("/", headers=bearer(token))
    with app.app_context(), db.engine.connect() as conn:
        used = conn.execute(text("SELECT name, last_used_at FROM api_keys")).all()
    assert all(moment is not None for _, moment in used)
    assert not any(token in caplog.text for token in tokens.values())
    assert "authentication required: bearer tokens (API keys)" in caplog.text


def test_whoami_tells_a_key_its_name_role_and_groups(client, app, tmp_path):
    load_sample_with_groups(app, tmp_path)
    tokens = create_keys(app)
    reader = client.get("/whoami", headers=bearer(tokens["reader-north"])).json
    assert reader == {
        "name": "reader-north",
        "role": "reader",
        "groups": [NORTH],
        "report_groups": [NORTH],
        "authentication_required": True,
    }
    admin = client.get("/whoami", headers=bearer(tokens["admin"])).json
    assert (admin["name"], admin["groups"], admin["report_groups"]) == (
        "admin",
        None,
        [NORTH, SOUTH],
    )
