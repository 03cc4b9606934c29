"""Make text cells safe to open in a spreadsheet (OWASP "CSV Injection").

A cell that starts with `=`, `+`, `-`, `@`, a tab or a carriage return is run as a formula by
spreadsheet programs; prefixing it with a single quote makes it plain text. Every CSV the
service writes passes its text columns through `neutralise`; the JSON format keeps ids exact.
"""

from __future__ import annotations

import pandas as pd

FORMULA_PATTERN = r"[=+\-@\t\r]"


def neutralise(values: pd.Series) -> pd.Series:
    """Prefix a single quote to every cell that a spreadsheet would run as a formula."""
    text = values.astype("string")
    risky = text.str.match(FORMULA_PATTERN, na=False).to_numpy(dtype=bool)
    if not risky.any():
        return values
    safe = values.astype(object).copy()
    safe[risky] = ("'" + text[risky]).astype(object)
    return safe
