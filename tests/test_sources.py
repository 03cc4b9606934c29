"""Reading inputs (pure: files only, no app, no database)."""

from __future__ import annotations

import gzip

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import loader
from loading import sources
from models import db
from tests.loading import POLL_HEADER, write


def read_all(path, kind="polls"):
    """Every chunk's rows with their line numbers, and every row handed over as malformed."""
    malformed: list[pa.Table] = []
    chunks = list(sources.stream_chunks(sources.Source.from_path(kind, path), malformed.append))
    return chunks, pa.concat_tables(malformed).sort_by("line") if malformed else None


@pytest.mark.parametrize("quoted", [False, True])  # blocks split on columns; Arrow's callback
@pytest.mark.parametrize(
    ("block_bytes", "block_lines"),
    [(64, 1 << 16), (256, 1 << 16), (4096, 1 << 16), (2 << 20, 1 << 16), (2 << 20, 7)],
)
def test_good_rows_are_numbered_by_their_line_whatever_is_skipped_around_them(
    tmp_path, monkeypatch, block_bytes, block_lines, quoted
):
    # Each good row carries its own line number as its store id; malformed rows come alone,
    # in runs, at the start and at the end, and read blocks cut the file anywhere.
    malformed_lines = {2, 3, 7, 20, 21, 22, 23, 50, *range(90, 140), 299, 300, 301}
    store = '"{line}"' if quoted else "{line}"
    body = "".join(
        "x,y\n"
        if line in malformed_lines
        else store.format(line=line) + ",active,2023-01-25 10:00:00 UTC\n"
        for line in range(2, 302)
    )
    monkeypatch.setattr(sources, "BATCH_BYTES", block_bytes)
    monkeypatch.setattr(sources, "MAX_BLOCK_LINES", block_lines)
    chunks, malformed = read_all(write(tmp_path / "polls.csv", POLL_HEADER + body))
    for chunk in chunks:
        assert chunk.lines.tolist() == [int(text) for text in chunk.columns["store_id"].to_pylist()]
    assert sum(len(chunk) for chunk in chunks) == 300 - len(malformed_lines)
    assert malformed["line"].to_pylist() == sorted(malformed_lines)
    assert set(malformed["reason"].to_pylist()) == {"expected 3 fields, found 2"}


def test_lines_of_blanks_are_skipped_not_rejected(tmp_path):
    chunks, malformed = read_all(
        write(tmp_path / "polls.csv", POLL_HEADER + "   \n1,active,2023-01-25 10:00:00 UTC\n")
    )
    assert [chunk.lines.tolist() for chunk in chunks] == [[3]]
    assert malformed is None


def test_gzip_is_recognised_by_content_not_by_name(tmp_path):
    path = tmp_path / "upload.tmp"
    path.write_bytes(gzip.compress((POLL_HEADER + "1,active,2023-01-25 10:00:00 UTC\n").encode()))
    chunks, _ = read_all(path)
    assert chunks[0].columns["store_id"].to_pylist() == ["1"]


# Bad rows counted on whole columns (commas; the csv module for quotes), or by Arrow's parser
# (a quoted line end: rows span lines), which calls back once a row.
@pytest.mark.parametrize("first_row", ["", '"1",active,x\n', '"a\nb",active,x\n'])
def test_a_failure_inside_the_parsers_callback_surfaces_as_itself(tmp_path, first_row):
    class DiskFull(Exception):
        pass

    def refuse(_rejected):
        raise DiskFull("no space left")

    bad_rows = "x\n" * (sources.MALFORMED_BATCH_ROWS + 1)
    path = write(tmp_path / "polls.csv", POLL_HEADER + first_row + bad_rows)
    with pytest.raises(DiskFull):
        list(sources.stream_chunks(sources.Source.from_path("polls", path), refuse))


def test_folder_search_finds_closures(tmp_path):
    write(tmp_path / "closures.csv", "store_id,start_local,end_local\n")
    write(tmp_path / "store_status.csv.gz", b"")
    assert sources.find_sources(tmp_path) == {
        "polls": tmp_path / "store_status.csv.gz",
        "closures": tmp_path / "closures.csv",
    }


