"""The OpenAPI 3.1 description of the HTTP API, served at /openapi.json.

Each route describes itself where it is defined (`@operation`, with the argument declarations
it reads its query with); `document` gathers them from the app's URL map, so a route cannot be
served without being described (a test checks every rule), and schemathesis checks the live
server against the result. The schemas several routes share live here.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask

from jobs.options import REPORT_ID_PATTERN
from models import ReportStatus
from web.arguments import Argument

ERROR = {"$ref": "#/components/schemas/Error"}
JSON_ERROR = {"application/json": {"schema": ERROR}}
STATES = [status.value for status in ReportStatus]
REPORT_ID = {"type": "string", "pattern": REPORT_ID_PATTERN.pattern}
NULLABLE_TEXT = {"type": ["string", "null"]}
TEXT = {"type": "string"}


def error(description: str, headers: dict | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "content": JSON_ERROR}
    if headers:
        response["headers"] = headers
    return response


def json_response(description: str, schema: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": schema}},
        **extra,
    }


RETRY_AFTER = {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}}
UNAUTHORIZED = {
    "401": error("API_TOKEN is set or a key exists, and the bearer token is missing or wrong"),
    "403": error("the key's role may not use this endpoint"),
}
NOT_ALLOWED = {"405": error("method not allowed")}
COMMON_ERRORS = {**UNAUTHORIZED, **NOT_ALLOWED}
REPORT_ID_PARAMETER = {
    "name": "report_id",
    "in": "path",
    "required": True,
    "description": "32 hexadecimal digits, as returned by /trigger_report",
    "schema": TEXT,
}
OPTIONS = {
    "type": "object",
    "required": ["stale_after", "outages"],
    "properties": {
        "stale_after": {
            "type": ["string", "null"],
            "description": "ISO-8601 duration beyond which time is unknown (null: not set)",
        },
        "outages": {"type": "boolean"},
    },
}
REPORT_SUMMARY = {
    "type": "object",
    "required": ["report_id", "status", "progress", "options"],
    "properties": {
        "report_id": REPORT_ID,
        "status": {"type": "string", "enum": STATES},
        "progress": {"type": "number", "minimum": 0, "maximum": 1},
        "as_of": NULLABLE_TEXT,
        "options": {"$ref": "#/components/schemas/Options"},
        "shards": {
            "type": "object",
            "properties": {
                "total": {"type": ["integer", "null"]},
                "done": {"type": "integer", "minimum": 0},
            },
        },
        "created_at": NULLABLE_TEXT,
        "started_at": NULLABLE_TEXT,
        "finished_at": NULLABLE_TEXT,
        "row_count": {"type": ["integer", "null"]},
        "error": NULLABLE_TEXT,
        "scope": {
            "type": ["array", "null"],
            "items": {"type": "string"},
            "description": "the groups whose stores the report covers (null: every store)",
        },
        "created_by": {
            "type": ["string", "null"],
            "description": "the key that asked for it (null: API_TOKEN, or no key)",
        },
        "warning": {
            "type": "string",
            "description": (
                "present while the report waits and, with a broker, no worker has been seen "
                "for a minute"
            ),
        },
    },
}
REPORT_JSON = {
    "type": "object",
    "required": ["report_id", "as_of", "options", "columns", "rows"],
    "properties": {
        "report_id": REPORT_ID,
        "as_of": NULLABLE_TEXT,
        "options": {"$ref": "#/components/schemas/Options"},
        "columns": {"type": "array", "items": {"type": "string"}},
        "rows": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["store_id"],
                "properties": {"store_id": {"type": "string"}},
                "additionalProperties": {"type": "number"},
            },
        },
    },
}
SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error", "message"],
        "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
    },
    "Options": OPTIONS,
    "ReportSummary": REPORT_SUMMARY,
    "ReportJson": REPORT_JSON,
}


# --------------------------------------------------------------------------- routes


def operation(
    summary: str,
    *,
    responses: dict[str, Any],
    description: str | None = None,
    args: Iterable[Argument] = (),
    path: Iterable[dict[str, Any]] = (),
    body: dict[str, Any] | None = None,
    public: bool = False,
) -> Callable:
    """Describe a route beside it: its summary, path parameters, query arguments (the same
    declarations it reads them with), request body and answers. Every route answers 405 to
    other methods and, unless `public`, 401 without the token."""
    described: dict[str, Any] = {"summary": summary}
    if description:
        described["description"] = description
    parameters = [*path, *(argument.parameter() for argument in args)]
    if parameters:
        described["parameters"] = parameters
    if body is not None:
        described["requestBody"] = body
    described["responses"] = {**responses, **(NOT_ALLOWED if public else COMMON_ERRORS)}
    if public:
        described["security"] = []

    def describe(view: Callable) -> Callable:
        view.openapi = described
        return view

    return describe


def openapi_path(rule: str) -> str:
    """A Flask rule as an OpenAPI path: `<report_id>` and `<path:store>` become `{...}`."""
    return re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", rule)


def undescribed_rules(app: Flask) -> list[str]:
    """Rules whose view has no `@operation` (Flask's own static files aside)."""
    return [
        rule.rule
        for rule in app.url_map.iter_rules()
        if rule.endpoint != "static" and not hasattr(app.view_functions[rule.endpoint], "openapi")
    ]


def document(app: Flask) -> dict[str, Any]:
    """The whole description, gathered from the routes of `app`."""
    paths: dict[str, Any] = {}
    for rule in sorted(app.url_map.iter_rules(), key=lambda rule: rule.rule):
        described = getattr(app.view_functions[rule.endpoint], "openapi", None)
        if described is None:
            continue
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            paths.setdefault(openapi_path(rule.rule), {})[method.lower()] = described
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Store Monitor",
            "version": "2.0.0",
            "description": (
                "Uptime, downtime, unknown time and outages of stores within business hours, "
                "as CSV or JSON reports."
            ),
        },
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": (
                        "API_TOKEN or a key's token (`flask keys create`): needed when "
                        "API_TOKEN is set or a key exists"
                    ),
                }
            },
        },
        # A token is needed only when API_TOKEN is set or a key exists: bearer, or nothing.
        "security": [{"bearer": []}, {}],
    }
