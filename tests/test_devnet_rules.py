"""devnet applies stellar-core's rules: one test per rule, each failing if the rule is removed.

Every test talks to a real devnet process over HTTP with the unmodified stellar-sdk and
creates its own accounts. Ledgers are advanced with the admin ``close-ledger`` endpoint
(the 250 ms clock keeps closing ledgers too), so assertions about ledger numbers use the
``latestLedger`` that devnet reports in the same response.

Thresholds and extra signers cannot be set through devnet (SetOptions is unsupported);
the threshold tests run against a second devnet whose state file gives accounts signers
and thresholds (a genesis configuration, the only way devnet offers).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from stellar_sdk import (
    Account,
    Asset,
    Keypair,
    Network,
    SorobanServerAsync,
    TransactionBuilder,
    TransactionEnvelope,
    scval,
)
from stellar_sdk import xdr as x
from stellar_sdk.auth import authorization_payload_hash, authorize_entry
from stellar_sdk.soroban_rpc import (
    AuthMode,
    GetTransactionResponse,
    GetTransactionStatus,
    SendTransactionResponse,
    SendTransactionStatus,
)

from devnet.asset_contracts import deploy_asset_contract
from devnet.entries import AccountEntry, ContractBalanceEntry, account_key
from devnet.fees import MIN_PERSISTENT_TTL, NewEntryRent, events_fee, events_size, non_refundable_fee, rent_fee
from devnet.host import entry_size
from devnet.ledger import Devnet
from tests.devnet_harness import PASSPHRASE, DevnetAdmin, DevnetProcess, result_code, run_devnet, sac_transfer_envelope

XLM = 10_000_000
NATIVE_SAC = Asset.native().contract_id(PASSPHRASE)
IHF = x.InvokeHostFunctionResultCode
PAY = x.PaymentResultCode
SURGE_FEE = 1_000
QUEUE_LEDGERS = 4
BAN_LEDGERS = 10

PENDING = SendTransactionStatus.PENDING
DUPLICATE = SendTransactionStatus.DUPLICATE
TRY_AGAIN_LATER = SendTransactionStatus.TRY_AGAIN_LATER
ERROR = SendTransactionStatus.ERROR
NOT_FOUND = GetTransactionStatus.NOT_FOUND
SUCCESS = GetTransactionStatus.SUCCESS
FAILED = GetTransactionStatus.FAILED


# -- helpers -----------------------------------------------------------------------


async def new_accounts(admin: DevnetAdmin, count: int) -> list[Keypair]:
    """Fresh friendbot-funded accounts (funded together, in one friendbot transaction)."""
    return list(await asyncio.gather(*(admin.new_account() for _ in range(count))))


async def latest(server: SorobanServerAsync) -> int:
    return (await server.get_latest_ledger()).sequence


async def advance_to(server: SorobanServerAsync, admin: DevnetAdmin, ledger: int) -> None:
    """Close ledgers until the latest closed ledger is at least ``ledger``."""
    for _ in range(100):
        if await latest(server) >= ledger:
            return
        await admin.close_ledger()
    raise AssertionError(f"ledger {ledger} never closed")


async def send(server: SorobanServerAsync, envelope: TransactionEnvelope) -> SendTransactionResponse:
    return await server.send_transaction(envelope)


def error_code(sent: SendTransactionResponse) -> str:
    assert sent.status == ERROR, sent
    assert sent.error_result_xdr is not None
    return result_code(sent.error_result_xdr)


async def outcome(
    server: SorobanServerAsync, admin: DevnetAdmin, tx_hash: str, ledgers: int = 6
) -> GetTransactionResponse:
    """getTransaction once the transaction is in a ledger, closing ledgers meanwhile;
    fails if it is still NOT_FOUND ``ledgers`` ledgers later."""
    start = await latest(server)
    while True:
        found = await server.get_transaction(tx_hash)
        if found.status != NOT_FOUND:
            return found
        if found.latest_ledger >= start + ledgers:
            raise AssertionError(f"{tx_hash} not in a ledger after {ledgers} ledgers")
        await admin.close_ledger()


async def applied(
    server: SorobanServerAsync, admin: DevnetAdmin, envelope: TransactionEnvelope
) -> GetTransactionResponse:
    """Send and wait for the transaction's ledger; it must have been accepted."""
    sent = await send(server, envelope)
    assert sent.status == PENDING, sent
    return await outcome(server, admin, sent.hash)


async def succeed(
    server: SorobanServerAsync, admin: DevnetAdmin, envelope: TransactionEnvelope
) -> GetTransactionResponse:
    result = await applied(server, admin, envelope)
    assert result.status == SUCCESS, result
    return result


async def account_state(server: SorobanServerAsync, account_id: str) -> tuple[int, int]:
    """(balance, sequence number) of an account, from getLedgerEntries."""
    key = x.LedgerKey(
        x.LedgerEntryType.ACCOUNT, account=x.LedgerKeyAccount(Keypair.from_public_key(account_id).xdr_account_id())
    )
    entries = (await server.get_ledger_entries([key])).entries
    assert entries, f"account {account_id} does not exist"
    account = x.LedgerEntryData.from_xdr(entries[0].xdr).account
    assert account is not None
    return account.balance.int64, account.seq_num.sequence_number.int64


async def has_trustline(server: SorobanServerAsync, account_id: str, asset: Asset) -> bool:
    key = x.LedgerKey(
        x.LedgerEntryType.TRUSTLINE,
        trust_line=x.LedgerKeyTrustLine(
            Keypair.from_public_key(account_id).xdr_account_id(), asset.to_trust_line_asset_xdr_object()
        ),
    )
    return bool((await server.get_ledger_entries([key])).entries)


async def native_sac_balance(server: SorobanServerAsync, contract_id: str) -> int:
    found = await server.get_sac_balance(contract_id, Asset.native(), PASSPHRASE)
    return found.balance_entry.amount if found.balance_entry is not None else 0


