"""PayoutWorkflow end to end: real Temporal dev server, devnet over HTTP, and the app DB on
SQLite and on PostgreSQL (``database_url`` from tests/pg_harness.py, a fresh one per test)."""

from __future__ import annotations

import uuid

import pytest
from stellar_sdk import Keypair, TransactionEnvelope
from stellar_sdk.soroban_server_async import SorobanServerAsync
from temporalio.client import Client, WorkflowFailureError

from payouts import db
from payouts.client import SignatureRejected
from payouts.envelopes import decode_payout
from payouts.errors import IdempotencyConflict
from payouts.models import PayoutRequest, PayoutState
from tests.devnet_harness import PASSPHRASE, DevnetAdmin, DevnetProcess
from tests.payout_checks import wait_for
from tests.payout_harness import payout_settings, running_worker

XLM = 10_000_000


def payout(destination: str, amount: str = "12.5", key: str | None = None) -> PayoutRequest:
    key = key or f"test:{uuid.uuid4().hex}"
    return PayoutRequest(
        payout_id=key.replace("test:", "p-"), destination=destination, amount=amount, asset="XLM", idempotency_key=key
    )


async def xlm_balance(server: SorobanServerAsync, account_id: str) -> int:
    from stellar_sdk import xdr as x

    account = x.LedgerKeyAccount(Keypair.from_public_key(account_id).xdr_account_id())
    key = x.LedgerKey(x.LedgerEntryType.ACCOUNT, account=account)
    entries = (await server.get_ledger_entries([key])).entries or []
    data = x.LedgerEntryData.from_xdr(entries[0].xdr).account
    assert data is not None
    return data.balance.int64


async def test_hot_key_payout_confirms_once(
    temporal_client: Client, devnet: DevnetProcess, admin: DevnetAdmin, server: SorobanServerAsync, database_url: str
) -> None:
    source, winner = await admin.new_account(), await admin.new_account()
    settings = payout_settings(devnet.url, source, database_url)
    request = payout(winner.public_key)
    async with running_worker(temporal_client, settings) as payouts:
        handle = await payouts.pay(request)
        again = await payouts.pay(request)  # same key, same request: the same payout
        outcome = await handle.result()
        assert again.id == handle.id and again.result_run_id == handle.result_run_id
        status = await payouts.status(request.idempotency_key)
    assert outcome.state == PayoutState.CONFIRMED
    assert outcome.tx_hash and outcome.ledger and outcome.fee_charged
    assert status.state == PayoutState.CONFIRMED and status.tx_hash == outcome.tx_hash
    assert await xlm_balance(server, winner.public_key) == 10_000 * XLM + 125_000_000
    found = await server.get_transaction(outcome.tx_hash)
    assert found.ledger == outcome.ledger
    engine = db.make_engine(database_url)
    rows = db.envelopes_of(engine, request.idempotency_key)
    assert [(r.tx_hash, r.status) for r in rows] == [(outcome.tx_hash, db.EnvelopeStatus.CONFIRMED)]
    assert rows[0].confirmed_at is not None
    stored = db.get_payout(engine, request.idempotency_key)
    assert stored is not None and stored.status == PayoutState.CONFIRMED

    # The Web UI's search: the search attributes were set (visibility is eventually consistent).
    query = f"WorkflowId = '{request.idempotency_key}' AND PayoutStatus = 'CONFIRMED' AND PayoutAsset = 'XLM'"

    async def listed() -> list[str] | None:
        found = [run.id async for run in temporal_client.list_workflows(query)]
        return found or None

    assert await wait_for(listed, "the payout in a PayoutStatus search") == [request.idempotency_key]


async def test_same_key_different_amount_is_a_conflict(
    temporal_client: Client, devnet: DevnetProcess, admin: DevnetAdmin, database_url: str
) -> None:
    source, winner = await admin.new_account(), await admin.new_account()
    settings = payout_settings(devnet.url, source, database_url)
    request = payout(winner.public_key)
    async with running_worker(temporal_client, settings) as payouts:
        await payouts.pay(request)
        with pytest.raises(IdempotencyConflict):
            await payouts.pay(request.model_copy(update={"amount": "13"}))
        await payouts.handle(request.idempotency_key).result()


