"""What an absent nonce entry proves (payouts.authorization): a use may already have
expired from the ledger, so absence alone proves a nonce unused only while it could not."""

from __future__ import annotations

import pytest
from stellar_sdk import Keypair
from stellar_sdk import xdr as x

from payouts.authorization import NonceState, consumes_nonce, nonce_key, nonce_state, unused_through_after_absence

MIN_TTL = 16
VALID_UNTIL = 1_000


@pytest.mark.parametrize(
    ("unused_through", "observed_at", "proven"),
    [
        (900, 950, 950),  # before its expiration: a use would be live at least until 1000
        (900, 999, 999),
        (990, 1_005, 1_005),  # past it, but a use after 990 would live until at least 1005
        (990, 1_006, None),  # a use at 991 may have expired after ledger 1006: proves nothing
        (900, 1_001, None),  # the first look past the expiration, too late: proves nothing
        (1_000, 1_500, 1_500),  # proven through the expiration: no use can come later
        (950, 940, 950),  # an older (lagging) read adds nothing
    ],
)
def test_an_absence_proves_no_use_only_while_a_use_would_still_be_visible(
    unused_through: int, observed_at: int, proven: int | None
) -> None:
    assert unused_through_after_absence(unused_through, VALID_UNTIL, observed_at, MIN_TTL) == proven


def test_unused_once_proven_through_its_expiration() -> None:
    assert nonce_state(999, VALID_UNTIL) == NonceState.LIVE
    assert nonce_state(1_000, VALID_UNTIL) == NonceState.UNUSED


def _meta_creating(entry_key: x.LedgerKey) -> str:
    data = entry_key.contract_data
    assert data is not None
    entry = x.LedgerEntry(
        last_modified_ledger_seq=x.Uint32(5),
        data=x.LedgerEntryData(
            x.LedgerEntryType.CONTRACT_DATA,
            contract_data=x.ContractDataEntry(
                ext=x.ExtensionPoint(0),
                contract=data.contract,
                key=data.key,
                durability=data.durability,
                val=x.SCVal(x.SCValType.SCV_VOID),
            ),
        ),
        ext=x.LedgerEntryExt(0),
    )
    created = x.LedgerEntryChange(x.LedgerEntryChangeType.LEDGER_ENTRY_CREATED, created=entry)
    return x.TransactionMeta(
        4,
        v4=x.TransactionMetaV4(
            ext=x.ExtensionPoint(0),
            tx_changes_before=x.LedgerEntryChanges([]),
            operations=[x.OperationMetaV2(ext=x.ExtensionPoint(0), changes=x.LedgerEntryChanges([created]), events=[])],
            tx_changes_after=x.LedgerEntryChanges([]),
            soroban_meta=None,
            events=[],
            diagnostic_events=[],
        ),
    ).to_xdr()


def test_a_use_is_read_from_the_meta_that_created_the_nonce_entry() -> None:
    payer, other = Keypair.random().public_key, Keypair.random().public_key
    meta = _meta_creating(nonce_key(payer, 7))
    assert consumes_nonce(meta, payer, 7)
    assert not consumes_nonce(meta, payer, 8)
    assert not consumes_nonce(meta, other, 7)
