"""The web page: reports, one report's stores, one store's week.

Pages are HTML shells (templates/) with light JavaScript (static/) that read the JSON
endpoints below; the shells and assets hold no data and are open without the token, every
JSON endpoint needs it when API_TOKEN is set or a key exists (and shows a reader key only its
groups' reports and stores).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlencode

from flask import (
    Blueprint,
    Response,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)

import report
from engine import timestamps
from jobs import results, snapshot
from jobs.errors import ReportNotFound
from jobs.options import options_as_written, options_of
from models import ACTIVE_STATES, STORE_ID_MAX_LENGTH, KeyRole, Report, ReportStatus, db
from web import access, openapi, timelines
from web import tables as report_tables
from web.api import TRIGGER_BODY, TRIGGER_FIELDS, find_report, report_heading
from web.arguments import Choice, Duration, Flag, Instant, Integer, Text
from web.base import ApiError, allowed_to, authentication_required, public
from web.openapi import REPORT_ID_PARAMETER, TEXT, operation

bp = Blueprint("web", __name__)
tables = report_tables.TableCache()

PAGE_LIMIT_DEFAULT = 50
PAGE_LIMIT_MAX = 1000
OFFSET_MAX = 100_000_000
ALL_COLUMNS = [*report.BASE_COLUMNS, *report.UNKNOWN_COLUMNS, *report.OUTAGE_COLUMNS]
SORTABLE = [*ALL_COLUMNS, report_tables.UPTIME_PERCENT]
# Low uptime is bad, high downtime is bad: a column sorts worst first unless told otherwise.
ASCENDING_FIRST = {"store_id", report_tables.UPTIME_PERCENT, *report.BASE_COLUMNS[1:4]}
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data: blob:; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)


NUMBER = {"type": "number"}
NULLABLE_NUMBER = {"type": ["number", "null"]}
OPTIONS = {"$ref": "#/components/schemas/Options"}
NOT_COMPLETE = {
    "404": openapi.error("no report with this id, or a malformed id"),
    "409": openapi.error("the report is queued or running"),
    "410": openapi.error("the report's data is gone (expired)"),
    "422": openapi.error("the report failed"),
}


def object_of(properties: dict[str, Any], optional: tuple[str, ...] = ()) -> dict[str, Any]:
    required = [name for name in properties if name not in optional]
    return {"type": "object", "required": required, "properties": properties}


# --------------------------------------------------------------------------- pages

PAGE_SHELL = {"200": {"description": "the page (HTML, no data)", "content": {"text/html": {}}}}
STORE_PAGE_ID = Text("id", "the store's id as loaded (any text)", default="")


def page_constants() -> dict[str, Any]:
    """What the page's scripts need to know of the service, from the definitions the server
    uses (one definition each): report states, the windows and their units."""
    return {
        "statuses": [status.value for status in ReportStatus],
        "active_statuses": [status.value for status in ACTIVE_STATES],
        "windows": list(report_tables.WINDOWS),
        "window_units": report_tables.WINDOW_UNITS,
    }


def page(template: str, **context: Any) -> Response:
    """A page shell: whether a token is needed (never the token itself), no data."""
    token_required = authentication_required()
    shell = render_template(
        template, token_required=token_required, constants=page_constants(), **context
    )
    response = Response(shell)
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/")
@operation("The web page: reports", public=True, responses=PAGE_SHELL)
@public
def reports_page() -> Response:
    return page("reports.html", script="reports.js")


@bp.get("/report/<report_id>")
@operation(
    "The web page: one report's stores",
    path=[REPORT_ID_PARAMETER],
    public=True,
    responses=PAGE_SHELL,
)
@public
def report_page(report_id: str) -> Response:
    return page("report.html", script="report.js", report_id=report_id)


@bp.get("/store")
@operation(
    "The web page: one store's week", args=[STORE_PAGE_ID], public=True, responses=PAGE_SHELL
)
@public
def store_page() -> Response:
    """A store's page, `/store?id=<store id>`: a store id is any text (".", "..", "a/b",
    "x/timeline", "?", "#"), and only a query parameter carries every one of them unchanged
    (a path segment "." or ".." is removed by browsers, even percent-encoded)."""
    return page("store.html", script="store.js", store_id=STORE_PAGE_ID.read())


LEGACY_STORE_ID = {
    "name": "legacy_id",
    "in": "path",
    "required": True,
    "description": "the store's id, as earlier links wrote it",
    "schema": {"type": "string"},
}


@bp.get("/stores/<path:legacy_id>", merge_slashes=False)
@operation(
    "An earlier link to a store's page: redirects to /store?id=<id>",
    path=[LEGACY_STORE_ID],
    public=True,
    responses={"301": {"description": "to /store?id=<id>, the other arguments kept"}},
)
@public
def legacy_store_link(legacy_id: str) -> Response:
    """`/stores/<id>` (earlier links) redirects to the store's page: with no other route under
    /stores/, each such link still names the one store it named before."""
    # The query is built here, not by url_for: its "_external" or "_anchor" would be obeyed.
    others = [(name, value) for name, value in request.args.items(multi=True) if name != "id"]
    query = urlencode([("id", legacy_id), *others])
    return redirect(f"{url_for('web.store_page')}?{query}", 301)


# --------------------------------------------------------------------------- one report


def finished_report(report_id: str) -> Report:
    """A Complete report whose table is still stored; else 404, 409, 410 or 422."""
    row = find_report(report_id)
    if row.status in ACTIVE_STATES:
        message = f"the report is {row.status}; its stores are shown once it is Complete"
        raise ApiError(409, "not_ready", message, status=str(row.status))
    if row.status == ReportStatus.FAILED:
        message = row.error or "the report failed"
        raise ApiError(422, "report_failed", message, status=str(row.status))
    return row


def report_table(row: Report) -> report_tables.ReportTable:
    try:
        return tables.get(row.id, lambda: results.finished_table(row))
    except ReportNotFound as exc:
        raise ApiError(
            410, "gone", "the report's data is no longer available; trigger a new report"
        ) from exc


WINDOW_TOTALS = object_of(
    {
        "unit": {"type": "string", "enum": ["minutes", "hours"]},
        "business": NUMBER,
        "uptime": NUMBER,
        "downtime": NUMBER,
        "unknown": NULLABLE_NUMBER,
        "uptime_percent": NULLABLE_NUMBER,
    }
)
SUMMARY = object_of(
    {
        "report_id": openapi.REPORT_ID,
        "as_of": openapi.NULLABLE_TEXT,
        "options": OPTIONS,
        "columns": {"type": "array", "items": TEXT},
        "stores": {"type": "integer", "minimum": 0},
        "windows": object_of({window: WINDOW_TOTALS for window in report_tables.WINDOWS}),
        "stores_with_downtime": {"type": "integer", "minimum": 0},
        "stores_without_known_time": {"type": "integer", "minimum": 0},
        "histogram": object_of(
            {
                "window": {"const": "week"},
                "bins": {
                    "type": "array",
                    "items": object_of(
                        {"low": NUMBER, "high": NUMBER, "count": {"type": "integer"}}
                    ),
                },
                "without_known_time": {"type": "integer", "minimum": 0},
            }
        ),
        "outages": {
            "type": ["object", "null"],
            "properties": {
                "total_last_week": {"type": "integer"},
                "stores_with_outages": {"type": "integer"},
                "longest_last_week": NUMBER,
            },
        },
    }
)


@bp.get("/reports/<report_id>/summary")
@operation(
    "A finished report's totals per window and its uptime % histogram",
    path=[REPORT_ID_PARAMETER],
    responses={"200": openapi.json_response("the summary", SUMMARY), **NOT_COMPLETE},
)
@allowed_to(KeyRole.READER)
def report_summary(report_id: str) -> Response:
    row = finished_report(report_id)
    table = report_table(row)
    return jsonify(report_heading(row) | {"columns": table.columns} | report_tables.summary(table))


SORT = Choice(
    "sort",
    "a column of the report, or uptime_percent (last week)",
    default=report_tables.DEFAULT_SORT,
    choices=tuple(SORTABLE),
)
ORDER = Choice(
    "order", "default: worst first (ascending for uptime and store_id)", choices=("asc", "desc")
)
SEARCH = Text(
    "q",
    "only stores whose id contains this text (any letter case)",
    default="",
    max_length=STORE_ID_MAX_LENGTH,
)
OFFSET = Integer("offset", minimum=0, maximum=OFFSET_MAX, default=0)
PAGE_LIMIT = Integer("limit", minimum=1, maximum=PAGE_LIMIT_MAX, default=PAGE_LIMIT_DEFAULT)


@dataclass(frozen=True)
class StoresQuery:
    """What `/reports/<id>/stores` is asked for, checked."""

    sort: str
    order: str
    q: str
    offset: int
    limit: int


def stores_query() -> StoresQuery:
    sort = SORT.read()
    order = ORDER.read() or ("asc" if sort in ASCENDING_FIRST else "desc")
    return StoresQuery(sort, order, SEARCH.read().strip(), OFFSET.read(), PAGE_LIMIT.read())


STORE_ROWS = object_of(
    {
        "report_id": openapi.REPORT_ID,
        "total": {"type": "integer", "minimum": 0},
        "matched": {"type": "integer", "minimum": 0},
        "offset": {"type": "integer", "minimum": 0},
        "limit": {"type": "integer", "minimum": 1},
        "sort": {"type": "string", "enum": SORTABLE},
        "order": {"type": "string", "enum": ["asc", "desc"]},
        "q": TEXT,
        "columns": {"type": "array", "items": TEXT},
        "rows": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["store_id", report_tables.UPTIME_PERCENT],
                "properties": {"store_id": TEXT},
                "additionalProperties": NULLABLE_NUMBER,
            },
        },
    }
)


@bp.get("/reports/<report_id>/stores")
@operation(
    "One page of a finished report's stores, sorted and filtered",
    path=[REPORT_ID_PARAMETER],
    args=[SORT, ORDER, SEARCH, OFFSET, PAGE_LIMIT],
    responses={
        "200": openapi.json_response("the page of stores", STORE_ROWS),
        "400": openapi.error("a parameter is not one of the values described"),
        **NOT_COMPLETE,
        "409": openapi.error(
            "the report is queued or running, or has no such column (its options decide)"
        ),
    },
)
@allowed_to(KeyRole.READER)
def report_stores(report_id: str) -> Response:
    asked = stores_query()
    row = finished_report(report_id)
    table = report_table(row)
    if asked.sort not in table.sortable:
        # A valid column for some reports, not for this one: its options decide (409, not 400).
        raise ApiError(
            409,
            "not_in_report",
            f"this report has no column {asked.sort}: it was made without the option that adds it",
        )
    descending = asked.order == "desc"
    found = report_tables.page(table, asked.sort, descending, asked.q, asked.offset, asked.limit)
    return jsonify(
        {
            "report_id": row.id,
            "total": len(table.frame),
            "matched": found.matched,
            **asdict(asked),
            "columns": table.sortable,
            "rows": found.rows,
        }
    )


# --------------------------------------------------------------------------- one store


# Years whose instants stay within 1970–2099 whatever the UTC offset written with them.
SAFE_INSTANT_PATTERN = "^(19[89][0-9]|20[0-8][0-9])-"
STORE_ID = Text(
    "id",
    "the store's id as loaded (any text: a query parameter carries it unchanged)",
    required=True,
    min_length=1,
    max_length=STORE_ID_MAX_LENGTH,
)
REPORT = Text("report", "a report id: its data, `now` and options (not with the others)")
AS_OF = Instant(
    "as_of",
    "ISO-8601 instant, 1970 to 2099; default: the latest poll",
    pattern=SAFE_INSTANT_PATTERN,
)
STALE_AFTER = Duration(
    "stale_after",
    "as for /trigger_report: 90s, 30m, 2h, 1d, PT2H, PT90M",
    pattern=TRIGGER_BODY["properties"]["stale_after"]["pattern"],
)
OUTAGES = Flag("outages")

INSTANT = object_of({"at": TEXT, "at_us": NUMBER})
SPAN = {
    "start": TEXT,
    "end": TEXT,
    "start_local": TEXT,
    "end_local": TEXT,
    "start_us": NUMBER,
    "end_us": NUMBER,
}
UTC_OFFSET = {"type": "string", "pattern": "^[+-][0-9]{2}:[0-9]{2}$"}
COUNT = {"type": "integer", "minimum": 0}
LISTS = ("hours", "business", "closures", "segments", "polls", "outages")
COVERED_SPANS = {
    "type": "array",
    "description": "the spans; beyond limits.items, whole bins joined and partly covered "
    "bins with covered_us",
    "items": object_of({**SPAN, "covered_us": NUMBER}, optional=("covered_us",)),
}
TIMELINE = object_of(
    {
        "store_id": TEXT,
        "report_id": {"type": ["string", "null"]},
        "as_of": TEXT,
        "options": OPTIONS,
        "timezone": TEXT,
        "timezone_is_default": {"type": "boolean"},
        "utc_offset": UTC_OFFSET,
        "hours": {
            "type": "array",
            "description": "the weekly rows as written, by day and start (the first limits.items)",
            "items": object_of(
                {
                    "day": {"type": "integer", "minimum": 0, "maximum": 6},
                    "weekday": TEXT,
                    "start": TEXT,
                    "end": TEXT,
                }
            ),
        },
        "windows": object_of({name: INSTANT for name in ("now", "hour", "day", "week")}),
        "days": {
            "type": "array",
            "items": object_of(
                {
                    "date": TEXT,
                    "weekday": TEXT,
                    "start_us": NUMBER,
                    "end_us": NUMBER,
                    "hours": NUMBER,
                    "utc_offset": UTC_OFFSET,
                }
            ),
        },
        "limits": object_of(
            {"items": {"type": "integer", "minimum": 1}, "bin_us": {"type": "integer"}}
        ),
        "counts": object_of(
            {
                name: COUNT
                for name in (
                    "hours",
                    "polls",
                    "evidence_polls",
                    "polls_in_business_hours",
                    "segments",
                    "outages",
                    "outages_in_business_hours",
                    "business",
                    "closures",
                )
            }
        ),
        "truncated": object_of({name: {"type": "boolean"} for name in LISTS}),
        "business": COVERED_SPANS,
        "closures": COVERED_SPANS,
        "segments": {
            "type": "array",
            "description": "maximal runs of one status; beyond limits.items, whole bins of one "
            "status joined and the other bins mixed, with the time of each status",
            "items": object_of(
                {
                    **SPAN,
                    "status": {
                        "type": "string",
                        "enum": ["active", "inactive", "unknown", timelines.MIXED],
                    },
                    **{f"{status}_us": NUMBER for status in report.STATUSES},
                },
                optional=tuple(f"{status}_us" for status in report.STATUSES),
            ),
        },
        "polls": {
            "type": "array",
            "description": "every poll of the week; none beyond limits.items (see poll_bins)",
            "items": object_of(
                {
                    "at": TEXT,
                    "at_local": TEXT,
                    "at_us": NUMBER,
                    "status": {"type": "string", "enum": ["active", "inactive"]},
                    "evidence": {"type": "boolean"},
                }
            ),
        },
        "poll_bins": {
            "type": "array",
            "description": "beyond limits.items polls: polls per bin (empty bins left out)",
            "items": object_of({**SPAN, "count": COUNT, "active": COUNT, "evidence": COUNT}),
        },
        "outages": {
            "type": "array",
            "description": "in time order; beyond limits.items, those with the most business time",
            "items": object_of({**SPAN, "business_hours": NUMBER}),
        },
        "totals": {"type": "object", "additionalProperties": NUMBER},
    }
)


@bp.get("/store/timeline")
@operation(
    "One store's last week: business hours, polls, status segments, closures, outages and its "
    "report numbers, for a report (`report`) or the latest data",
    args=[STORE_ID, REPORT, AS_OF, STALE_AFTER, OUTAGES],
    responses={
        "200": openapi.json_response("the store's week", TIMELINE),
        "400": openapi.error("no id, a bad as_of, stale_after or outages, or report with them"),
        "404": openapi.error("no such store or report, or no poll by then"),
        "409": openapi.error("the report has not started yet"),
    },
)
@allowed_to(KeyRole.READER)
def store_timeline() -> Response:
    """A store's week (`?id=<store id>`, like its page: any text is one parameter)."""
    store_id = request.args.get("id")
    if not store_id:
        raise ApiError(400, "bad_request", "id (the store's id) is required")
    fixed, options, report_id = timeline_snapshot()
    key = None
    if len(store_id) <= STORE_ID_MAX_LENGTH:
        key = timelines.store_key(db.engine, store_id)
    if key is None or not access.sees_store(key):
        raise ApiError(404, "not_found", f"no store with id {store_id!r}")
    week = timelines.store_week(db.engine, fixed, key, store_id, options)
    if week is None:
        raise ApiError(
            404, "not_found", f"store {store_id!r} has no poll at or before {as_of_text(fixed)}"
        )
    return jsonify({"report_id": report_id, "options": options_as_written(options)} | week)


def timeline_snapshot() -> tuple[snapshot.Snapshot, report.ReportOptions, str | None]:
    """A report's snapshot and options (`?report=`), or the latest data (`?as_of=` etc.)."""
    args = request.args
    if "report" in args:
        row = find_report(args["report"])
        if TRIGGER_FIELDS & args.keys():
            raise ApiError(
                400,
                "bad_request",
                "give either report (which fixes as_of and the options) or as_of, "
                "stale_after and outages",
            )
        if row.batch is None:
            message = "the report has not started: its data is not fixed yet"
            raise ApiError(409, "not_ready", message, status=str(row.status))
        return snapshot.Snapshot(row.batch, row.as_of_us, 0), options_of(row), row.id
    options = report.ReportOptions(stale_after_us=STALE_AFTER.read(), outages=OUTAGES.read())
    as_of = AS_OF.read()
    return snapshot.fix_snapshot(db.engine, as_of), options, None


def as_of_text(fixed: snapshot.Snapshot) -> str:
    if fixed.now_us is None:
        return "now (the database holds no polls)"
    return timestamps.format_instant(fixed.now_us)