def test_a_line_longer_than_a_read_block_is_a_clear_error(app, tmp_path):
    path = tmp_path / "store_status.csv"
    path.write_text(
        "store_id,status,timestamp_utc\n" + "1" * (20 << 20) + ",active,2023-01-22 12:00:00 UTC\n"
    )
    with pytest.raises(loader.LoadError) as caught, app.app_context():
        loader.load(db.engine, tmp_path)
    assert str(path) in str(caught.value)


def test_a_block_of_short_bad_rows_is_cut_by_lines_not_only_by_bytes(tmp_path):
    # 300,000 one-byte rows fit one read block; rejected whole they would cost ~100 MB at once.
    rejected: list[pa.Table] = []
    path = write(tmp_path / "polls.csv", POLL_HEADER + "1\n" * 300_000)
    assert (
        list(sources.stream_chunks(sources.Source.from_path("polls", path), rejected.append)) == []
    )
    assert max(table.num_rows for table in rejected) <= sources.MAX_BLOCK_LINES
    lines = pa.concat_tables(rejected)["line"].to_numpy()
    assert (lines == np.arange(2, 300_002)).all()


@pytest.mark.parametrize("block_lines", [1, 2, 3, 1 << 16])
def test_a_row_spanning_more_lines_than_a_block_holds_stays_whole(
    tmp_path, monkeypatch, block_lines
):
    monkeypatch.setattr(sources, "MAX_BLOCK_LINES", block_lines)
    body = POLL_HEADER + '1,active,t\n"2\nb\nc\nd",active,t\n"3\nc",active,t\n4,active,t\n'
    chunks, malformed = read_all(write(tmp_path / "polls.csv", body))
    stores = [store for chunk in chunks for store in chunk.columns["store_id"].to_pylist()]
    assert stores == ["1", "2\nb\nc\nd", "3\nc", "4"] and malformed is None


def test_rows_spanning_lines_are_read_by_arrow_and_numbered_closely(tmp_path):
    # A quoted line end: Arrow parses the block and numbers rows, not lines, after it.
    body = (
        POLL_HEADER
        + "2,active,2023-01-25 10:00:00 UTC\nx,y\n"
        + '"4\nfour",active,2023-01-25 10:00:00 UTC\n'
        + "x\n7,active,x\n"
    )
    chunks, malformed = read_all(write(tmp_path / "polls.csv", body))
    assert [chunk.columns["store_id"].to_pylist() for chunk in chunks] == [["2", "4\nfour", "7"]]
    assert chunks[0].lines.tolist()[:2] == [2, 4]  # exact up to the row spanning two lines
    assert malformed["value"].to_pylist() == ["x,y", "x"]
    assert malformed["line"].to_pylist()[0] == 3


@settings(max_examples=300, deadline=None)
@given(
    lines=st.lists(st.sampled_from(["x", '"a', 'b"', '""', "", 'c"d"e']), max_size=40),
    block_lines=st.integers(1, 5),
    quotes_join_lines=st.booleans(),
)
def test_line_limited_cuts_end_pieces_at_row_ends_within_the_limit(
    lines, block_lines, quotes_join_lines
):
    data = "\n".join(lines).encode()
    original, sources.MAX_BLOCK_LINES = sources.MAX_BLOCK_LINES, block_lines
    try:
        cuts = sources.line_limited_cuts(data, quotes_join_lines)
    finally:
        sources.MAX_BLOCK_LINES = original
    # Row ends, found the slow way: a line end after an even number of quotes.
    row_ends = {
        end + 1
        for end, byte in enumerate(data)
        if byte == ord("\n") and (not quotes_join_lines or data[:end].count(b'"') % 2 == 0)
    }
    assert cuts == sorted(set(cuts)) and (cuts[-1:] == [len(data)] if data else cuts == [])
    starts = [0, *cuts][: len(cuts)]
    for start, cut in zip(starts, cuts, strict=True):
        assert cut == len(data) or cut in row_ends
        inside = sorted(end for end in row_ends if start < end < cut)
        if data.count(b"\n", start, cut) > block_lines:
            assert not inside  # one row spanning more lines than the limit
        elif cut < len(data):  # as long as the limit allows: up to the next row end is beyond
            following = min((end for end in row_ends if end > cut), default=len(data))
            assert data.count(b"\n", start, following) > block_lines
