"""Store Monitor: the application factory and the entry point (`python app.py`)."""

from __future__ import annotations

import logging
import os

from flask import Flask
from sqlalchemy import event

import api
import cli
import config
import jobs
from models import db, init_schema

logger = logging.getLogger(__name__)


def create_app(test_config: dict | None = None) -> Flask:
    """Build the app: defaults, then the environment, or `test_config` instead of it.

    A test mapping replaces the environment (as in Flask's tutorial): whatever the shell
    exports, a test sees only its own settings.
    """
    app = Flask(__name__, instance_relative_config=True)
    os.makedirs(app.instance_path, exist_ok=True)
    app.config.from_mapping(config.defaults(app.instance_path))
    if test_config is None:
        app.config.from_mapping(config.from_environment(config.environment()))
    else:
        app.config.from_mapping(test_config)
    database_url = app.config["DATABASE_URL"]
    app.config["SQLALCHEMY_DATABASE_URI"] = database_url
    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = config.engine_options(database_url)
    os.makedirs(app.config["REPORTS_DIR"], exist_ok=True)
    db.init_app(app)
    with app.app_context():
        if db.engine.dialect.name == "sqlite":
            configure_sqlite(db.engine)
    app.extensions["report_runner"] = jobs.ReportRunner(
        app, app.config["REPORT_WORKERS"], app.config["REPORT_QUEUE"], app.config["REPORTS_INLINE"]
    )
    app.register_blueprint(api.bp)
    cli.register(app)
    return app


def configure_sqlite(engine) -> None:
    """WAL (readers never block the loader), real transactions, and a lock timeout."""

    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN itself, below
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def on_begin(connection) -> None:
        connection.exec_driver_sql("BEGIN")


def start_service(app: Flask) -> None:
    """Create the schema if needed, drop expired reports, resume interrupted ones."""
    with app.app_context():
        init_schema()
        jobs.remove_partial_files(app.config["REPORTS_DIR"])
        removed = jobs.remove_expired(app.config["REPORTS_DIR"], app.config["REPORT_TTL_DAYS"])
        if removed:
            logger.info("removed %d expired reports", removed)
        jobs.recover_interrupted(app.extensions["report_runner"])


def main() -> None:
    from wsgi_server import serve

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    app = create_app()
    start_service(app)
    serve(app)


if __name__ == "__main__":
    main()
