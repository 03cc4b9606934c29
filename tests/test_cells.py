"""Neutralising spreadsheet formulas in CSV cells (pure: no app, no database)."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pytest

from engine.cells import neutralise_formulas

CELLS = ["=1+2", "-1+1", "+cmd", "@SUM(A1)", "\tx", "\rx", "plain", "a=b", "", " =1", "'=1"]
CELLS += ["-1", "+1", "-1.5"]
# OWASP: a cell starting with = + - @ tab or carriage return gets a leading single quote; a
# plain number (a negative store id) is no formula and stays exact.
EXPECTED = ["'=1+2", "'-1+1", "'+cmd", "'@SUM(A1)", "'\tx", "'\rx", "plain", "a=b", "", " =1"]
EXPECTED += ["'=1", "-1", "+1", "-1.5"]


def test_arrow_cells_that_start_a_formula_get_a_quote():
    assert neutralise_formulas(pa.array([*CELLS, None])).to_pylist() == [*EXPECTED, None]


def test_chunked_arrow_columns_keep_their_chunks():
    column = pa.chunked_array([CELLS[:4], CELLS[4:]])
    result = neutralise_formulas(column)
    assert isinstance(result, pa.ChunkedArray) and result.to_pylist() == EXPECTED


@pytest.mark.parametrize("dtype", [object, "string"])
def test_pandas_cells_that_start_a_formula_get_a_quote(dtype):
    column = pd.Series(CELLS, dtype=dtype, index=range(10, 10 + len(CELLS)))
    result = neutralise_formulas(column)
    assert result.tolist() == EXPECTED
    assert result.index.equals(column.index)
