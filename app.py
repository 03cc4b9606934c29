"""Store Monitor: the application factory and the entry point (`python app.py`)."""

from __future__ import annotations

import atexit
import logging
import os
import threading
from typing import TYPE_CHECKING

import click
from flask import Flask
from sqlalchemy import event

import cli
import config
from jobs import alerts, deliveries, housekeeping
from jobs.executors import CeleryExecutor, InlineExecutor, ThreadExecutor
from jobs.leases import LeaseKeeper
from jobs.steps import Executor
from models import db, init_schema
from web import api, base, incidents, ingest, keys, pages

if TYPE_CHECKING:
    from waitress.server import MultiSocketServer

    from web.server import ProtectedServer

logger = logging.getLogger(__name__)


def create_app(test_config: dict | None = None) -> Flask:
    """Build the app: defaults, then the environment, or `test_config` instead of it.

    A test mapping replaces the environment (as in Flask's tutorial): whatever the shell
    exports, a test sees only its own settings.
    """
    config.limit_malloc_arenas()
    app = Flask(
        __name__,
        instance_relative_config=True,
        template_folder="web/templates",
        static_folder="web/static",
    )
    os.makedirs(app.instance_path, exist_ok=True)
    app.config.from_mapping(config.defaults(app.instance_path))
    if test_config is None:
        app.config.from_mapping(config.from_environment(config.environment()))
    else:
        app.config.from_mapping(test_config)
    config.validate(app.config)
    app.json.sort_keys = False  # JSON objects keep the order they are built in (report columns)
    database_url = app.config["DATABASE_URL"]
    app.config["SQLALCHEMY_DATABASE_URI"] = database_url
    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = config.engine_options(database_url)
    config.prepare_reports_dir(app.config["REPORTS_DIR"])
    db.init_app(app)
    with app.app_context():
        if db.engine.dialect.name == "sqlite":
            configure_sqlite(db.engine)
    app.extensions["report_executor"] = build_executor(app)
    app.extensions["alert_runner"] = build_alert_runner(app)
    app.extensions["alert_evaluator"] = build_alert_evaluator(app)
    base.init_app(app)
    for blueprint in (api, incidents, ingest, pages):
        app.register_blueprint(blueprint.bp)
    app.before_request(lambda: start_service(app))
    cli.register(app)
    return app


def build_executor(app: Flask) -> Executor:
    """Inline for tests, Celery when a broker is configured, else this process's threads."""
    if app.config["REPORTS_INLINE"]:
        return InlineExecutor()
    if app.config["CELERY_BROKER_URL"]:
        from jobs.tasks import celery_init_app  # Celery is imported only when used

        return CeleryExecutor(celery_init_app(app))
    return ThreadExecutor(app, app.config["REPORT_WORKERS"])


def build_alert_runner(app: Flask) -> deliveries.Runner:
    """Who sends alert events: as report steps run (inline, Celery workers, or a thread)."""
    if app.config["REPORTS_INLINE"]:
        return deliveries.InlineRunner()
    if app.config["CELERY_BROKER_URL"]:
        return deliveries.CeleryRunner(app.extensions["celery"])
    return deliveries.BackgroundRounds(app, deliveries.deliver_due, "alert-deliveries")


def build_alert_evaluator(app: Flask) -> deliveries.Runner:
    """Who evaluates after a load: the caller itself (tests), else a thread of this process,
    so an upload is answered without waiting for the evaluation."""
    if app.config["REPORTS_INLINE"]:
        return alerts.InlineEvaluation(app)
    return deliveries.BackgroundRounds(
        app, lambda: alerts.evaluate_and_send(app), "alert-evaluation"
    )


def configure_sqlite(engine) -> None:
    """WAL (readers never block the loader), real transactions, and a lock timeout."""

    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN itself, below
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={config.SQLITE_BUSY_TIMEOUT_MS}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def on_begin(connection) -> None:
        connection.exec_driver_sql("BEGIN")


_start_lock = threading.Lock()
STARTED = "service_started"


def start_service(app: Flask) -> None:
    """Once per serving process: schema, leftovers, retention, and the lease keeper.

    `python app.py` calls it before serving; under another server (gunicorn) the first request
    does. With the embedded executor the lease keeper also takes over the work of processes
    that died; with Celery the workers do that.
    """
    if app.extensions.get(STARTED):  # every request asks: no lock once started
        return
    with _start_lock:
        if app.extensions.get(STARTED):
            return
        _start_once(app)
        app.extensions[STARTED] = True  # only once it all worked: a failed start is tried again


def _start_once(app: Flask) -> None:
    config.configure_logging()
    executor = app.extensions["report_executor"]
    logger.info("process %d serving; report steps run by %s", os.getpid(), type(executor).__name__)
    with app.app_context():
        init_schema()
        housekeeping.remove_partial_files(app.config["REPORTS_DIR"])
        housekeeping.after_report()
        log_authentication(app)
    if app.config["START_BACKGROUND"]:  # loads committed while no process was serving
        alerts.evaluate_soon(app)
    # Upload folders of processes killed mid-upload; this process's own when it exits.
    ingest.remove_stale_upload_folders()
    atexit.unregister(ingest.remove_stale_upload_folders)
    atexit.register(ingest.remove_stale_upload_folders, also_own=True)
    if app.config["START_BACKGROUND"] and not app.config["REPORTS_INLINE"]:
        sweep = isinstance(executor, ThreadExecutor)
        keeper = LeaseKeeper(app, sweep=sweep, catch_up=True)
        app.extensions["lease_keeper"] = keeper
        keeper.start()


def log_authentication(app: Flask) -> None:
    """Say whether requests need a token: with API_TOKEN set or a key created they do."""
    token = bool(app.config["API_TOKEN"])
    created = keys.key_cache(app).any_keys()
    if token or created:
        given_by = " and ".join(
            name for name, used in (("API_TOKEN", token), ("API keys", created)) if used
        )
        logger.info("authentication required: bearer tokens (%s)", given_by)
    else:
        logger.warning("authentication off: no API_TOKEN and no API key; the API is open")


def main() -> None:
    """`python app.py`: serve until stopped; a setting the service cannot start with (a bad
    value, a database it cannot reach, an address it cannot listen on) is one line on stderr
    and exit status 1."""
    from web import server as wsgi_server  # waitress is imported only to serve

    config.configure_logging()
    try:
        server = start_server()
    except click.ClickException as exc:  # SettingsError, SchemaError
        raise SystemExit(f"cannot start: {exc.message}") from None
    wsgi_server.run(server)


def start_server() -> ProtectedServer | MultiSocketServer:
    """The app, started, with its server listening (it serves once run).

    The database is reached, then the address taken, before any start-up work is done.
    """
    from web.server import create_server

    app = create_app()
    with config.connection_errors_named(app.config["DATABASE_URL"]):
        with app.app_context():
            db.engine.connect().close()
        server = create_server(app)
        start_service(app)
    return server


if __name__ == "__main__":
    main()
