"""HTTP API: trigger a report, fetch it (CSV or JSON), list reports, health. Errors are JSON."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request, send_file, url_for
from sqlalchemy import select, text

import report
import timestamps
from jobs import results, steps
from jobs.errors import QueueFull, ReportNotFound, ServiceBusy
from jobs.options import ReportRequest, describe_options
from jobs.workers import workers_seen
from models import ACTIVE_STATES, Report, ReportStatus, db
from web import openapi as openapi_document
from web.base import (
    RETRY_AFTER_SECONDS,
    ApiError,
    bad_request,
    duration,
    error_response,
    instant,
    integer_arg,
    is_report_id,
    json_body,
)

logger = logging.getLogger(__name__)
bp = Blueprint("api", __name__)
TRIGGER_FIELDS = {"as_of", "stale_after", "outages"}


# --------------------------------------------------------------------------- trigger


TRIGGER_EXAMPLE = '{"as_of": "2023-01-25T18:00:00Z", "stale_after": "2h", "outages": true}'


def parse_trigger_body() -> ReportRequest:
    """The report asked for: `as_of` (ISO-8601), `stale_after` (duration), `outages` (a JSON
    true or false)."""
    body = json_body(TRIGGER_EXAMPLE) or {}
    unknown = sorted(set(body) - TRIGGER_FIELDS)
    if unknown:
        accepted = ", ".join(sorted(TRIGGER_FIELDS))
        raise bad_request(f"unknown field(s): {', '.join(unknown)}; accepted: {accepted}")
    return ReportRequest(
        as_of_us=instant("as_of", body["as_of"]) if "as_of" in body else None,
        options=report.ReportOptions(
            stale_after_us=duration("stale_after", body["stale_after"])
            if "stale_after" in body
            else None,
            outages=parse_outages(body.get("outages", False)),
        ),
    )


def parse_outages(value: Any) -> bool:
    if not isinstance(value, bool):
        raise bad_request("outages must be true or false")
    return value


def too_many_reports(reason: str) -> ApiError:
    return ApiError(
        429, "too_many_reports", f"{reason}; retry later", {"Retry-After": str(RETRY_AFTER_SECONDS)}
    )


@bp.post("/trigger_report")
def trigger_report() -> Response:
    requested = parse_trigger_body()
    try:
        report_id = steps.submit_report(requested)
    except QueueFull as exc:
        raise too_many_reports(str(exc)) from exc
    except ServiceBusy as exc:
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
    if not is_report_id(report_id):
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
            raise bad_request("format must be csv or json")
        return asked
    best = request.accept_mimetypes.best_match(["text/csv", "application/json"])
    return "json" if best == "application/json" else "csv"


@bp.get("/get_report/<report_id>")
def get_report(report_id: str) -> Response:
    row = find_report(report_id)
    form = wanted_format()
    if row.status in ACTIVE_STATES:
        response = jsonify(describe(row, broker_workers_seen()))
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
    except ReportNotFound:
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
            results.local_csv(row).resolve(),
            mimetype="text/csv",
            as_attachment=True,
            download_name=name,
            max_age=0,
        )
    except OSError as exc:
        logger.warning(
            "report %s: no CSV file on this machine (%s); served from the database", row.id, exc
        )
        response = Response(results.csv_chunks(results.finished_table(row)), mimetype="text/csv")
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
        "options": describe_options(row),
    }


def report_json(row: Report) -> Response:
    table = results.finished_table(row)
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
        "options": describe_options(row),
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


def broker_workers_seen() -> int | None:
    """Worker processes seen lately when a broker runs the reports; None without one (this
    process's own threads run them)."""
    return workers_seen() if current_app.config["CELERY_BROKER_URL"] else None


def _instant(micros: int | None) -> str | None:
    return None if micros is None else timestamps.format_instant(micros)


def _time(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat(timespec="seconds") + "Z"


@bp.get("/reports")
def list_reports() -> Response:
    limit = integer_arg("limit", 100, 1, 1000)
    rows = db.session.scalars(select(Report).order_by(Report.created_at.desc()).limit(limit))
    workers = broker_workers_seen()
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
        workers = broker_workers_seen()
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