def tx_result(found: GetTransactionResponse) -> x.TransactionResult:
    assert found.result_xdr is not None
    return x.TransactionResult.from_xdr(found.result_xdr)


def fee_charged(found: GetTransactionResponse) -> int:
    return tx_result(found).fee_charged.int64


def failed_soroban_fee(envelope: TransactionEnvelope) -> int:
    """What a failed Soroban transaction is charged: the inclusion fee at the base fee (100)
    and the non-refundable part of its resource fee; the whole refundable part comes back."""
    data = soroban_data(envelope)
    inclusion = envelope.transaction.fee - data.resource_fee.int64
    return min(inclusion, 100) + non_refundable_fee(data.resources)


def op_result(found: GetTransactionResponse) -> x.OperationResultTr:
    results = tx_result(found).result.results
    assert results is not None and results[0].tr is not None
    return results[0].tr


def host_function_code(found: GetTransactionResponse) -> x.InvokeHostFunctionResultCode:
    result = op_result(found).invoke_host_function_result
    assert result is not None
    return result.code


def payment_code(found: GetTransactionResponse) -> x.PaymentResultCode:
    result = op_result(found).payment_result
    assert result is not None
    return result.code


def payment(
    source: Keypair,
    sequence: int,
    destination: str,
    amount: str = "1",
    *,
    asset: Asset | None = None,
    base_fee: int = 100,
    memo: str | None = None,
    passphrase: str = PASSPHRASE,
    signers: Sequence[Keypair] | None = None,
) -> TransactionEnvelope:
    """A classic Payment whose sequence number is ``sequence + 1``, signed by ``signers``
    (the source by default)."""
    builder = TransactionBuilder(Account(source.public_key, sequence), passphrase, base_fee=base_fee)
    builder.append_payment_op(destination, asset or Asset.native(), amount).set_timeout(300)
    if memo is not None:
        builder.add_text_memo(memo)
    envelope = builder.build()
    for signer in [source] if signers is None else signers:
        envelope.sign(signer)
    return envelope


async def sequence_of(server: SorobanServerAsync, keypair: Keypair) -> int:
    return (await server.load_account(keypair.public_key)).sequence


def resign(envelope: TransactionEnvelope, *signers: Keypair) -> TransactionEnvelope:
    envelope.signatures = []
    for signer in signers:
        envelope.sign(signer)
    return envelope


def soroban_data(envelope: TransactionEnvelope) -> x.SorobanTransactionData:
    data = envelope.transaction.soroban_data
    assert data is not None
    return data


def auth_entries(envelope: TransactionEnvelope) -> list[x.SorobanAuthorizationEntry]:
    return list(envelope.transaction.operations[0].auth)  # type: ignore[attr-defined]


def set_auth(envelope: TransactionEnvelope, entries: list[x.SorobanAuthorizationEntry]) -> None:
    envelope.transaction.operations[0].auth = entries  # type: ignore[attr-defined]


def is_address_credentials(entry: x.SorobanAuthorizationEntry) -> bool:
    return entry.credentials.type in (
        x.SorobanCredentialsType.SOROBAN_CREDENTIALS_ADDRESS,
        x.SorobanCredentialsType.SOROBAN_CREDENTIALS_ADDRESS_V2,
    )


def sign_address_entries(
    envelope: TransactionEnvelope, signer: Keypair, valid_until: int
) -> list[x.SorobanAuthorizationEntry]:
    """Sign every address-credential auth entry of the invocation with ``signer``."""
    signed = [
        authorize_entry(entry, signer, valid_until, PASSPHRASE) if is_address_credentials(entry) else entry
        for entry in auth_entries(envelope)
    ]
    set_auth(envelope, signed)
    return signed


async def invoke_envelope(
    server: SorobanServerAsync,
    source: Keypair,
    contract_id: str,
    function: str,
    args: list[x.SCVal],
    *,
    use_upgraded_auth: bool = True,
) -> TransactionEnvelope:
    """A prepared (simulated), unsigned contract invocation with ``source`` as transaction source."""
    account = await server.load_account(source.public_key)
    tx = (
        TransactionBuilder(account, PASSPHRASE, base_fee=100)
        .append_invoke_contract_function_op(contract_id, function, args)
        .set_timeout(300)
        .build()
    )
    return await server.prepare_transaction(tx, use_upgraded_auth=use_upgraded_auth)


def transfer_args(sender: str, receiver: str, amount: int) -> list[x.SCVal]:
    return [scval.to_address(sender), scval.to_address(receiver), scval.to_int128(amount)]


@asynccontextmanager
async def fee_surge(admin: DevnetAdmin, fee: int = SURGE_FEE) -> AsyncIterator[None]:
    """Ledgers include only transactions bidding ``fee`` per operation while inside."""
    await admin.faults(fee_surge=fee)
    try:
        yield
    finally:
        await admin.clear_faults()


# -- submission: sequence numbers --------------------------------------------------


async def test_bad_seq_too_high_and_too_low(server: SorobanServerAsync, admin: DevnetAdmin) -> None:
    alice, bob = await new_accounts(admin, 2)
    seq = await sequence_of(server, alice)
    too_high = await send(server, payment(alice, seq + 1, bob.public_key))  # seq + 2
    assert error_code(too_high) == "txBAD_SEQ"
    too_low = await send(server, payment(alice, seq - 1, bob.public_key))  # seq, already used
    assert error_code(too_low) == "txBAD_SEQ"
    # Nothing was consumed; the next sequence number is still usable.
    assert (await account_state(server, alice.public_key))[1] == seq
    await succeed(server, admin, payment(alice, seq, bob.public_key))


# -- submission: signatures --------------------------------------------------------


