"""Array tools for rows grouped by an integer code and sorted within each group.

The engine, the snapshot reader and the loader all hold data as parallel numpy columns sorted
by (store code, instant); these are the few operations they share (numpy; pandas once).
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def sort_order(codes: np.ndarray, values: np.ndarray) -> np.ndarray | None:
    """Return the stable sort order by (code, value), or None when already sorted.

    Sorts one packed int64 key when (code, value) fits in it: several times faster than
    ``np.lexsort`` on two keys.
    """
    if codes.size == 0:
        return None
    low = int(values.min())
    span = int(values.max()) - low + 1
    if (int(codes.max()) + 1) * span < 2**62 and int(codes.min()) >= 0:
        packed = codes.astype(np.int64) * span + (values - low)
        if np.all(packed[1:] >= packed[:-1]):
            return None
        return np.argsort(packed, kind="stable")
    return np.lexsort((values, codes))


def grouped_searchsorted(
    sorted_codes: np.ndarray,
    sorted_values: np.ndarray,
    query_codes: np.ndarray,
    query_values: np.ndarray,
    side: str = "right",
) -> np.ndarray:
    """Search many per-group sorted arrays at once.

    ``(sorted_codes, sorted_values)`` is sorted by code, then value. Returns, for each query,
    the global insertion index among the rows of its own group (as ``np.searchsorted``).
    Packs (code, value) into one int64 when it fits, else ranks the values first.
    """
    all_values = np.concatenate([sorted_values, query_values])
    low = int(all_values.min()) if all_values.size else 0
    span = int(all_values.max()) - low + 1 if all_values.size else 1
    groups = int(max(sorted_codes.max(initial=0), query_codes.max(initial=0))) + 1
    if groups * span < 2**62:
        base = sorted_values - low
        query = query_values - low
    else:
        ranks = np.unique(all_values, return_inverse=True)[1]
        base, query = ranks[: sorted_values.size], ranks[sorted_values.size :]
        span = int(ranks.max(initial=0)) + 1
    packed = sorted_codes.astype(np.int64) * span + base
    packed_query = query_codes.astype(np.int64) * span + query
    if packed_query.size > 4 * packed.size and np.all(packed_query[1:] >= packed_query[:-1]):
        return _searchsorted_sorted_queries(packed, packed_query, side)
    return np.searchsorted(packed, packed_query, side=side)


def _searchsorted_sorted_queries(base: np.ndarray, queries: np.ndarray, side: str) -> np.ndarray:
    """``np.searchsorted(base, queries, side)`` for sorted queries much longer than base.

    Searches each base value among the queries instead (m log n, not n log m, and cache
    friendly), then counts: the answer for query j is how many base values sort before it.
    """
    first_query = np.searchsorted(queries, base, side="left" if side == "right" else "right")
    return np.cumsum(np.bincount(first_query, minlength=queries.size + 1)[: queries.size])


def group_starts(sorted_codes: np.ndarray, group_count: int) -> np.ndarray:
    """Return the first row of each group 0..group_count in codes sorted ascending."""
    return np.searchsorted(sorted_codes, np.arange(group_count + 1), side="left")


def first_of_group(sorted_codes: np.ndarray) -> np.ndarray:
    """Mark the first row of each run of equal codes."""
    if sorted_codes.size == 0:
        return np.zeros(0, dtype=bool)
    return np.r_[True, sorted_codes[1:] != sorted_codes[:-1]]


def exclusive_group_cumsum(sorted_codes: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Sum of the earlier values of the same group (codes sorted)."""
    total = np.cumsum(values) - values
    if sorted_codes.size == 0:
        return total
    first = first_of_group(sorted_codes)
    group_sizes = np.diff(np.r_[np.flatnonzero(first), sorted_codes.size])
    return total - np.repeat(total[first], group_sizes)


def merge_intervals(
    codes: np.ndarray, starts: np.ndarray, ends: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merge overlapping or touching [start, end) intervals of the same code; sorted output."""
    if codes.size == 0:
        return codes, starts, ends
    order = sort_order(codes, starts)
    if order is not None:
        codes, starts, ends = codes[order], starts[order], ends[order]
    running_end = _group_cummax(codes, ends)
    new_group = first_of_group(codes)
    opens_new = new_group | np.r_[True, starts[1:] > running_end[:-1]]
    last_of_run = np.r_[opens_new[1:], True]
    return codes[opens_new], starts[opens_new], running_end[last_of_run]


def _group_cummax(sorted_codes: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Running maximum of `values` restarting at each new code (codes sorted)."""
    low = int(values.min())
    span = int(values.max()) - low + 1
    if (int(sorted_codes.max()) + 1) * span < 2**62:
        # Offsetting each group above all earlier ones turns it into one global cummax.
        packed = sorted_codes.astype(np.int64) * span + (values - low)
        return np.maximum.accumulate(packed) - sorted_codes.astype(np.int64) * span + low
    return pd.Series(values).groupby(sorted_codes).cummax().to_numpy()
