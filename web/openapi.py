"""The OpenAPI 3.1 description of the HTTP API, served at /openapi.json (kept true by tests:
every route is described, and schemathesis checks the live server against it)."""

from __future__ import annotations

from typing import Any

ERROR = {"$ref": "#/components/schemas/Error"}
JSON_ERROR = {"application/json": {"schema": ERROR}}
STATES = ["Queued", "Running", "Complete", "Failed"]
REPORT_ID = {"type": "string", "pattern": "^[0-9a-f]{32}$"}
NULLABLE_TEXT = {"type": ["string", "null"]}


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
COMMON_ERRORS = {
    "401": error("API_TOKEN is set and the bearer token is missing or wrong"),
    "405": error("method not allowed"),
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


def document(extra_paths: dict[str, Any] | None = None) -> dict[str, Any]:
    """The whole description; blueprints other than the core API add their paths."""
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
        "paths": {
            "/trigger_report": {"post": trigger()},
            "/get_report/{report_id}": {"get": get_report()},
            "/reports": {"get": list_reports()},
            "/healthz": {"get": healthz()},
            **(extra_paths or {}),
        },
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "needed when the service runs with API_TOKEN set",
                }
            },
        },
        # The token is needed only when API_TOKEN is set: bearer, or nothing.
        "security": [{"bearer": []}, {}],
    }


def trigger() -> dict[str, Any]:
    body = {
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
        },
    }
    accepted = {
        "type": "object",
        "required": ["report_id", "status"],
        "properties": {"report_id": REPORT_ID, "status": {"type": "string", "enum": STATES}},
    }
    return {
        "summary": "Start a report job (as of the latest poll, or `as_of`), with options",
        "requestBody": {"required": False, "content": {"application/json": {"schema": body}}},
        "responses": {
            "202": json_response(
                "accepted; poll the Location",
                accepted,
                headers={"Location": {"schema": {"type": "string"}}},
            ),
            "400": error("the body is not a JSON object with valid fields"),
            "413": error("the body is too large"),
            "429": error("too many reports queued or running", RETRY_AFTER),
            "503": error("the database is busy or the task queue does not answer", RETRY_AFTER),
            **COMMON_ERRORS,
        },
    }


def get_report() -> dict[str, Any]:
    failed = {
        "type": "object",
        "required": ["error", "message", "status"],
        "properties": {
            "status": {"const": "Failed"},
            "error": {"type": "string"},
            "message": {"type": "string"},
        },
    }
    return {
        "summary": "The report: queued or running (202), the CSV or JSON (200), or why it failed",
        "parameters": [
            {
                "name": "report_id",
                "in": "path",
                "required": True,
                "description": "32 hexadecimal digits, as returned by /trigger_report",
                "schema": {"type": "string"},
            },
            {
                "name": "format",
                "in": "query",
                "required": False,
                "description": "csv (default) or json; `Accept: application/json` also asks JSON",
                "schema": {"type": "string", "enum": ["csv", "json"]},
            },
        ],
        "responses": {
            "200": {
                "description": "the finished report",
                "headers": {"X-Report-Status": {"schema": {"type": "string", "const": "Complete"}}},
                "content": {
                    "text/csv": {"schema": {"type": "string"}},
                    "application/json": {"schema": {"$ref": "#/components/schemas/ReportJson"}},
                },
            },
            "202": json_response(
                "queued or running", {"$ref": "#/components/schemas/ReportSummary"}
            ),
            "400": error("format is not csv or json"),
            "404": error("no report with this id, or a malformed id"),
            "410": error("the report's data is gone (expired)"),
            "422": json_response("the report failed", failed),
            **COMMON_ERRORS,
        },
    }


def list_reports() -> dict[str, Any]:
    listing = {
        "type": "object",
        "required": ["reports"],
        "properties": {
            "reports": {"type": "array", "items": {"$ref": "#/components/schemas/ReportSummary"}}
        },
    }
    return {
        "summary": "The latest reports with their status, progress and options",
        "parameters": [
            {
                "name": "limit",
                "in": "query",
                "required": False,
                "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
            }
        ],
        "responses": {
            "200": json_response("reports, newest first", listing),
            "400": error("limit is not an integer from 1 to 1000"),
            **COMMON_ERRORS,
        },
    }


def healthz() -> dict[str, Any]:
    healthy = {
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
        },
    }
    return {
        "summary": "Whether the database answers, and with a broker how many workers are seen",
        "security": [],
        "responses": {
            "200": json_response("healthy", healthy),
            "503": error("the database does not answer"),
            "405": error("method not allowed"),
        },
    }
