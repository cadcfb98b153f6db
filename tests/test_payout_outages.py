"""What happened while no worker watched: a front-run authorization whose nonce entry expired
during the outage, and an envelope that applied before the RPC's history forgot it.

On the real network a used nonce's entry expires (max(signature expiration, apply ledger +
minimum temporary TTL - 1)) and stellar-rpc forgets transactions older than its retention
window; devnet does both (``--min-temp-ttl``, ``--retention-ledgers``) and moves the ledger
forward on request (``/admin/close-ledgers``), so these outages take seconds. Each test ends
with one payment on the ledger; neither absence (of a nonce entry, of a transaction) is
ever read as "never happened".

Real Temporal dev server, devnet over HTTP, SQLite; workers stop and start in this process.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from stellar_sdk import Asset, Keypair, SorobanServerAsync, TransactionBuilder, scval
from stellar_sdk import xdr as x
from stellar_sdk.soroban_rpc import GetTransactionStatus
from temporalio.client import Client

from payouts import authorization_store, db
from payouts.authorization import nonce_key
from payouts.channels import channel_keypair
from payouts.client import PayoutClient
from payouts.models import PayoutState
from tests.devnet_harness import PASSPHRASE, DevnetAdmin, DevnetProcess, devnet_clients, run_devnet
from tests.payout_checks import (
    latest_ledger,
    payout,
    result_of,
    status_in,
    successful_transfers,
    wait_envelope_row,
    wait_for,
    xlm_balance,
)
from tests.payout_harness import payout_settings, running_worker

NATIVE_SAC = Asset.native().contract_id(PASSPHRASE)
RETENTION_LEDGERS = 40


async def transaction_status(server: SorobanServerAsync, tx_hash: str) -> GetTransactionStatus:
    return (await server.get_transaction(tx_hash)).status


async def past_close_time(server: SorobanServerAsync, unix_time: int) -> None:
    """Until a ledger has closed after ``unix_time`` (an envelope bound then can never apply)."""

    async def closed_after() -> bool | None:
        return True if (await server.get_latest_ledger()).close_time > unix_time else None

    await wait_for(closed_after, f"a ledger closed after {unix_time}", timeout=max(30.0, unix_time - time.time() + 30))


async def carry_elsewhere(
    server: SorobanServerAsync, relayer: Keypair, payer: str, winner: str, stroops: int, signed_entry_xdr: str
) -> str:
    """Someone else's transaction carrying the payout account's signed authorization: the
    transfer it authorizes, sent from the relayer's own account. Its hash, once applied."""
    account = await server.load_account(relayer.public_key)
    tx = (
        TransactionBuilder(account, PASSPHRASE, base_fee=100)
        .append_invoke_contract_function_op(
            NATIVE_SAC,
            "transfer",
            [scval.to_address(payer), scval.to_address(winner), scval.to_int128(stroops)],
            auth=[x.SorobanAuthorizationEntry.from_xdr(signed_entry_xdr)],
        )
        .set_timeout(60)
        .build()
    )
    prepared = await server.prepare_transaction(tx)
    prepared.sign(relayer)
    sent = await server.send_transaction(prepared)
    assert sent.status.value == "PENDING", sent

    async def applied() -> GetTransactionStatus | None:
        status = await transaction_status(server, sent.hash)
        return None if status == GetTransactionStatus.NOT_FOUND else status

    assert await wait_for(applied, "the relayer's transaction in a ledger") == GetTransactionStatus.SUCCESS
    return sent.hash


async def test_an_authorization_front_run_during_an_outage_pays_once(
    temporal_client: Client, devnet: DevnetProcess, admin: DevnetAdmin, server: SorobanServerAsync, tmp_path: Path
) -> None:
    """Channels with the hot key. The payout's envelope never gets in (TRY_AGAIN_LATER);
    the worker stops; someone copies the signed authorization out of the public envelope
    into their own transaction, which applies; the ledger moves on until the used nonce's
    entry has expired; the worker comes back. The nonce's absence proves nothing then: the
    engine finds the use in the ledger history and reports the payout paid by that
    transaction, without a second authorization."""
    source, relayer, winner = await admin.new_account(), await admin.new_account(), await admin.new_account()
    secret = Keypair.random().secret
    await admin.fund(channel_keypair(secret, 0).public_key)
    settings = payout_settings(
        devnet.url,
        source,
        f"sqlite:///{tmp_path / 'payouts.db'}",
        PAYOUTS_CHANNEL_COUNT=1,
        PAYOUTS_CHANNEL_SECRET=secret,
        PAYOUTS_ENVELOPE_TTL_SECONDS=10,
    )
    request = payout(winner.public_key, "4.25", prefix="front-run")
    key = request.idempotency_key
    start, before = await latest_ledger(server), await xlm_balance(server, winner.public_key)
    engine = db.make_engine(settings.DATABASE_URL)
    await admin.faults(rules=[{"kind": "try_again_later", "method": "sendTransaction"}])
    try:
        async with running_worker(temporal_client, settings) as payouts:
            handle = await payouts.pay(request)
            sent = await wait_envelope_row(engine, key, db.EnvelopeStatus.SUBMITTED)
        [authorization] = authorization_store.of_payout(engine, key)
        assert authorization.signed_entry_xdr is not None
    finally:
        await admin.clear_faults()

    front_run = await carry_elsewhere(
        server, relayer, source.public_key, winner.public_key, request.stroops, authorization.signed_entry_xdr
    )
    # Past the signature's expiration and the minimum temporary TTL: the nonce entry is gone.
    await admin.close_ledgers(authorization.valid_until_ledger - await latest_ledger(server) + 40)
    assert not (await server.get_ledger_entries([nonce_key(source.public_key, authorization.nonce)])).entries
    await past_close_time(server, sent.max_time)

    async with running_worker(temporal_client, settings):
        outcome = await result_of(handle, timeout=120)
    assert outcome.state == PayoutState.CONFIRMED and outcome.tx_hash == front_run
    assert "did not send" in (outcome.error or "")
    paid = await successful_transfers(server, start, winner.public_key)
    assert [(t.tx_hash, t.stroops) for t in paid] == [(front_run, request.stroops)]
    assert await xlm_balance(server, winner.public_key) - before == request.stroops
    assert [a.nonce for a in authorization_store.of_payout(engine, key)] == [authorization.nonce]
    stored = db.get_payout(engine, key)
    assert stored is not None and stored.status == PayoutState.CONFIRMED and stored.tx_hash == front_run


