"""PayoutWorkflow under devnet fault injection: each fault ends with exactly one payment.

The issue's acceptance list: a lost ``sendTransaction`` response, a TRY_AGAIN_LATER storm, a
worker process SIGKILLed between submission and confirmation, an envelope that expires
unsigned, and the source account's sequence number consumed from outside (txBAD_SEQ).

Every test ends with :func:`assert_paid_once`: the ledger itself (every transaction applied
since the test began, read with ``getTransactions``) holds exactly one successful transfer to
the test's winner, the winner's balance grew by exactly the amount, and the DB agrees (the
payout CONFIRMED with that hash, one ``confirmed`` envelope row, every other row ``expired``
or ``failed`` and absent from the ledger).

devnet is shared by the whole session: faults are cleared before and after every test.
Waits are bounded polls, never bare sleeps.
"""

from __future__ import annotations

import asyncio
import json
import signal
import uuid
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy.engine import Engine
from stellar_sdk import Keypair, TransactionEnvelope
from stellar_sdk.soroban_rpc import GetTransactionStatus
from stellar_sdk.soroban_server_async import SorobanServerAsync
from temporalio.client import Client, WorkflowHandle
from temporalio.service import RPCError

from payouts import db
from payouts.client import PayoutClient, SignatureRejected
from payouts.messages import PayoutOutcome
from payouts.models import PayoutRequest, PayoutState, PayoutStatus
from tests.devnet_harness import PASSPHRASE, DevnetAdmin, DevnetProcess
from tests.payout_checks import latest_ledger, transfers, wait_envelope_row, wait_for, wait_ledgers, xlm_balance
from tests.payout_harness import payout_settings, running_worker, worker_process
from workflows.payout import PayoutWorkflow

T = TypeVar("T")
XLM = 10_000_000
REPO = Path(__file__).resolve().parent.parent
# After a payout finishes, let this many ledgers close before reading the ledger, so that
# anything still queued would be applied or dropped (devnet drops after 4) and be counted.
SETTLE_LEDGERS = 6


@pytest.fixture(autouse=True)
async def no_faults(admin: DevnetAdmin) -> AsyncIterator[None]:
    await admin.clear_faults()
    try:
        yield
    finally:
        await admin.clear_faults()


def payout(destination: str, amount: str) -> PayoutRequest:
    key = f"fault:{uuid.uuid4().hex}"
    return PayoutRequest(
        payout_id=key.replace("fault:", "p-"), destination=destination, amount=amount, asset="XLM", idempotency_key=key
    )


# -- polling -----------------------------------------------------------------------------


async def status_of(payouts: PayoutClient, key: str) -> PayoutStatus | None:
    """The status query's answer, or None while no worker can answer it."""
    try:
        return await asyncio.wait_for(payouts.status(key), timeout=5)
    except (TimeoutError, RPCError):
        return None


async def status_in(payouts: PayoutClient, key: str, state: PayoutState) -> PayoutStatus | None:
    status = await status_of(payouts, key)
    return status if status is not None and status.state == state else None


async def _positive(count: Awaitable[int]) -> int | None:
    value = await count
    return value if value > 0 else None


# -- the ledger's and the DB's word -------------------------------------------------------


@dataclass(frozen=True)
class Baseline:
    """Taken before the payout starts."""

    start_ledger: int
    winner_balance: int


async def baseline(server: SorobanServerAsync, winner: Keypair) -> Baseline:
    return Baseline(await latest_ledger(server), await xlm_balance(server, winner.public_key))


