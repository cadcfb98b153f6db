"""The seed's four monitoring queries, verbatim, on PostgreSQL, after a mixed real run
through PayoutWorkflow — and the figures they give are the true ones, computed from the
ledger and the payouts' outcomes, not from the DB.

The run (devnet over HTTP, real Temporal dev server, one fresh PostgreSQL schema):

- three hot-key payouts that confirm;
- an external-signing payout whose envelope FAILS on-chain: after it was built (simulated
  with the money there), the source account's balance is drained by a classic payment the
  source key signs (as an operation source, so its sequence number stays), then the
  envelope is signed; it applies and fails (fee charged, nothing paid);
- a hot-key payout whose first envelope EXPIRES: it waits in the queue while ledgers are
  stalled, its sequence number is used from outside, and only after its bound has passed
  is a new envelope built, which confirms;
- a payout AWAITING its external signature;
- a hot-key payout whose envelope was SUBMITTED and is still in the queue (ledgers stalled
  while the queries run).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine
from stellar_sdk import Asset, Keypair, TransactionBuilder, TransactionEnvelope
from stellar_sdk.soroban_rpc import GetTransactionStatus
from stellar_sdk.soroban_server_async import SorobanServerAsync
from temporalio.client import Client, WorkflowFailureError

from payouts import db
from payouts.client import PayoutClient
from payouts.models import PayoutRequest, PayoutState, PayoutStatus
from payouts.monitoring import CONFIRMATION_TIME_QUERY, FAILED_QUERY, PENDING_QUERY, SUCCESS_RATE_QUERY
from tests.devnet_harness import PASSPHRASE, DevnetAdmin, DevnetProcess
from tests.payout_checks import XLM, awaiting_signature, payout, result_of, status_in, wait_for, xlm_balance
from tests.payout_harness import payout_settings, running_worker

SEEDS = Path(__file__).resolve().parents[2] / "shared" / "seeds"


@dataclass
class Timed:
    """A payout that confirmed, with the wall-clock window it ran in."""

    request: PayoutRequest
    tx_hash: str
    started: datetime
    finished: datetime


async def confirm(payouts: PayoutClient, request: PayoutRequest) -> Timed:
    started = datetime.now(UTC)
    outcome = await result_of(await payouts.pay(request))
    assert outcome.state == PayoutState.CONFIRMED and outcome.tx_hash is not None, outcome
    return Timed(request, outcome.tx_hash, started, datetime.now(UTC))


async def submitted(payouts: PayoutClient, key: str) -> PayoutStatus:
    status = await wait_for(lambda: status_in(payouts, key, PayoutState.SUBMITTED), f"{key} SUBMITTED")
    assert status.tx_hash is not None
    return status


async def wait_row(engine: Engine, tx_hash: str, status: db.EnvelopeStatus) -> None:
    async def found() -> bool | None:
        with engine.connect() as connection:
            query = text("SELECT status FROM transactions WHERE tx_hash = :tx_hash")
            stored = connection.execute(query, {"tx_hash": tx_hash}).scalar()
        return True if stored == status.value else None

    await wait_for(found, f"transaction {tx_hash} {status.value} in the DB")


async def drain(server: SorobanServerAsync, admin: DevnetAdmin, account: Keypair, keep: int) -> None:
    """Pay away all but ``keep`` stroops of ``account`` with a classic payment whose operation
    source is ``account`` (signed by its key) and whose transaction source is another account,
    so that ``account``'s sequence number is not used."""
    relayer = await admin.new_account()
    amount = await xlm_balance(server, account.public_key) - keep
    envelope = (
        TransactionBuilder(await server.load_account(relayer.public_key), PASSPHRASE, base_fee=100)
        .append_payment_op(relayer.public_key, Asset.native(), str(Decimal(amount) / XLM), source=account.public_key)
        .set_timeout(60)
        .build()
    )
    envelope.sign(relayer)
    envelope.sign(account)
    sent = await server.send_transaction(envelope)
    assert sent.status.value == "PENDING", sent

    async def applied() -> str | None:
        found = await server.get_transaction(sent.hash)
        return None if found.status == GetTransactionStatus.NOT_FOUND else found.status.value

    assert await wait_for(applied, "the draining payment") == "SUCCESS"
    assert await xlm_balance(server, account.public_key) == keep


def debug_rows(engine: Engine) -> str:
    with engine.connect() as connection:
        query = text(
            "SELECT idempotency_key, attempt, tx_hash, status, sequence, max_time, created_at, updated_at, "
            "last_error FROM transactions ORDER BY id"
        )
        return "\n".join(str(tuple(row)) for row in connection.execute(query))