async def test_bad_auth_signature_for_another_network(server: SorobanServerAsync, admin: DevnetAdmin) -> None:
    alice, bob = await new_accounts(admin, 2)
    seq = await sequence_of(server, alice)
    envelope = payment(alice, seq, bob.public_key, passphrase=Network.TESTNET_NETWORK_PASSPHRASE)
    assert error_code(await send(server, envelope)) == "txBAD_AUTH"
    await succeed(server, admin, payment(alice, seq, bob.public_key))


async def test_bad_auth_missing_or_foreign_signature(server: SorobanServerAsync, admin: DevnetAdmin) -> None:
    alice, bob = await new_accounts(admin, 2)
    seq = await sequence_of(server, alice)
    assert error_code(await send(server, payment(alice, seq, bob.public_key, signers=[]))) == "txBAD_AUTH"
    assert error_code(await send(server, payment(alice, seq, bob.public_key, signers=[bob]))) == "txBAD_AUTH"
    assert (
        error_code(await send(server, payment(alice, seq, bob.public_key, signers=[alice, bob]))) == "txBAD_AUTH_EXTRA"
    )
    assert (await account_state(server, alice.public_key))[1] == seq


async def test_bad_auth_operation_source_did_not_sign(server: SorobanServerAsync, admin: DevnetAdmin) -> None:
    """Each operation's source must meet its (medium) threshold, not only the transaction's."""
    alice, mallory_victim, carol = await new_accounts(admin, 3)
    victim_balance, _ = await account_state(server, mallory_victim.public_key)
    seq = await sequence_of(server, alice)

    def two_payments(*signers: Keypair) -> TransactionEnvelope:
        envelope = (
            TransactionBuilder(Account(alice.public_key, seq), PASSPHRASE, base_fee=100)
            .append_payment_op(carol.public_key, Asset.native(), "1")
            .append_payment_op(carol.public_key, Asset.native(), "500", source=mallory_victim.public_key)
            .set_timeout(300)
            .build()
        )
        return resign(envelope, *signers)

    assert error_code(await send(server, two_payments(alice))) == "txBAD_AUTH"
    assert (await account_state(server, mallory_victim.public_key))[0] == victim_balance
    await succeed(server, admin, two_payments(alice, mallory_victim))
    assert (await account_state(server, mallory_victim.public_key))[0] == victim_balance - 500 * XLM


# -- thresholds and signers (a devnet whose state file configures them) -----------------


@dataclass
class Multisig:
    process: DevnetProcess
    medium2: Keypair  # master weight 1, thresholds low 1 / medium 2 / high 2, signer cosigner (1)
    cosigner: Keypair
    no_master: Keypair  # master weight 0, thresholds 1/1/1, signer delegate (1)
    delegate: Keypair


@pytest.fixture(scope="module")
def multisig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Multisig]:
    path: Path = tmp_path_factory.mktemp("multisig") / "state.json"
    medium2, cosigner, no_master, delegate = (Keypair.random() for _ in range(4))
    genesis = Devnet(state_file=path)
    root = genesis.state.entries[account_key(genesis.root.public_key)]
    assert isinstance(root, AccountEntry)
    for account, thresholds, signer in ((medium2, (1, 1, 2, 2), cosigner), (no_master, (0, 1, 1, 1), delegate)):
        genesis.state.entries[account_key(account.public_key)] = AccountEntry(
            account.public_key,
            balance=10_000 * XLM,
            seq_num=1 << 32,
            num_sub_entries=1,
            thresholds=thresholds,
            signers={signer.public_key: 1},
            last_modified=1,
        )
        root.balance -= 10_000 * XLM
    genesis.save()
    with run_devnet(250, state_file=path) as process:
        yield Multisig(process, medium2, cosigner, no_master, delegate)


def multisig_signature(signers: Sequence[Keypair]) -> Callable[[x.HashIDPreimage], x.SCVal]:
    """A Soroban account signature by several keys: Vec<{public_key, signature}> sorted by key."""

    def sign(preimage: x.HashIDPreimage) -> x.SCVal:
        payload = authorization_payload_hash(preimage)
        return scval.to_vec(
            [
                scval.to_map(
                    {
                        scval.to_symbol("public_key"): scval.to_bytes(kp.raw_public_key()),
                        scval.to_symbol("signature"): scval.to_bytes(kp.sign(payload)),
                    }
                )
                for kp in sorted(signers, key=lambda kp: kp.raw_public_key())
            ]
        )

    return sign


@asynccontextmanager
async def clients(url: str) -> AsyncIterator[tuple[SorobanServerAsync, DevnetAdmin]]:
    async with aiohttp.ClientSession() as session, SorobanServerAsync(url) as server:
        yield server, DevnetAdmin(url, session)


async def test_signatures_below_thresholds_are_bad_auth(multisig: Multisig) -> None:
    m = multisig
    async with clients(m.process.url) as (server, admin):
        (payee,) = await new_accounts(admin, 1)
        # Medium threshold 2: neither the master key (weight 1) nor the cosigner (1) alone.
        seq = await sequence_of(server, m.medium2)
        for signers in ([m.medium2], [m.cosigner]):
            sent = await send(server, payment(m.medium2, seq, payee.public_key, signers=signers))
            assert error_code(sent) == "txBAD_AUTH"
        await succeed(server, admin, payment(m.medium2, seq, payee.public_key, signers=[m.medium2, m.cosigner]))
        # Master weight 0: the account's own key no longer signs for it; its signer does.
        seq = await sequence_of(server, m.no_master)
        assert error_code(await send(server, payment(m.no_master, seq, payee.public_key))) == "txBAD_AUTH"
        await succeed(server, admin, payment(m.no_master, seq, payee.public_key, signers=[m.delegate]))
        # As transaction source only (fee and sequence number) the low threshold (1) applies.
        seq = await sequence_of(server, m.medium2)
        envelope = (
            TransactionBuilder(Account(m.medium2.public_key, seq), PASSPHRASE, base_fee=100)
            .append_payment_op(m.medium2.public_key, Asset.native(), "1", source=payee.public_key)
            .set_timeout(300)
            .build()
        )
        await succeed(server, admin, resign(envelope, m.medium2, payee))


