"""devnet's transaction queue as stellar-core's: the submission close-time bound, a queue
bounded by the ledger's capacity with fee-based eviction, surge-priced inclusion, and
getFeeStats from the fees charged. Each test fails if its rule is removed.

Two devnets of their own, their accounts funded at genesis through a state file:

- ``bounded``: 5-second ledgers, so the upper-bound close-time offset is 10 s;
- ``small``: a Soroban ledger of 2 transactions and a classic ledger of 2 operations (queues
  of twice that), 3-ledger fee windows, and one ledger an hour: only the tests close ledgers
  (admin endpoint), so what each ledger holds is deterministic. Its transactions carry no
  maxTime (an hour's offset would refuse any).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from stellar_sdk import Account, Asset, Keypair, SorobanServerAsync, TransactionBuilder, TransactionEnvelope, scval
from stellar_sdk import xdr as x
from stellar_sdk.soroban_rpc import GetTransactionStatus, SendTransactionResponse, SendTransactionStatus

from devnet.entries import AccountEntry, account_key
from devnet.ledger import Devnet
from tests.devnet_harness import PASSPHRASE, DevnetAdmin, DevnetProcess, run_devnet

XLM = 10_000_000
NATIVE_SAC = Asset.native().contract_id(PASSPHRASE)
SEQUENCE = 1 << 32
BAN_LEDGERS = 10

PENDING = SendTransactionStatus.PENDING
DUPLICATE = SendTransactionStatus.DUPLICATE
TRY_AGAIN_LATER = SendTransactionStatus.TRY_AGAIN_LATER
ERROR = SendTransactionStatus.ERROR
NOT_FOUND = GetTransactionStatus.NOT_FOUND
SUCCESS = GetTransactionStatus.SUCCESS


@dataclass
class Network:
    process: DevnetProcess
    accounts: list[Keypair]


def genesis(path: Path, count: int) -> list[Keypair]:
    """A state file whose genesis funds ``count`` new accounts with 10,000 XLM each."""
    keypairs = [Keypair.random() for _ in range(count)]
    devnet = Devnet(state_file=path)
    root = devnet.state.entries[account_key(devnet.root.public_key)]
    assert isinstance(root, AccountEntry)
    for keypair in keypairs:
        devnet.state.entries[account_key(keypair.public_key)] = AccountEntry(
            keypair.public_key, balance=10_000 * XLM, seq_num=SEQUENCE, last_modified=1
        )
        root.balance -= 10_000 * XLM
    devnet.save()
    return keypairs


@pytest.fixture(scope="module")
def bounded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    path = tmp_path_factory.mktemp("bounded") / "state.json"
    accounts = genesis(path, 4)
    with run_devnet(5_000, state_file=path) as process:
        yield Network(process, accounts)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    path = tmp_path_factory.mktemp("small") / "state.json"
    accounts = genesis(path, 40)
    options = (
        "--max-tx-set-size",
        "2",
        "--soroban-ledger-max-tx-count",
        "2",
        "--classic-fee-stats-retention-window",
        "3",
        "--soroban-fee-stats-retention-window",
        "3",
    )
    with run_devnet(3_600_000, *options, state_file=path) as process:
        yield Network(process, accounts)


@dataclass
class Clients:
    server: SorobanServerAsync
    admin: DevnetAdmin


@asynccontextmanager
async def _clients(url: str) -> AsyncIterator[Clients]:
    async with aiohttp.ClientSession() as session, SorobanServerAsync(url) as server:
        yield Clients(server, DevnetAdmin(url, session))


@pytest.fixture
async def on_bounded(bounded: Network) -> AsyncIterator[Clients]:
    async with _clients(bounded.process.url) as clients:
        await clients.admin.clear_faults()
        yield clients
        await clients.admin.clear_faults()


@pytest.fixture
async def on_small(small: Network) -> AsyncIterator[Clients]:
    """Clients of the small devnet, whose queue is empty when the test starts."""
    async with _clients(small.process.url) as clients:
        await clients.admin.clear_faults()
        for _ in range(20):
            if (await clients.admin.admin("GET", "stats"))["queue"] == 0:
                break
            await clients.admin.close_ledger()
        else:
            pytest.fail("the queue never drained")
        yield clients


class Accounts:
    """Hands out a module's genesis accounts, each once."""

    def __init__(self, network: Network) -> None:
        self._left = list(network.accounts)

    def take(self, count: int) -> list[Keypair]:
        taken, self._left = self._left[:count], self._left[count:]
        assert len(taken) == count, "the module's genesis accounts ran out"
        return taken


