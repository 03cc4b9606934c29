"""HTTP ingestion: pollers and back-office tools push polls, hours, zones, closures, groups.

`POST /polls`, `/business_hours`, `/timezones`, `/closures`, `/store_groups` take the same CSV
formats as `flask load-data` (polls also NDJSON, one `{"store_id", "status", "timestamp_utc"}`
object a line), optionally gzip-compressed. One request is one load through the same code path
as the command line (`loader.load_sources`): same checks, same messages, same idempotence, one batch
committed entirely or not at all, so a report sees it all or none of it.

A body is decoded once, as its Content-Encoding says, into a file of at most INGEST_MAX_BYTES
in a folder of its own (`store-monitor-upload-<pid>-*` in the temporary directory, removed
after the request, and at start-up and exit once its process is gone); the loader then
streams that file, so an upload's memory is bounded by a chunk, whatever its rows.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
import zlib
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

import loader
from jobs import alerts
from loading.sources import CSV, NDJSON
from loading.validation import CLOSURES, GROUPS, HOURS, POLLS, REQUIRED_COLUMNS, TIMEZONES
from models import KeyRole, db
from web import openapi
from web.base import RETRY_AFTER_SECONDS, ApiError, allowed_to, flag_arg

logger = logging.getLogger(__name__)
bp = Blueprint("ingest", __name__)

ENDPOINTS = {
    "/polls": POLLS,
    "/business_hours": HOURS,
    "/timezones": TIMEZONES,
    "/closures": CLOSURES,
    "/store_groups": GROUPS,
}
CSV_TYPE, NDJSON_TYPE = "text/csv", "application/x-ndjson"
COPY_BYTES = 1 << 20
LABEL = "request body"
UPLOAD_PREFIX = "store-monitor-upload-"
# A folder older than this is left over whoever owns it: an upload takes seconds to minutes.
STALE_UPLOAD_SECONDS = 3600


def ingest(kind: str) -> Response:
    """Store one request body of `kind`; 200 with the counts, 422 with the invalid rows."""
    media = media_type(kind)
    skip_invalid = flag_arg("skip_invalid")
    with tempfile.TemporaryDirectory(prefix=f"{UPLOAD_PREFIX}{os.getpid()}-") as folder:
        body = receive_body(Path(folder) / "body")
        source = loader.Source(
            kind, body, LABEL, NDJSON if media == NDJSON_TYPE else CSV, gzip_by_content=False
        )
        try:
            summary = loader.load_sources(
                db.engine,
                [source],
                skip_invalid=skip_invalid,
                rejects=loader.RejectsTo.MEMORY,
                lock_wait_ms=current_app.config["INGEST_LOCK_TIMEOUT_MS"],
                check_first=True,  # check before queueing for the lock, write under it
                compact_every_seconds=current_app.config["POLLS_COMPACT_SECONDS"],
            )
        except loader.LoadError as exc:
            raise refusal(exc) from exc
    logger.info("ingest %s: batch %d, %s", kind, summary.batch, summary.files[0])
    alerts.evaluate_soon(current_app._get_current_object())
    return jsonify(counts(summary))


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
    COPY_BYTES out at a time whatever the ratio; 400 for a body cut short or not gzip.

    Every byte is fed once: at the end of a member, what follows it (`unused_data`) starts the
    next one. CPython leaves those bytes in `unconsumed_tail` too: feeding both doubled the
    rest of the body at every member boundary.
    """
    member, started = new_member(), False
    for piece in pieces:
        data = piece
        while data:
            if member.eof:
                member = new_member()
            started = True
            try:
                out = member.decompress(data, COPY_BYTES)
            except zlib.error as exc:
                raise ApiError(400, "bad_request", f"the body is not valid gzip: {exc}") from exc
            yield out
            data = member.unused_data if member.eof else member.unconsumed_tail
    if started and not member.eof:
        raise ApiError(400, "bad_request", "the gzip body is cut short")


def new_member():
    return zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)


def too_large(limit: int) -> ApiError:
    return ApiError(
        413, "request_entity_too_large", f"the body is larger than {limit} bytes (decompressed)"
    )


# --------------------------------------------------------------------------- leftovers


def remove_stale_upload_folders(also_own: bool = False) -> int:
    """Remove upload folders whose process is gone (or that are older than any upload takes);
    with `also_own`, this process's too (it is exiting). Return how many were removed.

    A process killed mid-upload (SIGTERM, SIGKILL) cannot remove its folder; several server
    processes may share the temporary directory, so a folder is only removed when the process
    named in it no longer runs.
    """
    removed = 0
    for entry in Path(tempfile.gettempdir()).glob(UPLOAD_PREFIX + "*"):
        if entry.is_dir() and not entry.is_symlink() and _is_stale(entry, also_own):
            shutil.rmtree(entry, ignore_errors=True)
            removed += not entry.exists()
    if removed:
        logger.info("removed %d upload folders left by stopped processes", removed)
    return removed


def _is_stale(folder: Path, also_own: bool) -> bool:
    owner = folder.name.removeprefix(UPLOAD_PREFIX).split("-", 1)[0]
    try:
        old = time.time() - folder.stat().st_mtime > STALE_UPLOAD_SECONDS
    except FileNotFoundError:  # removed meanwhile by its owner
        return False
    if not owner.isdigit():  # named before folders carried their process
        return old
    pid = int(owner)
    if pid == os.getpid():
        return also_own
    return old or not _is_running(pid)


def _is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


# --------------------------------------------------------------------------- answers


def refusal(exc: loader.LoadError) -> ApiError:
    """What a refused body is answered: 503 when another load holds the lock, else 422."""
    if exc.message == loader.LOCKED:
        return ApiError(
            503,
            "unavailable",
            f"{exc.message}; nothing was stored",
            {"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    errors = [asdict(error) for error in exc.errors]
    message = exc.message.replace("nothing was loaded", "nothing was stored")
    return ApiError(422, "invalid_rows", message, error_count=exc.error_count, errors=errors)


def counts(summary: loader.LoadSummary) -> dict[str, Any]:
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
        answer["rejected_rows"] = [asdict(error) for error in item.rejected_rows]
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
    return allowed_to(KeyRole.POLLER)(view)


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
    GROUPS: f"^group_id,store_id\\n([A-Za-z0-9._-]{{1,20}},{_ID}\\n){{1,5}}$",
    CLOSURES: (
        "^store_id,start_local,end_local\\n"
        f"({_ID},2023-01-1[0-9] {_TIME},2023-01-2[0-9] {_TIME}\\n){{1,5}}$"
    ),
}

register_routes()
