"""HTTP ingestion: pollers and back-office tools push polls, hours, zones and closures.

`POST /polls`, `/business_hours`, `/timezones`, `/closures` take the same CSV formats as
`flask load-data` (polls also NDJSON, one `{"store_id", "status", "timestamp_utc"}` object a
line), optionally gzip-compressed. One request is one load through the same code path as the
command line (`loader.load_sources`): same checks, same messages, same idempotence, one batch
committed entirely or not at all, so a report sees it all or none of it.
"""

from __future__ import annotations

import csv
import json
import logging
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

import loader
from models import db
from validation import CLOSURES, HOURS, POLLS, REQUIRED_COLUMNS, TIMEZONES
from web import openapi
from web.base import RETRY_AFTER_SECONDS, ApiError, flag_arg

logger = logging.getLogger(__name__)
bp = Blueprint("ingest", __name__)

ENDPOINTS = {
    "/polls": POLLS,
    "/business_hours": HOURS,
    "/timezones": TIMEZONES,
    "/closures": CLOSURES,
}
CSV_TYPE, NDJSON_TYPE = "text/csv", "application/x-ndjson"
COPY_BYTES = 1 << 20
LABEL = "request body"
NOT_AN_OBJECT = "not a JSON object with string fields store_id, status and timestamp_utc"


def ingest(kind: str) -> Response:
    """Store one request body of `kind`; 200 with the counts, 422 with the invalid rows."""
    media = media_type(kind)
    skip_invalid = flag_arg("skip_invalid")
    with tempfile.TemporaryDirectory(prefix="store-monitor-upload-") as folder:
        body = receive_body(Path(folder) / "body")
        lines = None
        if media == NDJSON_TYPE:
            body, lines = ndjson_as_csv(body, Path(folder) / "body.csv")
        try:
            summary = loader.load_sources(
                db.engine,
                [loader.Source(kind, body, LABEL)],
                skip_invalid=skip_invalid,
                rejects=loader.RejectsTo.MEMORY,
                lock_wait_ms=current_app.config["INGEST_LOCK_TIMEOUT_MS"],
                check_first=True,  # a body is bounded: check it before queueing for the lock
            )
        except loader.LoadError as exc:
            raise refusal(exc, lines) from exc
    logger.info("ingest %s: batch %d, %s", kind, summary.batch, summary.files[0])
    return jsonify(counts(summary, lines))


def media_type(kind: str) -> str:
    """The body's type: CSV for every kind, NDJSON for polls; 415 for anything else."""
    given = (request.mimetype or "").lower()
    accepted = [CSV_TYPE, NDJSON_TYPE] if kind == POLLS else [CSV_TYPE]
    if given not in accepted:
        raise ApiError(
            415,
            "unsupported_media_type",
            f"Content-Type must be {' or '.join(accepted)} (got {given or 'none'})",
        )
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("identity", "gzip"):
        raise ApiError(415, "unsupported_media_type", "Content-Encoding must be gzip or absent")
    return given


def receive_body(path: Path) -> Path:
    """Copy the body to `path`, decompressing gzip on the fly; 413 beyond INGEST_MAX_BYTES
    (counted after decompression too: no gzip bomb), 400 when empty."""
    limit = current_app.config["INGEST_MAX_BYTES"]
    request.max_content_length = limit
    pieces = iter(lambda: request.stream.read(COPY_BYTES), b"")
    if request.headers.get("Content-Encoding", "").strip().lower() == "gzip":
        pieces = inflated(pieces)
    written = 0
    with open(path, "wb") as out:
        for data in pieces:
            written += len(data)
            if written > limit:
                raise too_large(limit)
            out.write(data)
    if written == 0:
        raise ApiError(400, "bad_request", "the body is empty: send the rows to store")
    return path


def inflated(pieces: Iterator[bytes]) -> Iterator[bytes]:
    """Decompress gzip member after member (`cat a.gz b.gz` is one valid gzip body), at most
    COPY_BYTES out at a time whatever the ratio; 400 for a body cut short or not gzip."""
    member = new_member()
    fed = False
    for piece in pieces:
        data = piece
        while data:
            fed = True
            try:
                out = member.decompress(data, COPY_BYTES)
            except zlib.error as exc:
                raise ApiError(400, "bad_request", f"the body is not valid gzip: {exc}") from exc
            yield out
            data = member.unconsumed_tail
            if member.eof:  # the next member, if any, starts with what is left
                data, member, fed = member.unused_data + data, new_member(), False
    if fed and not member.eof:
        raise ApiError(400, "bad_request", "the gzip body is cut short")


