"""The merge of sorted runs: the same rows, in the same order, as one stable sort of them all."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from loading.sorted_runs import SortedRuns
from tests.examples import examples

# Few distinct keys and instants, so that runs share keys and rows share (key, instant).
ROW = st.tuples(st.integers(0, 4), st.integers(-3, 3))
RUNS = st.lists(st.lists(ROW, min_size=0, max_size=40), min_size=0, max_size=6)


def merged_rows(runs: list[list[tuple[int, int]]], block_rows: int) -> list:
    """Merge runs whose payload is each row's position in the input: (key, instant, position)."""
    position = 0
    with SortedRuns() as sorted_runs:
        for run in runs:
            keys = np.array([key for key, _ in run], dtype=np.int64)
            instants = np.array([instant for _, instant in run], dtype=np.int64)
            payload = np.arange(position, position + len(run), dtype=np.int64)
            position += len(run)
            sorted_runs.add_run(keys, instants, payload)
        blocks = list(sorted_runs.merged(block_rows))
    return blocks


def plain_sort(runs: list[list[tuple[int, int]]]) -> list[tuple[int, int, int]]:
    """Every row with its input position, sorted stably by (key, instant)."""
    rows = [
        (key, instant, n) for n, (key, instant) in enumerate(row for run in runs for row in run)
    ]
    return sorted(rows, key=lambda row: (row[0], row[1]))  # Python's sort is stable


@settings(max_examples=examples(300), deadline=None)
@given(runs=RUNS, block_rows=st.integers(1, 50), min_block=st.integers(1, 8))
def test_the_merge_is_a_stable_sort_of_all_runs(runs, block_rows, min_block):
    import loading.sorted_runs as sorted_runs_module

    # Blocks as small as one row per run: many steps, cuts that fall inside runs of equal keys.
    original = sorted_runs_module.MIN_RUN_BLOCK_ROWS
    sorted_runs_module.MIN_RUN_BLOCK_ROWS = min_block
    try:
        blocks = merged_rows(runs, block_rows)
    finally:
        sorted_runs_module.MIN_RUN_BLOCK_ROWS = original
    rows = [
        (int(key), int(instant), int(position))
        for keys, instants, positions in blocks
        for key, instant, position in zip(keys, instants, positions, strict=True)
    ]
    assert rows == plain_sort(runs)


def test_blocks_hold_about_the_block_size_and_the_files_go_on_close(monkeypatch):
    import loading.sorted_runs as sorted_runs_module

    monkeypatch.setattr(sorted_runs_module, "MIN_RUN_BLOCK_ROWS", 1)
    # Three runs of 100 rows, keys 0..299 dealt round-robin: a block of 30 rows takes 10 of
    # each run per step, cut at the smallest last key of the three blocks.
    runs = SortedRuns()
    for first in range(3):
        keys = np.arange(first, 300, 3, dtype=np.int64)
        runs.add_run(keys, np.zeros(100, dtype=np.int64), keys)
    folder = runs.folder
    sizes = [keys.size for keys, _, _ in runs.merged(30)]
    merged = np.concatenate([keys for keys, _, _ in runs.merged(30)])
    runs.close()
    assert max(sizes) <= 30 and sum(sizes) == 300
    assert merged.tolist() == list(range(300))
    assert folder is not None and not folder.exists()


def test_a_payload_keeps_its_type():
    with SortedRuns() as runs:
        runs.add_run(np.array([2, 1]), np.array([5, 5]), np.array([True, False]))
        runs.add_run(np.array([1]), np.array([4]), np.array([True]))
        (keys, instants, active), *rest = list(runs.merged(10))
    assert rest == []
    assert (keys.tolist(), instants.tolist(), active.tolist()) == (
        [1, 1, 2],
        [4, 5, 5],
        [True, False, True],
    )
    assert active.dtype == bool
