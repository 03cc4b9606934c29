"""What every route shares: JSON errors, the token check, and reading arguments.

The application factory calls `init_app`, so errors are JSON and authentication holds for
every blueprint, whichever are registered. Arguments are read with one rule per kind of value
(a flag, an integer, a duration, an instant, a report id): the same text means the same thing
on every route, and a bad value is a 400 that names the argument.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
from dataclasses import dataclass
from typing import Any

from flask import Flask, Response, current_app, g, jsonify, request
from werkzeug.exceptions import HTTPException

from engine import timestamps
from jobs.options import REPORT_ID_PATTERN
from models import KeyRole
from web import keys

logger = logging.getLogger(__name__)
RETRY_AFTER_SECONDS = 5
PUBLIC_ENDPOINTS = {"api.healthz", "api.openapi", "static"}
FLAG_VALUES = {"true": True, "1": True, "false": False, "0": False}
DIGITS = re.compile(r"[0-9]{1,9}")


class ApiError(Exception):
    """An error answered as JSON `{"error": ..., "message": ...}` with an HTTP status."""

    def __init__(
        self, status: int, error: str, message: str, headers: dict | None = None, /, **extra: Any
    ) -> None:
        super().__init__(message)
        self.status, self.error, self.message = status, error, message
        self.headers = headers or {}
        self.extra = extra


def bad_request(message: str) -> ApiError:
    return ApiError(400, "bad_request", message)


def error_response(
    http_status: int, error: str, message: str, headers: dict | None = None, **extra: Any
) -> Response:
    response = jsonify({"error": error, "message": message, **extra})
    response.status_code = http_status
    response.headers.update(headers or {})
    return response


def init_app(app: Flask) -> None:
    """JSON for every error, and the token check before every request."""
    app.register_error_handler(ApiError, handle_api_error)
    app.register_error_handler(HTTPException, handle_http_error)
    app.register_error_handler(Exception, handle_unexpected)
    app.before_request(require_token)


def handle_api_error(exc: ApiError) -> Response:
    return error_response(exc.status, exc.error, exc.message, exc.headers, **exc.extra)


def handle_http_error(exc: HTTPException) -> Response:
    name = (exc.name or "error").lower().replace(" ", "_")
    response = error_response(exc.code or 500, name, exc.description or name)
    if exc.code == 405 and exc.valid_methods:
        response.headers["Allow"] = ", ".join(exc.valid_methods)
    return response


def handle_unexpected(exc: Exception) -> Response:
    logger.exception("unhandled error on %s %s", request.method, request.path)
    return error_response(500, "internal_error", "an unexpected error occurred; it has been logged")


# --------------------------------------------------------------------------- authentication


@dataclass(frozen=True)
class Principal:
    """Who a request acts for: a key's name (None for API_TOKEN, or when nothing is required),
    its role, and the groups whose stores it may see (None: every store)."""

    name: str | None
    role: KeyRole
    groups: tuple[str, ...] | None


ADMIN = Principal(None, KeyRole.ADMIN, None)  # API_TOKEN, or nothing required
NOBODY = Principal(None, KeyRole.READER, ())  # sees nothing: no check has run


def authentication_required() -> bool:
    """With API_TOKEN set or any key created (`flask keys create`)."""
    return bool(current_app.config.get("API_TOKEN")) or keys.key_cache(current_app).any_keys()


def require_token() -> None:
    """Once a token is set or a key exists, every endpoint but health, the API description and
    the web page's shell and static files needs `Authorization: Bearer <token>` (scheme in any
    letter case): API_TOKEN (admin) or a key's token, whose role must allow the endpoint."""
    if request.endpoint in PUBLIC_ENDPOINTS or is_public(request.endpoint):
        return
    if not authentication_required():
        g.principal = ADMIN
        return
    principal = principal_of(bearer_token())
    if principal is None:
        raise ApiError(
            401, "unauthorized", "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"}
        )
    if principal.role != KeyRole.ADMIN and principal.role not in roles_of(request.endpoint):
        raise ApiError(
            403, "forbidden", f"a {principal.role} key may not use {request.method} {request.path}"
        )
    g.principal = principal


def bearer_token() -> str | None:
    scheme, _, given = request.headers.get("Authorization", "").strip().partition(" ")
    return given.strip() if scheme.lower() == "bearer" and given.strip() else None


def principal_of(token: str | None) -> Principal | None:
    """Who the token is: API_TOKEN (compared in constant time), a key, or nobody."""
    if token is None:
        return None
    admin_token = current_app.config.get("API_TOKEN")
    if admin_token and hmac.compare_digest(token.encode(), admin_token.encode()):
        return ADMIN
    found = keys.key_cache(current_app).find(token)
    if found is None:
        return None
    groups = found.groups if found.role == KeyRole.READER else None
    return Principal(found.name, found.role, groups)


def current_principal() -> Principal:
    """Who this request acts for, as `require_token` found; nobody (no store, no report) where
    it did not look (the open shells and assets)."""
    return g.get("principal", NOBODY)


def public(view):
    """Mark a view that serves no data (a page shell, an asset) as open without the token."""
    view.public = True
    return view


def allowed_to(*roles: KeyRole):
    """Let keys of `roles` use a view besides admins (every other view is admin-only)."""

    def mark(view):
        view.roles = frozenset(roles)
        return view

    return mark


def roles_of(endpoint: str | None) -> frozenset[KeyRole]:
    view = current_app.view_functions.get(endpoint or "")
    return getattr(view, "roles", frozenset())


def is_public(endpoint: str | None) -> bool:
    view = current_app.view_functions.get(endpoint or "")
    return bool(getattr(view, "public", False))


# --------------------------------------------------------------------------- arguments


def json_body(example: str) -> dict[str, Any] | None:
    """The request's JSON object, None without a body; 400 (showing `example`) otherwise."""
    data = request.get_data(cache=True)
    if not data:
        return None
    try:
        body = json.loads(data)
    except (ValueError, RecursionError):
        body = None
    if not isinstance(body, dict):
        raise bad_request(f"the body must be a JSON object such as {example}")
    return body


def flag(name: str, text: str) -> bool:
    """A yes/no argument written as text: true, false, 1 or 0, in any letter case."""
    value = FLAG_VALUES.get(text.strip().lower())
    if value is None:
        raise bad_request(f"{name} must be true or false")
    return value


def flag_arg(name: str) -> bool:
    """A yes/no query argument (false when absent)."""
    return flag(name, request.args.get(name, "false"))


def integer_arg(name: str, default: int, low: int, high: int) -> int:
    """A query argument of decimal digits from `low` to `high` (`default` when absent)."""
    raw = request.args.get(name)
    if raw is None:
        return default
    if not DIGITS.fullmatch(raw) or not low <= int(raw) <= high:
        raise bad_request(f"{name} must be an integer from {low} to {high}")
    return int(raw)


def instant(name: str, value: Any) -> int:
    """An ISO-8601 instant (naive means UTC) as epoch microseconds."""
    if not isinstance(value, str):
        raise bad_request(f"{name} must be a string with an ISO-8601 instant")
    try:
        return timestamps.parse_iso_instant(value)
    except ValueError as exc:
        raise bad_request(str(exc)) from exc


def duration(name: str, value: Any) -> int:
    """A positive duration (90s, 30m, 2h, 1d, PT2H) as microseconds."""
    try:
        return timestamps.parse_duration(value)
    except ValueError as exc:
        raise bad_request(f"{name}: {exc}") from exc


def is_report_id(text: str) -> bool:
    return bool(REPORT_ID_PATTERN.fullmatch(text))
