"""The transaction queue's room and the ledger's surge pricing, as stellar-core's herder has them.

stellar-core keeps two queues, classic and Soroban, and builds each ledger in two phases
(classic first). Both count what a transaction takes as a resource vector
(stellar-core TransactionFrame ``getResources``):

- classic: its number of operations; a ledger holds ``maxTxSetSize`` operations
  (devnet ``--max-tx-set-size``);
- Soroban: (1 transaction, instructions, envelope bytes, disk read bytes, write bytes, disk
  read entries, written entries) against the network's ledger-wide limits
  (SorobanNetworkConfig ``maxLedgerResources``). Disk reads count the classic entries of the
  footprint only (protocol 23 ``getNumDiskReadEntries``: live Soroban state is in memory).

**Queue room** (stellar-core TxQueueLimiter): a queue holds the ledger's resources times a
multiplier (Config ``TRANSACTION_QUEUE_SIZE_MULTIPLIER`` and
``SOROBAN_TRANSACTION_QUEUE_SIZE_MULTIPLIER``, both 2). A transaction that does not fit must
have a strictly better fee rate (inclusion fee per operation, compared by cross
multiplication, SurgePricingUtils ``feeRate3WayCompare``) than each queued transaction it
would evict, cheapest first (SurgePricingPriorityQueue ``canFitWithEviction``); otherwise
it is refused with the inclusion fee it would need: ``computeBetterFee`` =
floor(evicted bid × its operations / evicted operations) + 1, plus its declared resource
fee. Until the next ledger closes, every newcomer must also beat the best bid evicted so
far (TxQueueLimiter ``mLaneEvictedInclusionFee``, reset by ``resetEvictionState``). A
transaction bigger than the whole queue can never fit: refused without a fee.

**Inclusion** (TxSetFrame ``applySurgePricing``, SurgePricingPriorityQueue
``getMostTopTxsWithinLimits``): when everything queued fits, everything goes in and each
transaction pays the ledger's base fee (100) per operation. Otherwise the highest fee rates
go first, skipping those that no longer fit, and the phase is surge priced: its base fee
is the lowest fee per operation among the included transactions (``computeLaneBaseFee``,
``computePerOpFee`` rounding down). Each included transaction is charged
min(its inclusion fee, base fee × operations) (TransactionFrame ``getFee``).

Simplifications: one generic lane per phase (no DEX lane); equal bids are ordered by arrival
(stellar-core breaks ties at random) and evicted newest first; the Soroban phase is built
sequentially against the ledger-wide instruction limit times the dependent-cluster count
(protocol 23 builds parallel stages); classic transactions are counted by operations only.
"""

from __future__ import annotations

import base64
import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction

from stellar_sdk import xdr as x

from devnet.transactions import OT, ParsedTransaction

Resources = tuple[int, ...]

# stellar-core Config.cpp: TRANSACTION_QUEUE_SIZE_MULTIPLIER, SOROBAN_TRANSACTION_QUEUE_SIZE_MULTIPLIER.
DEFAULT_QUEUE_MULTIPLIER = 2


@dataclass(frozen=True)
class SorobanLedgerLimits:
    """The Soroban ledger-wide limits; the defaults are mainnet's CONFIG_SETTING entries as
    stellar/laboratory's src/constants/networkLimits.ts reads them from the network
    (ledger_max_tx_count, ledger_max_instructions × ledger_max_dependent_tx_clusters,
    ledger_max_txs_size_bytes, ledger_max_disk_read_bytes, ledger_max_write_bytes,
    ledger_max_disk_read_entries, ledger_max_write_ledger_entries)."""

    tx_count: int = 2_000
    instructions: int = 580_000_000 * 2
    txs_size_bytes: int = 266_240
    disk_read_bytes: int = 400_000
    write_bytes: int = 286_720
    disk_read_entries: int = 1_000
    write_entries: int = 1_000

    @classmethod
    def unlimited(cls) -> SorobanLedgerLimits:
        """No practical limit, as stellar/quickstart's ``unlimited`` profile (benchmarks)."""
        big = 2**62
        return cls(big, big, big, big, big, big, big)

    def vector(self) -> Resources:
        return (
            self.tx_count,
            self.instructions,
            self.txs_size_bytes,
            self.disk_read_bytes,
            self.write_bytes,
            self.disk_read_entries,
            self.write_entries,
        )


