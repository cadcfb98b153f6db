"""Promise 1: at most one payment per idempotency key, across concurrent starts, a history
that Temporal no longer has, and restarts of a payout that failed.

Real Temporal dev server, devnet over HTTP, the app DB on SQLite and on PostgreSQL. What
was paid is read from the ledger (``getTransactions`` and balances), not from the DB.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from stellar_sdk.soroban_server_async import SorobanServerAsync
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import ApplicationError

from payouts import db
from payouts.errors import IdempotencyConflict
from payouts.messages import PayoutOutcome
from payouts.models import PayoutRequest, PayoutState
from tests.devnet_harness import DevnetAdmin, DevnetProcess
from tests.payout_checks import (
    delete_history,
    latest_ledger,
    payout,
    result_of,
    runs_of,
    successful_transfers,
    wait_ledgers,
    wait_runs,
    xlm_balance,
)
from tests.payout_harness import payout_settings, running_worker
from workflows.payout import PayoutWorkflow

# After a payout finishes, let this many ledgers close before reading the ledger, so that
# anything still queued would be applied (or dropped) and be counted.
SETTLE_LEDGERS = 6


def rows(engine: Engine, table: type[db.PayoutRow] | type[db.TransactionRow]) -> int:
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(table.__table__)).scalar_one())  # type: ignore[union-attr]


async def run_id(handle: WorkflowHandle[PayoutWorkflow, PayoutOutcome]) -> str:
    return (await handle.describe()).run_id


async def activities_run(handle: WorkflowHandle[PayoutWorkflow, PayoutOutcome]) -> list[str]:
    """Activity types in history order, local activities (markers) included."""
    history = await handle.fetch_history()
    names = []
    for event in history.events:
        if event.HasField("activity_task_scheduled_event_attributes"):
            names.append(event.activity_task_scheduled_event_attributes.activity_type.name)
        elif event.HasField("marker_recorded_event_attributes"):
            data = event.marker_recorded_event_attributes.details["data"].payloads[0].data
            names.append(json.loads(data)["activity_type"])
    return names


async def assert_paid_once(
    server: SorobanServerAsync,
    engine: Engine,
    request: PayoutRequest,
    start_ledger: int,
    balance_before: int,
    tx_hash: str,
) -> None:
    """The ledger holds one successful transfer to the winner (``tx_hash``, the amount), the
    winner's balance grew by the amount, and the DB has one payout and one confirmed envelope."""
    await wait_ledgers(server, SETTLE_LEDGERS)
    paid = await successful_transfers(server, start_ledger, request.destination)
    assert [(t.tx_hash, t.stroops) for t in paid] == [(tx_hash, request.stroops)], paid
    assert await xlm_balance(server, request.destination) - balance_before == request.stroops
    stored = db.get_payout(engine, request.idempotency_key)
    assert stored is not None and (stored.status, stored.tx_hash) == (PayoutState.CONFIRMED, tx_hash)
    envelopes = db.envelopes_of(engine, request.idempotency_key)
    assert [(e.tx_hash, e.status) for e in envelopes] == [(tx_hash, db.EnvelopeStatus.CONFIRMED)]
    assert rows(engine, db.PayoutRow) == 1 and rows(engine, db.TransactionRow) == 1


async def test_twenty_concurrent_starts_make_one_run_and_one_payment(
    temporal_client: Client, devnet: DevnetProcess, admin: DevnetAdmin, server: SorobanServerAsync, database_url: str
) -> None:
    source, winner = await admin.new_account(), await admin.new_account()
    settings = payout_settings(devnet.url, source, database_url)
    request = payout(winner.public_key, "3.5", prefix="race")
    start_ledger, balance = await latest_ledger(server), await xlm_balance(server, winner.public_key)
    async with running_worker(temporal_client, settings) as payouts:
        handles = await asyncio.gather(*(payouts.pay(request) for _ in range(20)))
        started = {await run_id(handle) for handle in handles}
        outcomes = await asyncio.gather(*(result_of(handle) for handle in handles))
    assert len(started) == 1, started
    assert {(o.state, o.tx_hash) for o in outcomes} == {(PayoutState.CONFIRMED, outcomes[0].tx_hash)}
    runs = await wait_runs(temporal_client, request.idempotency_key, 1)
    assert [r.run_id for r in runs] == list(started)
    engine = db.make_engine(database_url)
    try:
        assert outcomes[0].tx_hash is not None
        await assert_paid_once(server, engine, request, start_ledger, balance, outcomes[0].tx_hash)
    finally:
        engine.dispose()
    assert len(await runs_of(temporal_client, request.idempotency_key)) == 1


