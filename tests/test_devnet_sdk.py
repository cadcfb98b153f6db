"""The unmodified stellar-sdk SorobanServerAsync against devnet, end to end."""

from __future__ import annotations

import pytest
from stellar_sdk import Asset, Keypair, SorobanServerAsync, TransactionBuilder
from stellar_sdk import xdr as x
from stellar_sdk.exceptions import AccountNotFoundException, PrepareTransactionException
from stellar_sdk.soroban_rpc import GetTransactionStatus, SendTransactionStatus

from devnet.asset_contracts import deploy_asset_contract
from tests.devnet_harness import PASSPHRASE, DevnetAdmin, sac_transfer_envelope

XLM = 10_000_000


async def test_network_and_health(server: SorobanServerAsync, devnet) -> None:
    network = await server.get_network()
    assert network.passphrase == PASSPHRASE
    assert network.friendbot_url == f"{devnet.url}/friendbot"
    health = await server.get_health()
    assert health.status == "healthy"
    latest = await server.get_latest_ledger()
    assert latest.sequence >= health.oldest_ledger
    info = await server.get_version_info()
    assert info.protocol_version == network.protocol_version


async def test_friendbot_creates_account_with_real_transaction(server: SorobanServerAsync, admin: DevnetAdmin) -> None:
    keypair = Keypair.random()
    with pytest.raises(AccountNotFoundException):
        await server.load_account(keypair.public_key)
    funded = await admin.fund(keypair.public_key)
    account = await server.load_account(keypair.public_key)
    # The new account's sequence number is ledger << 32, read from the meta's created entry.
    meta = x.TransactionMeta.from_xdr(funded["result_meta_xdr"])
    created = [
        c.created.data.account
        for op in meta.v4.operations
        for c in op.changes.ledger_entry_changes
        if c.type == x.LedgerEntryChangeType.LEDGER_ENTRY_CREATED
        and c.created.data.account is not None
        and c.created.data.account.account_id.account_id.ed25519.uint256 == keypair.raw_public_key()
    ]
    assert created and created[0].seq_num.sequence_number.int64 == account.sequence
    assert account.sequence == funded["ledger"] << 32
    tx = await server.get_transaction(funded["hash"])
    assert tx.status == GetTransactionStatus.SUCCESS


async def test_sac_transfer_end_to_end(server: SorobanServerAsync, admin: DevnetAdmin) -> None:
    alice, bob = await admin.new_account(), await admin.new_account()
    envelope = await sac_transfer_envelope(server, alice, bob.public_key, 25 * XLM)
    sent = await server.send_transaction(envelope)
    assert sent.status == SendTransactionStatus.PENDING, sent
    result = await server.poll_transaction(sent.hash, max_attempts=40)
    assert result.status == GetTransactionStatus.SUCCESS
    bob_account = x.LedgerEntryData.from_xdr(
        (
            await server.get_ledger_entries(
                [x.LedgerKey(x.LedgerEntryType.ACCOUNT, account=x.LedgerKeyAccount(bob.xdr_account_id()))]
            )
        )
        .entries[0]
        .xdr
    ).account
    assert bob_account.balance.int64 == 10_025 * XLM
    tx_result = x.TransactionResult.from_xdr(result.result_xdr)
    alice_account = x.LedgerEntryData.from_xdr(
        (
            await server.get_ledger_entries(
                [x.LedgerKey(x.LedgerEntryType.ACCOUNT, account=x.LedgerKeyAccount(alice.xdr_account_id()))]
            )
        )
        .entries[0]
        .xdr
    ).account
    assert alice_account.balance.int64 == 10_000 * XLM - 25 * XLM - tx_result.fee_charged.int64


async def test_sac_balance_of_contract_and_issued_asset(server: SorobanServerAsync, admin: DevnetAdmin) -> None:
    issuer, holder = await admin.new_account(), await admin.new_account()
    usdc = Asset("USDC", issuer.public_key)
    account = await server.load_account(holder.public_key)
    trust = TransactionBuilder(account, PASSPHRASE, base_fee=100).append_change_trust_op(usdc).set_timeout(60).build()
    trust.sign(holder)
    sent = await server.send_transaction(trust)
    assert (await server.poll_transaction(sent.hash, max_attempts=40)).status == GetTransactionStatus.SUCCESS
    # A payout contract paying in USDC can be deployed before USDC's SAC (it only records the
    # token), but nothing moves through the SAC until somebody deploys it.
    contract = (
        await admin.admin("POST", "payout-contract", {"admin": holder.public_key, "asset": f"USDC:{issuer.public_key}"})
    )["contract_id"]
    with pytest.raises(PrepareTransactionException) as refused:
        await sac_transfer_envelope(server, issuer, holder.public_key, 500 * XLM, usdc)
    assert "Error(Storage, MissingValue)" in str(refused.value.simulate_transaction_response.error)
    assert await deploy_asset_contract(server, holder, usdc, PASSPHRASE) == usdc.contract_id(PASSPHRASE)
    # The issuer mints to the holder through the SAC, then the holder pays the contract.
    mint = await sac_transfer_envelope(server, issuer, holder.public_key, 500 * XLM, usdc)
    sent = await server.send_transaction(mint)
    assert (await server.poll_transaction(sent.hash, max_attempts=40)).status == GetTransactionStatus.SUCCESS
    fund = await sac_transfer_envelope(server, holder, contract, 200 * XLM, usdc)
    sent = await server.send_transaction(fund)
    assert (await server.poll_transaction(sent.hash, max_attempts=40)).status == GetTransactionStatus.SUCCESS
    balance = await server.get_sac_balance(contract, usdc, PASSPHRASE)
    assert balance.balance_entry is not None and balance.balance_entry.amount == 200 * XLM
