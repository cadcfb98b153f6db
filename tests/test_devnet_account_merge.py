"""AccountMerge on devnet, as stellar-core (protocol 23) applies it: one test per rule.

Every test talks to a real devnet process over HTTP with the unmodified stellar-sdk and
creates its own accounts. Rules that need account states no operation devnet supports can
produce (a sequence number far ahead, a balance near the int64 limit, signers and a high
threshold) run against a second devnet whose state file sets those accounts up.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from stellar_sdk import (
    Account,
    Asset,
    Keypair,
    MuxedAccount,
    SorobanServerAsync,
    TransactionBuilder,
    TransactionEnvelope,
)
from stellar_sdk import xdr as x
from stellar_sdk.exceptions import AccountNotFoundException
from stellar_sdk.soroban_rpc import GetTransactionResponse, GetTransactionStatus, SendTransactionResponse
from stellar_sdk.soroban_rpc import SendTransactionStatus as Sent

from devnet.entries import MAX_INT64, AccountEntry, account_key
from devnet.ledger import Devnet
from tests.devnet_harness import PASSPHRASE, DevnetAdmin, result_code, run_devnet

XLM = 10_000_000
AM = x.AccountMergeResultCode
CHANGE = x.LedgerEntryChangeType
SUCCESS = GetTransactionStatus.SUCCESS
FAILED = GetTransactionStatus.FAILED
NOT_FOUND = GetTransactionStatus.NOT_FOUND


# -- helpers -----------------------------------------------------------------------


async def new_accounts(admin: DevnetAdmin, count: int) -> list[Keypair]:
    return list(await asyncio.gather(*(admin.new_account() for _ in range(count))))


async def account_state(server: SorobanServerAsync, account_id: str) -> tuple[int, int] | None:
    """(balance, sequence number) from getLedgerEntries, None when the account does not exist."""
    key = x.LedgerKey(
        x.LedgerEntryType.ACCOUNT, account=x.LedgerKeyAccount(Keypair.from_public_key(account_id).xdr_account_id())
    )
    entries = (await server.get_ledger_entries([key])).entries
    if not entries:
        return None
    account = x.LedgerEntryData.from_xdr(entries[0].xdr).account
    assert account is not None
    return account.balance.int64, account.seq_num.sequence_number.int64


async def existing(server: SorobanServerAsync, account_id: str) -> tuple[int, int]:
    state = await account_state(server, account_id)
    assert state is not None, f"account {account_id} does not exist"
    return state


def build(
    source: Keypair,
    sequence: int,
    add_ops: Sequence[tuple[str, dict[str, object]]],
    signers: Sequence[Keypair] | None = None,
) -> TransactionEnvelope:
    """A transaction from ``source`` with sequence number ``sequence + 1`` whose operations
    are (TransactionBuilder method suffix, keyword arguments) pairs."""
    builder = TransactionBuilder(Account(source.public_key, sequence), PASSPHRASE, base_fee=100).set_timeout(300)
    for name, kwargs in add_ops:
        getattr(builder, f"append_{name}_op")(**kwargs)
    envelope = builder.build()
    for signer in [source] if signers is None else signers:
        envelope.sign(signer)
    return envelope


def merge(
    source: Keypair, sequence: int, destination: str, signers: Sequence[Keypair] | None = None
) -> TransactionEnvelope:
    return build(source, sequence, [("account_merge", {"destination": destination})], signers)


async def outcome(server: SorobanServerAsync, admin: DevnetAdmin, tx_hash: str) -> GetTransactionResponse:
    """getTransaction once the transaction is in a ledger, closing ledgers meanwhile."""
    for _ in range(12):
        found = await server.get_transaction(tx_hash)
        if found.status != NOT_FOUND:
            return found
        await admin.close_ledger()
    raise AssertionError(f"{tx_hash} not in a ledger")


async def applied(
    server: SorobanServerAsync, admin: DevnetAdmin, envelope: TransactionEnvelope
) -> GetTransactionResponse:
    sent = await server.send_transaction(envelope)
    assert sent.status == Sent.PENDING, sent
    return await outcome(server, admin, sent.hash)


async def succeed(
    server: SorobanServerAsync, admin: DevnetAdmin, envelope: TransactionEnvelope
) -> GetTransactionResponse:
    found = await applied(server, admin, envelope)
    assert found.status == SUCCESS, found
    return found


def rejection(sent: SendTransactionResponse) -> x.TransactionResult:
    assert sent.status == Sent.ERROR and sent.error_result_xdr is not None, sent
    return x.TransactionResult.from_xdr(sent.error_result_xdr)


def tx_result(found: GetTransactionResponse) -> x.TransactionResult:
    assert found.result_xdr is not None
    return x.TransactionResult.from_xdr(found.result_xdr)


def op_results(result: x.TransactionResult) -> list[x.OperationResult]:
    results = result.result.results
    assert results is not None
    return list(results)


def merge_result(result: x.OperationResult) -> x.AccountMergeResult:
    assert result.code == x.OperationResultCode.opINNER and result.tr is not None, result
    merged = result.tr.account_merge_result
    assert merged is not None, result
    return merged


def merge_code(found: GetTransactionResponse) -> x.AccountMergeResultCode:
    (result,) = op_results(tx_result(found))
    return merge_result(result).code


def account_key_xdr(account_id: str) -> x.LedgerKey:
    return x.LedgerKey(
        x.LedgerEntryType.ACCOUNT, account=x.LedgerKeyAccount(Keypair.from_public_key(account_id).xdr_account_id())
    )


def change_trust(account: Keypair, sequence: int, asset: Asset, limit: str | None = None) -> TransactionEnvelope:
    return build(account, sequence, [("change_trust", {"asset": asset, "limit": limit})])


# -- success -----------------------------------------------------------------------


async def test_merge_moves_the_balance_and_deletes_the_account(server: SorobanServerAsync, admin: DevnetAdmin) -> None:
    channel, funder = await new_accounts(admin, 2)
    balance, seq = await existing(server, channel.public_key)
    funder_balance, _ = await existing(server, funder.public_key)

    found = await succeed(server, admin, merge(channel, seq, funder.public_key))

    fee = tx_result(found).fee_charged.int64
    assert fee == 100
    (result,) = op_results(tx_result(found))
    assert merge_result(result).code == AM.ACCOUNT_MERGE_SUCCESS
    source_balance = merge_result(result).source_account_balance
    assert source_balance is not None and source_balance.int64 == balance - fee  # after the fee
    assert await account_state(server, channel.public_key) is None
    with pytest.raises(AccountNotFoundException):
        await server.load_account(channel.public_key)
    assert (await existing(server, funder.public_key))[0] == funder_balance + balance - fee

    # The operation's meta: the destination updated, the merged account removed (by key).
    assert found.result_meta_xdr is not None
    meta = x.TransactionMeta.from_xdr(found.result_meta_xdr).v4
    assert meta is not None
    changes = meta.operations[0].changes.ledger_entry_changes
    removed = [c.removed for c in changes if c.type == CHANGE.LEDGER_ENTRY_REMOVED]
    assert removed == [account_key_xdr(channel.public_key)]
    updated = [c.updated.data.account for c in changes if c.updated is not None]
    assert [(a.account_id, a.balance.int64) for a in updated if a is not None] == [
        (Keypair.from_public_key(funder.public_key).xdr_account_id(), funder_balance + balance - fee)
    ]
    states = [c.state.data.account for c in changes if c.state is not None]
    assert (Keypair.from_public_key(channel.public_key).xdr_account_id(), balance - fee) in [
        (a.account_id, a.balance.int64) for a in states if a is not None
    ]

    # A merged account no longer exists for new transactions either.
    late = await server.send_transaction(merge(channel, seq + 1, funder.public_key))
    assert rejection(late).result.code == x.TransactionResultCode.txNO_ACCOUNT


async def test_merge_with_a_muxed_operation_source_into_a_muxed_destination(
    server: SorobanServerAsync, admin: DevnetAdmin
) -> None:
    """The funding account sends (and pays the fee); the channel is only the operation's source."""
    channel, funder = await new_accounts(admin, 2)
    balance, _ = await existing(server, channel.public_key)
    funder_balance, funder_seq = await existing(server, funder.public_key)
    envelope = build(
        funder,
        funder_seq,
        [
            (
                "account_merge",
                {
                    "destination": MuxedAccount(funder.public_key, 9),
                    "source": MuxedAccount(channel.public_key, 7),
                },
            )
        ],
        signers=[funder, channel],
    )
    found = await succeed(server, admin, envelope)
    (result,) = op_results(tx_result(found))
    moved = merge_result(result).source_account_balance
    assert moved is not None and moved.int64 == balance  # no fee charged to the channel
    assert await account_state(server, channel.public_key) is None
    assert (await existing(server, funder.public_key))[0] == funder_balance - 100 + balance


