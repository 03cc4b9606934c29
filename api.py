"""HTTP API: trigger a report, fetch it (CSV or JSON), list reports, health. Errors are JSON."""

from __future__ import annotations

import hmac
import json
import logging
import re
from datetime import datetime
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request, send_file, url_for
from sqlalchemy import select, text
from werkzeug.exceptions import HTTPException

import jobs
import leases
import openapi as openapi_document
import report
import results
import timestamps
from models import ACTIVE_STATES, Report, ReportStatus, db

logger = logging.getLogger(__name__)
bp = Blueprint("api", __name__)
RETRY_AFTER_SECONDS = 5
PUBLIC_ENDPOINTS = {"api.healthz", "api.openapi", "static"}
TRIGGER_FIELDS = {"as_of", "stale_after", "outages"}
LIMIT_PATTERN = re.compile(r"[0-9]{1,4}")


class ApiError(Exception):
    """An error answered as JSON `{"error": ..., "message": ...}` with an HTTP status."""

    def __init__(
        self, status: int, error: str, message: str, headers: dict | None = None, /, **extra: Any
    ) -> None:
        super().__init__(message)
        self.status, self.error, self.message = status, error, message
        self.headers = headers or {}
        self.extra = extra


def error_response(
    http_status: int, error: str, message: str, headers: dict | None = None, **extra
) -> Response:
    response = jsonify({"error": error, "message": message, **extra})
    response.status_code = http_status
    response.headers.update(headers or {})
    return response


@bp.app_errorhandler(ApiError)
def handle_api_error(exc: ApiError) -> Response:
    return error_response(exc.status, exc.error, exc.message, exc.headers, **exc.extra)


@bp.app_errorhandler(HTTPException)
def handle_http_error(exc: HTTPException) -> Response:
    name = (exc.name or "error").lower().replace(" ", "_")
    response = error_response(exc.code or 500, name, exc.description or name)
    if exc.code == 405 and exc.valid_methods:
        response.headers["Allow"] = ", ".join(exc.valid_methods)
    return response


@bp.app_errorhandler(Exception)
def handle_unexpected(exc: Exception) -> Response:
    logger.exception("unhandled error on %s %s", request.method, request.path)
    return error_response(500, "internal_error", "an unexpected error occurred; it has been logged")


@bp.before_app_request
def require_token() -> None:
    """With API_TOKEN set, every endpoint but health, the API description and the web
    page's static files needs `Authorization: Bearer <token>` (scheme in any letter case)."""
    token = current_app.config.get("API_TOKEN")
    if not token or request.endpoint in PUBLIC_ENDPOINTS or is_public(request.endpoint):
        return
    scheme, _, given = request.headers.get("Authorization", "").strip().partition(" ")
    matches = hmac.compare_digest(given.strip().encode(), token.encode())
    if scheme.lower() != "bearer" or not matches:
        raise ApiError(
            401, "unauthorized", "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"}
        )


def public(view):
    """Mark a view that serves no data (a page shell, an asset) as open without the token."""
    view.public = True
    return view


def is_public(endpoint: str | None) -> bool:
    view = current_app.view_functions.get(endpoint or "")
    return bool(getattr(view, "public", False))


# --------------------------------------------------------------------------- trigger


def json_body() -> dict[str, Any] | None:
    """The request's JSON object, None without a body; 400 for anything else."""
    data = request.get_data(cache=True)
    if not data:
        return None
    example = '{"as_of": "2023-01-25T18:00:00Z", "stale_after": "2h", "outages": true}'
    try:
        body = json.loads(data)
    except (ValueError, RecursionError):
        body = None
    if not isinstance(body, dict):
        raise ApiError(400, "bad_request", f"the body must be a JSON object such as {example}")
    return body


