"""Small helpers shared by the devnet robustness tests (bad input, faults, state file)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from stellar_sdk import Asset, Keypair, SorobanServerAsync, TransactionBuilder, TransactionEnvelope
from stellar_sdk import xdr as x

from tests.devnet_harness import PASSPHRASE, DevnetAdmin


@dataclass(frozen=True)
class AccountState:
    balance: int
    seq_num: int


def account_key_xdr(account_id: str) -> str:
    key = x.LedgerKey(
        x.LedgerEntryType.ACCOUNT,
        account=x.LedgerKeyAccount(Keypair.from_public_key(account_id).xdr_account_id()),
    )
    return key.to_xdr()


async def account_state(admin: DevnetAdmin, account_id: str) -> AccountState | None:
    """The account's balance and sequence number as getLedgerEntries reports them."""
    status, body = await admin.rpc("getLedgerEntries", {"keys": [account_key_xdr(account_id)]})
    assert status == 200 and "result" in body, body
    entries = body["result"]["entries"]
    if not entries:
        return None
    account = x.LedgerEntryData.from_xdr(entries[0]["xdr"]).account
    assert account is not None
    return AccountState(account.balance.int64, account.seq_num.sequence_number.int64)


async def payment_envelope(
    server: SorobanServerAsync,
    source: Keypair,
    destination: str,
    amount: str = "1",
    base_fee: int = 100,
    timeout: int = 300,
) -> TransactionEnvelope:
    """A signed classic XLM payment using the source's next sequence number, valid for
    ``timeout`` seconds."""
    account = await server.load_account(source.public_key)
    tx = (
        TransactionBuilder(account, PASSPHRASE, base_fee=base_fee)
        .append_payment_op(destination, Asset.native(), amount)
        .set_timeout(timeout)
        .build()
    )
    tx.sign(source)
    return tx


async def send(admin: DevnetAdmin, envelope_xdr: str) -> dict[str, Any]:
    """sendTransaction's result (asserts the call itself succeeded)."""
    status, body = await admin.rpc("sendTransaction", {"transaction": envelope_xdr})
    assert status == 200 and "result" in body, body
    result: dict[str, Any] = body["result"]
    return result


async def get_transaction(admin: DevnetAdmin, tx_hash: str) -> dict[str, Any]:
    status, body = await admin.rpc("getTransaction", {"hash": tx_hash})
    assert status == 200 and "result" in body, body
    result: dict[str, Any] = body["result"]
    return result


async def wait_for_transaction(admin: DevnetAdmin, tx_hash: str, ledgers: int = 12) -> dict[str, Any]:
    """getTransaction until it is no longer NOT_FOUND, closing a ledger between tries."""
    for _ in range(ledgers):
        found = await get_transaction(admin, tx_hash)
        if found["status"] != "NOT_FOUND":
            return found
        await admin.close_ledger()
    return await get_transaction(admin, tx_hash)