async def test_merged_account_can_be_created_again(server: SorobanServerAsync, admin: DevnetAdmin) -> None:
    channel, funder = await new_accounts(admin, 2)
    _, seq = await existing(server, channel.public_key)
    await succeed(server, admin, merge(channel, seq, funder.public_key))
    assert await account_state(server, channel.public_key) is None

    _, funder_seq = await existing(server, funder.public_key)
    create = build(
        funder, funder_seq, [("create_account", {"destination": channel.public_key, "starting_balance": "5"})]
    )
    created = await succeed(server, admin, create)
    # A new account, with the starting sequence number of the ledger that created it.
    assert created.ledger is not None
    assert await account_state(server, channel.public_key) == (5 * XLM, created.ledger << 32)
    account = await server.load_account(channel.public_key)
    payment = build(
        channel,
        account.sequence,
        [("payment", {"destination": funder.public_key, "asset": Asset.native(), "amount": "1"})],
    )
    await succeed(server, admin, payment)


# -- failures ----------------------------------------------------------------------


async def test_merge_into_itself_is_malformed(server: SorobanServerAsync, admin: DevnetAdmin) -> None:
    """Rejected at submission (stellar-core's checkValid): txFAILED with the operation's result."""
    channel, funder = await new_accounts(admin, 2)
    state = await existing(server, channel.public_key)
    _, seq = state
    for destination in (channel.public_key, MuxedAccount(channel.public_key, 1).account_muxed):
        assert destination is not None
        rejected = rejection(await server.send_transaction(merge(channel, seq, destination)))
        assert rejected.result.code == x.TransactionResultCode.txFAILED
        (result,) = op_results(rejected)
        assert merge_result(result).code == AM.ACCOUNT_MERGE_MALFORMED
    # As the operation's source, after another operation: the result is the second one.
    _, funder_seq = await existing(server, funder.public_key)
    envelope = build(
        funder,
        funder_seq,
        [
            ("payment", {"destination": channel.public_key, "asset": Asset.native(), "amount": "1"}),
            ("account_merge", {"destination": channel.public_key, "source": channel.public_key}),
        ],
        signers=[funder, channel],
    )
    rejected = rejection(await server.send_transaction(envelope))
    assert rejected.result.code == x.TransactionResultCode.txFAILED
    first, second = op_results(rejected)
    assert first.tr is not None and first.tr.payment_result is not None
    assert first.tr.payment_result.code == x.PaymentResultCode.PAYMENT_SUCCESS
    assert merge_result(second).code == AM.ACCOUNT_MERGE_MALFORMED
    # Nothing was consumed.
    assert await account_state(server, channel.public_key) == state