def test_monitoring_queries_are_the_seeds_verbatim() -> None:
    seeds = sorted(SEEDS.glob("*.txt"))
    if not seeds:
        pytest.skip(f"the seed is not next to this checkout ({SEEDS})")
    seed = "\n".join(path.read_text() for path in seeds)
    for query in (PENDING_QUERY, FAILED_QUERY, SUCCESS_RATE_QUERY, CONFIRMATION_TIME_QUERY):
        assert query in seed


async def test_monitoring_queries_after_a_mixed_run(
    temporal_client: Client,
    devnet: DevnetProcess,
    admin: DevnetAdmin,
    server: SorobanServerAsync,
    postgres_url: str,
) -> None:
    hot, signer_failing, signer_waiting, expiring = await asyncio.gather(*(admin.new_account() for _ in range(4)))
    winners = await asyncio.gather(*(admin.new_account() for _ in range(6)))
    external = {"PAYOUTS_SIGN_WITH_HOT_KEY": False, "PAYOUT_HOT_SIGNER_SECRET": None}
    engine = db.make_engine(postgres_url)
    confirmed: list[Timed] = []
    try:
        # -- three payouts that confirm -------------------------------------------------
        async with running_worker(temporal_client, payout_settings(devnet.url, hot, postgres_url)) as payouts:
            # one after another: concurrent payouts from one source account would race for
            # its sequence number (promise 5), and the losers wait out their bound
            for i, winner in enumerate(winners[:3]):
                confirmed.append(await confirm(payouts, payout(winner.public_key, f"{i + 1}.5", prefix="mon")))

        # -- one envelope that fails on-chain -------------------------------------------
        settings = payout_settings(devnet.url, signer_failing, postgres_url, PAYOUTS_MAX_ATTEMPTS=1, **external)
        async with running_worker(temporal_client, settings) as payouts:
            failing = payout(winners[3].public_key, "50", prefix="mon")
            unpaid = await xlm_balance(server, winners[3].public_key)
            handle = await payouts.pay(failing)
            waiting = await awaiting_signature(payouts, failing.idempotency_key)
            assert waiting.unsigned_xdr is not None and waiting.tx_hash is not None
            failed_hash = waiting.tx_hash
            await drain(server, admin, signer_failing, keep=5 * XLM)
            signed = TransactionEnvelope.from_xdr(waiting.unsigned_xdr, PASSPHRASE)
            signed.sign(signer_failing)
            await payouts.submit_signature(failing.idempotency_key, signed.to_xdr())
            with pytest.raises(WorkflowFailureError):
                await result_of(handle)
            status = await payouts.status(failing.idempotency_key)
            assert status.state == PayoutState.FAILED and "failed on-chain" in (status.last_error or ""), status
            assert await xlm_balance(server, winners[3].public_key) == unpaid  # promise 7: no money moved

        # -- one envelope that expires, then its replacement confirms --------------------
        settings = payout_settings(devnet.url, expiring, postgres_url, PAYOUTS_ENVELOPE_TTL_SECONDS=10)
        async with running_worker(temporal_client, settings) as payouts:
            request = payout(winners[4].public_key, "2.75", prefix="mon")
            started = datetime.now(UTC)
            try:
                await admin.faults(ledger_stall=True)
                handle = await payouts.pay(request)
                expired_hash = (await submitted(payouts, request.idempotency_key)).tx_hash
                assert expired_hash is not None
                await wait_row(engine, expired_hash, db.EnvelopeStatus.SUBMITTED)
                await admin.admin("POST", "consume-sequence", {"account": expiring.public_key})
            finally:
                await admin.faults(ledger_stall=False)
            outcome = await result_of(handle)
            assert outcome.state == PayoutState.CONFIRMED and outcome.tx_hash not in (None, expired_hash)
            assert outcome.tx_hash is not None
            confirmed.append(Timed(request, outcome.tx_hash, started, datetime.now(UTC)))

        # -- one awaiting its signature, one submitted and still queued; then the queries -
        waiting_settings = payout_settings(devnet.url, signer_waiting, postgres_url, **external)
        pending_settings = payout_settings(devnet.url, hot, postgres_url)
        async with (
            running_worker(temporal_client, waiting_settings) as signing,
            running_worker(temporal_client, pending_settings) as payouts,
        ):
            awaiting = payout(winners[5].public_key, "1", prefix="mon")
            awaiting_handle = await signing.pay(awaiting)
            awaiting_hash = (await awaiting_signature(signing, awaiting.idempotency_key)).tx_hash
            assert awaiting_hash is not None
            pending = payout(winners[0].public_key, "0.25", prefix="mon")
            try:
                await admin.faults(ledger_stall=True)
                pending_handle = await payouts.pay(pending)
                pending_hash = (await submitted(payouts, pending.idempotency_key)).tx_hash
                assert pending_hash is not None
                await wait_row(engine, pending_hash, db.EnvelopeStatus.SUBMITTED)

                # The truth, from the ledger and the payouts' own states.
                built = [*(c.tx_hash for c in confirmed), failed_hash, expired_hash, pending_hash, awaiting_hash]
                on_chain = {tx_hash: await server.get_transaction(tx_hash) for tx_hash in built}
                by_status = {
                    s: sorted(h for h, found in on_chain.items() if found.status == s)
                    for s in (GetTransactionStatus.SUCCESS, GetTransactionStatus.FAILED, GetTransactionStatus.NOT_FOUND)
                }
                assert by_status[GetTransactionStatus.SUCCESS] == sorted(c.tx_hash for c in confirmed)
                assert by_status[GetTransactionStatus.FAILED] == [failed_hash]
                assert by_status[GetTransactionStatus.NOT_FOUND] == sorted([expired_hash, pending_hash, awaiting_hash])
                # Still in flight (not in a ledger, and their payouts still on them): one being
                # submitted, one handed to the signer (it could be signed and sent any time).
                assert (await payouts.status(pending.idempotency_key)).state == PayoutState.SUBMITTED
                assert (await signing.status(awaiting.idempotency_key)).state == PayoutState.AWAITING_SIGNATURE
                in_flight = {pending_hash: "submitted", awaiting_hash: "queued"}

                with engine.connect() as connection:
                    pending_count = connection.execute(text(PENDING_QUERY)).scalar_one()
                    failed_rows = connection.execute(text(FAILED_QUERY)).mappings().all()
                    success_rate = connection.execute(text(SUCCESS_RATE_QUERY)).scalar_one()
                    average = connection.execute(text(CONFIRMATION_TIME_QUERY)).scalar_one()
                    recorded = connection.execute(text("SELECT tx_hash, status FROM transactions")).all()
            finally:
                await admin.faults(ledger_stall=False)

            # What the DB holds is what happened: every envelope built, no other, each in the
            # status the ledger and its payout give it.
            truth = {
                h: {"SUCCESS": "confirmed", "FAILED": "failed"}.get(found.status.value) or in_flight.get(h, "expired")
                for h, found in on_chain.items()
            }
            assert dict(recorded) == truth, debug_rows(engine)

            # 1. pending: the envelopes in flight
            assert pending_count == len(in_flight) == 2

            # 2. failed: the envelope that failed on-chain, with its result code
            assert [r["tx_hash"] for r in failed_rows] == [failed_hash]
            (row,) = failed_rows
            assert row["status"] == "failed" and row["ledger"] == on_chain[failed_hash].ledger
            assert row["confirmed_at"] is None and row["last_error"] == "txFAILED"

            # 3. success rate: confirmed envelopes among all created in the last 24 hours
            assert len(confirmed) == 4 and len(on_chain) == 8
            expected_rate = Decimal(len(confirmed) * 100) / len(on_chain)
            assert abs(success_rate - expected_rate) < Decimal("1e-12"), (success_rate, expected_rate)

            # 4. average confirmation time: each confirmed envelope was recorded while its
            # payout ran and before its ledger closed, and marked confirmed after that ledger
            # closed and before its payout returned.
            durations = []
            for paid in confirmed:
                (envelope,) = [e for e in db.envelopes_of(engine, paid.request.idempotency_key)
                               if e.status == db.EnvelopeStatus.CONFIRMED]  # fmt: skip
                assert envelope.tx_hash == paid.tx_hash and envelope.confirmed_at is not None
                closed = on_chain[paid.tx_hash].create_at  # (sic) stellar-sdk: the ledger's close time
                assert closed is not None
                assert paid.started <= envelope.created_at <= envelope.confirmed_at <= paid.finished
                assert envelope.created_at.timestamp() <= closed + 1 and closed <= envelope.confirmed_at.timestamp()
                durations.append((envelope.confirmed_at - envelope.created_at).total_seconds())
            assert abs(float(average) - sum(durations) / len(durations)) < 1e-6, (average, durations)
            assert 0 < float(average) < max((p.finished - p.started).total_seconds() for p in confirmed)

            # Let the queued payout confirm; stop the one awaiting a signature.
            assert (await result_of(pending_handle)).tx_hash == pending_hash
            await awaiting_handle.terminate("monitoring test done")
        # The envelope handed to the signer stays pending: terminating its payout does not make
        # it unsignable, and it could still be applied until its bound.
        with engine.connect() as connection:
            assert connection.execute(text(PENDING_QUERY)).scalar_one() == 1
    finally:
        await admin.clear_faults()
        engine.dispose()
