"""Transaction meta (``TransactionMeta`` v4) from devnet's ledger changes."""

from __future__ import annotations

from dataclasses import dataclass

from stellar_sdk import xdr as x

from devnet.entries import key_to_xdr
from devnet.state import LedgerChange


def entry_changes(changes: list[LedgerChange]) -> x.LedgerEntryChanges:
    """As stellar-core writes them: STATE then UPDATED for a change, CREATED, or STATE then REMOVED."""
    items: list[x.LedgerEntryChange] = []
    T = x.LedgerEntryChangeType
    for change in changes:
        if change.before is None:
            assert change.after is not None
            items.append(x.LedgerEntryChange(T.LEDGER_ENTRY_CREATED, created=change.after.to_xdr()))
            continue
        items.append(x.LedgerEntryChange(T.LEDGER_ENTRY_STATE, state=change.before.to_xdr()))
        if change.after is None:
            items.append(x.LedgerEntryChange(T.LEDGER_ENTRY_REMOVED, removed=key_to_xdr(change.key)))
        else:
            items.append(x.LedgerEntryChange(T.LEDGER_ENTRY_UPDATED, updated=change.after.to_xdr()))
    return x.LedgerEntryChanges(items)


@dataclass(frozen=True)
class SorobanFees:
    """The resource fee a Soroban transaction was charged, as SorobanTransactionMetaExtV1
    reports it (stellar-core TransactionMetaBuilder ``setNonRefundableResourceFee`` and
    ``maybeSetRefundableFeeMeta``); stellar-rpc's getFeeStats subtracts these from
    ``feeCharged`` to find the inclusion fee."""

    non_refundable: int
    refundable: int
    rent: int

    def ext(self) -> x.SorobanTransactionMetaExt:
        return x.SorobanTransactionMetaExt(
            1,
            v1=x.SorobanTransactionMetaExtV1(
                ext=x.ExtensionPoint(0),
                total_non_refundable_resource_fee_charged=x.Int64(self.non_refundable),
                total_refundable_resource_fee_charged=x.Int64(self.refundable),
                rent_fee_charged=x.Int64(self.rent),
            ),
        )


def transaction_meta(
    before: list[LedgerChange],
    operations: list[tuple[list[LedgerChange], list[x.ContractEvent]]],
    return_value: x.SCVal | None,
    soroban_fees: SorobanFees | None,
) -> x.TransactionMeta:
    """The meta of an applied transaction; ``soroban_fees`` is None for a classic one."""
    ops = [
        x.OperationMetaV2(ext=x.ExtensionPoint(0), changes=entry_changes(changes), events=events)
        for changes, events in operations
    ]
    soroban_meta = (
        x.SorobanTransactionMetaV2(ext=soroban_fees.ext(), return_value=return_value)
        if soroban_fees is not None
        else None
    )
    return x.TransactionMeta(
        4,
        v4=x.TransactionMetaV4(
            ext=x.ExtensionPoint(0),
            tx_changes_before=entry_changes(before),
            operations=ops,
            tx_changes_after=x.LedgerEntryChanges([]),
            soroban_meta=soroban_meta,
            events=[],
            diagnostic_events=[],
        ),
    )
