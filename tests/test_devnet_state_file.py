"""A devnet started with --state-file survives a restart, and refuses another network's file.

Each test runs its own devnet processes (``run_devnet``) on a temporary state file:
the first builds up state, is stopped (gracefully, or killed), and a second one started
on the same file must show the same accounts, balances, sequence numbers, contract
balances and transaction history, and carry on from there.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from stellar_sdk import Asset, Keypair, Network, SorobanServerAsync

from devnet.asset_contracts import asset_contract_deployed, asset_contract_key, deploy_asset_contract
from tests.devnet_harness import PASSPHRASE, DevnetAdmin, DevnetProcess, result_code, run_devnet, sac_transfer_envelope
from tests.devnet_helpers import (
    AccountState,
    account_state,
    get_transaction,
    payment_envelope,
    send,
    wait_for_transaction,
)

XLM = 10_000_000
LEDGER_MS = 100
TRANSACTION_FIELDS = (
    "status",
    "txHash",
    "ledger",
    "applicationOrder",
    "createdAt",
    "envelopeXdr",
    "resultXdr",
    "resultMetaXdr",
)


@asynccontextmanager
async def clients(process: DevnetProcess) -> AsyncIterator[tuple[DevnetAdmin, SorobanServerAsync]]:
    async with aiohttp.ClientSession() as session, SorobanServerAsync(process.url) as server:
        yield DevnetAdmin(process.url, session), server


@dataclass
class Before:
    alice: Keypair
    bob: Keypair
    contract: str
    payment: Any  # the applied payment's envelope
    transaction: dict[str, Any]
    accounts: dict[str, AccountState | None]
    contract_balance: int
    latest: int  # the latest ledger when the first devnet stopped
    last_applied: int  # the ledger of the last transaction applied before it stopped


async def build_up_state(admin: DevnetAdmin, server: SorobanServerAsync) -> Before:
    alice, bob = await admin.new_account(), await admin.new_account()
    payment = await payment_envelope(server, alice, bob.public_key, "12")
    assert (await send(admin, payment.to_xdr()))["status"] == "PENDING"
    found = await wait_for_transaction(admin, payment.hash_hex())
    assert found["status"] == "SUCCESS", found
    contract = (await admin.admin("POST", "payout-contract", {"admin": alice.public_key}))["contract_id"]
    funding = await sac_transfer_envelope(server, alice, contract, 40 * XLM)
    assert (await send(admin, funding.to_xdr()))["status"] == "PENDING"
    funded = await wait_for_transaction(admin, funding.hash_hex())
    assert funded["status"] == "SUCCESS", funded
    # A sequence number used from outside (no transaction) must persist too.
    await admin.admin("POST", "consume-sequence", {"account": bob.public_key})
    return Before(
        alice=alice,
        bob=bob,
        contract=contract,
        payment=payment,
        transaction=await get_transaction(admin, payment.hash_hex()),
        accounts={k.public_key: await account_state(admin, k.public_key) for k in (alice, bob)},
        contract_balance=await contract_balance(server, contract),
        latest=int((await admin.admin("GET", "stats"))["latest_ledger"]),
        last_applied=funded["ledger"],
    )


async def contract_balance(server: SorobanServerAsync, contract: str) -> int:
    balance = await server.get_sac_balance(contract, Asset.native(), PASSPHRASE)
    assert balance.balance_entry is not None
    return int(balance.balance_entry.amount)


async def assert_same_state(admin: DevnetAdmin, server: SorobanServerAsync, before: Before, floor: int) -> None:
    """``floor``: the ledger the restarted devnet must at least be at. After a graceful stop
    that is the latest ledger; after a crash, ledgers closed empty since the last applied
    transaction were never written (devnet saves when a ledger has transactions)."""
    for account_id, state in before.accounts.items():
        assert await account_state(admin, account_id) == state, account_id
    assert await contract_balance(server, before.contract) == before.contract_balance == 40 * XLM
    restored = await get_transaction(admin, before.payment.hash_hex())
    assert {f: restored[f] for f in TRANSACTION_FIELDS} == {f: before.transaction[f] for f in TRANSACTION_FIELDS}
    assert restored["latestLedger"] >= floor
    _, body = await admin.rpc("getTransactions", {"startLedger": before.transaction["ledger"]})
    assert before.payment.hash_hex() in [t["txHash"] for t in body["result"]["transactions"]]


async def assert_carries_on(admin: DevnetAdmin, server: SorobanServerAsync, before: Before, floor: int) -> None:
    # The applied payment cannot be applied again after the restart ...
    again = await send(admin, before.payment.to_xdr())
    assert again["status"] == "ERROR" and result_code(again["errorResultXdr"]) == "txBAD_SEQ", again
    # ... friendbot knows the accounts exist ...
    with pytest.raises(RuntimeError, match="already exists"):
        await admin.fund(before.alice.public_key)
    # ... and both accounts transact with their next sequence numbers, in later ledgers.
    for source, destination in ((before.alice, before.bob), (before.bob, before.alice)):
        payment = await payment_envelope(server, source, destination.public_key, "1")
        sent = await send(admin, payment.to_xdr())
        assert sent["status"] == "PENDING", sent
        applied = await wait_for_transaction(admin, payment.hash_hex())
        assert applied["status"] == "SUCCESS" and applied["ledger"] > floor, applied
        state, now = before.accounts[source.public_key], await account_state(admin, source.public_key)
        assert state is not None and now is not None
        assert now.seq_num == state.seq_num + 1


async def test_state_survives_a_restart(tmp_path: Path) -> None:
    state_file = tmp_path / "devnet-state.json"
    with run_devnet(LEDGER_MS, state_file=state_file) as first:
        async with clients(first) as (admin, server):
            before = await build_up_state(admin, server)
    # run_devnet stopped it with SIGTERM: a graceful shutdown.
    assert state_file.exists()
    with run_devnet(LEDGER_MS, state_file=state_file) as second:
        async with clients(second) as (admin, server):
            await assert_same_state(admin, server, before, floor=before.latest)
            await assert_carries_on(admin, server, before, floor=before.latest)


async def test_state_survives_a_crash(tmp_path: Path) -> None:
    state_file = tmp_path / "devnet-state.json"
    with run_devnet(LEDGER_MS, state_file=state_file) as first:
        async with clients(first) as (admin, server):
            before = await build_up_state(admin, server)
        first.process.kill()  # SIGKILL: no shutdown hook runs
        first.process.wait(timeout=10)
    with run_devnet(LEDGER_MS, state_file=state_file) as second:
        async with clients(second) as (admin, server):
            await assert_same_state(admin, server, before, floor=before.last_applied)
            await assert_carries_on(admin, server, before, floor=before.last_applied)


async def test_state_file_of_another_network_is_refused(tmp_path: Path) -> None:
    state_file = tmp_path / "devnet-state.json"
    with run_devnet(LEDGER_MS, state_file=state_file) as first:
        async with clients(first) as (admin, _):
            await admin.new_account()
    original = state_file.read_bytes()
    assert PASSPHRASE != Network.TESTNET_NETWORK_PASSPHRASE

    with pytest.raises(RuntimeError, match="belongs to network") as refused:
        with run_devnet(LEDGER_MS, "--passphrase", Network.TESTNET_NETWORK_PASSPHRASE, state_file=state_file):
            pass
    assert PASSPHRASE in str(refused.value)
    assert "Traceback" not in str(refused.value)  # a clear message, not a crash
    assert state_file.read_bytes() == original  # refusing does not touch the file

    # The right network still starts from it.
    with run_devnet(LEDGER_MS, state_file=state_file) as again:
        async with clients(again) as (admin, _):
            status, body = await admin.rpc("getNetwork")
            assert status == 200 and body["result"]["passphrase"] == PASSPHRASE


@pytest.mark.parametrize("content", [b"not json", b"{}", b'{"passphrase": "Standalone Network ; February 2017"}'])
async def test_unreadable_state_file_is_refused_clearly(tmp_path: Path, content: bytes) -> None:
    state_file = tmp_path / "devnet-state.json"
    state_file.write_bytes(content)
    with pytest.raises(RuntimeError, match="cannot use state file") as refused:
        with run_devnet(LEDGER_MS, state_file=state_file):
            pass
    assert "Traceback" not in str(refused.value)
    assert state_file.read_bytes() == content


async def test_deployed_asset_contract_survives_a_restart(tmp_path: Path) -> None:
    """An issued asset's SAC, deployed by a transaction, is ledger state like any other: it is
    still deployed (same instance, same lastModifiedLedgerSeq) after a restart."""
    state_file = tmp_path / "devnet-state.json"
    with run_devnet(LEDGER_MS, state_file=state_file) as first:
        async with clients(first) as (admin, server):
            issuer = await admin.new_account()
            usdc = Asset("USDC", issuer.public_key)
            await deploy_asset_contract(server, issuer, usdc, PASSPHRASE)
            before = (await server.get_ledger_entries([asset_contract_key(usdc, PASSPHRASE)])).entries
    assert len(before) == 1
    with run_devnet(LEDGER_MS, state_file=state_file) as second:
        async with clients(second) as (admin, server):
            assert await asset_contract_deployed(server, usdc, PASSPHRASE)
            after = (await server.get_ledger_entries([asset_contract_key(usdc, PASSPHRASE)])).entries
            assert [(e.xdr, e.last_modified_ledger) for e in after] == [(e.xdr, e.last_modified_ledger) for e in before]


async def test_state_file_of_another_protocol_is_refused(tmp_path: Path) -> None:
    """The file records the protocol it was written at; devnet models no protocol upgrade, so
    starting on it at another protocol is refused clearly and leaves the file as it was."""
    state_file = tmp_path / "devnet-state.json"
    with run_devnet(LEDGER_MS, "--protocol-version", "26", state_file=state_file) as first:
        async with clients(first) as (admin, _):
            await admin.new_account()
    original = state_file.read_bytes()

    with pytest.raises(RuntimeError, match="written at protocol 26, not 27") as refused:
        with run_devnet(LEDGER_MS, state_file=state_file):
            pass
    assert "protocol_version" in str(refused.value)
    assert "Traceback" not in str(refused.value)
    assert state_file.read_bytes() == original

    with run_devnet(LEDGER_MS, "--protocol-version", "26", state_file=state_file) as again:
        async with clients(again) as (_, server):
            assert (await server.get_network()).protocol_version == 26
