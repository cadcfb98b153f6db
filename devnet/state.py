"""The ledger state, temporary entries' expiry and eviction, and the per-transaction overlay
that makes applying atomic."""

from __future__ import annotations

import heapq
from dataclasses import dataclass

from devnet.entries import Entry, EntryKey, NonceEntry, copy_entry


@dataclass
class LedgerChange:
    """One entry's change inside a transaction: ``before`` None = created, ``after`` None = removed."""

    key: EntryKey
    before: Entry | None
    after: Entry | None


def is_live(entry: Entry, ledger_seq: int) -> bool:
    """Whether ``entry`` is live at ``ledger_seq``: a temporary entry is live up to and including
    its live-until ledger (stellar-core src/ledger/LedgerTypeUtils.cpp, isLive:
    ``liveUntilLedgerSeq >= cutoffLedger``); other entries have no TTL in devnet."""
    return not isinstance(entry, NonceEntry) or entry.live_until >= ledger_seq


class LedgerState:
    """Every ledger entry by key, and when each temporary entry expires.

    A temporary entry past its TTL is absent for every reader that names a ledger
    (:meth:`get_live`): stellar-core's apply treats it "as if it does not exist"
    (src/transactions/InvokeHostFunctionOpFrame.cpp, processRead, against the ledger being
    applied) and its query server answers it as not found (src/main/QueryServer.cpp,
    getLedgerEntry, against the snapshot's ledger). It is dropped from memory by :meth:`evict`
    at the close of the first ledger at which it is no longer live, the condition stellar-core's
    eviction scan applies (src/bucket/BucketListSnapshot.cpp, scanForEvictionInBucket:
    ``!isLive(ttl, ledgerSeq)``), without the scan's per-ledger size limit.
    """

    def __init__(self) -> None:
        self.entries: dict[EntryKey, Entry] = {}
        # (live-until ledger, key) of every temporary entry written; an item whose entry was
        # rewritten since is stale and skipped when it comes up.
        self._expiries: list[tuple[int, EntryKey]] = []

    def get(self, key: EntryKey) -> Entry | None:
        """The entry held under ``key``, a temporary one past its TTL included (not yet evicted)."""
        return self.entries.get(key)

    def get_live(self, key: EntryKey, ledger_seq: int) -> Entry | None:
        """The entry as a reader at ``ledger_seq`` sees it: None once a temporary entry's TTL is past."""
        entry = self.entries.get(key)
        return entry if entry is not None and is_live(entry, ledger_seq) else None

    def put(self, entry: Entry) -> None:
        self.entries[entry.key()] = entry
        if isinstance(entry, NonceEntry):
            heapq.heappush(self._expiries, (entry.live_until, entry.key()))

    def remove(self, key: EntryKey) -> None:
        self.entries.pop(key, None)

    def evict(self, ledger_seq: int) -> list[EntryKey]:
        """Drop every temporary entry that is not live at ``ledger_seq``; the keys dropped."""
        evicted: list[EntryKey] = []
        while self._expiries and self._expiries[0][0] < ledger_seq:
            _, key = heapq.heappop(self._expiries)
            entry = self.entries.get(key)
            if entry is not None and not is_live(entry, ledger_seq):
                del self.entries[key]
                evicted.append(key)
        return evicted


class LedgerTxn:
    """A copy-on-write view over a :class:`LedgerState` (or another ``LedgerTxn``).

    Reads fall through to the parent; the first write of an entry copies it. ``commit``
    writes everything back at once, so a failing operation leaves its parent untouched.
    """

    def __init__(self, parent: LedgerState | LedgerTxn, ledger_seq: int) -> None:
        self.parent = parent
        self.ledger_seq = ledger_seq
        self._written: dict[EntryKey, Entry | None] = {}
        self._before: dict[EntryKey, Entry | None] = {}
        self.read_keys: set[EntryKey] = set()

    def _parent_get(self, key: EntryKey) -> Entry | None:
        parent = self.parent
        if isinstance(parent, LedgerState):
            return parent.get_live(key, self.ledger_seq)
        return parent.get(key)

    def get(self, key: EntryKey) -> Entry | None:
        self.read_keys.add(key)
        if key in self._written:
            return self._written[key]
        return self._parent_get(key)

    def load(self, key: EntryKey) -> Entry | None:
        """The entry, copied so the caller may modify it and then :meth:`put` it."""
        entry = self.get(key)
        return None if entry is None else copy_entry(entry)

    def put(self, entry: Entry) -> None:
        key = entry.key()
        if key not in self._before:
            self._before[key] = self._parent_get(key)
        entry.last_modified = self.ledger_seq
        self._written[key] = entry

    def remove(self, key: EntryKey) -> None:
        if key not in self._before:
            self._before[key] = self._parent_get(key)
        self._written[key] = None

    def written_keys(self) -> set[EntryKey]:
        return set(self._written)

    def changes(self) -> list[LedgerChange]:
        return [
            LedgerChange(key, self._before[key], after)
            for key, after in self._written.items()
            if not (self._before[key] is None and after is None)
        ]

    def commit(self) -> None:
        parent = self.parent
        if isinstance(parent, LedgerTxn):
            for key, entry in self._written.items():
                if key not in parent._before:
                    parent._before[key] = parent._parent_get(key)
                parent._written[key] = entry
            parent.read_keys |= self.read_keys
        else:
            for key, entry in self._written.items():
                if entry is None:
                    parent.remove(key)
                else:
                    parent.put(entry)
        self._written.clear()
        self._before.clear()