_accounts: dict[str, Accounts] = {}


def accounts(network: Network, count: int) -> list[Keypair]:
    return _accounts.setdefault(network.process.url, Accounts(network)).take(count)


# -- helpers -----------------------------------------------------------------------------


def payment(source: Keypair, destination: str, max_time: int = 0, *, ops: int = 1, bid: int | None = None) -> str:
    """A signed XLM payment (``ops`` operations) with its genesis sequence number; ``bid``
    is its inclusion fee (100 per operation by default)."""
    builder = TransactionBuilder(Account(source.public_key, SEQUENCE), PASSPHRASE, base_fee=100)
    for _ in range(ops):
        builder.append_payment_op(destination, Asset.native(), "1")
    envelope = builder.add_time_bounds(0, max_time).build()
    if bid is not None:
        envelope.transaction.fee = bid
    envelope.sign(source)
    return envelope.to_xdr()


async def transfer(server: SorobanServerAsync, source: Keypair, destination: str, bid: int) -> TransactionEnvelope:
    """A simulated, signed SAC transfer without maxTime whose inclusion fee is ``bid``."""
    tx = (
        TransactionBuilder(Account(source.public_key, SEQUENCE), PASSPHRASE, base_fee=100)
        .append_invoke_contract_function_op(
            NATIVE_SAC,
            "transfer",
            [scval.to_address(source.public_key), scval.to_address(destination), scval.to_int128(XLM)],
        )
        .add_time_bounds(0, 0)
        .build()
    )
    prepared = await server.prepare_transaction(tx)
    assert prepared.transaction.soroban_data is not None
    prepared.transaction.fee = prepared.transaction.soroban_data.resource_fee.int64 + bid
    prepared.sign(source)
    return prepared


async def queue_transfers(
    server: SorobanServerAsync, senders: list[Keypair], payee: Keypair, bids: tuple[int, ...]
) -> list[TransactionEnvelope]:
    """One SAC transfer per bid, each from its own sender, all accepted (PENDING)."""
    envelopes = [await transfer(server, s, payee.public_key, bid) for s, bid in zip(senders, bids, strict=True)]
    for envelope in envelopes:
        assert (await send(server, envelope)).status == PENDING
    return envelopes


def resource_fee(envelope: TransactionEnvelope) -> int:
    assert envelope.transaction.soroban_data is not None
    return envelope.transaction.soroban_data.resource_fee.int64


def error(sent: SendTransactionResponse) -> x.TransactionResult:
    assert sent.status == ERROR, sent
    assert sent.error_result_xdr is not None
    return x.TransactionResult.from_xdr(sent.error_result_xdr)


async def send(server: SorobanServerAsync, envelope: TransactionEnvelope | str) -> SendTransactionResponse:
    return await server.send_transaction(envelope)


@dataclass(frozen=True)
class Charged:
    ledger: int
    fee_charged: int
    inclusion_fee: int  # feeCharged minus the resource fee charged (stellar-rpc's fee stats)


async def charged(server: SorobanServerAsync, tx_hash: str) -> Charged:
    found = await server.get_transaction(tx_hash)
    assert found.status == SUCCESS, found
    assert found.result_xdr is not None and found.result_meta_xdr is not None and found.ledger is not None
    fee = x.TransactionResult.from_xdr(found.result_xdr).fee_charged.int64
    meta = x.TransactionMeta.from_xdr(found.result_meta_xdr)
    assert meta.v4 is not None
    resource = 0
    if meta.v4.soroban_meta is not None:
        fees = meta.v4.soroban_meta.ext.v1
        assert fees is not None
        resource = (
            fees.total_non_refundable_resource_fee_charged.int64 + fees.total_refundable_resource_fee_charged.int64
        )
    return Charged(found.ledger, fee, fee - resource)