@pytest.fixture(scope="module")
def short_history_devnet() -> Iterator[DevnetProcess]:
    """An RPC that keeps RETENTION_LEDGERS ledgers of history (stellar-rpc keeps 120,960)."""
    with run_devnet(250, "--retention-ledgers", str(RETENTION_LEDGERS)) as process:
        yield process


@pytest.fixture(scope="module")
async def short_history(
    short_history_devnet: DevnetProcess,
) -> AsyncIterator[tuple[DevnetAdmin, SorobanServerAsync]]:
    async with devnet_clients(short_history_devnet) as clients:
        yield clients


async def test_an_envelope_applied_unwatched_and_forgotten_parks_the_payout(
    temporal_client: Client,
    short_history_devnet: DevnetProcess,
    short_history: tuple[DevnetAdmin, SorobanServerAsync],
    tmp_path: Path,
) -> None:
    """Hot key. The envelope is sent, then the worker stops and an operator terminates the
    run; the envelope applies while nobody watches; the RPC's history moves past it; the
    key is started again. NOT_FOUND from an RPC that no longer holds the ledgers the envelope
    could be in is not death: the payout parks (status, search attribute, DB) and pays
    nothing, until an operator answers from a full history."""
    admin, server = short_history
    source, winner = await admin.new_account(), await admin.new_account()
    settings = payout_settings(
        short_history_devnet.url, source, f"sqlite:///{tmp_path / 'payouts.db'}", PAYOUTS_ENVELOPE_TTL_SECONDS=10
    )
    request = payout(winner.public_key, "2.75", prefix="retention")
    key = request.idempotency_key
    before = await xlm_balance(server, winner.public_key)
    engine = db.make_engine(settings.DATABASE_URL)
    await admin.faults(ledger_stall=True)
    try:
        async with running_worker(temporal_client, settings) as payouts:
            handle = await payouts.pay(request)
            sent = await wait_envelope_row(engine, key, db.EnvelopeStatus.SUBMITTED)
        await handle.terminate(reason="test: an operator terminates the payout")
    finally:
        await admin.clear_faults()

    async def applied() -> GetTransactionStatus | None:
        status = await transaction_status(server, sent.tx_hash)
        return None if status == GetTransactionStatus.NOT_FOUND else status

    assert await wait_for(applied, "the envelope in a ledger") == GetTransactionStatus.SUCCESS
    await admin.close_ledgers(RETENTION_LEDGERS + 5)
    assert await transaction_status(server, sent.tx_hash) == GetTransactionStatus.NOT_FOUND
    await past_close_time(server, sent.max_time)

    async with running_worker(temporal_client, settings) as payouts:
        restarted = await payouts.pay(request)
        parked = await wait_for(lambda: status_in(payouts, key, PayoutState.PARKED), "the payout PARKED", timeout=60)
        assert sent.tx_hash in (parked.last_error or "")
        listed = await wait_for(
            lambda: _listed(payouts, key), "the payout listed under PayoutStatus PARKED", timeout=30, every=0.5
        )
        assert listed
        stored = db.get_payout(engine, key)
        assert stored is not None and stored.status == PayoutState.PARKED
        assert [e.tx_hash for e in db.envelopes_of(engine, key)] == [sent.tx_hash]  # nothing new built
        # The operator finds the transaction in a full history and says so.
        await payouts.resolve_parked(key, paid_tx_hash=sent.tx_hash)
        outcome = await result_of(restarted, timeout=60)
    assert outcome.state == PayoutState.CONFIRMED and outcome.tx_hash == sent.tx_hash
    assert await xlm_balance(server, winner.public_key) - before == request.stroops
    assert [e.tx_hash for e in db.envelopes_of(engine, key)] == [sent.tx_hash]
    stored = db.get_payout(engine, key)
    assert stored is not None and stored.status == PayoutState.CONFIRMED and stored.tx_hash == sent.tx_hash


async def _listed(payouts: PayoutClient, key: str) -> bool | None:
    found = await payouts.list_payouts(states=[PayoutState.PARKED], limit=1000)
    return True if any(p.idempotency_key == key for p in found) else None