async def test_key_whose_history_is_gone_does_not_pay_again(
    temporal_client: Client, devnet: DevnetProcess, admin: DevnetAdmin, server: SorobanServerAsync, database_url: str
) -> None:
    """Temporal's retention deleted the payout's history; the DB's confirmed envelope is the
    durable record: the same request confirms again with the original hash and sends nothing,
    and a different request under the key is an idempotency conflict that sends nothing."""
    source, winner = await admin.new_account(), await admin.new_account()
    settings = payout_settings(devnet.url, source, database_url)
    request = payout(winner.public_key, "4.25", prefix="retention")
    key = request.idempotency_key
    start_ledger, balance = await latest_ledger(server), await xlm_balance(server, winner.public_key)
    engine = db.make_engine(database_url)
    try:
        async with running_worker(temporal_client, settings) as payouts:
            first_handle = await payouts.pay(request)
            first_run = await run_id(first_handle)
            first = await result_of(first_handle)
            assert first.state == PayoutState.CONFIRMED and first.tx_hash is not None
            sequence = (await server.load_account(source.public_key)).sequence

            await delete_history(temporal_client, key)
            handle = await payouts.pay(request)
            assert await run_id(handle) != first_run
            again = await result_of(handle)
            assert (again.state, again.tx_hash, again.ledger, again.fee_charged) == (
                PayoutState.CONFIRMED, first.tx_hash, first.ledger, first.fee_charged)  # fmt: skip
            assert await activities_run(handle) == ["start_payout", "finish_payout"]  # nothing built, nothing sent
            status = await payouts.status(key)
            assert (status.state, status.tx_hash) == (PayoutState.CONFIRMED, first.tx_hash)

            # Gone again; now another payout under the same key: refused by the DB's record.
            await delete_history(temporal_client, key)
            different = request.model_copy(update={"amount": "42"})
            conflicting = await payouts.pay(different)  # Temporal has no fingerprint left to compare
            with pytest.raises(WorkflowFailureError) as failed:
                await result_of(conflicting)
            cause = failed.value.cause  # a local activity's failure arrives unwrapped
            assert isinstance(cause, ApplicationError) and cause.type == IdempotencyConflict.__name__
            assert await activities_run(conflicting) == ["start_payout"]

            # The same request as the first still finds its payout (the failed run allows a new one).
            third = await result_of(await payouts.pay(request))
            assert (third.state, third.tx_hash) == (PayoutState.CONFIRMED, first.tx_hash)

        await assert_paid_once(server, engine, request, start_ledger, balance, first.tx_hash)
        assert (await server.load_account(source.public_key)).sequence == sequence
        stored = db.get_payout(engine, key)
        assert stored is not None and stored.fingerprint == request.fingerprint()
    finally:
        engine.dispose()


async def test_failed_payout_can_run_again_but_a_confirmed_one_cannot(
    temporal_client: Client, devnet: DevnetProcess, admin: DevnetAdmin, server: SorobanServerAsync, database_url: str
) -> None:
    """ALLOW_DUPLICATE_FAILED_ONLY: a payout that failed (fee cap, nothing sent) starts again
    under its key once the config is fixed, and confirms; a confirmed one never runs again."""
    source, winner = await admin.new_account(), await admin.new_account()
    request = payout(winner.public_key, "6", prefix="retry")
    key = request.idempotency_key
    start_ledger, balance = await latest_ledger(server), await xlm_balance(server, winner.public_key)
    sequence = (await server.load_account(source.public_key)).sequence

    capped = payout_settings(
        devnet.url, source, database_url, PAYOUTS_MAX_GAS_STROOPS=1_000, PAYOUTS_FEE_CAP_WAIT_SECONDS=0
    )
    async with running_worker(temporal_client, capped) as payouts:
        handle = await payouts.pay(request)
        with pytest.raises(WorkflowFailureError):
            await result_of(handle)
        failed_run = await run_id(handle)
        status = await payouts.status(key)
        assert status.state == PayoutState.FAILED and "PAYOUTS_MAX_GAS_STROOPS" in (status.last_error or "")
    assert (await server.load_account(source.public_key)).sequence == sequence  # nothing was sent

    fixed = payout_settings(devnet.url, source, database_url)
    async with running_worker(temporal_client, fixed) as payouts:
        handle = await payouts.pay(request)
        confirmed_run = await run_id(handle)
        assert confirmed_run != failed_run
        outcome = await result_of(handle)
        assert outcome.state == PayoutState.CONFIRMED and outcome.tx_hash is not None

        again = await payouts.pay(request)  # the same request: the confirmed payout, not a new run
        assert await run_id(again) == confirmed_run
        assert (await result_of(again)).tx_hash == outcome.tx_hash
        with pytest.raises(IdempotencyConflict):
            await payouts.pay(request.model_copy(update={"amount": "7"}))

    runs = await wait_runs(temporal_client, key, 2)
    assert sorted((r.run_id, r.status) for r in runs) == sorted(
        [(failed_run, WorkflowExecutionStatus.FAILED), (confirmed_run, WorkflowExecutionStatus.COMPLETED)]
    )
    engine = db.make_engine(database_url)
    try:
        await assert_paid_once(server, engine, request, start_ledger, balance, outcome.tx_hash)
    finally:
        engine.dispose()
    assert len(await runs_of(temporal_client, key)) == 2
