"""Make text cells safe to open in a spreadsheet (OWASP "CSV Injection").

A cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return is read as a
formula by Excel, LibreOffice and Google Sheets; a CSV we write may hold text from someone
else's file (rejected rows, store ids in a report), so such cells get a leading single quote,
which spreadsheets show as text. Whole columns at a time, never one Python call per cell.
"""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

FORMULA_START = r"^[=+\-@\t\r]"
# A plain number (a negative store id, say) is no formula: leave it exact.
PLAIN_NUMBER = r"^[+\-]?[0-9]+(?:\.[0-9]+)?$"
QUOTE = "'"

TextColumn = pa.Array | pa.ChunkedArray | pd.Series


def neutralise_formulas(column: TextColumn) -> TextColumn:
    """Prefix a single quote to the cells that a spreadsheet would run as a formula.

    Takes and returns an Arrow string array (or chunked array) or a pandas Series of text;
    nulls and other cells are left as they are.
    """
    if isinstance(column, pd.Series):
        risky = column.str.contains(FORMULA_START, regex=True, na=False) & ~column.str.contains(
            PLAIN_NUMBER, regex=True, na=False
        )
        return column.mask(risky, QUOTE + column)
    risky = pc.and_(
        pc.match_substring_regex(column, FORMULA_START),
        pc.invert(pc.match_substring_regex(column, PLAIN_NUMBER)),
    )
    return pc.if_else(risky, pc.utf8_replace_slice(column, 0, 0, QUOTE), column)
