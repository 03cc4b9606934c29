"""A report's table: packed for the database, assembled from shards, written as CSV, as JSON,
and served from where it is stored.

Shard results and finished reports are stored in the database as compressed Arrow IPC, so
any process on any machine can assemble or serve them; the CSV file in REPORTS_DIR is a local
copy written atomically (temporary name, then rename) and re-created from the database when
a machine without it is asked for the report.
"""

from __future__ import annotations

import io
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from flask import current_app
from sqlalchemy import update

from engine import cells
from jobs.errors import ReportNotFound
from jobs.options import is_valid_report_id
from jobs.retries import short_reason, with_database_retries
from models import Report, ReportResult, ReportShard, db

logger = logging.getLogger(__name__)

IPC_OPTIONS = pa.ipc.IpcWriteOptions(compression="zstd")


def pack(frame: pd.DataFrame) -> bytes:
    """A table as compressed Arrow IPC bytes (exact: ids as text, numbers as stored)."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema, options=IPC_OPTIONS) as writer:
        writer.write_table(table)
    return sink.getvalue()


def unpack(data: bytes) -> pd.DataFrame:
    table = pa.ipc.open_stream(pa.BufferReader(data)).read_all()
    frame = table.to_pandas()
    if "store_id" in frame:
        frame["store_id"] = frame["store_id"].astype(object)
    return frame


def assemble(parts: list[pd.DataFrame], columns: list[str]) -> pd.DataFrame:
    """Join shard results into the report: every store once, sorted by store id."""
    frames = [part for part in parts if len(part)]
    if not frames:
        return empty_table(columns)
    joined = pd.concat(frames, ignore_index=True)[columns]
    joined["store_id"] = joined["store_id"].astype(object)
    return joined.sort_values("store_id", kind="stable").reset_index(drop=True)


def empty_table(columns: list[str]) -> pd.DataFrame:
    """A report with no store (an empty database, or no poll before `as_of`): ids are text,
    as in any other report, so it packs and writes like one."""
    return pd.DataFrame(
        {name: pd.Series([], dtype=object if name == "store_id" else "float64") for name in columns}
    )


CSV_CHUNK_ROWS = 10_000


def csv_bytes(frame: pd.DataFrame) -> bytes:
    """The CSV: hours/minutes with 2 decimals, counts as integers, ids safe in spreadsheets."""
    return b"".join(csv_chunks(frame))


def csv_chunks(frame: pd.DataFrame, rows: int = CSV_CHUNK_ROWS) -> Iterator[bytes]:
    """The CSV in pieces, the header first, then `rows` rows at a time: what `csv_bytes`
    joins, and what is streamed when no file of it can be served."""
    yield frame.iloc[:0].to_csv(index=False).encode()
    for start in range(0, len(frame), rows):
        part = frame.iloc[start : start + rows]
        safe = part.assign(store_id=cells.neutralise_formulas(part["store_id"]))
        yield safe.to_csv(index=False, header=False, float_format="%.2f").encode()


def write_atomically(data: bytes, path: Path) -> None:
    """Write to a temporary name beside the final one, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(temporary, "wb") as handle:
            handle.write(data)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def json_rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """One object per store: ids as exact strings, numbers as numbers (rounded as in CSV)."""
    records = []
    columns = list(frame.columns)
    values = [frame[name].to_numpy() for name in columns]
    for row in zip(*values, strict=True):
        records.append(
            {name: _json_value(name, value) for name, value in zip(columns, row, strict=True)}
        )
    return records


def _json_value(name: str, value: Any) -> Any:
    if name == "store_id":
        return str(value)
    if isinstance(value, np.integer):
        return int(value)
    return float(value)


# --------------------------------------------------------------------------- stored results


def report_path(reports_dir: str | Path, report_id: str) -> Path:
    """Where a report's CSV lives; refuses any id that is not 32 hex digits."""
    if not is_valid_report_id(report_id):
        raise ReportNotFound(report_id)
    return Path(reports_dir) / f"report_{report_id}.csv"


def finished_table(row: Report) -> pd.DataFrame:
    """A Complete report's table, from the database."""
    stored = db.session.get(ReportResult, row.id)
    if stored is None:
        raise ReportNotFound(row.id)
    return unpack(stored.data)


def local_csv(row: Report) -> Path:
    """The report's CSV on this machine, re-created from the database if this machine lacks it."""
    path = report_path(current_app.config["REPORTS_DIR"], row.id)
    if not path.is_file():
        write_atomically(csv_bytes(finished_table(row)), path)
    return path


def write_local_copy(report_id: str, csv: bytes) -> None:
    """Write this machine's CSV copy; when it cannot be written, say so and go on (the report
    is served from the database's table)."""
    try:
        write_atomically(csv, report_path(current_app.config["REPORTS_DIR"], report_id))
    except OSError as exc:
        logger.warning(
            "report %s: this machine's CSV copy could not be written (%s); it is served from "
            "the database",
            report_id,
            exc,
        )


def drop_shard_results(report_id: str) -> None:
    """The shards' tables are not needed once the report's is stored: free their space, in a
    transaction of its own (rewriting those rows is the slowest write of a report)."""

    def drop() -> None:
        db.session.execute(
            update(ReportShard).where(ReportShard.report_id == report_id).values(result=None)
        )
        db.session.commit()

    try:
        with_database_retries(drop, report_id)
    except Exception as exc:  # never fails the report; the rows go when the report does
        logger.warning(
            "report %s: its shards' results stay until it is removed (%s)",
            report_id,
            short_reason(exc),
        )
