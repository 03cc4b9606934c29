"""Sort more rows than fit in memory: sorted runs spilled to disk, merged in bounded blocks.

A load writes its polls in primary-key order (store key, then instant) whatever its size: a
B-tree filled in key order is packed, one filled run after run splits the pages of the first
run where the next one lands in its middle. The rows of each run are kept in temporary numpy
files; the merge reads them back through memory maps, a block at a time.

The merge is stable: of rows with the same key, those of an earlier run come first, and within
a run the earlier row first (each run is sorted stably). A writer that skips duplicate keys
therefore keeps the earliest row.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from engine import arrays

Columns = tuple[np.ndarray, np.ndarray, np.ndarray]  # key, instant, payload (same length)


class SortedRuns:
    """Runs of (key, instant, payload) rows, each sorted by (key, instant), kept on disk.

    `add_run` sorts a run (stably) and appends it to three temporary column files;
    `merged(block_rows)` yields the union of all runs in order as blocks, holding about
    `block_rows` rows of the runs in memory (at least MIN_RUN_BLOCK_ROWS of each run, so that
    many small runs still merge in few steps). Use it as a context manager: the files go when
    it closes.
    """

    def __init__(self) -> None:
        self.folder: Path | None = None
        self.dtypes: tuple[np.dtype, ...] = ()
        self.runs: list[tuple[int, int]] = []  # [start, stop) rows in the column files
        self.rows = 0

    def __enter__(self) -> SortedRuns:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder, self.runs, self.rows = None, [], 0

    def add_run(self, keys: np.ndarray, instants: np.ndarray, payload: np.ndarray) -> None:
        """Sort one run stably by (key, instant) and append it to the column files."""
        if keys.size == 0:
            return
        columns = sorted_columns(keys, instants, payload)
        if self.folder is None:
            self.folder = Path(tempfile.mkdtemp(prefix="sorted-runs-"))
            self.dtypes = tuple(column.dtype for column in columns)
        for name, column, dtype in zip(_NAMES, columns, self.dtypes, strict=True):
            with open(self.folder / name, "ab") as handle:
                np.ascontiguousarray(column, dtype=dtype).tofile(handle)
        self.runs.append((self.rows, self.rows + keys.size))
        self.rows += keys.size

    def merged(self, block_rows: int) -> Iterator[Columns]:
        """Yield every row of every run in (key, instant) order, block by block."""
        if not self.runs:
            return
        files = self._mapped()
        runs = [tuple(column[start:stop] for column in files) for start, stop in self.runs]
        taken = [0] * len(runs)
        per_run = max(block_rows // len(runs), MIN_RUN_BLOCK_ROWS)
        while True:
            live = [i for i, run in enumerate(runs) if taken[i] < run[0].size]
            if not live:
                return
            ends = {i: min(taken[i] + per_run, runs[i][0].size) for i in live}
            cut = _cut(runs, ends)
            parts, held_back = [], False
            for i in live:
                block = tuple(column[taken[i] : ends[i]] for column in runs[i])
                count = block[0].size if cut is None else _rows_up_to(block, cut, held_back)
                parts.append(tuple(np.array(column[:count]) for column in block))
                taken[i] += count
                held_back = held_back or _equal_rows_follow(runs[i], taken[i], cut)
            yield sorted_columns(*(np.concatenate(column) for column in zip(*parts, strict=True)))

    def _mapped(self) -> tuple[np.ndarray, ...]:
        assert self.folder is not None
        return tuple(
            np.memmap(self.folder / name, dtype=dtype, mode="r", shape=(self.rows,))
            for name, dtype in zip(_NAMES, self.dtypes, strict=True)
        )


MIN_RUN_BLOCK_ROWS = 4096
_NAMES = ("keys", "instants", "payload")


def sorted_columns(keys: np.ndarray, instants: np.ndarray, payload: np.ndarray) -> Columns:
    """The rows in stable (key, instant) order (the same arrays when already in order)."""
    order = arrays.sort_order(keys, instants)
    if order is None:
        return keys, instants, payload
    return keys[order], instants[order], payload[order]


def _cut(runs: list[Columns], ends: dict[int, int]) -> tuple[int, int] | None:
    """The smallest last (key, instant) of the blocks of runs that go on after their block;
    None when every block reaches the end of its run (everything left fits in this step)."""
    lasts = [
        (int(runs[i][0][end - 1]), int(runs[i][1][end - 1]))
        for i, end in ends.items()
        if end < runs[i][0].size
    ]
    return min(lasts) if lasts else None


def _rows_up_to(block: Columns, cut: tuple[int, int], below_only: bool) -> int:
    """How many leading rows of a sorted block are at or below `cut` in (key, instant) order
    (strictly below with `below_only`)."""
    keys, instants = block[0], block[1]
    key, instant = cut
    start = int(np.searchsorted(keys, key, side="left"))
    end = int(np.searchsorted(keys, key, side="right"))
    side = "left" if below_only else "right"
    return start + int(np.searchsorted(instants[start:end], instant, side=side))


def _equal_rows_follow(run: Columns, taken: int, cut: tuple[int, int] | None) -> bool:
    """Whether the run's next row equals `cut`: rows equal to it in later runs must then wait
    for the next step, behind it (the merge is stable)."""
    if cut is None or taken >= run[0].size:
        return False
    return (int(run[0][taken]), int(run[1][taken])) == cut