async def assert_paid_once(
    server: SorobanServerAsync,
    engine: Engine,
    request: PayoutRequest,
    before: Baseline,
    outcome: PayoutOutcome,
) -> list[db.EnvelopeRecord]:
    """Exactly one payment on the ledger, of exactly the amount, and the DB agrees.
    Returns the payout's envelope rows (oldest first) for scenario-specific checks."""
    assert outcome.state == PayoutState.CONFIRMED, outcome
    assert outcome.tx_hash is not None
    await wait_ledgers(server, SETTLE_LEDGERS)

    # The ledger: one successful transfer to the winner, the confirmed envelope, the amount.
    landed = await transfers(server, before.start_ledger, request.destination)
    paid = [t for t in landed if t.successful]
    assert [(t.tx_hash, t.stroops) for t in paid] == [(outcome.tx_hash, request.stroops)], landed
    assert paid[0].ledger == outcome.ledger
    assert await xlm_balance(server, request.destination) - before.winner_balance == request.stroops

    # The DB: the payout row and exactly one confirmed envelope, with the same hash.
    stored = db.get_payout(engine, request.idempotency_key)
    assert stored is not None
    assert (stored.status, stored.tx_hash, stored.ledger) == (PayoutState.CONFIRMED, outcome.tx_hash, outcome.ledger)
    rows = db.envelopes_of(engine, request.idempotency_key)
    confirmed = [r for r in rows if r.status == db.EnvelopeStatus.CONFIRMED]
    assert [(r.tx_hash, r.ledger) for r in confirmed] == [(outcome.tx_hash, outcome.ledger)], rows
    assert confirmed[0].confirmed_at is not None
    others = [r for r in rows if r.status != db.EnvelopeStatus.CONFIRMED]
    assert all(r.status in (db.EnvelopeStatus.EXPIRED, db.EnvelopeStatus.FAILED) for r in others), rows
    # ... and what the DB calls expired or failed never paid.
    for row in others:
        found = await server.get_transaction(row.tx_hash)
        assert found.status != GetTransactionStatus.SUCCESS, (row, found)
        if row.status == db.EnvelopeStatus.EXPIRED:
            assert found.status == GetTransactionStatus.NOT_FOUND, (row, found)
    return rows


async def fault_rules(admin: DevnetAdmin) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = (await admin.admin("GET", "faults"))["rules"]
    return rules


async def settle_heartbeat(handle: WorkflowHandle[Any, Any]) -> str | None:
    """The last heartbeat of the running ``settle_envelope`` activity (a lookup's status)."""
    description = await handle.describe()
    for pending in description.raw_description.pending_activities:
        if pending.activity_type.name == "settle_envelope" and pending.heartbeat_details.payloads:
            return str(json.loads(pending.heartbeat_details.payloads[0].data))
    return None


async def result_within(handle: WorkflowHandle[PayoutWorkflow, PayoutOutcome], timeout: float) -> PayoutOutcome:
    return await asyncio.wait_for(handle.result(), timeout=timeout)


# -- a worker as a separate process ------------------------------------------------------


# -- the faults --------------------------------------------------------------------------


async def test_lost_send_responses_pay_once(
    temporal_client: Client, devnet: DevnetProcess, admin: DevnetAdmin, server: SorobanServerAsync, database_url: str
) -> None:
    """sendTransaction takes effect but its answer is lost, twice: the same envelope is
    re-sent (DUPLICATE / TRY_AGAIN_LATER once applied), looked up by hash, confirmed once."""
    source, winner = await admin.new_account(), await admin.new_account()
    settings = payout_settings(devnet.url, source, database_url)
    request = payout(winner.public_key, "4.25")
    before = await baseline(server, winner)
    await admin.faults(rules=[{"kind": "drop_response", "method": "sendTransaction", "count": 2}])
    async with running_worker(temporal_client, settings) as payouts:
        outcome = await result_within(await payouts.pay(request), 60)
    [rule] = await fault_rules(admin)
    # A lookup by hash may find the envelope applied after the first lost answer already.
    assert rule["hits"] >= 1, "the workflow's sends were not the ones dropped"
    rows = await assert_paid_once(server, db.make_engine(database_url), request, before, outcome)
    assert len(rows) == 1, "an ambiguous answer must lead to the same envelope, never a new one"


