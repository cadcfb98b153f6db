"""The network refuses, the payout goes on without burning its attempts: a signature that
arrives too late for the submission bound (txTOO_LATE), a full transaction queue
(txINSUFFICIENT_FEE with the fee it needs), and a fee surge above the cap that passes.

devnet applies stellar-core's rules here (devnet/ledger.py): the close-time bound of
``TransactionQueue::canAdd``, a queue of twice a ledger's capacity with fee-based
eviction, getFeeStats from the fees charged. Every payout runs with
``PAYOUTS_MAX_ATTEMPTS=1``: had a refusal or the wait used an attempt, it would fail.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from stellar_sdk import Keypair, SorobanServerAsync, TransactionEnvelope
from temporalio.client import Client

from payouts import db
from payouts.models import PayoutState
from tests.devnet_harness import (
    PASSPHRASE,
    DevnetAdmin,
    DevnetProcess,
    devnet_clients,
    run_devnet,
    sac_transfer_envelope,
)
from tests.payout_checks import (
    awaiting_signature,
    latest_ledger,
    payout,
    result_of,
    successful_transfers,
    wait_envelope_row,
    wait_for,
    xlm_balance,
)
from tests.payout_harness import payout_settings, running_worker

FILLER_BID = 10_000  # stroops of inclusion fee per operation, far above the engine's usual bid


async def send_answers(admin: DevnetAdmin, account: str) -> dict[str, int]:
    answers: dict[str, dict[str, int]] = (await admin.admin("GET", "stats"))["send_answers"]
    return answers.get(account, {})


def sign(unsigned_xdr: str, signer: Keypair) -> str:
    envelope = TransactionEnvelope.from_xdr(unsigned_xdr, PASSPHRASE)
    envelope.sign(signer)
    return envelope.to_xdr()


def assert_replaced_once(rows: list[db.EnvelopeRecord], paid_by: str) -> None:
    """Two envelopes on one sequence number: the refused one expired, its replacement paid."""
    assert [r.status for r in rows] == [db.EnvelopeStatus.EXPIRED, db.EnvelopeStatus.CONFIRMED], rows
    refused, replacement = rows
    assert replacement.tx_hash == paid_by
    assert (refused.source_account, refused.sequence) == (replacement.source_account, replacement.sequence)
    assert paid_by in (refused.last_error or ""), refused.last_error


async def test_a_signature_too_late_for_the_network_is_replaced_at_once(
    temporal_client: Client, devnet: DevnetProcess, admin: DevnetAdmin, server: SorobanServerAsync, tmp_path: Path
) -> None:
    """External signer. The signature arrives in time, but the network only sees the
    envelope after its bound is inside the submission bound (a slow path to the RPC):
    sendTransaction answers ERROR txTOO_LATE. The engine replaces it at once on the same
    sequence number, the signer signs the replacement, and it pays."""
    source, winner = await admin.new_account(), await admin.new_account()
    settings = payout_settings(
        devnet.url,
        source,
        f"sqlite:///{tmp_path / 'payouts.db'}",
        PAYOUTS_SIGN_WITH_HOT_KEY=False,
        PAYOUT_HOT_SIGNER_SECRET=None,
        PAYOUTS_SIGNATURE_WINDOW_SECONDS=30,
        PAYOUTS_MAX_ATTEMPTS=1,
    )
    engine = db.make_engine(settings.DATABASE_URL)
    request = payout(winner.public_key, "3.25", prefix="too-late")
    key = request.idempotency_key
    start, before = await latest_ledger(server), await xlm_balance(server, winner.public_key)
    try:
        async with running_worker(temporal_client, settings) as payouts:
            handle = await payouts.pay(request)
            first = await awaiting_signature(payouts, key)
            assert first.unsigned_xdr is not None
            bounds = TransactionEnvelope.from_xdr(first.unsigned_xdr, PASSPHRASE).transaction.preconditions
            assert bounds is not None and bounds.time_bounds is not None
            max_time = bounds.time_bounds.max_time
            # The signer answers 8 s before the bound (the engine asks for 3 ledgers + 5 s:
            # 6 s here), and the envelope then takes 10 s to reach the RPC.
            await asyncio.sleep(max(0.0, max_time - 8 - time.time()))
            delay = {"kind": "delay", "method": "sendTransaction", "count": 1, "ms": 10_000}
            await admin.faults(rules=[delay])
            await payouts.submit_signature(key, sign(first.unsigned_xdr, source))

            async def second_envelope() -> str | None:
                status = await payouts.status(key)
                fresh = status.state == PayoutState.AWAITING_SIGNATURE and status.tx_hash != first.tx_hash
                return status.unsigned_xdr if fresh else None

            unsigned = await wait_for(second_envelope, "the replacement awaiting a signature", timeout=40)
            await payouts.submit_signature(key, sign(unsigned, source))
            outcome = await result_of(handle)
    finally:
        await admin.clear_faults()
    assert outcome.state == PayoutState.CONFIRMED and outcome.tx_hash is not None
    assert "ERROR txTOO_LATE" in await send_answers(admin, source.public_key)
    assert_replaced_once(db.envelopes_of(engine, key), outcome.tx_hash)
    paid = await successful_transfers(server, start, winner.public_key)
    assert [t.tx_hash for t in paid] == [outcome.tx_hash]
    assert await xlm_balance(server, winner.public_key) - before == request.stroops


@pytest.fixture(scope="module")
def narrow_devnet() -> Iterator[DevnetProcess]:
    """A ledger of one Soroban transaction: the queue holds two."""
    with run_devnet(500, "--soroban-ledger-max-tx-count", "1") as process:
        yield process


@pytest.fixture(scope="module")
async def narrow(narrow_devnet: DevnetProcess) -> AsyncIterator[tuple[DevnetAdmin, SorobanServerAsync]]:
    async with devnet_clients(narrow_devnet) as clients:
        yield clients


async def test_a_full_queue_is_outbid_with_the_fee_it_names(
    temporal_client: Client,
    narrow_devnet: DevnetProcess,
    narrow: tuple[DevnetAdmin, SorobanServerAsync],
    tmp_path: Path,
) -> None:
    """Two transfers bidding far more than the engine fill the queue while no ledger
    closes; the payout's envelope is refused with ERROR txINSUFFICIENT_FEE and the fee it
    needs. The engine replaces it at once on the same sequence number, bidding that fee
    (within the cap): it evicts a filler and pays."""
    admin, server = narrow
    source, winner = await admin.new_account(), await admin.new_account()
    fillers = [await admin.new_account() for _ in range(2)]
    settings = payout_settings(
        narrow_devnet.url, source, f"sqlite:///{tmp_path / 'payouts.db'}", PAYOUTS_MAX_ATTEMPTS=1
    )
    engine = db.make_engine(settings.DATABASE_URL)
    request = payout(winner.public_key, "5.5", prefix="full-queue")
    key = request.idempotency_key
    start = await latest_ledger(server)
    try:
        await admin.faults(ledger_stall=True)
        for filler in fillers:
            envelope = await sac_transfer_envelope(server, filler, winner.public_key, 1, sign=False)
            envelope.transaction.fee += FILLER_BID - 100
            envelope.sign(filler)
            assert (await server.send_transaction(envelope)).status.value == "PENDING"
        async with running_worker(temporal_client, settings) as payouts:
            handle = await payouts.pay(request)
            refused = await wait_envelope_row(engine, key, db.EnvelopeStatus.SUBMITTED)

            async def replaced() -> bool | None:
                return True if len(db.envelopes_of(engine, key)) == 2 else None

            await wait_for(replaced, "a replacement envelope", timeout=30)
            await admin.faults(ledger_stall=False)
            outcome = await result_of(handle)
    finally:
        await admin.clear_faults()
    assert outcome.state == PayoutState.CONFIRMED and outcome.tx_hash is not None
    assert "ERROR txINSUFFICIENT_FEE" in await send_answers(admin, source.public_key)
    rows = db.envelopes_of(engine, key)
    assert rows[0].tx_hash == refused.tx_hash
    assert_replaced_once(rows, outcome.tx_hash)
    replacement = TransactionEnvelope.from_xdr(rows[1].envelope_xdr, PASSPHRASE).transaction
    assert replacement.soroban_data is not None
    assert replacement.fee - replacement.soroban_data.resource_fee.int64 > FILLER_BID
    paid = await successful_transfers(server, start, winner.public_key)
    assert [(t.tx_hash, t.stroops) for t in paid if t.source == source.public_key] == [
        (outcome.tx_hash, request.stroops)
    ]


async def test_a_fee_surge_above_the_cap_is_waited_out(
    temporal_client: Client, devnet: DevnetProcess, admin: DevnetAdmin, server: SorobanServerAsync, tmp_path: Path
) -> None:
    """Recent ledgers charged more than PAYOUTS_MAX_GAS_STROOPS allows: the payout waits
    on durable timers, signing and sending nothing, and pays once fees fall back."""
    source, winner = await admin.new_account(), await admin.new_account()
    settings = payout_settings(
        devnet.url,
        source,
        f"sqlite:///{tmp_path / 'payouts.db'}",
        PAYOUTS_MAX_GAS_STROOPS=500_000,
        PAYOUTS_FEE_CAP_WAIT_SECONDS=300,
        PAYOUTS_MAX_ATTEMPTS=1,
    )
    engine = db.make_engine(settings.DATABASE_URL)
    request = payout(winner.public_key, "6.75", prefix="surge")
    key = request.idempotency_key
    start = await latest_ledger(server)
    try:
        await admin.faults(fee_surge=1_000_000)

        async def surge_in_fee_stats() -> bool | None:
            return True if (await server.get_fee_stats()).soroban_inclusion_fee.p90 >= 1_000_000 else None

        await wait_for(surge_in_fee_stats, "the surge in getFeeStats")
        async with running_worker(temporal_client, settings) as payouts:
            handle = await payouts.pay(request)

            async def waiting() -> str | None:
                error = (await payouts.status(key)).last_error or ""
                return error if "waiting for fees to fall" in error else None

            assert "PAYOUTS_MAX_GAS_STROOPS" in await wait_for(waiting, "the payout waiting out the surge")
            assert db.envelopes_of(engine, key) == []  # nothing signed or sent meanwhile
            await admin.clear_faults()
            outcome = await result_of(handle, timeout=180)
    finally:
        await admin.clear_faults()
    assert outcome.state == PayoutState.CONFIRMED
    assert [r.tx_hash for r in db.envelopes_of(engine, key)] == [outcome.tx_hash]
    paid = await successful_transfers(server, start, winner.public_key)
    assert [t.tx_hash for t in paid] == [outcome.tx_hash]