def new_member():
    return zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)


def too_large(limit: int) -> ApiError:
    return ApiError(
        413, "request_entity_too_large", f"the body is larger than {limit} bytes (decompressed)"
    )


# --------------------------------------------------------------------------- NDJSON


def ndjson_as_csv(path: Path, target: Path) -> tuple[Path, NdjsonLines]:
    """Rewrite NDJSON polls as the polls CSV, so the loader checks them like any CSV.

    A line that is not an object with string fields (an integer store_id is kept exactly) is
    written as a one-field row, which the loader rejects; blank lines are left out. Returns
    where each CSV line came from, and why the unreadable lines were refused.
    """
    columns = REQUIRED_COLUMNS[POLLS]
    lines = NdjsonLines()
    with open(path, "rb") as source, open(target, "w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        for number, raw in enumerate(source, 1):
            try:
                text = raw.decode("utf-8").strip()
            except UnicodeDecodeError as exc:
                lines.origin.append(number)
                lines.problems[number] = f"not UTF-8 text ({exc.reason} at byte {exc.start})"
                writer.writerow([raw[:200].decode("utf-8", errors="replace").strip()])
                continue
            if not text:
                continue
            lines.origin.append(number)
            fields = ndjson_fields(text, columns)
            if fields is None:
                lines.problems[number] = NOT_AN_OBJECT
                writer.writerow([text[:200]])
            else:
                writer.writerow(fields)
    return target, lines


@dataclass
class NdjsonLines:
    """CSV line n (n ≥ 2; line 1 is the header) came from NDJSON line origin[n - 2]."""

    origin: list[int] = field(default_factory=list)
    problems: dict[int, str] = field(default_factory=dict)

    def error(self, error: loader.RowError) -> dict[str, Any]:
        row = asdict(error)
        if 2 <= error.line < len(self.origin) + 2:
            row["line"] = self.origin[error.line - 2]
            row["reason"] = self.problems.get(row["line"], row["reason"])
        return row


def ndjson_fields(text: str, columns: list[str]) -> list[str] | None:
    try:
        record = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(record, dict) or set(columns) - set(record):
        return None
    values = [record[name] for name in columns]
    if isinstance(values[0], int) and not isinstance(values[0], bool):
        values[0] = str(values[0])
    return values if all(isinstance(value, str) for value in values) else None


# --------------------------------------------------------------------------- answers


def as_seen_by_the_client(error: loader.RowError, lines: NdjsonLines | None) -> dict:
    """A row error with the line numbers and reasons of the body the client sent."""
    return asdict(error) if lines is None else lines.error(error)


def refusal(exc: loader.LoadError, lines: NdjsonLines | None) -> ApiError:
    """What a refused body is answered: 503 when another load holds the lock, else 422."""
    if exc.message == loader.LOCKED:
        return ApiError(
            503,
            "unavailable",
            f"{exc.message}; nothing was stored",
            {"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    errors = [as_seen_by_the_client(error, lines) for error in exc.errors]
    message = exc.message.replace("nothing was loaded", "nothing was stored")
    return ApiError(422, "invalid_rows", message, error_count=exc.error_count, errors=errors)


def counts(summary: loader.LoadSummary, lines: NdjsonLines | None) -> dict[str, Any]:
    item = summary.files[0]
    answer: dict[str, Any] = {
        "kind": item.kind,
        "batch": summary.batch,
        "received": item.rows_read,
        "stored": item.loaded,
        "unchanged": item.unchanged,
        "duplicates": item.duplicates,
        "rejected": item.rejected,
    }
    if item.rejected:
        answer["rejected_rows"] = [
            as_seen_by_the_client(error, lines) for error in item.rejected_rows
        ]
        answer["rejected_rows_truncated"] = len(item.rejected_rows) < item.rejected
    return answer


def register_routes() -> None:
    for path, kind in ENDPOINTS.items():
        view = _view_for(kind)
        bp.add_url_rule(path, endpoint=kind, view_func=view, methods=["POST"])


def _view_for(kind: str):
    def view() -> Response:
        return ingest(kind)

    view.__name__ = f"post_{kind}"
    view.__doc__ = f"Store a body of {kind} rows."
    view.openapi = _openapi_operation(kind)
    return view


# --------------------------------------------------------------------------- API description


def _openapi_operation(kind: str) -> dict[str, Any]:
    columns = ", ".join(REQUIRED_COLUMNS[kind])
    content = {CSV_TYPE: {"schema": {"type": "string", "pattern": EXAMPLE_PATTERNS[kind]}}}
    if kind == POLLS:
        content[NDJSON_TYPE] = {"schema": {"type": "string", "pattern": EXAMPLE_PATTERNS["ndjson"]}}
    row_error = {
        "type": "object",
        "required": ["line", "column", "value", "reason"],
        "properties": {
            "line": {"type": "integer"},
            "column": {"type": "string"},
            "value": {"type": "string"},
            "reason": {"type": "string"},
        },
    }
    stored = {
        "type": "object",
        "required": ["kind", "batch", "received", "stored", "duplicates", "rejected"],
        "properties": {
            "kind": {"type": "string"},
            "batch": {"type": "integer"},
            "received": {"type": "integer", "minimum": 0},
            "stored": {"type": "integer", "minimum": 0},
            "unchanged": {"type": "integer", "minimum": 0},
            "duplicates": {"type": "integer", "minimum": 0},
            "rejected": {"type": "integer", "minimum": 0},
            "rejected_rows": {"type": "array", "items": row_error},
            "rejected_rows_truncated": {"type": "boolean"},
        },
    }
    refused = {
        "type": "object",
        "required": ["error", "message"],
        "properties": {
            "error": {"type": "string"},
            "message": {"type": "string"},
            "error_count": {"type": "integer"},
            "errors": {"type": "array", "items": row_error},
        },
    }

    return {
        "summary": f"Store {kind} rows: the CSV columns {columns}"
        + (" (or NDJSON objects with them)" if kind == POLLS else ""),
        "description": (
            "The body is the file format of `flask load-data`, optionally gzip-compressed "
            "(`Content-Encoding: gzip`). The pattern shows the shape of valid rows; any valid "
            "file is accepted. All or nothing unless `skip_invalid`; a retry stores nothing new."
        ),
        "parameters": [
            {
                "name": "skip_invalid",
                "in": "query",
                "required": False,
                "description": "store the valid rows and return the rejected ones",
                "schema": {"type": "boolean", "default": False},
            },
        ],
        "requestBody": {"required": True, "content": content},
        "responses": {
            "200": openapi.json_response("stored, in one batch (or nothing new: a retry)", stored),
            "400": openapi.error("empty body, bad gzip or a bad parameter"),
            **openapi.COMMON_ERRORS,
            "413": openapi.error("the body is larger than INGEST_MAX_BYTES (also decompressed)"),
            "415": openapi.error("wrong Content-Type or Content-Encoding"),
            "422": openapi.json_response(
                "invalid rows (the first 20) or header; nothing was stored", refused
            ),
            "503": openapi.error("another load holds the write lock; nothing was stored"),
        },
    }


# The shape of valid bodies, for the API description (and the schemathesis run it drives).
_ID = "[A-Za-z0-9]{1,20}"
_TIME = "([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
_DATE = "2023-01-(0[1-9]|1[0-9]|2[0-8])"
EXAMPLE_PATTERNS = {
    POLLS: (
        f"^store_id,status,timestamp_utc\\n({_ID},(active|inactive),{_DATE} {_TIME} UTC\\n){{1,5}}$"
    ),
    "ndjson": (
        f'^({{"store_id": "{_ID}", "status": "(active|inactive)", '
        f'"timestamp_utc": "{_DATE}T{_TIME}Z"}}\\n){{1,5}}$'
    ),
    HOURS: (
        f"^store_id,day,start_time_local,end_time_local\\n({_ID},[0-6],{_TIME},{_TIME}\\n){{1,5}}$"
    ),
    TIMEZONES: f"^store_id,timezone_str\\n({_ID},(UTC|America/Chicago|Asia/Tokyo)\\n){{1,5}}$",
    CLOSURES: (
        "^store_id,start_local,end_local\\n"
        f"({_ID},2023-01-1[0-9] {_TIME},2023-01-2[0-9] {_TIME}\\n){{1,5}}$"
    ),
}

register_routes()