DEFAULT_SOROBAN_LEDGER_MAX_TX_COUNT = SorobanLedgerLimits.tx_count


class Phase(enum.Enum):
    """A transaction set phase, with its own queue room and surge price."""

    CLASSIC = "classic"
    SOROBAN = "soroban"


def phase_of(ptx: ParsedTransaction) -> Phase:
    """Soroban when the (first) operation is a Soroban one, as stellar-core ``isSoroban``."""
    ops = ptx.tx.operations
    return Phase.SOROBAN if ops and ops[0].body.type == OT.INVOKE_HOST_FUNCTION else Phase.CLASSIC


def ledger_limits(phase: Phase, max_tx_set_size: int, soroban: SorobanLedgerLimits) -> Resources:
    return (max_tx_set_size,) if phase is Phase.CLASSIC else soroban.vector()


_SOROBAN_KEY_TYPES = {x.LedgerEntryType.CONTRACT_DATA, x.LedgerEntryType.CONTRACT_CODE, x.LedgerEntryType.TTL}


def tx_resources(ptx: ParsedTransaction) -> Resources:
    """What the transaction takes of its phase's room (stellar-core TransactionFrame ``getResources``)."""
    if phase_of(ptx) is Phase.CLASSIC or ptx.soroban is None:
        return (len(ptx.tx.operations),)
    r = ptx.soroban.resources
    keys = [*r.footprint.read_only, *r.footprint.read_write]
    disk_reads = sum(1 for key in keys if key.type not in _SOROBAN_KEY_TYPES)
    size = len(base64.b64decode(ptx.envelope_xdr))
    return (
        1,
        r.instructions.uint32,
        size,
        r.disk_read_bytes.uint32,
        r.write_bytes.uint32,
        disk_reads,
        len(r.footprint.read_write),
    )


def add(a: Resources, b: Resources) -> Resources:
    return tuple(i + j for i, j in zip(a, b, strict=True))


def subtract_non_negative(a: Resources, b: Resources) -> Resources:
    return tuple(max(0, i - j) for i, j in zip(a, b, strict=True))


def fits(amount: Resources, limit: Resources) -> bool:
    return all(i <= j for i, j in zip(amount, limit, strict=True))


def scale(limit: Resources, multiplier: int) -> Resources:
    return tuple(i * multiplier for i in limit)


def fee_rate_compare(fee_a: int, ops_a: int, fee_b: int, ops_b: int) -> int:
    """-1, 0 or 1 as fee_a / ops_a is below, equal to or above fee_b / ops_b, without division
    (SurgePricingUtils ``feeRate3WayCompare``)."""
    left, right = fee_a * ops_b, fee_b * ops_a
    return (left > right) - (left < right)


def better_fee(ops: int, ref_fee: int, ref_ops: int) -> int:
    """The least inclusion fee for ``ops`` operations whose rate beats ref_fee / ref_ops
    (SurgePricingUtils ``computeBetterFee``)."""
    return ref_fee * ops // ref_ops + 1


def per_op_fee(inclusion_fee: int, ops: int) -> int:
    """Fee per operation, rounded down since protocol 20 (TxSetFrame ``computePerOpFee``)."""
    return inclusion_fee // max(1, ops)


@dataclass(frozen=True)
class Bid:
    """A queued (or candidate) transaction as the queue room and surge pricing see it."""

    tx_hash: str
    source: str
    inclusion_fee: int
    ops: int
    resources: Resources
    arrival: int

    def beats(self, other: Bid) -> bool:
        return fee_rate_compare(self.inclusion_fee, self.ops, other.inclusion_fee, other.ops) > 0


def bid_of(ptx: ParsedTransaction, arrival: int) -> Bid:
    return Bid(ptx.hash_hex, ptx.source, ptx.inclusion_fee, max(1, len(ptx.tx.operations)), tx_resources(ptx), arrival)


@dataclass(frozen=True)
class Admission:
    """The queue's answer to a candidate: room (after evicting ``evict``), or refused with
    the inclusion fee that would have made room (0: no fee would, TRY_AGAIN_LATER)."""

    admitted: bool
    evict: tuple[Bid, ...] = ()
    needed_inclusion_fee: int = 0


