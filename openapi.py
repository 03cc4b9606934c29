"""The OpenAPI 3 description of the HTTP API, served at /openapi.json (kept true by tests)."""

from __future__ import annotations

from typing import Any

ERROR = {"$ref": "#/components/schemas/Error"}
JSON_ERROR = {"application/json": {"schema": ERROR}}


def _error(description: str, headers: dict | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "content": JSON_ERROR}
    if headers:
        response["headers"] = headers
    return response


RETRY_AFTER = {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}}
COMMON_ERRORS = {
    "401": _error("API_TOKEN is set and the bearer token is missing or wrong"),
    "405": _error("method not allowed"),
}
REPORT_SUMMARY = {
    "type": "object",
    "required": ["report_id", "status"],
    "properties": {
        "report_id": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
        "status": {"type": "string", "enum": ["Running", "Complete", "Failed"]},
        "progress": {"type": "number", "minimum": 0, "maximum": 1},
        "as_of": {"type": ["string", "null"]},
        "created_at": {"type": ["string", "null"]},
        "started_at": {"type": ["string", "null"]},
        "finished_at": {"type": ["string", "null"]},
        "row_count": {"type": ["integer", "null"]},
        "error": {"type": ["string", "null"]},
    },
}


def document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Store Monitor",
            "version": "1.0.0",
            "description": "Uptime and downtime of stores within business hours, as CSV reports.",
        },
        "paths": {
            "/trigger_report": {"post": _trigger()},
            "/get_report/{report_id}": {"get": _get_report()},
            "/reports": {"get": _list_reports()},
            "/healthz": {"get": _healthz()},
        },
        "components": {
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error", "message"],
                    "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
                },
                "ReportSummary": REPORT_SUMMARY,
            },
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _trigger() -> dict[str, Any]:
    body = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "as_of": {
                "type": "string",
                "format": "date-time",
                "pattern": "^(19[7-9][0-9]|20[0-9][0-9])-",
                "description": "an instant from 1970 to 2099; default: the latest poll",
            }
        },
    }
    accepted = {
        "type": "object",
        "required": ["report_id", "status"],
        "properties": {
            "report_id": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
            "status": {"type": "string", "enum": ["Running", "Complete", "Failed"]},
        },
    }
    return {
        "summary": "Start a report job (as of the latest poll, or `as_of`)",
        "requestBody": {"required": False, "content": {"application/json": {"schema": body}}},
        "responses": {
            "202": {
                "description": "accepted; poll the Location",
                "headers": {"Location": {"schema": {"type": "string"}}},
                "content": {"application/json": {"schema": accepted}},
            },
            "400": _error("the body is not a JSON object with a valid as_of"),
            "413": _error("the body is too large"),
            "415": _error("unsupported media type"),
            "429": _error("too many reports running or queued", RETRY_AFTER),
            **COMMON_ERRORS,
        },
    }


def _get_report() -> dict[str, Any]:
    running = {"allOf": [{"$ref": "#/components/schemas/ReportSummary"}]}
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
        "summary": "The report: still running (202), the CSV (200), or why it failed",
        "parameters": [
            {
                "name": "report_id",
                "in": "path",
                "required": True,
                "description": "32 hexadecimal digits, as returned by /trigger_report",
                "schema": {"type": "string"},
            }
        ],
        "responses": {
            "200": {
                "description": "the finished report",
                "headers": {"X-Report-Status": {"schema": {"type": "string", "const": "Complete"}}},
                "content": {"text/csv": {"schema": {"type": "string"}}},
            },
            "202": {
                "description": "still running",
                "content": {"application/json": {"schema": running}},
            },
            "404": _error("no report with this id, or a malformed id"),
            "410": _error("the report's file is gone (expired)"),
            "422": {
                "description": "the report failed",
                "content": {"application/json": {"schema": failed}},
            },
            **COMMON_ERRORS,
        },
    }


def _list_reports() -> dict[str, Any]:
    listing = {
        "type": "object",
        "required": ["reports"],
        "properties": {
            "reports": {"type": "array", "items": {"$ref": "#/components/schemas/ReportSummary"}}
        },
    }
    return {
        "summary": "The latest reports",
        "parameters": [
            {
                "name": "limit",
                "in": "query",
                "required": False,
                "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
            }
        ],
        "responses": {
            "200": {
                "description": "reports, newest first",
                "content": {"application/json": {"schema": listing}},
            },
            "400": _error("limit is not an integer from 1 to 1000"),
            **COMMON_ERRORS,
        },
    }


def _healthz() -> dict[str, Any]:
    healthy = {
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"type": "string"}, "database": {"type": "string"}},
    }
    return {
        "summary": "Whether the database answers (no token needed)",
        "security": [],
        "responses": {
            "200": {"description": "healthy", "content": {"application/json": {"schema": healthy}}},
            "503": _error("the database does not answer"),
            "405": _error("method not allowed"),
        },
    }