async def test_soroban_auth_below_medium_threshold_fails(multisig: Multisig) -> None:
    m = multisig
    async with clients(m.process.url) as (server, admin):
        relayer, payee = await new_accounts(admin, 2)
        args = transfer_args(m.medium2.public_key, payee.public_key, 5 * XLM)
        balance, _ = await account_state(server, m.medium2.public_key)
        valid_until = await latest(server) + 100

        envelope = await invoke_envelope(server, relayer, NATIVE_SAC, "transfer", args)
        (entry,) = auth_entries(envelope)
        assert is_address_credentials(entry)
        set_auth(envelope, [authorize_entry(entry, m.medium2, valid_until, PASSPHRASE)])
        assert (await server.simulate_transaction(envelope, auth_mode=AuthMode.ENFORCE)).error is not None
        found = await applied(server, admin, resign(envelope, relayer))
        assert found.status == FAILED
        assert host_function_code(found) == IHF.INVOKE_HOST_FUNCTION_TRAPPED
        assert (await account_state(server, m.medium2.public_key))[0] == balance

        envelope = await invoke_envelope(server, relayer, NATIVE_SAC, "transfer", args)
        (entry,) = auth_entries(envelope)
        both = multisig_signature([m.medium2, m.cosigner])
        set_auth(envelope, [authorize_entry(entry, both, valid_until, PASSPHRASE)])
        assert (await server.simulate_transaction(envelope, auth_mode=AuthMode.ENFORCE)).error is None
        await succeed(server, admin, resign(envelope, relayer))
        assert (await account_state(server, m.medium2.public_key))[0] == balance - 5 * XLM


# -- submission: time and ledger bounds --------------------------------------------


async def test_time_bounds_too_early_and_too_late(server: SorobanServerAsync, admin: DevnetAdmin) -> None:
    alice, bob = await new_accounts(admin, 2)
    seq = await sequence_of(server, alice)
    now = int(time.time())

    def bounded(min_time: int, max_time: int) -> TransactionEnvelope:
        envelope = (
            TransactionBuilder(Account(alice.public_key, seq), PASSPHRASE, base_fee=100)
            .append_payment_op(bob.public_key, Asset.native(), "1")
            .add_time_bounds(min_time, max_time)
            .build()
        )
        return resign(envelope, alice)

    assert error_code(await send(server, bounded(now + 3600, 0))) == "txTOO_EARLY"
    assert error_code(await send(server, bounded(now + 3600, now + 7200))) == "txTOO_EARLY"
    assert error_code(await send(server, bounded(0, now - 60))) == "txTOO_LATE"
    assert error_code(await send(server, bounded(now - 7200, now - 3600))) == "txTOO_LATE"
    await succeed(server, admin, bounded(now - 60, now + 300))


async def test_ledger_bounds_too_early_and_too_late(server: SorobanServerAsync, admin: DevnetAdmin) -> None:
    alice, bob = await new_accounts(admin, 2)
    seq = await sequence_of(server, alice)
    current = await latest(server)

    def bounded(min_ledger: int, max_ledger: int) -> TransactionEnvelope:
        envelope = (
            TransactionBuilder(Account(alice.public_key, seq), PASSPHRASE, base_fee=100)
            .append_payment_op(bob.public_key, Asset.native(), "1")
            .set_ledger_bounds(min_ledger, max_ledger)
            .set_timeout(300)
            .build()
        )
        return resign(envelope, alice)

    assert error_code(await send(server, bounded(current + 50, 0))) == "txTOO_EARLY"
    # maxLedger is exclusive: the next ledger (current + 1 or later) may not be it.
    assert error_code(await send(server, bounded(0, current + 1))) == "txTOO_LATE"
    assert error_code(await send(server, bounded(0, current))) == "txTOO_LATE"
    await succeed(server, admin, bounded(current + 1, current + 50))


async def test_transaction_past_its_max_ledger_is_never_included(
    server: SorobanServerAsync, admin: DevnetAdmin
) -> None:
    """A queued transaction whose bound passes while it waits is dropped, not applied late."""
    for _ in range(3):
        alice, bob = await new_accounts(admin, 2)
        seq = await sequence_of(server, alice)
        async with fee_surge(admin):
            max_ledger = await latest(server) + 3
            envelope = (
                TransactionBuilder(Account(alice.public_key, seq), PASSPHRASE, base_fee=100)
                .append_payment_op(bob.public_key, Asset.native(), "1")
                .set_ledger_bounds(0, max_ledger)
                .set_timeout(300)
                .build()
            )
            sent = await send(server, resign(envelope, alice))
            assert sent.status == PENDING, sent
            # Wait (under the surge) until the next ledger would be max_ledger.
            await advance_to(server, admin, max_ledger - 1)
        if await latest(server) != max_ledger - 1:
            continue  # the clock closed a ledger before the surge ended; try again
        await advance_to(server, admin, max_ledger + 1)
        assert (await server.get_transaction(sent.hash)).status == NOT_FOUND
        assert (await account_state(server, alice.public_key))[1] == seq
        assert (await send(server, envelope)).status == TRY_AGAIN_LATER  # dropped as invalid, and banned
        return
    pytest.fail("the ledger clock raced the test three times")


# -- submission: fees ----------------------------------------------------------------


