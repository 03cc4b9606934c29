"""How each store's timeline ended at the last evaluation's `now`, kept in memory.

A store's status timeline is, from its latest evidence poll on, that poll's status (its
evidence: its polls inside business hours, or all its polls while none is inside them). A new
poll after the previous `now` only changes the timeline from the midpoint with that latest
evidence poll on; an open incident of the store only needs, besides, its first poll and the
evidence poll before it (the incident starts halfway between the two). So with those polls
kept, an evaluation computes the incidents of a store that got one new poll from four polls in
memory instead of reading its history: the engine sees the same timeline from the poll before
the open incident on, since every evidence poll between that incident's first and the latest
one is inactive (`incidents.remembered_polls`, `timeline_polls`). Not when the new poll is a
store's first inside business hours: that changes which polls are its evidence.

The engine reports these ends (`report.TimelineEnds`). They are kept per database for the
alert state they are as of (evaluated batch, `now`, and when that batch started): an
evaluation that starts from another state (another process evaluated meanwhile) finds none,
reads as before, and keeps what it read. A store is kept only when everything about it is
known: its entry is replaced from every read of it, and dropped when new polls come that are
not read and not known one by one (`Ends.advanced`)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

import report

CACHED_DATABASES = 4
# Ends of more stores than this are not kept (34 bytes a store, a few copies while an
# evaluation merges them): such a database is read as before, as `store_rows` does.
MAX_KEPT_STORES = 200_000
NONE = -1  # no open incident; or no evidence poll before the open incident's first


@dataclass(frozen=True)
class Ends:
    """Per store (keys sorted): whether its evidence is its polls inside business hours (else
    all its polls, none being inside), its latest evidence poll (instant, status); with an
    open incident, that incident's first poll and the latest evidence poll before it (NONE:
    the incident starts at its first poll), else NONE twice. Evidence polls of an open
    incident's store before its first are active, after it inactive."""

    store: np.ndarray
    inside: np.ndarray
    last_us: np.ndarray
    last_active: np.ndarray
    open_first_us: np.ndarray
    before_open_us: np.ndarray

    @classmethod
    def empty(cls) -> Ends:
        none = np.zeros(0, dtype=np.int64)
        return cls(none, none.astype(bool), none, none.astype(bool), none, none)

    def of(self, store_keys: np.ndarray) -> Ends:
        """The entries of those of `store_keys` that are kept."""
        return self.rows(np.isin(self.store, store_keys))

    def advanced(
        self, dropped: np.ndarray, fresh: Ends, polled: report.Polls, inside: np.ndarray
    ) -> Ends:
        """These ends after an evaluation: `fresh` entries replace the stores' (those it read,
        which are no longer kept when not in `fresh`: `dropped` lists every store read or
        otherwise changed). A store with one new poll that was not read (`polled`, `inside`
        its business hours or not: it is no evidence, or of the status the store had) keeps
        its entry, its latest evidence poll now that poll when it is evidence: inside business
        hours, or outside them for a store without a poll inside them (one inside would have
        changed that store's evidence: it is dropped)."""
        kept = self.rows(~np.isin(self.store, dropped))
        order = np.argsort(polled.store, kind="stable")
        here = np.flatnonzero(np.isin(kept.store, polled.store))
        at = order[np.searchsorted(polled.store, kept.store[here], sorter=order)]
        evidence = here[inside[at] | ~kept.inside[here]]
        at_evidence = at[inside[at] | ~kept.inside[here]]
        last_us, last_active = kept.last_us.copy(), kept.last_active.copy()
        last_us[evidence], last_active[evidence] = (
            polled.ts_us[at_evidence],
            polled.active[at_evidence],
        )
        flipped = np.zeros(kept.store.size, dtype=bool)
        flipped[here] = inside[at] & ~kept.inside[here]
        moved = Ends(
            kept.store, kept.inside, last_us, last_active, kept.open_first_us, kept.before_open_us
        )
        return concat([moved.rows(~flipped), fresh])

    def rows(self, chosen: np.ndarray) -> Ends:
        """The entries where `chosen` holds."""
        return Ends(
            self.store[chosen],
            self.inside[chosen],
            self.last_us[chosen],
            self.last_active[chosen],
            self.open_first_us[chosen],
            self.before_open_us[chosen],
        )


