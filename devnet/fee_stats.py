"""getFeeStats' inclusion fee windows, as stellar-rpc keeps them.

stellar-rpc (cmd/stellar-rpc/internal/feewindow/feewindow.go, ``IngestFees``) takes every
transaction of every ingested ledger:

- a Soroban transaction (its one operation InvokeHostFunction, ExtendFootprintTTL or
  RestoreFootprint) contributes its charged inclusion fee: ``feeCharged`` minus the resource
  fee actually charged (``totalNonRefundableResourceFeeCharged`` +
  ``totalRefundableResourceFeeCharged`` of the meta's SorobanTransactionMetaExtV1);
- any other transaction contributes ``feeCharged`` / number of operations (rounded down).

Each kind has its own window of the most recent ledgers (options
``--classic-fee-stats-retention-window``, default 10, and
``--soroban-fee-stats-retention-window``, default 50; at most 1000), empty ledgers
included. The distribution (``computeFeeDistribution``) gives nearest-rank percentiles
(the ceil(p × n / 100)-th smallest fee), the most frequent fee (the smallest among equally
frequent ones), ``transactionCount`` and ``ledgerCount`` (the window's ledgers). With no
fee in the window every field is 0, ``ledgerCount`` included.

A ledger's fees are kept as (fee, count) pairs: the ``fee_surge`` fault's outside traffic
adds a whole ledger's worth of fees at once.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Sequence
from typing import Any

DEFAULT_CLASSIC_WINDOW = 10
DEFAULT_SOROBAN_WINDOW = 50
MAX_WINDOW = 1000  # stellar-rpc config MaxFeeStatsRetentionWindow
PERCENTILES = (10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 99)
# The fees of a ledger without any (shared: a window only ever reads its ledgers' counts).
_EMPTY: Counter[int] = Counter()


class FeeWindow:
    """The fees of the last ``retention`` ledgers."""

    def __init__(self, retention: int) -> None:
        self.retention = retention
        self._ledgers: deque[Counter[int]] = deque(maxlen=retention)

    def append_ledger(self, fees: Sequence[tuple[int, int]]) -> None:
        """One ledger's fees, as (fee, how many transactions paid it)."""
        if not fees:
            self._ledgers.append(_EMPTY)
            return
        counts: Counter[int] = Counter()
        for fee, count in fees:
            if count > 0:
                counts[fee] += count
        self._ledgers.append(counts)

    def distribution(self) -> dict[str, Any]:
        """The distribution in getFeeStats' JSON shape (numbers as strings, ledgerCount a number)."""
        counts: Counter[int] = Counter()
        for ledger in self._ledgers:
            counts.update(ledger)
        total = sum(counts.values())
        names = ["max", "min", "mode", *(f"p{p}" for p in PERCENTILES)]
        if total == 0:
            return {**dict.fromkeys(names, "0"), "transactionCount": "0", "ledgerCount": 0}
        ordered = sorted(counts.items())
        # The first (smallest) of the most frequent fees wins, as a strict ">" keeps it.
        mode, most = ordered[0]
        for fee, count in ordered:
            if count > most:
                mode, most = fee, count

        def nearest_rank(p: int) -> int:
            rank = -(-p * total // 100)  # 1-based
            seen = 0
            for fee, count in ordered:
                seen += count
                if seen >= rank:
                    return fee
            return ordered[-1][0]

        body: dict[str, Any] = {"max": str(ordered[-1][0]), "min": str(ordered[0][0]), "mode": str(mode)}
        body.update({f"p{p}": str(nearest_rank(p)) for p in PERCENTILES})
        body["transactionCount"] = str(total)
        body["ledgerCount"] = len(self._ledgers)
        return body