async def test_build_only_returns_unsigned_xdr_and_sends_nothing(
    temporal_client: Client, devnet: DevnetProcess, admin: DevnetAdmin, server: SorobanServerAsync, database_url: str
) -> None:
    source, winner = await admin.new_account(), await admin.new_account()
    settings = payout_settings(devnet.url, source, database_url, PAYOUTS_LIVE_EXECUTION=False)
    sequence = (await server.load_account(source.public_key)).sequence
    request = payout(winner.public_key, amount="3.25")
    async with running_worker(temporal_client, settings) as payouts:
        outcome = await (await payouts.pay(request)).result()
    assert outcome.state == PayoutState.BUILT and outcome.unsigned_xdr
    call = decode_payout(outcome.unsigned_xdr, PASSPHRASE)
    assert (call.source, call.function, call.destination, call.stroops) == (
        source.public_key,
        "transfer",
        winner.public_key,
        32_500_000,
    )
    assert not TransactionEnvelope.from_xdr(outcome.unsigned_xdr, PASSPHRASE).signatures
    assert (await server.load_account(source.public_key)).sequence == sequence


async def test_external_signature_is_checked_then_confirms(
    temporal_client: Client, devnet: DevnetProcess, admin: DevnetAdmin, server: SorobanServerAsync, database_url: str
) -> None:
    source, winner = await admin.new_account(), await admin.new_account()
    settings = payout_settings(
        devnet.url, source, database_url, PAYOUTS_SIGN_WITH_HOT_KEY=False, PAYOUT_HOT_SIGNER_SECRET=None
    )
    request = payout(winner.public_key, amount="7")
    async with running_worker(temporal_client, settings) as payouts:
        handle = await payouts.pay(request)
        for _ in range(200):
            status = await payouts.status(request.idempotency_key)
            if status.state == PayoutState.AWAITING_SIGNATURE:
                break
            await __import__("asyncio").sleep(0.05)
        assert status.state == PayoutState.AWAITING_SIGNATURE and status.unsigned_xdr
        unsigned = TransactionEnvelope.from_xdr(status.unsigned_xdr, PASSPHRASE)

        wrong = TransactionEnvelope.from_xdr(status.unsigned_xdr, PASSPHRASE)
        wrong.sign(Keypair.random())
        with pytest.raises(SignatureRejected, match="does not verify"):
            await payouts.submit_signature(request.idempotency_key, wrong.to_xdr())
        with pytest.raises(SignatureRejected, match="no signature"):
            await payouts.submit_signature(request.idempotency_key, unsigned.to_xdr())
        assert (await payouts.status(request.idempotency_key)).state == PayoutState.AWAITING_SIGNATURE

        unsigned.sign(source)
        await payouts.submit_signed_xdr(request.idempotency_key, unsigned.to_xdr())
        outcome = await handle.result()
    assert outcome.state == PayoutState.CONFIRMED and outcome.tx_hash == unsigned.hash_hex()
    assert await xlm_balance(server, winner.public_key) == 10_007 * XLM


async def test_fee_above_cap_fails_and_sends_nothing(
    temporal_client: Client, devnet: DevnetProcess, admin: DevnetAdmin, server: SorobanServerAsync, database_url: str
) -> None:
    source, winner = await admin.new_account(), await admin.new_account()
    settings = payout_settings(
        devnet.url, source, database_url, PAYOUTS_MAX_GAS_STROOPS=1_000, PAYOUTS_FEE_CAP_WAIT_SECONDS=0
    )
    sequence = (await server.load_account(source.public_key)).sequence
    request = payout(winner.public_key)
    async with running_worker(temporal_client, settings) as payouts:
        handle = await payouts.pay(request)
        with pytest.raises(WorkflowFailureError):
            await handle.result()
        status = await payouts.status(request.idempotency_key)
    assert status.state == PayoutState.FAILED and "PAYOUTS_MAX_GAS_STROOPS" in (status.last_error or "")
    assert (await server.load_account(source.public_key)).sequence == sequence
    assert db.envelopes_of(db.make_engine(database_url), request.idempotency_key) == []