async def test_insufficient_fee_below_100_stroops_per_operation(server: SorobanServerAsync, admin: DevnetAdmin) -> None:
    alice, bob = await new_accounts(admin, 2)
    seq = await sequence_of(server, alice)
    assert error_code(await send(server, payment(alice, seq, bob.public_key, base_fee=99))) == "txINSUFFICIENT_FEE"

    two_ops = (
        TransactionBuilder(Account(alice.public_key, seq), PASSPHRASE, base_fee=100)
        .append_payment_op(bob.public_key, Asset.native(), "1")
        .append_payment_op(bob.public_key, Asset.native(), "1")
        .set_timeout(300)
        .build()
    )
    two_ops.transaction.fee = 199
    assert error_code(await send(server, resign(two_ops, alice))) == "txINSUFFICIENT_FEE"

    # Soroban: the inclusion fee (fee - resourceFee) must be at least 100 too.
    prepared = await sac_transfer_envelope(server, alice, bob.public_key, XLM, sign=False)
    prepared.transaction.fee -= 1
    assert error_code(await send(server, resign(prepared, alice))) == "txINSUFFICIENT_FEE"
    assert (await account_state(server, alice.public_key))[1] == seq
    prepared.transaction.fee += 1
    await succeed(server, admin, resign(prepared, alice))


async def test_resource_fee_below_non_refundable_is_soroban_invalid(
    server: SorobanServerAsync, admin: DevnetAdmin
) -> None:
    """The declared resource fee must cover the non-refundable fee of the declared resources
    at submission; the refundable part (events, rent) is only known at apply."""
    alice, bob = await new_accounts(admin, 2)
    prepared = await sac_transfer_envelope(server, alice, bob.public_key, XLM, sign=False)
    data = soroban_data(prepared)
    simulated_fee = data.resource_fee.int64
    non_refundable = non_refundable_fee(data.resources)
    assert non_refundable < simulated_fee  # simulation adds the refundable fee the transfer's event costs
    # Same total fee: only the declared resource fee is below what the resources cost.
    data.resource_fee = x.Int64(non_refundable - 1)
    assert error_code(await send(server, resign(prepared, alice))) == "txSOROBAN_INVALID"
    # Exactly the non-refundable fee: accepted, but the transfer event cannot be paid for.
    balance, seq = await account_state(server, alice.public_key)
    data.resource_fee = x.Int64(non_refundable)
    found = await applied(server, admin, resign(prepared, alice))
    assert found.status == FAILED
    assert host_function_code(found) == IHF.INVOKE_HOST_FUNCTION_INSUFFICIENT_REFUNDABLE_FEE
    assert fee_charged(found) == failed_soroban_fee(prepared)
    assert await account_state(server, alice.public_key) == (balance - fee_charged(found), seq + 1)
    prepared = await sac_transfer_envelope(server, alice, bob.public_key, XLM, sign=False)
    await succeed(server, admin, resign(prepared, alice))


@pytest.mark.parametrize("resource", ["instructions", "disk_read_bytes", "write_bytes", "footprint"])
async def test_declared_resources_below_use_fail_at_apply(
    server: SorobanServerAsync, admin: DevnetAdmin, resource: str
) -> None:
    alice, bob = await new_accounts(admin, 2)
    balance, seq = await account_state(server, alice.public_key)
    bob_balance, _ = await account_state(server, bob.public_key)
    prepared = await sac_transfer_envelope(server, alice, bob.public_key, 10 * XLM, sign=False)
    resources = soroban_data(prepared).resources
    if resource == "footprint":
        assert resources.footprint.read_write
        resources.footprint.read_write = resources.footprint.read_write[:-1]
    else:
        declared: x.Uint32 = getattr(resources, resource)
        setattr(resources, resource, x.Uint32(declared.uint32 - 1))
    found = await applied(server, admin, resign(prepared, alice))
    assert found.status == FAILED
    assert host_function_code(found) == IHF.INVOKE_HOST_FUNCTION_RESOURCE_LIMIT_EXCEEDED
    assert fee_charged(found) == failed_soroban_fee(prepared)
    assert await account_state(server, alice.public_key) == (balance - fee_charged(found), seq + 1)
    assert (await account_state(server, bob.public_key))[0] == bob_balance


# -- the transaction queue -------------------------------------------------------------


async def test_one_pending_transaction_per_source_account(server: SorobanServerAsync, admin: DevnetAdmin) -> None:
    alice, bob, carol = await new_accounts(admin, 3)
    seq = await sequence_of(server, alice)
    carol_seq = await sequence_of(server, carol)
    first = payment(alice, seq, bob.public_key, "1")
    async with fee_surge(admin):
        assert (await send(server, first)).status == PENDING
        for other in (
            payment(alice, seq, bob.public_key, "2"),  # same sequence number, other contents
            payment(alice, seq + 1, bob.public_key, "3"),  # the next sequence number
            payment(alice, seq, bob.public_key, "4", base_fee=10 * SURGE_FEE),  # a higher fee
        ):
            assert (await send(server, other)).status == TRY_AGAIN_LATER
        # Older than the queued one: txBAD_SEQ (stellar-core TransactionQueue::canAdd).
        assert error_code(await send(server, payment(alice, seq - 1, bob.public_key))) == "txBAD_SEQ"
        # Other accounts are not held back.
        assert (await send(server, payment(carol, carol_seq, bob.public_key, base_fee=SURGE_FEE))).status == PENDING
    found = await outcome(server, admin, first.hash_hex())
    assert found.status == SUCCESS
    assert (await account_state(server, alice.public_key))[1] == seq + 1


async def test_same_envelope_resent_while_pending_is_duplicate(server: SorobanServerAsync, admin: DevnetAdmin) -> None:
    alice, bob = await new_accounts(admin, 2)
    envelope = payment(alice, await sequence_of(server, alice), bob.public_key)
    async with fee_surge(admin):
        sent = await send(server, envelope)
        assert sent.status == PENDING
        for _ in range(2):
            again = await send(server, envelope)
            assert (again.status, again.hash) == (DUPLICATE, sent.hash)
    assert (await outcome(server, admin, sent.hash)).status == SUCCESS


