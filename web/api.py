"""HTTP API: trigger a report, fetch it (CSV or JSON), list reports, health. Errors are JSON."""

from __future__ import annotations

import logging
import re
from datetime import datetime
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request, send_file, url_for
from sqlalchemy import select, text

import report
from engine import timestamps
from jobs import alerts, results, steps
from jobs.errors import QueueFull, ReportNotFound, ServiceBusy
from jobs.options import ReportRequest, describe_options, scope_of
from jobs.workers import workers_seen
from loading.validation import GROUP_ID_PATTERN
from models import ACTIVE_STATES, GROUP_ID_MAX_LENGTH, KeyRole, Report, ReportStatus, db
from web import access
from web import openapi as openapi_document
from web.arguments import Choice, Integer
from web.base import (
    RETRY_AFTER_SECONDS,
    ApiError,
    allowed_to,
    authentication_required,
    bad_request,
    current_principal,
    duration,
    error_response,
    instant,
    is_report_id,
    json_body,
)
from web.openapi import (
    REPORT_ID,
    REPORT_ID_PARAMETER,
    RETRY_AFTER,
    STATES,
    error,
    json_response,
    operation,
)

logger = logging.getLogger(__name__)
GROUP_ID_RULE = f"1 to {GROUP_ID_MAX_LENGTH} letters, digits, '-', '_' or '.'"
bp = Blueprint("api", __name__)
TRIGGER_FIELDS = {"as_of", "stale_after", "outages", "group"}


# --------------------------------------------------------------------------- trigger


TRIGGER_EXAMPLE = (
    '{"as_of": "2023-01-25T18:00:00Z", "stale_after": "2h", "outages": true, "group": "north"}'
)


def parse_trigger_body() -> ReportRequest:
    """The report asked for: `as_of` (ISO-8601), `stale_after` (duration), `outages` (a JSON
    true or false), `group` (whose stores it covers; see `access.report_scope`)."""
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
        groups=access.report_scope(parse_group(body["group"]) if "group" in body else None),
        created_by=current_principal().name,
    )


def parse_group(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(GROUP_ID_PATTERN, value):
        raise bad_request(f"group must be a group id ({GROUP_ID_RULE})")
    return value


def parse_outages(value: Any) -> bool:
    if not isinstance(value, bool):
        raise bad_request("outages must be true or false")
    return value


def too_many_reports(reason: str) -> ApiError:
    return ApiError(
        429, "too_many_reports", f"{reason}; retry later", {"Retry-After": str(RETRY_AFTER_SECONDS)}
    )


TRIGGER_BODY = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "as_of": {
            "type": "string",
            "format": "date-time",
            "pattern": "^(197[1-9]|19[89][0-9]|20[0-8][0-9]|209[0-8])-",
            "description": (
                "an instant from 1970 to 2099 (the pattern names 1971–2098, so that any "
                "UTC offset stays inside); default: the latest poll"
            ),
        },
        "stale_after": {
            "type": "string",
            "pattern": (
                "^([1-9][0-9]{0,3}[sm]|[1-9][0-9]{0,2}h|[1-9][0-9]?d"
                "|PT[1-9][0-9]{0,3}[MS]|PT[1-9][0-9]{0,2}H|P[1-9][0-9]?D)$"
            ),
            "description": (
                "time farther than this from every poll is unknown: 90s, 30m, 2h, 1d or an "
                "ISO-8601 duration (PT2H, PT90M); positive, at most 366 days"
            ),
        },
        "outages": {"type": "boolean", "description": "add outage counts and lengths"},
        "group": {
            "type": "string",
            "pattern": GROUP_ID_PATTERN,
            "description": (
                "cover only this group's stores (a reader's own group; default: a reader's "
                "groups, an admin's every store)"
            ),
        },
    },
}
ACCEPTED = {
    "type": "object",
    "required": ["report_id", "status"],
    "properties": {"report_id": REPORT_ID, "status": {"type": "string", "enum": STATES}},
}


@bp.post("/trigger_report")
@operation(
    "Start a report job (as of the latest poll, or `as_of`), with options",
    body={"required": False, "content": {"application/json": {"schema": TRIGGER_BODY}}},
    responses={
        "202": json_response(
            "accepted; poll the Location",
            ACCEPTED,
            headers={"Location": {"schema": {"type": "string"}}},
        ),
        "400": error("the body is not a JSON object with valid fields"),
        "404": error("no such group (or not one of the key's groups)"),
        "413": error("the body is too large"),
        "429": error("too many reports queued or running (or of this key)", RETRY_AFTER),
        "503": error("the database is busy or the task queue does not answer", RETRY_AFTER),
    },
)
@allowed_to(KeyRole.READER)
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
    if row is None or not access.sees_report(row):
        raise ApiError(404, "not_found", f"no report with id {report_id}")
    return row


FORMAT = Choice(
    "format",
    "csv (default) or json; `Accept: application/json` also asks JSON",
    choices=("csv", "json"),
)
FAILED = {
    "type": "object",
    "required": ["error", "message", "status"],
    "properties": {
        "status": {"const": "Failed"},
        "error": {"type": "string"},
        "message": {"type": "string"},
    },
}