async def test_try_again_later_storm_pays_once(
    temporal_client: Client, devnet: DevnetProcess, admin: DevnetAdmin, server: SorobanServerAsync, database_url: str
) -> None:
    """Ten TRY_AGAIN_LATER answers in a row: the same envelope is resent until it queues."""
    source, winner = await admin.new_account(), await admin.new_account()
    settings = payout_settings(devnet.url, source, database_url)
    request = payout(winner.public_key, "3")
    before = await baseline(server, winner)
    await admin.faults(rules=[{"kind": "try_again_later", "method": "sendTransaction", "count": 10}])
    async with running_worker(temporal_client, settings) as payouts:
        outcome = await result_within(await payouts.pay(request), 90)
    [rule] = await fault_rules(admin)
    assert (rule["hits"], rule["remaining"]) == (10, 0)
    rows = await assert_paid_once(server, db.make_engine(database_url), request, before, outcome)
    assert len(rows) == 1, "TRY_AGAIN_LATER must lead to the same envelope, never a new one"


async def test_worker_killed_between_submit_and_confirmation_pays_once(
    temporal_client: Client,
    devnet: DevnetProcess,
    admin: DevnetAdmin,
    server: SorobanServerAsync,
    database_url: str,
    tmp_path: Path,
) -> None:
    """A worker process is SIGKILLed while its envelope waits in the queue (ledgers stalled);
    the envelope is applied while no worker runs; a new worker process finishes the payout."""
    source, winner = await admin.new_account(), await admin.new_account()
    settings = payout_settings(
        devnet.url, source, database_url, TEMPORAL_ADDRESS=temporal_client.service_client.config.target_host
    )
    db.upgrade_database(database_url)  # before the workers, so that the test can read the DB at once
    engine = db.make_engine(database_url)
    payouts = PayoutClient(temporal_client, settings.TEMPORAL_TASK_QUEUE)
    request = payout(winner.public_key, "6.5")
    before = await baseline(server, winner)
    log_path = tmp_path / "workers.log"
    try:
        await admin.faults(ledger_stall=True)
        handle = await payouts.pay(request)
        with worker_process(settings, log_path) as first:
            sent = await wait_envelope_row(engine, request.idempotency_key, db.EnvelopeStatus.SUBMITTED, timeout=60)
            status = await wait_for(
                lambda: status_in(payouts, request.idempotency_key, PayoutState.SUBMITTED), "status SUBMITTED"
            )
            assert status.tx_hash == sent.tx_hash
            # Kill it only once it has looked the queued envelope up and been told NOT_FOUND.
            assert await wait_for(lambda: settle_heartbeat(handle), "a lookup by hash", every=0.2) == "NOT_FOUND"
            assert (await server.get_transaction(sent.tx_hash)).status == GetTransactionStatus.NOT_FOUND
            first.send_signal(signal.SIGKILL)
            assert first.wait(timeout=10) == -signal.SIGKILL
        await admin.faults(ledger_stall=False)

        # The queued envelope lands while no worker is alive.
        async def applied() -> str | None:
            found = await server.get_transaction(sent.tx_hash)
            return found.status.value if found.status != GetTransactionStatus.NOT_FOUND else None

        assert await wait_for(applied, f"{sent.tx_hash} in a ledger", timeout=10) == "SUCCESS"
        with worker_process(settings, log_path):
            outcome = await result_within(handle, 120)
    except BaseException:
        print(log_path.read_text(errors="replace")[-5000:] if log_path.exists() else "(no worker log)")
        raise
    rows = await assert_paid_once(server, engine, request, before, outcome)
    assert [r.tx_hash for r in rows] == [sent.tx_hash]