async def test_transaction_not_included_in_4_ledgers_is_dropped_and_banned(
    server: SorobanServerAsync, admin: DevnetAdmin
) -> None:
    alice, bob = await new_accounts(admin, 2)
    seq = await sequence_of(server, alice)
    envelope = payment(alice, seq, bob.public_key)  # 100 stroops: below the surge price
    async with fee_surge(admin):
        sent = await send(server, envelope)
        assert sent.status == PENDING
        dropped_at = sent.latest_ledger + QUEUE_LEDGERS
        for _ in range(QUEUE_LEDGERS + 2):
            again = await send(server, envelope)
            if again.latest_ledger < dropped_at:
                assert again.status == DUPLICATE, again  # still queued
                await admin.close_ledger()
                continue
            assert again.status == TRY_AGAIN_LATER, again  # dropped, and its hash banned
            break
        else:
            pytest.fail("never dropped")
        assert (await server.get_transaction(sent.hash)).status == NOT_FOUND
    # The surge is over; the dropped transaction is not applied, and stays banned for 10 ledgers.
    banned_until = dropped_at + BAN_LEDGERS
    for _ in range(BAN_LEDGERS + 2):
        again = await send(server, envelope)
        if again.latest_ledger < banned_until:
            assert again.status == TRY_AGAIN_LATER, again
            assert (await server.get_transaction(sent.hash)).status == NOT_FOUND
            await admin.close_ledger()
            continue
        assert again.status == PENDING, again  # the ban is over and the sequence number still fits
        break
    else:
        pytest.fail("the ban never ended")
    assert (await outcome(server, admin, sent.hash)).status == SUCCESS


async def test_resent_applied_transaction_is_try_again_later_then_bad_seq(
    server: SorobanServerAsync, admin: DevnetAdmin
) -> None:
    alice, bob = await new_accounts(admin, 2)
    seq = await sequence_of(server, alice)
    envelope = payment(alice, seq, bob.public_key)
    found = await succeed(server, admin, envelope)
    assert found.ledger is not None
    for _ in range(BAN_LEDGERS + 3):
        again = await send(server, envelope)
        assert again.status != DUPLICATE
        if again.latest_ledger < found.ledger + BAN_LEDGERS:
            assert again.status == TRY_AGAIN_LATER, again
            await admin.close_ledger()
            continue
        assert error_code(again) == "txBAD_SEQ"
        break
    else:
        pytest.fail("the ban never ended")
    assert (await account_state(server, alice.public_key))[1] == seq + 1


# -- apply -----------------------------------------------------------------------------


def soroban_meta(found: GetTransactionResponse) -> tuple[x.SorobanTransactionMetaExtV1, int]:
    """The resource fee breakdown of a Soroban transaction's meta, and the bytes of contract
    events and return value it emitted."""
    assert found.result_meta_xdr is not None
    meta = x.TransactionMeta.from_xdr(found.result_meta_xdr)
    assert meta.v4 is not None and meta.v4.soroban_meta is not None
    fees = meta.v4.soroban_meta.ext.v1
    assert fees is not None
    events = [event for op in meta.v4.operations for event in op.events]
    return fees, events_size(events, meta.v4.soroban_meta.return_value)


async def test_unused_refundable_fee_is_refunded(server: SorobanServerAsync, admin: DevnetAdmin) -> None:
    """feeCharged = inclusion fee + non-refundable fee + the refundable fee consumed (events,
    rent): simulation asks 15 % more refundable fee than the call uses, and the rest comes back."""
    alice, bob, payout_admin = await new_accounts(admin, 3)
    balance, _ = await account_state(server, alice.public_key)
    prepared = await sac_transfer_envelope(server, alice, bob.public_key, XLM)
    found = await succeed(server, admin, prepared)
    data = soroban_data(prepared)
    fees, emitted = soroban_meta(found)
    non_refundable = non_refundable_fee(data.resources)
    consumed = events_fee(emitted)  # a transfer between accounts creates no entry: no rent
    assert fees.total_non_refundable_resource_fee_charged.int64 == non_refundable
    assert (fees.total_refundable_resource_fee_charged.int64, fees.rent_fee_charged.int64) == (consumed, 0)
    assert fee_charged(found) == 100 + non_refundable + consumed
    unused = data.resource_fee.int64 - non_refundable - consumed
    assert unused > 0 and fee_charged(found) == prepared.transaction.fee - unused
    assert (await account_state(server, alice.public_key))[0] == balance - XLM - fee_charged(found)

    # Funding a contract creates its balance entry: rent, paid out of the refundable fee too.
    contract = (await admin.admin("POST", "payout-contract", {"admin": payout_admin.public_key}))["contract_id"]
    funding = await sac_transfer_envelope(server, payout_admin, contract, 10 * XLM)
    found = await succeed(server, admin, funding)
    fees, emitted = soroban_meta(found)
    rent = rent_fee([NewEntryRent(True, entry_size(ContractBalanceEntry(NATIVE_SAC, contract)), MIN_PERSISTENT_TTL)])
    assert fees.rent_fee_charged.int64 == rent
    assert fees.total_refundable_resource_fee_charged.int64 == rent + events_fee(emitted)
    assert fee_charged(found) < funding.transaction.fee


async def test_failed_transaction_consumes_fee_and_sequence(server: SorobanServerAsync, admin: DevnetAdmin) -> None:
    alice, bob, carol = await new_accounts(admin, 3)
    seq = await sequence_of(server, alice)
    # Simulated while alice can afford it (with her sequence number after the next one) ...
    tx = (
        TransactionBuilder(Account(alice.public_key, seq + 1), PASSPHRASE, base_fee=100)
        .append_invoke_contract_function_op(
            NATIVE_SAC, "transfer", transfer_args(alice.public_key, bob.public_key, 9_000 * XLM)
        )
        .set_timeout(300)
        .build()
    )
    transfer = await server.prepare_transaction(tx)
    transfer.sign(alice)
    # ... submitted after she spent most of her balance.
    await succeed(server, admin, payment(alice, seq, carol.public_key, "5000"))
    balance, _ = await account_state(server, alice.public_key)
    bob_balance, _ = await account_state(server, bob.public_key)
    found = await applied(server, admin, transfer)
    assert found.status == FAILED
    assert host_function_code(found) == IHF.INVOKE_HOST_FUNCTION_TRAPPED
    assert fee_charged(found) == failed_soroban_fee(transfer)
    assert await account_state(server, alice.public_key) == (balance - fee_charged(found), seq + 2)
    assert (await account_state(server, bob.public_key))[0] == bob_balance