def concat(parts: list[Ends]) -> Ends:
    """The entries of parts about distinct stores, sorted by store."""
    store = np.concatenate([part.store for part in parts])
    order = np.argsort(store, kind="stable")

    def column(name: str) -> np.ndarray:
        return np.concatenate([getattr(part, name) for part in parts])[order]

    return Ends(
        store[order],
        column("inside"),
        column("last_us"),
        column("last_active"),
        column("open_first_us"),
        column("before_open_us"),
    )


def ends_of(found: report.TimelineEnds, stores: np.ndarray) -> Ends:
    """The ends of `stores` as the engine found them (`report.find_incidents(...).ends`, from
    polls read from some instant to `now` with each store's latest poll and latest evidence
    poll before it)."""
    chosen = np.isin(found.stores, stores)
    keys = found.stores[chosen].astype(np.int64)
    order = np.argsort(keys, kind="stable")
    return Ends(
        keys[order],
        found.inside[chosen][order],
        found.last_us[chosen][order],
        found.last_active[chosen][order],
        found.run_first_us[chosen][order],
        found.before_run_us[chosen][order],
    )


def timeline_polls(ends: Ends, new: report.Polls) -> report.Polls:
    """Polls that give each store of `ends` the status timeline its polls give from before its
    open incident on, with one new poll after its latest (`new`, one per store, in the same
    order): the evidence poll before the open incident (active), the incident's first poll
    (inactive), the latest evidence poll, and the new poll."""
    opened = ends.open_first_us != NONE
    before = opened & (ends.before_open_us != NONE)
    first = opened & (ends.open_first_us != ends.last_us)
    return report.Polls.of(
        np.concatenate([ends.store[before], ends.store[first], ends.store, new.store]),
        np.concatenate(
            [ends.before_open_us[before], ends.open_first_us[first], ends.last_us, new.ts_us]
        ),
        np.concatenate(
            [np.ones(before.sum(), bool), np.zeros(first.sum(), bool), ends.last_active, new.active]
        ),
    )


# --------------------------------------------------------------------------- kept per database

State = tuple[int, int, str]  # evaluated batch, its `now`, when that batch started
_CACHE: OrderedDict[str, tuple[State, Ends]] = OrderedDict()
_LOCK = threading.Lock()


def kept(identity: str, state: State) -> Ends | None:
    """The ends kept for the database `identity` as of `state`, if those are kept."""
    with _LOCK:
        entry = _CACHE.get(identity)
    return entry[1] if entry is not None and entry[0] == state else None


def keep(identity: str, state: State, ends: Ends) -> None:
    """Keep `ends` as of `state` for the database (the CACHED_DATABASES latest only), unless
    ends of a later batch are kept (another thread committed after this one and kept first).
    Ends of more than MAX_KEPT_STORES stores drop what was kept instead."""
    with _LOCK:
        kept_now = _CACHE.get(identity)
        if kept_now is not None and kept_now[0][0] > state[0]:
            return
        if ends.store.size > MAX_KEPT_STORES:
            _CACHE.pop(identity, None)
            return
        _CACHE[identity] = (state, ends)
        _CACHE.move_to_end(identity)
        while len(_CACHE) > CACHED_DATABASES:
            _CACHE.popitem(last=False)


def saved() -> list[tuple[str, tuple[State, Ends]]]:
    """Everything kept, to put back with `restore` (a benchmark runs an evaluation again from
    the same state)."""
    with _LOCK:
        return list(_CACHE.items())


def restore(entries: list[tuple[str, tuple[State, Ends]]]) -> None:
    with _LOCK:
        _CACHE.clear()
        _CACHE.update(entries)


def forget() -> None:
    """Drop everything kept (tests)."""
    with _LOCK:
        _CACHE.clear()
