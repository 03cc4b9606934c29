"""Where rows rejected by a lossy load (`skip_invalid`) go: a CSV file or a bounded list.

The command line writes them to ``<input>.rejects.csv`` next to the input; an HTTP upload has
no folder to write to and returns the first rows in its answer instead. Either way rows are
handed over chunk by chunk and never all held in memory.
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv

from engine.cells import neutralise_formulas
from loading.validation import REJECTED_COLUMNS, LoadError, RowError, row_errors

MAX_KEPT_REJECTS = 10_000


class RejectsFile:
    """Rejected rows streamed to a CSV file that appears only when the load commits.

    The rows go to ``<name>.part``, created exclusively and never through a link planted at
    that name, then renamed over `path` (a rename replaces a link, never its target). Text
    cells are neutralised for spreadsheets, since they come from someone else's file.
    """

    def __init__(self, path: Path, input_columns: list[str]) -> None:
        self.path = path
        self.partial = path.with_name(path.name + ".part")
        self.schema = pa.schema(
            [("line", pa.int64())]
            + [(name, pa.string()) for name in [*REJECTED_COLUMNS[1:], *input_columns]]
        )
        self.file = None
        self.writer: pacsv.CSVWriter | None = None
        self.rows_written = 0

    def open(self) -> None:
        """Create the partial file; refuse if its name is taken (by a file or a link)."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        try:
            descriptor = os.open(self.partial, flags, 0o644)
        except FileExistsError as exc:
            raise LoadError(
                self.partial,
                "cannot write the rejected rows: this name is taken (another load writing, "
                "or left over from one that stopped): remove it and load again",
            ) from exc
        except OSError as exc:
            raise LoadError(self.partial, f"cannot write the rejected rows: {exc}") from exc
        self.file = os.fdopen(descriptor, "wb")
        self.writer = pacsv.CSVWriter(self.file, self.schema)

    def add(self, rejected: pa.Table) -> None:
        columns = [
            _column_or_nulls(rejected, field.name, field.type, rejected.num_rows)
            for field in self.schema
        ]
        safe = [
            column if column.type != pa.string() else neutralise_formulas(column)
            for column in columns
        ]
        try:
            self.writer.write_table(pa.table(safe, schema=self.schema))
        except OSError as exc:
            raise LoadError(self.partial, f"cannot write the rejected rows: {exc}") from exc
        self.rows_written += rejected.num_rows

    def commit(self) -> str | None:
        """Move the rows into place; return the file's path (None when nothing was rejected)."""
        self._close()
        if self.rows_written == 0:
            self.partial.unlink(missing_ok=True)
            return None
        os.replace(self.partial, self.path)
        return str(self.path)

    def discard(self) -> None:
        if self.file is not None:
            self._close()
            self.partial.unlink(missing_ok=True)

    def _close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.file.close()
            self.writer = None


def _column_or_nulls(table: pa.Table, name: str, kind: pa.DataType, rows: int) -> pa.ChunkedArray:
    if name in table.column_names:
        return table.column(name).cast(kind)
    return pa.chunked_array([pa.nulls(rows, type=kind)])


class RejectsInMemory:
    """The first MAX_KEPT_REJECTS rejected rows (line, column, value, reason); the rest only
    counted."""

    def __init__(self) -> None:
        self.limit = MAX_KEPT_REJECTS
        self.rows: list[RowError] = []

    def open(self) -> None:
        pass

    def add(self, rejected: pa.Table) -> None:
        room = self.limit - len(self.rows)
        if room > 0:
            self.rows += row_errors(rejected, room)

    def commit(self) -> None:
        return None

    def discard(self) -> None:
        self.rows = []


def default_rejects_path(path: Path) -> Path:
    """Next to the input when that folder is writable, else in the current directory."""
    name = path.name.removesuffix(".gz").removesuffix(".csv") + ".rejects.csv"
    folder = path.parent if os.access(path.parent, os.W_OK) else Path.cwd()
    return folder / name