async def test_merge_into_a_missing_account_fails(server: SorobanServerAsync, admin: DevnetAdmin) -> None:
    (channel,) = await new_accounts(admin, 1)
    missing = Keypair.random().public_key
    balance, seq = await existing(server, channel.public_key)
    found = await applied(server, admin, merge(channel, seq, missing))
    assert found.status == FAILED
    assert merge_code(found) == AM.ACCOUNT_MERGE_NO_ACCOUNT
    assert await account_state(server, channel.public_key) == (balance - 100, seq + 1)
    assert await account_state(server, missing) is None


async def test_merge_of_an_account_with_a_trustline_fails(server: SorobanServerAsync, admin: DevnetAdmin) -> None:
    issuer, channel, funder = await new_accounts(admin, 3)
    usdc = Asset("USDC", issuer.public_key)
    _, seq = await existing(server, channel.public_key)
    await succeed(server, admin, change_trust(channel, seq, usdc))
    balance, _ = await existing(server, channel.public_key)
    found = await applied(server, admin, merge(channel, seq + 1, funder.public_key))
    assert found.status == FAILED
    assert merge_code(found) == AM.ACCOUNT_MERGE_HAS_SUB_ENTRIES
    assert await account_state(server, channel.public_key) == (balance - 100, seq + 2)
    # Without the trustline the same merge succeeds.
    await succeed(server, admin, change_trust(channel, seq + 2, usdc, "0"))
    found = await succeed(server, admin, merge(channel, seq + 3, funder.public_key))
    assert merge_code(found) == AM.ACCOUNT_MERGE_SUCCESS
    assert await account_state(server, channel.public_key) is None