async def test_envelope_expired_unsigned_is_rebuilt_and_pays_once(
    temporal_client: Client, devnet: DevnetProcess, admin: DevnetAdmin, server: SorobanServerAsync, database_url: str
) -> None:
    """External signing: nobody signs the first envelope before its signing deadline; the
    workflow offers a new one (new hash); that one is signed and pays; the first never lands."""
    source, winner = await admin.new_account(), await admin.new_account()
    settings = payout_settings(
        devnet.url,
        source,
        database_url,
        PAYOUTS_SIGN_WITH_HOT_KEY=False,
        PAYOUT_HOT_SIGNER_SECRET=None,
        PAYOUTS_SIGNATURE_WINDOW_SECONDS=30,
    )
    request = payout(winner.public_key, "2.5")
    key = request.idempotency_key
    before = await baseline(server, winner)
    async with running_worker(temporal_client, settings) as payouts:
        handle = await payouts.pay(request)
        first = await wait_for(lambda: status_in(payouts, key, PayoutState.AWAITING_SIGNATURE), "AWAITING_SIGNATURE")
        assert first.unsigned_xdr is not None and first.tx_hash is not None
        first_hash = TransactionEnvelope.from_xdr(first.unsigned_xdr, PASSPHRASE).hash_hex()
        assert first_hash == first.tx_hash

        async def new_envelope() -> PayoutStatus | None:
            status = await status_in(payouts, key, PayoutState.AWAITING_SIGNATURE)
            if status is None or status.unsigned_xdr is None:
                return None
            return (
                status
                if TransactionEnvelope.from_xdr(status.unsigned_xdr, PASSPHRASE).hash_hex() != first_hash
                else None
            )

        second = await wait_for(new_envelope, "a new unsigned envelope", timeout=45, every=0.25)
        assert second.unsigned_xdr is not None
        assert second.attempt == first.attempt, "an envelope that expired unsigned must not use an attempt"

        # A late signature of the first envelope is refused: it is not the one being waited for.
        late = TransactionEnvelope.from_xdr(first.unsigned_xdr, PASSPHRASE)
        late.sign(source)
        with pytest.raises(SignatureRejected, match="hash differs"):
            await payouts.submit_signature(key, late.to_xdr())

        envelope = TransactionEnvelope.from_xdr(second.unsigned_xdr, PASSPHRASE)
        envelope.sign(source)
        await payouts.submit_signed_xdr(key, envelope.to_xdr())
        outcome = await result_within(handle, 60)
    assert outcome.tx_hash == envelope.hash_hex()
    rows = await assert_paid_once(server, db.make_engine(database_url), request, before, outcome)
    # Handed out for signing, so recorded; replaced only once provably dead (past its bound).
    first_row = next(r for r in rows if r.tx_hash == first_hash)
    assert first_row.status == db.EnvelopeStatus.EXPIRED
    assert (await server.get_transaction(first_hash)).status == GetTransactionStatus.NOT_FOUND
    second_row = next(r for r in rows if r.tx_hash == outcome.tx_hash)
    assert second_row.created_at.timestamp() > first_row.max_time


async def test_envelope_signed_and_sent_by_the_signer_itself_pays_once(
    temporal_client: Client,
    devnet: DevnetProcess,
    admin: DevnetAdmin,
    server: SorobanServerAsync,
    database_url: str,
) -> None:
    """External signing: the signer never answers the workflow but submits the envelope to
    the network itself. The workflow must find it by hash instead of paying again."""
    source, winner = await admin.new_account(), await admin.new_account()
    settings = payout_settings(
        devnet.url,
        source,
        database_url,
        PAYOUTS_SIGN_WITH_HOT_KEY=False,
        PAYOUT_HOT_SIGNER_SECRET=None,
        PAYOUTS_SIGNATURE_WINDOW_SECONDS=30,
    )
    request = payout(winner.public_key, "3.5")
    key = request.idempotency_key
    before = await baseline(server, winner)
    async with running_worker(temporal_client, settings) as payouts:
        handle = await payouts.pay(request)
        first = await wait_for(lambda: status_in(payouts, key, PayoutState.AWAITING_SIGNATURE), "AWAITING_SIGNATURE")
        assert first.unsigned_xdr is not None
        # Wait until the workflow has stopped waiting for a signature (its signing deadline
        # lies before the envelope's bound), then land the envelope behind its back.
        await wait_for(lambda: _not_awaiting(payouts, key), "the signing deadline", timeout=45, every=0.25)
        envelope = TransactionEnvelope.from_xdr(first.unsigned_xdr, PASSPHRASE)
        envelope.sign(source)
        sent = await server.send_transaction(envelope)
        assert sent.status.value == "PENDING", sent
        outcome = await result_within(handle, 60)
    assert outcome.tx_hash == envelope.hash_hex()
    await assert_paid_once(server, db.make_engine(database_url), request, before, outcome)


async def _not_awaiting(payouts: PayoutClient, key: str) -> bool | None:
    """True once the workflow no longer offers the envelope for signing."""
    status = await status_of(payouts, key)
    return True if status is not None and status.unsigned_xdr is None else None