class QueueRoom:
    """One phase's queue room: the resources of what it holds, and the best bid evicted
    since the last ledger closed (stellar-core TxQueueLimiter)."""

    def __init__(self, limit: Resources) -> None:
        self.limit = limit
        self.total: Resources = tuple(0 for _ in limit)
        self.evicted: Bid | None = None

    def added(self, bid: Bid) -> None:
        self.total = add(self.total, bid.resources)

    def removed(self, bid: Bid) -> None:
        self.total = subtract_non_negative(self.total, bid.resources)

    def ledger_closed(self) -> None:
        self.evicted = None

    def evicted_now(self, bids: Sequence[Bid]) -> None:
        # Evicted cheapest first, so the last one is the best bid a newcomer must beat.
        if bids:
            self.evicted = bids[-1]

    def admit(self, candidate: Bid, queued: Iterable[Bid]) -> Admission:
        """TxQueueLimiter ``canAddTx``; ``queued`` is everything this phase's queue holds (read
        only when the candidate does not fit)."""
        evicted = self.evicted
        if evicted is not None and not candidate.beats(evicted):
            return Admission(False, needed_inclusion_fee=better_fee(candidate.ops, evicted.inclusion_fee, evicted.ops))
        if not fits(candidate.resources, self.limit):
            return Admission(False)
        new_total = add(self.total, candidate.resources)
        if fits(new_total, self.limit):
            return Admission(True)
        needed = subtract_non_negative(new_total, self.limit)
        cheapest_first = sorted(queued, key=_eviction_order)
        evict: list[Bid] = []
        for bid in cheapest_first:
            if not candidate.beats(bid):
                return Admission(False, needed_inclusion_fee=better_fee(candidate.ops, bid.inclusion_fee, bid.ops))
            if bid.source == candidate.source:
                return Admission(False)
            evict.append(bid)
            needed = subtract_non_negative(needed, bid.resources)
            if not any(needed):
                return Admission(True, tuple(evict))
        raise AssertionError("the queue holds less than its total")  # candidate alone fits the limit


def _eviction_order(bid: Bid) -> tuple[Fraction, int]:
    # Lowest fee rate first (an exact fraction, as feeRate3WayCompare), newest first among equals.
    return (Fraction(bid.inclusion_fee, bid.ops), -bid.arrival)


@dataclass(frozen=True)
class LedgerPhase:
    """What surge pricing made of one phase of a ledger."""

    included: list[Bid]
    base_fee: int
    surge_priced: bool
    # Room the fee_surge fault's outside traffic took (transactions for Soroban, operations
    # for classic), each bidding the surge fee: getFeeStats sees it.
    outside_count: int


def build_phase(
    candidates: Sequence[Bid], limit: Resources, ledger_base_fee: int, outside_bid: int | None
) -> LedgerPhase:
    """The phase's transactions for the next ledger and its base fee.

    ``outside_bid`` is the ``fee_surge`` fault: outside traffic that fills every ledger,
    bidding that much per operation. A candidate bidding less loses to it; one bidding at
    least as much takes precedence (ties go to devnet's own transactions).
    """
    eligible = [
        bid
        for bid in candidates
        if outside_bid is None or fee_rate_compare(bid.inclusion_fee, bid.ops, outside_bid, 1) >= 0
    ]
    total: Resources = tuple(0 for _ in limit)
    for bid in eligible:
        total = add(total, bid.resources)
    if outside_bid is None and fits(total, limit):
        included = list(eligible)
        surge_priced = False
    else:
        surge_priced = True
        included = []
        left = limit
        for bid in sorted(eligible, key=_inclusion_order):
            if fits(bid.resources, left):
                included.append(bid)
                left = subtract_non_negative(left, bid.resources)
        included.sort(key=lambda bid: bid.arrival)
    outside_count = 0
    if outside_bid is not None:
        used = sum(bid.resources[0] for bid in included)
        outside_count = max(0, limit[0] - used)
    base_fee = ledger_base_fee
    if surge_priced:
        bids = [per_op_fee(bid.inclusion_fee, bid.ops) for bid in included]
        if outside_count and outside_bid is not None:
            bids.append(outside_bid)
        if bids:
            base_fee = min(bids)
    return LedgerPhase(included, base_fee, surge_priced, outside_count)


def _inclusion_order(bid: Bid) -> tuple[Fraction, int]:
    # Highest fee rate first, oldest first among equals.
    return (-Fraction(bid.inclusion_fee, bid.ops), bid.arrival)