def wanted_format() -> str:
    """`?format=csv|json`, else the Accept header (CSV unless JSON is preferred)."""
    asked = FORMAT.read()
    if asked is not None:
        return asked
    best = request.accept_mimetypes.best_match(["text/csv", "application/json"])
    return "json" if best == "application/json" else "csv"


@bp.get("/get_report/<report_id>")
@operation(
    "The report: queued or running (202), the CSV or JSON (200), or why it failed",
    path=[REPORT_ID_PARAMETER],
    args=[FORMAT],
    responses={
        "200": {
            "description": "the finished report",
            "headers": {"X-Report-Status": {"schema": {"type": "string", "const": "Complete"}}},
            "content": {
                "text/csv": {"schema": {"type": "string"}},
                "application/json": {"schema": {"$ref": "#/components/schemas/ReportJson"}},
            },
        },
        "202": json_response("queued or running", {"$ref": "#/components/schemas/ReportSummary"}),
        "400": error("format is not csv or json"),
        "404": error("no report with this id, or a malformed id"),
        "410": error("the report's data is gone (expired)"),
        "422": json_response("the report failed", FAILED),
    },
)
@allowed_to(KeyRole.READER)
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
        "scope": None if row.scope is None else list(scope_of(row) or ()),
        "created_by": row.created_by,
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


LIMIT = Integer("limit", minimum=1, maximum=1000, default=100)
REPORT_LIST = {
    "type": "object",
    "required": ["reports"],
    "properties": {
        "reports": {"type": "array", "items": {"$ref": "#/components/schemas/ReportSummary"}}
    },
}


@bp.get("/reports")
@operation(
    "The latest reports with their status, progress and options",
    args=[LIMIT],
    responses={
        "200": json_response("reports, newest first", REPORT_LIST),
        "400": error("limit is not an integer from 1 to 1000"),
    },
)
@allowed_to(KeyRole.READER)
def list_reports() -> Response:
    limit = LIMIT.read()
    newest = select(Report).order_by(Report.created_at.desc()).limit(limit)
    rows = db.session.scalars(access.visible_reports(newest))
    workers = broker_workers_seen()
    return jsonify({"reports": [describe(row, workers) for row in rows]})


WHOAMI = {
    "type": "object",
    "required": ["name", "role", "groups", "authentication_required"],
    "properties": {
        "name": {
            "type": ["string", "null"],
            "description": "the key's name (null: API_TOKEN, or no authentication)",
        },
        "role": {"type": "string", "enum": ["admin", "reader", "poller"]},
        "groups": {
            "type": ["array", "null"],
            "items": {"type": "string"},
            "description": "a reader's groups (null: every store)",
        },
        "report_groups": {
            "type": "array",
            "items": {"type": "string"},
            "description": "the groups a report may be asked for (an admin: the first 1000)",
        },
        "authentication_required": {"type": "boolean"},
    },
}


@bp.get("/whoami")
@operation(
    "Who the bearer token is: its key's name, role and groups (what the page shows)",
    responses={"200": json_response("the caller", WHOAMI)},
)
@allowed_to(KeyRole.READER, KeyRole.POLLER)
def whoami() -> Response:
    principal = current_principal()
    if principal.role == KeyRole.ADMIN:
        report_groups = access.current_groups()
    else:
        report_groups = list(principal.groups or ())
    return jsonify(
        {
            "name": principal.name,
            "role": str(principal.role),
            "groups": None if principal.groups is None else list(principal.groups),
            "report_groups": report_groups,
            "authentication_required": authentication_required(),
        }
    )


@bp.get("/openapi.json")
@operation(
    "This description of the API (no token needed)",
    public=True,
    responses={"200": json_response("the OpenAPI 3.1 document", {"type": "object"})},
)
def openapi() -> Response:
    """The API description, gathered from every route of the app."""
    return jsonify(openapi_document.document(current_app))


HEALTHY = {
    "type": "object",
    "required": ["status"],
    "properties": {
        "status": {"type": "string"},
        "database": {"type": "string"},
        "workers": {
            "type": "integer",
            "minimum": 0,
            "description": (
                "with a broker: worker processes seen in the last minute (0: reports wait)"
            ),
        },
        "unevaluated_loads": {
            "type": "integer",
            "minimum": 0,
            "description": (
                "committed loads whose incidents and alerts are not evaluated yet (0 but for a "
                "moment after a load)"
            ),
        },
    },
}


@bp.get("/healthz")
@operation(
    "Whether the database answers, with a broker how many workers are seen, and whether "
    "incidents are evaluated up to the latest load",
    public=True,
    responses={
        "200": json_response("healthy", HEALTHY),
        "503": error("the database does not answer"),
    },
)
def healthz() -> Response:
    """200 while the database answers (with a broker, and the workers seen lately: the API
    itself works, it only enqueues), else 503."""
    try:
        db.session.execute(text("SELECT 1"))
        db.session.commit()
        workers = broker_workers_seen()
        unevaluated = alerts.unevaluated_loads()
        db.session.commit()
    except Exception as exc:
        db.session.rollback()
        logger.warning("health check: database unavailable: %s", type(exc).__name__)
        return error_response(
            503, "unavailable", "the database does not answer", status="unavailable"
        )
    health: dict[str, Any] = {"status": "ok", "database": "ok"}
    if workers is not None:
        health["workers"] = workers
    health["unevaluated_loads"] = unevaluated
    return jsonify(health)