async def test_operation_after_the_merge_of_its_source_fails_the_transaction(
    server: SorobanServerAsync, admin: DevnetAdmin
) -> None:
    """A later operation whose source was merged away fails with opNO_ACCOUNT; the merge is undone."""
    channel, funder = await new_accounts(admin, 2)
    channel_state = await existing(server, channel.public_key)
    funder_balance, funder_seq = await existing(server, funder.public_key)
    envelope = build(
        funder,
        funder_seq,
        [
            ("account_merge", {"destination": funder.public_key, "source": channel.public_key}),
            (
                "payment",
                {
                    "destination": funder.public_key,
                    "asset": Asset.native(),
                    "amount": "1",
                    "source": channel.public_key,
                },
            ),
        ],
        signers=[funder, channel],
    )
    found = await applied(server, admin, envelope)
    assert found.status == FAILED
    merged, paid = op_results(tx_result(found))
    assert merge_result(merged).code == AM.ACCOUNT_MERGE_SUCCESS
    assert paid.code == x.OperationResultCode.opNO_ACCOUNT
    assert await account_state(server, channel.public_key) == channel_state
    assert await account_state(server, funder.public_key) == (funder_balance - 200, funder_seq + 1)


# -- rules that need genesis account states (a devnet started on a state file) ---------


@dataclass
class Genesis:
    url: str
    far: Keypair  # sequence number 1 << 50, far ahead of (ledger << 32)
    full: Keypair  # balance 1 XLM short of the int64 limit
    guarded: Keypair  # thresholds 1/1/1/2 (master, low, medium, high), signer cosigner (weight 1)
    cosigner: Keypair


@pytest.fixture(scope="module")
def genesis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Genesis]:
    path: Path = tmp_path_factory.mktemp("merge-genesis") / "state.json"
    far, full, guarded, cosigner = (Keypair.random() for _ in range(4))
    devnet = Devnet(state_file=path)
    root = devnet.state.entries[account_key(devnet.root.public_key)]
    assert isinstance(root, AccountEntry)
    for entry in (
        AccountEntry(far.public_key, balance=100 * XLM, seq_num=1 << 50),
        AccountEntry(
            guarded.public_key,
            balance=100 * XLM,
            seq_num=1 << 32,
            num_sub_entries=1,
            thresholds=(1, 1, 1, 2),
            signers={cosigner.public_key: 1},
        ),
    ):
        entry.last_modified = 1
        devnet.state.entries[entry.key()] = entry
        root.balance -= entry.balance
    devnet.state.entries[account_key(full.public_key)] = AccountEntry(
        full.public_key, balance=MAX_INT64 - XLM, seq_num=1 << 32, last_modified=1
    )
    devnet.save()
    with run_devnet(250, state_file=path) as process:
        yield Genesis(process.url, far, full, guarded, cosigner)