def change_trust(account: Keypair, sequence: int, asset: Asset, limit: str | None = None) -> TransactionEnvelope:
    envelope = (
        TransactionBuilder(Account(account.public_key, sequence), PASSPHRASE, base_fee=100)
        .append_change_trust_op(asset, limit)
        .set_timeout(300)
        .build()
    )
    return resign(envelope, account)


async def test_sac_transfer_to_account_without_trustline_fails_at_apply(
    server: SorobanServerAsync, admin: DevnetAdmin
) -> None:
    issuer, holder = await new_accounts(admin, 2)
    usdc = Asset("USDC", issuer.public_key)
    await deploy_asset_contract(server, issuer, usdc, PASSPHRASE)  # as on a real network, before any SAC call
    holder_seq = await sequence_of(server, holder)
    await succeed(server, admin, change_trust(holder, holder_seq, usdc))
    mint = await sac_transfer_envelope(
        server, issuer, holder.public_key, 50 * XLM, usdc
    )  # simulated with the trustline
    await succeed(server, admin, change_trust(holder, holder_seq + 1, usdc, "0"))  # removed
    assert not await has_trustline(server, holder.public_key, usdc)
    balance, seq = await account_state(server, issuer.public_key)
    found = await applied(server, admin, mint)
    assert found.status == FAILED
    assert host_function_code(found) == IHF.INVOKE_HOST_FUNCTION_TRAPPED
    assert await account_state(server, issuer.public_key) == (balance - fee_charged(found), seq + 1)
    assert fee_charged(found) == failed_soroban_fee(mint)
    assert not await has_trustline(server, holder.public_key, usdc)


async def test_classic_payment_without_trustline_or_balance_fails_at_apply(
    server: SorobanServerAsync, admin: DevnetAdmin
) -> None:
    issuer, holder, payee = await new_accounts(admin, 3)
    usdc = Asset("USDC", issuer.public_key)
    issuer_seq, holder_seq, payee_seq = [await sequence_of(server, kp) for kp in (issuer, holder, payee)]
    cases = [
        # The destination has no trustline to the asset.
        (issuer, payment(issuer, issuer_seq, holder.public_key, "5", asset=usdc), PAY.PAYMENT_NO_TRUST),
        # The source has no trustline to the asset.
        (payee, payment(payee, payee_seq, issuer.public_key, "5", asset=usdc), PAY.PAYMENT_SRC_NO_TRUST),
        # More lumens than the source has.
        (holder, payment(holder, holder_seq, payee.public_key, "20000"), PAY.PAYMENT_UNDERFUNDED),
    ]

    async def check(source: Keypair, envelope: TransactionEnvelope, code: x.PaymentResultCode) -> None:
        balance, seq = await account_state(server, source.public_key)
        found = await applied(server, admin, envelope)
        assert found.status == FAILED
        assert payment_code(found) == code
        assert fee_charged(found) == 100
        assert await account_state(server, source.public_key) == (balance - 100, seq + 1)

    for case in cases:
        await check(*case)
    # Once the trustline exists and holds enough, the same kind of payment succeeds.
    await succeed(server, admin, change_trust(holder, holder_seq + 1, usdc))
    await succeed(server, admin, payment(issuer, issuer_seq + 1, holder.public_key, "5", asset=usdc))


# -- Soroban authorization -------------------------------------------------------------


async def test_auth_entry_cannot_be_replayed(server: SorobanServerAsync, admin: DevnetAdmin) -> None:
    relayer, alice, bob = await new_accounts(admin, 3)
    args = transfer_args(alice.public_key, bob.public_key, 10 * XLM)
    envelope = await invoke_envelope(server, relayer, NATIVE_SAC, "transfer", args, use_upgraded_auth=False)
    (entry,) = auth_entries(envelope)
    assert entry.credentials.type == x.SorobanCredentialsType.SOROBAN_CREDENTIALS_ADDRESS
    signed = sign_address_entries(envelope, alice, await latest(server) + 100)
    envelope.sign(relayer)
    await succeed(server, admin, envelope)
    alice_balance, _ = await account_state(server, alice.public_key)
    bob_balance, _ = await account_state(server, bob.public_key)

    replay = (
        TransactionBuilder(await server.load_account(relayer.public_key), PASSPHRASE, base_fee=100)
        .append_invoke_contract_function_op(NATIVE_SAC, "transfer", args, auth=signed)
        .set_soroban_data(soroban_data(envelope))
        .set_timeout(300)
        .build()
    )
    simulated = await server.simulate_transaction(replay, auth_mode=AuthMode.ENFORCE)
    assert simulated.error is not None
    replay.sign(relayer)
    found = await applied(server, admin, replay)
    assert found.status == FAILED
    assert host_function_code(found) == IHF.INVOKE_HOST_FUNCTION_TRAPPED
    assert (await account_state(server, alice.public_key))[0] == alice_balance
    assert (await account_state(server, bob.public_key))[0] == bob_balance


