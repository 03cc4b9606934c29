"""HTTP API: trigger a report, fetch it, list reports, health. Errors are always JSON."""

from __future__ import annotations

import hmac
import logging
from datetime import datetime
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request, send_file, url_for
from sqlalchemy import select, text
from werkzeug.exceptions import HTTPException

import jobs
import openapi as openapi_document
import report
from models import Report, ReportStatus, db

logger = logging.getLogger(__name__)
bp = Blueprint("api", __name__)
RETRY_AFTER_SECONDS = 5
PUBLIC_ENDPOINTS = {"api.healthz", "api.openapi"}


class ApiError(Exception):
    """An error answered as JSON `{"error": ..., "message": ...}` with an HTTP status."""

    def __init__(self, status: int, error: str, message: str, headers: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.error, self.message = status, error, message
        self.headers = headers or {}


def error_response(
    http_status: int, error: str, message: str, headers: dict | None = None, **extra
) -> Response:
    response = jsonify({"error": error, "message": message, **extra})
    response.status_code = http_status
    response.headers.update(headers or {})
    return response


@bp.app_errorhandler(ApiError)
def handle_api_error(exc: ApiError) -> Response:
    return error_response(exc.status, exc.error, exc.message, exc.headers)


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
    """With API_TOKEN set, every endpoint but health and the API description needs it."""
    token = current_app.config.get("API_TOKEN")
    if not token or request.endpoint in PUBLIC_ENDPOINTS:
        return
    given = request.headers.get("Authorization", "")
    expected = f"Bearer {token}"
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise ApiError(
            401, "unauthorized", "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"}
        )


def parse_trigger_body() -> int | None:
    """Return the requested as_of (epoch µs) from an optional JSON body `{"as_of": ISO-8601}`."""
    if not request.get_data(cache=True):
        return None
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ApiError(
            400,
            "bad_request",
            'the body must be a JSON object such as {"as_of": "2023-01-25T18:00:00Z"}',
        )
    unknown = sorted(set(body) - {"as_of"})
    if unknown:
        raise ApiError(
            400, "bad_request", f"unknown field(s): {', '.join(unknown)}; only as_of is accepted"
        )
    if "as_of" not in body:
        return None
    as_of = body["as_of"]
    if not isinstance(as_of, str):
        raise ApiError(400, "bad_request", "as_of must be a string with an ISO-8601 instant")
    try:
        return report.parse_iso_instant(as_of)
    except ValueError as exc:
        raise ApiError(400, "bad_request", str(exc)) from exc


def too_many_reports(reason: str) -> ApiError:
    return ApiError(
        429, "too_many_reports", f"{reason}; retry later", {"Retry-After": str(RETRY_AFTER_SECONDS)}
    )


@bp.post("/trigger_report")
def trigger_report() -> Response:
    as_of_us = parse_trigger_body()
    runner: jobs.ReportRunner = current_app.extensions["report_runner"]
    if not runner.has_room():
        raise too_many_reports("too many reports are running or queued")
    report_id = jobs.create_report(as_of_us)
    try:
        runner.submit(report_id)
    except jobs.QueueFull as exc:
        db.session.execute(Report.__table__.delete().where(Report.id == report_id))
        db.session.commit()
        raise too_many_reports(str(exc)) from exc
    status = db.session.scalar(select(Report.status).where(Report.id == report_id))
    response = jsonify({"report_id": report_id, "status": status})
    response.status_code = 202
    response.headers["Location"] = url_for("api.get_report", report_id=report_id)
    return response


def find_report(report_id: str) -> Report:
    if not jobs.is_valid_report_id(report_id):
        raise ApiError(404, "not_found", "no report with this id (ids are 32 hexadecimal digits)")
    row = db.session.get(Report, report_id)
    if row is None:
        raise ApiError(404, "not_found", f"no report with id {report_id}")
    return row


@bp.get("/get_report/<report_id>")
def get_report(report_id: str) -> Response:
    row = find_report(report_id)
    if row.status == ReportStatus.RUNNING:
        response = jsonify({**describe(row), "status": "Running"})
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
    path = jobs.report_path(current_app.config["REPORTS_DIR"], row.id)
    if not path.is_file():
        return error_response(
            410,
            "gone",
            "the report's file is no longer available; trigger a new report",
            status="Complete",
            report_id=row.id,
        )
    response = send_file(
        path.resolve(),
        mimetype="text/csv",
        as_attachment=True,
        download_name=f"report_{row.id}.csv",
        max_age=0,
    )
    response.headers["X-Report-Status"] = "Complete"
    return response


def describe(row: Report) -> dict[str, Any]:
    return {
        "report_id": row.id,
        "status": row.status,
        "progress": row.progress,
        "as_of": _instant(row.as_of_us if row.as_of_us is not None else row.requested_as_of_us),
        "created_at": _time(row.created_at),
        "started_at": _time(row.started_at),
        "finished_at": _time(row.finished_at),
        "row_count": row.row_count,
        "error": row.error,
    }


def _instant(micros: int | None) -> str | None:
    return None if micros is None else report.format_instant(micros)


def _time(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat(timespec="seconds") + "Z"


@bp.get("/reports")
def list_reports() -> Response:
    limit = request.args.get("limit", "100")
    if not limit.isdigit() or not 1 <= int(limit) <= 1000:
        raise ApiError(400, "bad_request", "limit must be an integer from 1 to 1000")
    rows = db.session.scalars(select(Report).order_by(Report.created_at.desc()).limit(int(limit)))
    return jsonify({"reports": [describe(row) for row in rows]})


@bp.get("/openapi.json")
def openapi() -> Response:
    return jsonify(openapi_document.document())


@bp.get("/healthz")
def healthz() -> Response:
    try:
        db.session.execute(text("SELECT 1"))
    except Exception as exc:
        logger.warning("health check: database unavailable: %s", type(exc).__name__)
        return error_response(
            503, "unavailable", "the database does not answer", status="unavailable"
        )
    return jsonify({"status": "ok", "database": "ok"})
