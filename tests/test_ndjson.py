"""Reading NDJSON polls (pure: files only, no app, no database)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from loading import ndjson, sources


def read_all(path) -> tuple[list[tuple[int, str, str, str]], list[tuple[int, str, str]]]:
    """Every poll read (line, store_id, status, timestamp_utc) and every line refused (line,
    value, reason)."""
    refused: list[pa.Table] = []
    polls = []
    for chunk in ndjson.stream_chunks(path, refused.append):
        columns = [chunk.columns[name].to_pylist() for name in ndjson.COLUMNS]
        polls += list(zip(chunk.lines.tolist(), *columns, strict=True))
    table = pa.concat_tables(refused) if refused else None
    rows = [] if table is None else table.select(["line", "value", "reason"]).to_pylist()
    return polls, [(row["line"], row["value"], row["reason"]) for row in rows]


def poll(store_id, status="active", stamp="2023-01-25T10:00:00Z", **more) -> bytes:
    return json.dumps({"store_id": store_id, "status": status, "timestamp_utc": stamp, **more})


@pytest.mark.parametrize(  # blocks cut lines anywhere
    ("block_bytes", "block_lines"),
    [(64, 1 << 16), (100, 1 << 16), (1 << 20, 1 << 16), (1 << 20, 3)],
)
def test_lines_are_numbered_as_sent_whatever_the_blocks(
    tmp_path, monkeypatch, block_bytes, block_lines
):
    monkeypatch.setattr(ndjson, "BLOCK_BYTES", block_bytes)
    monkeypatch.setattr(sources, "MAX_BLOCK_LINES", block_lines)
    lines = [
        poll("a").encode(),
        b"",
        b"   \r",
        poll(7).encode() + b"\r",  # an integer id: its digits
        b"[1]",
        json.dumps({"timestamp_utc": "t", "store_id": "b", "status": "s"}).encode(),
        b'{"store_id": "c\\u00e9", "status": "active", "timestamp_utc": "t"}',  # escapes
        poll("d", extra=[1]).encode(),  # another key: read by json
        poll(1.5).encode(),
        b'{"store_id": true, "status": "active", "timestamp_utc": "t"}',
        poll("e").encode(),
    ]
    path = tmp_path / "polls.ndjson"
    path.write_bytes(b"\n".join(lines))  # no line end after the last
    polls, refused = read_all(path)
    assert [(line, store) for line, store, _, _ in polls] == [
        (1, "a"),
        (4, "7"),
        (6, "b"),
        (7, "cé"),
        (8, "d"),
        (11, "e"),
    ]
    assert [(line, reason) for line, _, reason in refused] == [
        (5, ndjson.NOT_AN_OBJECT),
        (9, ndjson.NOT_AN_OBJECT),
        (10, ndjson.NOT_AN_OBJECT),
    ]


def test_bytes_that_are_not_utf8_are_told_from_a_real_replacement_character(tmp_path):
    path = tmp_path / "polls.ndjson"
    path.write_bytes(
        poll("caf\N{REPLACEMENT CHARACTER}").encode() + b"\n"  # a real U+FFFD: a valid id
        b'{"store_id": "caf\xe9", "status": "active", "timestamp_utc": "t"}\n'
        b"\xff\xfe\n"
    )
    polls, refused = read_all(path)
    assert [store for _, store, _, _ in polls] == ["caf\N{REPLACEMENT CHARACTER}"]
    assert [(line, reason) for line, _, reason in refused] == [
        (2, ndjson.NOT_UTF8),
        (3, ndjson.NOT_UTF8),
    ]


def test_a_lone_surrogate_is_refused_not_stored(tmp_path):
    path = tmp_path / "polls.ndjson"
    path.write_bytes(b'{"store_id": "a\\ud800", "status": "active", "timestamp_utc": "t"}\n')
    polls, refused = read_all(path)
    assert polls == [] and refused[0][0] == 1 and refused[0][2] == ndjson.LONE_SURROGATE


def test_a_line_longer_than_the_limit_is_refused_and_skipped(tmp_path, monkeypatch):
    monkeypatch.setattr(ndjson, "BLOCK_BYTES", 1000)
    monkeypatch.setattr(ndjson, "MAX_LINE_BYTES", 5000)
    path = tmp_path / "polls.ndjson"
    path.write_bytes(poll("a").encode() + b"\n" + b"x" * 20_000 + b"\n" + poll("b").encode())
    polls, refused = read_all(path)
    assert [(line, store) for line, store, _, _ in polls] == [(1, "a"), (3, "b")]
    assert [(line, value[:3], len(value)) for line, value, _ in refused] == [(2, "xxx", 200)]
    assert refused[0][2] == ndjson.TOO_LONG


def test_short_lines_are_refused_without_being_parsed(tmp_path, monkeypatch):
    # Lines shorter than the shortest possible poll never reach json (a body of millions of
    # them costs whole-column work only).
    parsed: list[str] = []
    real = ndjson._record_fields
    monkeypatch.setattr(ndjson, "_record_fields", lambda text: parsed.append(text) or real(text))
    path = tmp_path / "polls.ndjson"
    shortest = b'{"store_id":1,"status":"","timestamp_utc":""}'
    path.write_bytes(b"1\n{}\nnull\n" + shortest[:-2] + b"}\n" + shortest + b"\n")
    polls, refused = read_all(path)
    assert [line for line, _, _ in refused] == [1, 2, 3, 4]
    assert polls == [(5, "1", "", "")] and parsed == []  # the last one: the usual shape


def test_a_block_of_short_lines_is_cut_by_lines_not_only_by_bytes(tmp_path):
    # 300,000 two-byte lines fit one read block; refused whole they would cost ~45 MB at once.
    refused: list[pa.Table] = []
    path = tmp_path / "polls.ndjson"
    path.write_bytes(b"1\n" * 300_000)
    assert list(ndjson.stream_chunks(path, refused.append)) == []
    assert max(table.num_rows for table in refused) <= sources.MAX_BLOCK_LINES
    lines = pa.concat_tables(refused)["line"].to_numpy()
    assert (lines == np.arange(1, 300_001)).all()