async def test_expired_auth_entry_is_rejected(server: SorobanServerAsync, admin: DevnetAdmin) -> None:
    relayer, alice, bob = await new_accounts(admin, 3)
    args = transfer_args(alice.public_key, bob.public_key, 10 * XLM)
    alice_balance, _ = await account_state(server, alice.public_key)
    current = await latest(server)

    envelope = await invoke_envelope(server, relayer, NATIVE_SAC, "transfer", args)
    sign_address_entries(envelope, alice, current - 1)
    assert (await server.simulate_transaction(envelope, auth_mode=AuthMode.ENFORCE)).error is not None
    envelope.sign(relayer)
    found = await applied(server, admin, envelope)
    assert found.status == FAILED
    assert host_function_code(found) == IHF.INVOKE_HOST_FUNCTION_TRAPPED
    assert (await account_state(server, alice.public_key))[0] == alice_balance

    envelope = await invoke_envelope(server, relayer, NATIVE_SAC, "transfer", args)
    sign_address_entries(envelope, alice, current + 100)
    envelope.sign(relayer)
    await succeed(server, admin, envelope)
    assert (await account_state(server, alice.public_key))[0] == alice_balance - 10 * XLM


# -- the payout contract -----------------------------------------------------------------


async def test_payout_requires_admin_auth_and_pays_from_contract_balance(
    server: SorobanServerAsync, admin: DevnetAdmin
) -> None:
    payout_admin, winner, stranger = await new_accounts(admin, 3)
    deployed = await admin.admin("POST", "payout-contract", {"admin": payout_admin.public_key, "asset": "XLM"})
    contract = deployed["contract_id"]
    await succeed(server, admin, await sac_transfer_envelope(server, payout_admin, contract, 100 * XLM))
    assert await native_sac_balance(server, contract) == 100 * XLM
    args = [scval.to_address(winner.public_key), scval.to_int128(30 * XLM)]
    winner_balance, _ = await account_state(server, winner.public_key)
    valid_until = await latest(server) + 100

    # A stranger signs the admin's authorization entry: rejected.
    envelope = await invoke_envelope(server, stranger, contract, "distribute_winnings", args)
    assert auth_entries(envelope), "distribute_winnings must require the admin's authorization"
    sign_address_entries(envelope, stranger, valid_until)
    assert (await server.simulate_transaction(envelope, auth_mode=AuthMode.ENFORCE)).error is not None
    found = await applied(server, admin, resign(envelope, stranger))
    assert found.status == FAILED
    assert host_function_code(found) == IHF.INVOKE_HOST_FUNCTION_TRAPPED
    assert await native_sac_balance(server, contract) == 100 * XLM
    assert (await account_state(server, winner.public_key))[0] == winner_balance

    # The admin, as transaction source: paid from the contract's balance, not the admin's.
    admin_balance, _ = await account_state(server, payout_admin.public_key)
    envelope = await invoke_envelope(server, payout_admin, contract, "distribute_winnings", args)
    found = await succeed(server, admin, resign(envelope, payout_admin))
    assert await native_sac_balance(server, contract) == 70 * XLM
    assert (await account_state(server, winner.public_key))[0] == winner_balance + 30 * XLM
    assert (await account_state(server, payout_admin.public_key))[0] == admin_balance - fee_charged(found)

    # The admin's signature on an entry submitted by someone else is enough.
    envelope = await invoke_envelope(server, stranger, contract, "distribute_winnings", args)
    sign_address_entries(envelope, payout_admin, valid_until)
    await succeed(server, admin, resign(envelope, stranger))
    assert await native_sac_balance(server, contract) == 40 * XLM

    # More than the contract holds: the SAC's balance error.
    too_much = (
        TransactionBuilder(await server.load_account(payout_admin.public_key), PASSPHRASE, base_fee=100)
        .append_invoke_contract_function_op(
            contract, "distribute_winnings", [scval.to_address(winner.public_key), scval.to_int128(41 * XLM)]
        )
        .set_timeout(300)
        .build()
    )
    simulated = await server.simulate_transaction(too_much)
    assert simulated.error is not None and "Error(Contract, #10)" in simulated.error


# -- sequence numbers consumed from outside -------------------------------------------------


async def consume_sequence(admin: DevnetAdmin, account: Keypair) -> int:
    return int((await admin.admin("POST", "consume-sequence", {"account": account.public_key}))["sequence"])


async def test_consume_sequence_makes_prepared_transaction_bad_seq(
    server: SorobanServerAsync, admin: DevnetAdmin
) -> None:
    alice, bob = await new_accounts(admin, 2)
    seq = await sequence_of(server, alice)
    prepared = await sac_transfer_envelope(server, alice, bob.public_key, XLM)
    assert await consume_sequence(admin, alice) == seq + 1
    assert error_code(await send(server, prepared)) == "txBAD_SEQ"
    new_seq = (await account_state(server, alice.public_key))[1]
    assert new_seq == seq + 1
    await succeed(server, admin, payment(alice, new_seq, bob.public_key))


async def test_consume_sequence_makes_pending_transaction_fail(server: SorobanServerAsync, admin: DevnetAdmin) -> None:
    alice, bob = await new_accounts(admin, 2)
    balance, seq = await account_state(server, alice.public_key)
    envelope = payment(alice, seq, bob.public_key)
    async with fee_surge(admin):
        sent = await send(server, envelope)
        assert sent.status == PENDING
        start = await latest(server)
        assert await consume_sequence(admin, alice) == seq + 1
        # Invalid now: at the next ledger close it is dropped from the queue and banned.
        dropped_by = await admin.close_ledger()
    await admin.close_ledger()  # the surge is over: a transaction still queued would be applied now
    assert (await server.get_transaction(sent.hash)).status == NOT_FOUND
    assert await account_state(server, alice.public_key) == (balance, seq + 1)
    # Re-sent: TRY_AGAIN_LATER while banned (10 ledgers from its drop), then txBAD_SEQ.
    for _ in range(BAN_LEDGERS + 3):
        again = await send(server, envelope)
        if again.status != TRY_AGAIN_LATER or again.latest_ledger >= dropped_by + BAN_LEDGERS:
            assert again.latest_ledger >= start + 1 + BAN_LEDGERS, again  # not before the ban ends
            assert error_code(again) == "txBAD_SEQ"
            break
        await admin.close_ledger()
    else:
        pytest.fail("the ban never ended")
    assert (await server.get_transaction(sent.hash)).status == NOT_FOUND
