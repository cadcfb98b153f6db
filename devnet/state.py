"""The ledger state and the per-transaction overlay that makes applying atomic."""

from __future__ import annotations

from dataclasses import dataclass

from devnet.entries import Entry, EntryKey, copy_entry


@dataclass
class LedgerChange:
    """One entry's change inside a transaction: ``before`` None = created, ``after`` None = removed."""

    key: EntryKey
    before: Entry | None
    after: Entry | None


class LedgerState:
    """Every live ledger entry by key."""

    def __init__(self) -> None:
        self.entries: dict[EntryKey, Entry] = {}

    def get(self, key: EntryKey) -> Entry | None:
        return self.entries.get(key)


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

    def get(self, key: EntryKey) -> Entry | None:
        self.read_keys.add(key)
        if key in self._written:
            return self._written[key]
        return self.parent.get(key)

    def load(self, key: EntryKey) -> Entry | None:
        """The entry, copied so the caller may modify it and then :meth:`put` it."""
        entry = self.get(key)
        return None if entry is None else copy_entry(entry)

    def put(self, entry: Entry) -> None:
        key = entry.key()
        if key not in self._before:
            self._before[key] = self.parent.get(key)
        entry.last_modified = self.ledger_seq
        self._written[key] = entry

    def remove(self, key: EntryKey) -> None:
        if key not in self._before:
            self._before[key] = self.parent.get(key)
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
                    parent._before[key] = parent.parent.get(key)
                parent._written[key] = entry
            parent.read_keys |= self.read_keys
        else:
            for key, entry in self._written.items():
                if entry is None:
                    parent.entries.pop(key, None)
                else:
                    parent.entries[key] = entry
        self._written.clear()
        self._before.clear()