def parse_trigger_body() -> jobs.ReportRequest:
    """The report asked for: `as_of` (ISO-8601), `stale_after` (duration), `outages` (bool)."""
    body = json_body() or {}
    unknown = sorted(set(body) - TRIGGER_FIELDS)
    if unknown:
        accepted = ", ".join(sorted(TRIGGER_FIELDS))
        raise ApiError(
            400, "bad_request", f"unknown field(s): {', '.join(unknown)}; accepted: {accepted}"
        )
    return jobs.ReportRequest(
        as_of_us=parse_as_of(body.get("as_of")) if "as_of" in body else None,
        options=report.ReportOptions(
            stale_after_us=parse_stale_after(body["stale_after"])
            if "stale_after" in body
            else None,
            outages=parse_outages(body.get("outages", False)),
        ),
    )


def parse_as_of(value: Any) -> int:
    if not isinstance(value, str):
        raise ApiError(400, "bad_request", "as_of must be a string with an ISO-8601 instant")
    try:
        return timestamps.parse_iso_instant(value)
    except ValueError as exc:
        raise ApiError(400, "bad_request", str(exc)) from exc


def parse_stale_after(value: Any) -> int:
    try:
        return timestamps.parse_duration(value)
    except ValueError as exc:
        raise ApiError(400, "bad_request", f"stale_after: {exc}") from exc


