"""Create and drop throw-away MariaDB databases (tests and benchmarks)."""

from __future__ import annotations

import pymysql
from sqlalchemy.engine import make_url


def admin_connection(admin_url: str) -> pymysql.Connection:
    url = make_url(admin_url)
    return pymysql.connect(
        host=url.host,
        port=url.port or 3306,
        user=url.username,
        password=url.password or "",
        autocommit=True,
        connect_timeout=5,
    )


def create_database(admin_url: str, name: str) -> str:
    """(Re)create database `name` on the server of `admin_url`; return its SQLAlchemy URL."""
    connection = admin_connection(admin_url)
    with connection.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS {name}")
        # The server's defaults (utf8mb4_general_ci here: case- and accent-blind), as a user's
        # plain CREATE DATABASE gets them: the schema must be exact whatever they are.
        cursor.execute(f"CREATE DATABASE {name}")
    connection.close()
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def drop_database(admin_url: str, name: str) -> None:
    connection = admin_connection(admin_url)
    with connection.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS {name}")
    connection.close()