async def fee_stats(admin: DevnetAdmin) -> dict[str, Any]:
    status, body = await admin.rpc("getFeeStats")
    assert status == 200 and "result" in body, body
    result: dict[str, Any] = body["result"]
    return result


async def accepted_just_outside_the_bound(
    server: SorobanServerAsync, source: Keypair, destination: str, offset: int
) -> tuple[str, int]:
    """Send a payment whose maxTime is now + ``offset`` (the bound itself): PENDING when
    devnet's clock read the same second as ours. Returns the envelope and its maxTime."""
    for _ in range(5):
        now = int(time.time())
        envelope = payment(source, destination, now + offset)
        sent = await send(server, envelope)
        if sent.status == PENDING:
            return envelope, now + offset
        # Refused only if devnet's clock had moved on to the next second meanwhile.
        assert error(sent).result.code == x.TransactionResultCode.txTOO_LATE, sent
        assert int(time.time()) > now, "txTOO_LATE at the bound itself"
    raise AssertionError("the second ticked during five sends in a row")


# -- the submission bound ------------------------------------------------------------------


async def test_max_time_inside_the_close_time_bound_is_too_late(bounded: Network, on_bounded: Clients) -> None:
    """With 5-second ledgers the next ledger may close up to 10 s after the last one (plus
    the time already passed since): a transaction must be valid until then."""
    server = on_bounded.server
    alice, bob = accounts(bounded, 2)
    now = int(time.time())
    sent = await send(server, payment(alice, bob.public_key, now + 9))
    assert error(sent).result.code == x.TransactionResultCode.txTOO_LATE
    # One second later it is accepted (and applied: its maxTime has not passed).
    envelope, _ = await accepted_just_outside_the_bound(server, alice, bob.public_key, 10)
    tx_hash = TransactionEnvelope.from_xdr(envelope, PASSPHRASE).hash_hex()
    for _ in range(4):
        if (await server.get_transaction(tx_hash)).status != NOT_FOUND:
            break
        await on_bounded.admin.close_ledger()
    assert (await server.get_transaction(tx_hash)).status == SUCCESS


async def test_queued_transaction_crossing_the_bound_is_dropped_at_close(bounded: Network, on_bounded: Clients) -> None:
    """After each close the queue is checked again for the next ledger: a transaction whose
    maxTime is now inside the bound is dropped and banned, before its maxTime has passed."""
    server, admin = on_bounded.server, on_bounded.admin
    alice, bob = accounts(bounded, 2)
    await admin.faults(fee_surge=1_000)  # it bids 100: it stays in the queue
    envelope, max_time = await accepted_just_outside_the_bound(server, alice, bob.public_key, 10)
    # Once the wall clock is past the second it was accepted in, the next close drops it.
    deadline = time.monotonic() + 3
    while int(time.time()) <= max_time - 10:
        assert time.monotonic() < deadline, "the wall clock did not move"
        await asyncio.sleep(0.05)
    await admin.close_ledger()
    again = await send(server, envelope)
    assert again.status == TRY_AGAIN_LATER, again  # dropped, and its hash banned
    # Dropped by the bound, not by its maxTime: the last ledger closed before maxTime.
    assert again.latest_ledger_close_time is not None and int(again.latest_ledger_close_time) <= max_time
    tx_hash = TransactionEnvelope.from_xdr(envelope, PASSPHRASE).hash_hex()
    assert (await server.get_transaction(tx_hash)).status == NOT_FOUND
    assert (await server.load_account(alice.public_key)).sequence == SEQUENCE


# -- the bounded queue ---------------------------------------------------------------------


async def test_full_queue_refuses_a_low_bid_with_the_fee_it_needs_and_bans_it(
    small: Network, on_small: Clients
) -> None:
    server = on_small.server
    payee, *senders = accounts(small, 6)
    await queue_transfers(server, senders[:4], payee, (200, 300, 400, 500))
    assert (await on_small.admin.admin("GET", "stats"))["queue"] == 4  # 2 ledgers of 2 transactions

    low = await transfer(server, senders[4], payee.public_key, 150)
    refused = error(await send(server, low))
    assert refused.result.code == x.TransactionResultCode.txINSUFFICIENT_FEE
    # The least fee that would have evicted the cheapest (200): an inclusion fee of 201.
    assert refused.fee_charged.int64 == resource_fee(low) + 201
    # A refused transaction is banned: the same envelope cannot even be checked again.
    assert (await send(server, low)).status == TRY_AGAIN_LATER


