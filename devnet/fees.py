"""devnet's Soroban resource fee: fixed, documented rates, split as the network splits it.

A Soroban transaction declares one ``resourceFee``; the network divides what it costs in two
(rs-soroban-env soroban-env-host/src/fees.rs, ``compute_transaction_resource_fee`` and
``compute_rent_fee``):

- the **non-refundable** part, a function of the declared resources only (instructions,
  entries and bytes read and written). It is charged in full whatever happens. A declared
  ``resourceFee`` below it is ``txSOROBAN_INVALID`` at submission (stellar-core
  TransactionFrame ``commonValid``: declared < non-refundable + refundable fee of zero events).
- the **refundable** part, what the invocation actually consumes: the contract events and
  return value it emits (per KB) and the rent of the Soroban entries it creates (per KB and
  ledger of TTL, plus writing each TTL entry). At apply, the declared fee minus the
  non-refundable part is the refundable budget; what the invocation consumed is charged,
  the rest refunded (stellar-core MutableTransactionResult.cpp ``RefundableFeeTracker``). A
  failed transaction consumes no refundable fee (``setError`` resets it). Consuming more
  than the budget fails the operation with INVOKE_HOST_FUNCTION_INSUFFICIENT_REFUNDABLE_FEE.

Simulation answers ``minResourceFee`` = non-refundable + the refundable part × 1.15, as
stellar-rpc's preflight does with soroban-simulation's ``default_adjustment`` (the 15 % is
what a typical transaction gets back).

Rates: those of the Stellar docs' resource fee table (developers.stellar.org "Resource
Limits & Fees", the values before the p23 rate cuts), so fees are of the real order. Rent
uses the network's rent rate denominators (``persistent_rent_rate_denominator`` 1215,
``temp_rent_rate_denominator`` 2430, as devnet's CONFIG_SETTING_STATE_ARCHIVAL reports them),
a new persistent entry's TTL of ``min_persistent_ttl`` (2,073,600, the same setting), a new
temporary entry's TTL up to its live-until ledger, and the minimum rent write fee per KB (1000,
``MINIMUM_RENT_WRITE_FEE_PER_1KB``): devnet's Soroban state is tiny, far below the target
size where the rate starts to grow. Simplified: no bandwidth or history fee for the
transaction's size, and every footprint entry counts as a read.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from stellar_sdk import xdr as x

from devnet import network_config

FEE_PER_10K_INSTRUCTIONS = 25
FEE_PER_READ_ENTRY = 6_250
FEE_PER_WRITE_ENTRY = 10_000
FEE_PER_READ_BYTE = 2
FEE_PER_WRITE_BYTE = 12
FEE_PER_EVENTS_1KB = 10_000

# Rent (soroban-env-host fees.rs): the effective rent write fee per KB at devnet's state size,
# the rent rate denominators, and the size every TTL entry write is charged for.
# The denominators and a new persistent entry's TTL are the network configuration's
# (devnet.network_config, served as CONFIG_SETTING_STATE_ARCHIVAL).
RENT_FEE_PER_1KB = 1_000
PERSISTENT_RENT_RATE_DENOMINATOR = network_config.PERSISTENT_RENT_RATE_DENOMINATOR
TEMPORARY_RENT_RATE_DENOMINATOR = network_config.TEMP_RENT_RATE_DENOMINATOR
TTL_ENTRY_SIZE = 48
MIN_PERSISTENT_TTL = network_config.MIN_PERSISTENT_TTL

# soroban-simulation SimulationAdjustmentConfig::default_adjustment: refundable_fee × 1.15.
SIMULATION_REFUNDABLE_PERCENT = 115


def _per_increment(value: int, rate: int, increment: int) -> int:
    return -(-value * rate // increment)


def non_refundable_fee(resources: x.SorobanResources) -> int:
    """The fee the declared resources cost, charged in full at apply."""
    footprint = resources.footprint
    read_entries = len(footprint.read_only) + len(footprint.read_write)
    return (
        _per_increment(resources.instructions.uint32, FEE_PER_10K_INSTRUCTIONS, 10_000)
        + FEE_PER_READ_ENTRY * read_entries
        + FEE_PER_WRITE_ENTRY * len(footprint.read_write)
        + FEE_PER_READ_BYTE * resources.disk_read_bytes.uint32
        + FEE_PER_WRITE_BYTE * resources.write_bytes.uint32
    )


def events_size(events: Iterable[x.ContractEvent], return_value: x.SCVal | None) -> int:
    """Bytes of contract events and return value, as stellar-core counts them
    (InvokeHostFunctionOpFrame: each event's XDR plus the return value's XDR)."""
    size = sum(len(event.to_xdr_bytes()) for event in events)
    return size + (len(return_value.to_xdr_bytes()) if return_value is not None else 0)


def events_fee(size_bytes: int) -> int:
    return _per_increment(size_bytes, FEE_PER_EVENTS_1KB, 1024)


@dataclass(frozen=True)
class NewEntryRent:
    """A Soroban entry an invocation created: its rent is paid for ``ledgers`` ledgers."""

    persistent: bool
    size_bytes: int
    ledgers: int


def rent_fee(created: Iterable[NewEntryRent]) -> int:
    """``compute_rent_fee`` for newly created entries: size × rate × ledgers over the
    durability's denominator, plus writing one TTL entry per entry."""
    fee = 0
    count = 0
    for entry in created:
        denominator = PERSISTENT_RENT_RATE_DENOMINATOR if entry.persistent else TEMPORARY_RENT_RATE_DENOMINATOR
        fee += _per_increment(entry.size_bytes * RENT_FEE_PER_1KB * entry.ledgers, 1, 1024 * denominator)
        count += 1
    ttl_writes = FEE_PER_WRITE_ENTRY * count + _per_increment(TTL_ENTRY_SIZE * count, FEE_PER_WRITE_BYTE * 1024, 1024)
    return fee + ttl_writes


def simulated_refundable_fee(refundable: int) -> int:
    """The refundable fee simulation asks for: 15 % above what the invocation consumed
    (``SimulationAdjustmentFactor::adjust_i64``: zero stays zero, rounded down)."""
    return refundable * SIMULATION_REFUNDABLE_PERCENT // 100
