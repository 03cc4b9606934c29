"""Reading from the database gives the same report as the engine on the raw CSV files."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

import jobs
import loader
import report
import snapshot
from models import db
from tests.conftest import SAMPLE, SHARED


def raw_report(folder: Path, as_of_us: int | None) -> pd.DataFrame:
    sources = loader.find_sources(folder)
    polls = pd.read_csv(sources["polls"], dtype=str)
    hours = pd.read_csv(sources["hours"], dtype=str)
    zones = pd.read_csv(sources["timezones"], dtype=str)
    hours[report.day_column(hours.columns)] = hours[report.day_column(hours.columns)].astype(int)
    result = report.compute_report(polls, hours, zones, as_of_us)
    return result.sort_values("store_id").reset_index(drop=True)


def database_report(app, as_of_us: int | None) -> pd.DataFrame:
    with app.app_context():
        return jobs.compute(snapshot.read_inputs(db.engine, as_of_us))


AS_OF = [None, "2023-01-22T03:30:00Z", "2023-01-30T00:00:00Z", "2023-01-19T12:00:00Z"]


@pytest.mark.parametrize("as_of", AS_OF)
def test_report_from_database_equals_engine_on_files(app, as_of):
    # Early as_of values leave most polls after `now` and make the reader look back for
    # evidence before the window; late ones leave the window partly empty.
    as_of_us = report.parse_iso_instant(as_of) if as_of else None
    with app.app_context():
        loader.load(db.engine, SAMPLE)
    pd.testing.assert_frame_equal(database_report(app, as_of_us), raw_report(SAMPLE, as_of_us))


@pytest.mark.parametrize("as_of", AS_OF[:2])
def test_sparse_original_sample_from_database_equals_engine(app, as_of):
    # The public sample has 1–9 polls per store: evidence is often days before the window.
    folder = SHARED / "loop"
    if not folder.exists():
        pytest.skip(f"original sample not found at {folder}")
    as_of_us = report.parse_iso_instant(as_of) if as_of else None
    with app.app_context():
        loader.load(db.engine, folder)
    pd.testing.assert_frame_equal(database_report(app, as_of_us), raw_report(folder, as_of_us))


def test_empty_database_gives_an_empty_report(app):
    result = database_report(app, None)
    assert list(result.columns) == report.REPORT_COLUMNS and result.empty