async def test_higher_bid_evicts_the_lowest_which_is_banned(small: Network, on_small: Clients) -> None:
    server = on_small.server
    payee, *senders = accounts(small, 7)
    queued = await queue_transfers(server, senders[:4], payee, (200, 300, 400, 500))
    high = await transfer(server, senders[4], payee.public_key, 600)
    assert (await send(server, high)).status == PENDING
    # The cheapest was evicted and banned: re-sending it is TRY_AGAIN_LATER, not DUPLICATE.
    assert (await send(server, queued[0])).status == TRY_AGAIN_LATER
    assert (await on_small.admin.admin("GET", "stats"))["queue"] == 4
    # Until the next ledger, a newcomer must beat the evicted bid (200) and then the cheapest
    # queued one (300): it needs 301.
    newcomer = await transfer(server, senders[5], payee.public_key, 250)
    refused = error(await send(server, newcomer))
    assert refused.result.code == x.TransactionResultCode.txINSUFFICIENT_FEE
    assert refused.fee_charged.int64 == resource_fee(newcomer) + 301
    for _ in range(3):
        await on_small.admin.close_ledger()
    assert (await server.get_transaction(queued[0].hash_hex())).status == NOT_FOUND
    assert (await server.load_account(senders[0].public_key)).sequence == SEQUENCE


async def test_evictions_raise_the_bar_until_the_next_ledger(small: Network, on_small: Clients) -> None:
    """Classic transactions take room by operations: evicting may take several, cheapest
    first, and until the next ledger every newcomer must beat the best bid evicted."""
    server, admin = on_small.server, on_small.admin
    payee, a, b, c, d = accounts(small, 5)
    low, mid = payment(a, payee.public_key, bid=200), payment(b, payee.public_key, ops=3, bid=900)
    for envelope in (low, mid):  # 4 operations: the queue is full
        assert (await send(server, envelope)).status == PENDING
    # 2 operations at 500 each evict both (200, then 300 per operation).
    assert (await send(server, payment(c, payee.public_key, ops=2, bid=1_000))).status == PENDING
    for evicted in (low, mid):
        assert (await send(server, evicted)).status == TRY_AGAIN_LATER
    # Room for 2 more operations, but 250 per operation does not beat the 300 evicted.
    refused = error(await send(server, payment(d, payee.public_key, bid=250)))
    assert refused.result.code == x.TransactionResultCode.txINSUFFICIENT_FEE
    assert refused.fee_charged.int64 == 301
    # The next ledger resets the bar (the refused envelope itself stays banned).
    await admin.close_ledger()
    assert (await send(server, payment(d, payee.public_key, bid=251))).status == PENDING


async def test_highest_bids_go_first_and_pay_the_lowest_included_bid(small: Network, on_small: Clients) -> None:
    server, admin = on_small.server, on_small.admin
    payee, *senders = accounts(small, 5)
    bids = (300, 600, 400, 500)
    queued = await queue_transfers(server, senders, payee, bids)
    first = await admin.close_ledger()
    second = await admin.close_ledger()
    results = {bid: await charged(server, envelope.hash_hex()) for bid, envelope in zip(bids, queued, strict=True)}
    # 4 queued, 2 fit: 600 and 500 first, surge priced at the lowest of them (500) ...
    assert results[600].ledger == results[500].ledger == first
    assert results[600].inclusion_fee == results[500].inclusion_fee == 500
    # ... then the other 2, which both fit: no surge, the base fee (100).
    assert results[400].ledger == results[300].ledger == second
    assert results[400].inclusion_fee == results[300].inclusion_fee == 100
    for bid, envelope in zip(bids, queued, strict=True):
        declared_inclusion = envelope.transaction.fee - resource_fee(envelope)
        assert declared_inclusion == bid
        assert results[bid].fee_charged < envelope.transaction.fee