@asynccontextmanager
async def clients(url: str) -> AsyncIterator[tuple[SorobanServerAsync, DevnetAdmin]]:
    async with aiohttp.ClientSession() as session, SorobanServerAsync(url) as server:
        yield server, DevnetAdmin(url, session)


async def test_merge_with_a_sequence_number_too_far_fails(genesis: Genesis) -> None:
    async with clients(genesis.url) as (server, admin):
        (funder,) = await new_accounts(admin, 1)
        balance, seq = await existing(server, genesis.far.public_key)
        found = await applied(server, admin, merge(genesis.far, seq, funder.public_key))
        assert found.status == FAILED
        assert merge_code(found) == AM.ACCOUNT_MERGE_SEQNUM_TOO_FAR
        assert await account_state(server, genesis.far.public_key) == (balance - 100, seq + 1)


async def test_merge_overflowing_the_destination_fails(genesis: Genesis) -> None:
    async with clients(genesis.url) as (server, admin):
        (channel,) = await new_accounts(admin, 1)
        balance, seq = await existing(server, channel.public_key)
        full_state = await existing(server, genesis.full.public_key)
        found = await applied(server, admin, merge(channel, seq, genesis.full.public_key))
        assert found.status == FAILED
        assert merge_code(found) == AM.ACCOUNT_MERGE_DEST_FULL
        assert await account_state(server, channel.public_key) == (balance - 100, seq + 1)
        assert await account_state(server, genesis.full.public_key) == full_state


async def test_merge_needs_the_high_threshold_and_signers_do_not_block_it(genesis: Genesis) -> None:
    async with clients(genesis.url) as (server, admin):
        (funder,) = await new_accounts(admin, 1)
        guarded = genesis.guarded
        balance, seq = await existing(server, guarded.public_key)
        # The master key alone meets the medium threshold (a payment) but not the high one.
        alone = await server.send_transaction(merge(guarded, seq, funder.public_key))
        assert alone.status == Sent.ERROR and alone.error_result_xdr is not None
        assert result_code(alone.error_result_xdr) == "txBAD_AUTH"
        payment = build(
            guarded, seq, [("payment", {"destination": funder.public_key, "asset": Asset.native(), "amount": "1"})]
        )
        await succeed(server, admin, payment)
        # With the cosigner: merged, its signer (a sub-entry) going with it.
        found = await succeed(server, admin, merge(guarded, seq + 1, funder.public_key, [guarded, genesis.cosigner]))
        (result,) = op_results(tx_result(found))
        moved = merge_result(result).source_account_balance
        assert moved is not None and moved.int64 == balance - 1 * XLM - 200
        assert await account_state(server, guarded.public_key) is None


# -- the state file ----------------------------------------------------------------


async def test_merged_account_stays_deleted_after_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    with run_devnet(100, state_file=path) as first:
        async with clients(first.url) as (server, admin):
            channel, funder = await new_accounts(admin, 2)
            _, seq = await existing(server, channel.public_key)
            await succeed(server, admin, merge(channel, seq, funder.public_key))
            funder_state = await existing(server, funder.public_key)
    with run_devnet(100, state_file=path) as second:
        async with clients(second.url) as (server, admin):
            assert await account_state(server, channel.public_key) is None
            assert await account_state(server, funder.public_key) == funder_state
            # Friendbot creates it anew.
            await admin.fund(channel.public_key)
            assert (await existing(server, channel.public_key))[0] == 10_000 * XLM