async def test_sequence_consumed_from_outside_pays_once(
    temporal_client: Client, devnet: DevnetProcess, admin: DevnetAdmin, server: SorobanServerAsync, database_url: str
) -> None:
    """While the envelope waits in the queue, another client uses the source account's
    sequence number: the envelope is dropped, resends answer txBAD_SEQ, and only once its
    bound has provably passed is a new envelope built; it pays once."""
    source, winner = await admin.new_account(), await admin.new_account()
    # Few polls per send, so that the envelope is re-sent (and answered txBAD_SEQ) within its 10 s.
    settings = payout_settings(
        devnet.url, source, database_url, PAYOUTS_ENVELOPE_TTL_SECONDS=10, PAYOUTS_CONFIRM_MAX_POLLS=2
    )
    engine = db.make_engine(database_url)
    request = payout(winner.public_key, "9.75")
    key = request.idempotency_key
    before = await baseline(server, winner)
    async with running_worker(temporal_client, settings) as payouts:
        await admin.faults(ledger_stall=True)
        handle = await payouts.pay(request)
        sent = await wait_envelope_row(engine, key, db.EnvelopeStatus.SUBMITTED)
        await wait_for(lambda: status_in(payouts, key, PayoutState.SUBMITTED), "status SUBMITTED")
        consumed = await admin.admin("POST", "consume-sequence", {"account": source.public_key})
        assert int(consumed["sequence"]) == sent.sequence
        await admin.faults(ledger_stall=False)

        async def finished() -> PayoutOutcome | None:
            status = await status_of(payouts, key)
            return await handle.result() if status is not None and status.state == PayoutState.CONFIRMED else None

        outcome = await wait_for(finished, "the payout to confirm", timeout=90)
    rows = await assert_paid_once(server, engine, request, before, outcome)
    assert [(r.tx_hash, r.status) for r in rows] == [
        (sent.tx_hash, db.EnvelopeStatus.EXPIRED),
        (outcome.tx_hash, db.EnvelopeStatus.CONFIRMED),
    ]
    replacement = rows[1]
    assert replacement.sequence == sent.sequence + 1  # after the sequence number used from outside
    # Promise 2: the replacement was built only after the first envelope's bound had passed.
    assert replacement.created_at.timestamp() > sent.max_time
    assert "txBAD_SEQ" in (rows[0].last_error or ""), "the dead envelope was re-sent and answered txBAD_SEQ"


async def test_settlement_heartbeats_through_a_ledger_stall(
    temporal_client: Client, devnet: DevnetProcess, admin: DevnetAdmin, server: SorobanServerAsync, tmp_path: Path
) -> None:
    """No ledger closes for longer than the settle activity's heartbeat timeout (20 s), at
    the default poll interval (2.5 s: a lookup only every ninth poll while no ledger
    closes). The activity heartbeats on every pass anyway, so it is never timed out and
    retried: one attempt, and the payout confirms once the ledgers move again."""
    source, winner = await admin.new_account(), await admin.new_account()
    settings = payout_settings(
        devnet.url, source, f"sqlite:///{tmp_path / 'payouts.db'}", PAYOUTS_CONFIRM_POLL_MS=2_500
    )
    engine = db.make_engine(settings.DATABASE_URL)
    request = payout(winner.public_key, "1.75")
    before = await baseline(server, winner)
    async with running_worker(temporal_client, settings) as payouts:
        await admin.faults(ledger_stall=True)
        handle = await payouts.pay(request)
        await wait_envelope_row(engine, request.idempotency_key, db.EnvelopeStatus.SUBMITTED)
        await asyncio.sleep(30)  # the stall itself: longer than the heartbeat timeout
        await admin.faults(ledger_stall=False)
        outcome = await result_within(handle, 60)
    history = await handle.fetch_history()
    attempts = [
        e.activity_task_started_event_attributes.attempt
        for e in history.events
        if e.HasField("activity_task_started_event_attributes")
    ]
    assert attempts == [1], attempts
    await assert_paid_once(server, engine, request, before, outcome)