async def test_fee_stats_are_the_fees_charged_over_the_window(small: Network, on_small: Clients) -> None:
    server, admin = on_small.server, on_small.admin
    payee, *senders = accounts(small, 7)
    for _ in range(3):  # empty ledgers push older fees out of the 3-ledger windows
        await admin.close_ledger()
    empty = await fee_stats(admin)
    for stats in (empty["sorobanInclusionFee"], empty["inclusionFee"]):
        assert stats["transactionCount"] == "0" and stats["ledgerCount"] == 0 and stats["p90"] == "0", stats

    await queue_transfers(server, senders[:4], payee, (300, 600, 400, 500))
    # Classic: 2 operations bidding 300 each, then 1 bidding 250: 3 operations, 2 fit.
    classic = [payment(senders[4], payee.public_key, ops=2, bid=600), payment(senders[5], payee.public_key, bid=250)]
    for envelope in classic:
        assert (await send(server, envelope)).status == PENDING
    await admin.close_ledger()
    await admin.close_ledger()
    stats = await fee_stats(admin)
    # Soroban inclusion fees charged: 500, 500 (surge priced), then 100, 100.
    assert {k: stats["sorobanInclusionFee"][k] for k in ("min", "mode", "p50", "p90", "max", "transactionCount")} == {
        "min": "100",
        "mode": "100",
        "p50": "100",
        "p90": "500",
        "max": "500",
        "transactionCount": "4",
    }
    assert stats["sorobanInclusionFee"]["ledgerCount"] == 3
    # Classic fees per operation: 600 / 2 (surge priced at 300 per operation), then 100.
    assert {k: stats["inclusionFee"][k] for k in ("min", "p50", "max", "transactionCount")} == {
        "min": "100",
        "p50": "100",
        "max": "300",
        "transactionCount": "2",
    }
    for _ in range(3):
        await admin.close_ledger()
    assert (await fee_stats(admin))["sorobanInclusionFee"]["transactionCount"] == "0"


async def test_transaction_larger_than_the_queue_is_try_again_later(small: Network, on_small: Clients) -> None:
    """No eviction can make room for 5 operations in a classic queue of 4: refused without
    a fee, and banned."""
    server = on_small.server
    alice, bob = accounts(small, 2)
    assert (await send(server, payment(alice, bob.public_key, ops=5))).status == TRY_AGAIN_LATER
    assert (await on_small.admin.admin("GET", "stats"))["queue"] == 0
    # 4 operations fit the queue (and wait there: a ledger holds 2).
    assert (await send(server, payment(alice, bob.public_key, ops=4))).status == PENDING


async def test_fee_stats_survive_a_restart(tmp_path: Path) -> None:
    """stellar-rpc refills its fee windows from the ledgers it stored; devnet from the ledgers
    its state file retains."""
    path = tmp_path / "state.json"
    alice, bob = genesis(path, 2)
    with run_devnet(3_600_000, state_file=path) as process:
        async with _clients(process.url) as clients:
            assert (await send(clients.server, payment(alice, bob.public_key, bid=300))).status == PENDING
            await clients.admin.close_ledger()
            stats = await fee_stats(clients.admin)
    assert stats["inclusionFee"]["transactionCount"] == "1"
    with run_devnet(3_600_000, state_file=path) as process:
        async with _clients(process.url) as clients:
            assert await fee_stats(clients.admin) == stats


async def test_ledger_header_reports_the_max_tx_set_size(small: Network, on_small: Clients) -> None:
    """The classic ledger limit is the header's maxTxSetSize, in getLatestLedger's header and
    in the header of its close meta."""
    latest = await on_small.server.get_latest_ledger()
    header = x.LedgerHeaderHistoryEntry.from_xdr(latest.header_xdr).header
    meta = x.LedgerCloseMeta.from_xdr(latest.metadata_xdr)
    assert meta.v2 is not None
    assert header.max_tx_set_size.uint32 == meta.v2.ledger_header.header.max_tx_set_size.uint32 == 2