def parse_outages(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ApiError(400, "bad_request", "outages must be true or false")
    return value


def too_many_reports(reason: str) -> ApiError:
    return ApiError(
        429, "too_many_reports", f"{reason}; retry later", {"Retry-After": str(RETRY_AFTER_SECONDS)}
    )


@bp.post("/trigger_report")
def trigger_report() -> Response:
    requested = parse_trigger_body()
    try:
        report_id = jobs.submit_report(requested)
    except jobs.QueueFull as exc:
        raise too_many_reports(str(exc)) from exc
    except jobs.ServiceBusy as exc:
        raise ApiError(
            503,
            "unavailable",
            f"{exc}; nothing was created, retry later",
            {"Retry-After": str(RETRY_AFTER_SECONDS)},
        ) from exc
    status = db.session.scalar(select(Report.status).where(Report.id == report_id))
    response = jsonify({"report_id": report_id, "status": str(status)})
    response.status_code = 202
    response.headers["Location"] = url_for("api.get_report", report_id=report_id)
    return response


# --------------------------------------------------------------------------- reports


def find_report(report_id: str) -> Report:
    if not jobs.is_valid_report_id(report_id):
        raise ApiError(404, "not_found", "no report with this id (ids are 32 hexadecimal digits)")
    row = db.session.get(Report, report_id)
    if row is None:
        raise ApiError(404, "not_found", f"no report with id {report_id}")
    return row


def wanted_format() -> str:
    """`?format=csv|json`, else the Accept header (CSV unless JSON is preferred)."""
    asked = request.args.get("format")
    if asked is not None:
        if asked not in ("csv", "json"):
            raise ApiError(400, "bad_request", "format must be csv or json")
        return asked
    best = request.accept_mimetypes.best_match(["text/csv", "application/json"])
    return "json" if best == "application/json" else "csv"


@bp.get("/get_report/<report_id>")
def get_report(report_id: str) -> Response:
    row = find_report(report_id)
    form = wanted_format()
    if row.status in ACTIVE_STATES:
        response = jsonify(describe(row, workers_seen()))
        response.status_code = 202
        response.headers["Retry-After"] = "1"
        return response
    if row.status == ReportStatus.FAILED:
        return error_response(
            422,
            "report_failed",
            row.error or "the report failed",
            status="Failed",
            report_id=row.id,
        )
    try:
        return report_json(row) if form == "json" else report_csv(row)
    except jobs.ReportNotFound:
        return error_response(
            410,
            "gone",
            "the report's data is no longer available; trigger a new report",
            status="Complete",
            report_id=row.id,
        )


def report_csv(row: Report) -> Response:
    """This machine's CSV copy of the report or, when the copy cannot be written or read (a
    full or read-only REPORTS_DIR), the same bytes streamed from the database's table."""
    name = f"report_{row.id}.csv"
    try:
        response = send_file(
            jobs.local_csv(row).resolve(),
            mimetype="text/csv",
            as_attachment=True,
            download_name=name,
            max_age=0,
        )
    except OSError as exc:
        logger.warning(
            "report %s: no CSV file on this machine (%s); served from the database", row.id, exc
        )
        response = Response(results.csv_chunks(jobs.finished_table(row)), mimetype="text/csv")
        response.headers["Content-Disposition"] = f"attachment; filename={name}"
        response.cache_control.no_cache = True
        response.cache_control.max_age = 0
    response.headers["X-Report-Status"] = "Complete"
    return response


def report_heading(row: Report) -> dict[str, Any]:
    """What a finished report's JSON answers start with: its id, instant and options."""
    return {
        "report_id": row.id,
        "as_of": _instant(row.as_of_us),
        "options": jobs.describe_options(row),
    }


def report_json(row: Report) -> Response:
    table = jobs.finished_table(row)
    response = jsonify(
        {**report_heading(row), "columns": list(table.columns), "rows": results.json_rows(table)}
    )
    response.headers["X-Report-Status"] = "Complete"
    return response


def describe(row: Report, workers: int | None = None) -> dict[str, Any]:
    """A report's state for /reports and a waiting /get_report; with `workers` (the broker's
    workers seen lately, None without a broker), a `warning` when it waits for none."""
    described = {
        "report_id": row.id,
        "status": str(row.status),
        "progress": row.progress,
        "as_of": _instant(row.as_of_us if row.as_of_us is not None else row.requested_as_of_us),
        "options": jobs.describe_options(row),
        "shards": {"total": row.shard_count, "done": row.shards_done},
        "created_at": _time(row.created_at),
        "started_at": _time(row.started_at),
        "finished_at": _time(row.finished_at),
        "row_count": row.row_count,
        "error": row.error,
    }
    if workers == 0 and row.status in ACTIVE_STATES:
        described["warning"] = NO_WORKER_WARNING
    return described


NO_WORKER_WARNING = (
    "no report worker has been seen for a minute: the report waits until one runs "
    "(flask --app app worker)"
)


def workers_seen() -> int | None:
    """Worker processes seen lately when a broker runs the reports; None without one (this
    process's own threads run them)."""
    return leases.workers_seen() if current_app.config["CELERY_BROKER_URL"] else None


def _instant(micros: int | None) -> str | None:
    return None if micros is None else timestamps.format_instant(micros)


def _time(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat(timespec="seconds") + "Z"


@bp.get("/reports")
def list_reports() -> Response:
    limit = request.args.get("limit", "100")
    if not LIMIT_PATTERN.fullmatch(limit) or not 1 <= int(limit) <= 1000:
        raise ApiError(400, "bad_request", "limit must be an integer from 1 to 1000")
    rows = db.session.scalars(select(Report).order_by(Report.created_at.desc()).limit(int(limit)))
    workers = workers_seen()
    return jsonify({"reports": [describe(row, workers) for row in rows]})


@bp.get("/openapi.json")
def openapi() -> Response:
    """The API description; other blueprints add their paths to app.extensions["openapi_paths"]."""
    return jsonify(openapi_document.document(current_app.extensions.get("openapi_paths")))


@bp.get("/healthz")
def healthz() -> Response:
    """200 while the database answers (with a broker, and the workers seen lately: the API
    itself works, it only enqueues), else 503."""
    try:
        db.session.execute(text("SELECT 1"))
        db.session.commit()
        workers = workers_seen()
    except Exception as exc:
        db.session.rollback()
        logger.warning("health check: database unavailable: %s", type(exc).__name__)
        return error_response(
            503, "unavailable", "the database does not answer", status="unavailable"
        )
    health: dict[str, Any] = {"status": "ok", "database": "ok"}
    if workers is not None:
        health["workers"] = workers
    return jsonify(health)
