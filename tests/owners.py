"""Helpers of the tests of store groups and keys: two owners' groups on the sample data."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

import loader
from models import KeyRole, db
from tests.conftest import SAMPLE
from web import keys

NORTH, SOUTH = "north", "south"
GROUPS_HEADER = "group_id,store_id\n"
NO_DATA_STORE = "store-without-data"


def sample_store_ids() -> list[str]:
    """The sample's store ids, in the order of their first poll."""
    polls = pd.read_csv(SAMPLE / "store_status.csv", dtype=str, usecols=["store_id"])
    return polls["store_id"].drop_duplicates().tolist()


def owners_groups() -> dict[str, list[str]]:
    """North: the first 30 stores; south: stores 20 to 59 (10 shared) and one without data."""
    ids = sample_store_ids()
    return {NORTH: ids[:30], SOUTH: [*ids[20:60], NO_DATA_STORE]}


def groups_csv(groups: dict[str, list[str]]) -> str:
    lines = [f"{group},{store}\n" for group, stores in groups.items() for store in stores]
    return GROUPS_HEADER + "".join(lines)


def load_sample_with_groups(app, folder: Path) -> dict[str, list[str]]:
    """Load the sample data, then the owners' groups (a second batch); return the groups."""
    groups = owners_groups()
    path = folder / "store_groups.csv"
    path.write_text(groups_csv(groups))
    with app.app_context():
        loader.load(db.engine, SAMPLE)
        loader.load(db.engine, groups=path)
    return groups


def create_keys(app) -> dict[str, str]:
    """A key of each role (readers of north and of south): name → token."""
    wanted = {
        "admin": (KeyRole.ADMIN, ()),
        "poller": (KeyRole.POLLER, ()),
        "reader-north": (KeyRole.READER, (NORTH,)),
        "reader-south": (KeyRole.READER, (SOUTH,)),
    }
    with app.app_context():
        return {
            name: keys.create_key(name, role, groups) for name, (role, groups) in wanted.items()
        }


def bearer(token: str | None) -> dict[str, str]:
    return {} if token is None else {"Authorization": f"Bearer {token}"}


def rows_by_store(csv_text: str) -> dict[str, str]:
    """A report CSV's data lines by store id (the first field)."""
    return {line.split(",", 1)[0]: line for line in csv_text.splitlines()[1:]}
