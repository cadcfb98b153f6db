"""An operator's Temporal reset never moves money: pay, then reset every payout to every
``WorkflowTaskCompleted`` event of its run, in every signing mode.

Reset is what the Web UI and ``temporal workflow reset`` offer for a stuck workflow. The
new run replays the history up to the chosen event and runs on from there with stale
knowledge (a ``start_payout`` record from before the payment, a lease wait, an envelope
not yet sent). Whatever it does next, the ledger must hold one payment per key: the DB
refuses a new envelope or authorization for a key that paid, and the run finishes
CONFIRMED with the payment it finds there.

The real Temporal dev server (reset through its gRPC API, as the CLI does), devnet over
HTTP, the app DB on SQLite. Several payouts start at once, so that some wait for the
source account on a durable timer first.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from stellar_sdk import Keypair, TransactionEnvelope
from stellar_sdk import xdr as x
from stellar_sdk.auth import authorize_entry
from stellar_sdk.soroban_server_async import SorobanServerAsync
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.enums.v1 import EventType
from temporalio.api.workflowservice.v1 import ResetWorkflowExecutionRequest
from temporalio.client import Client, WorkflowFailureError
from temporalio.service import RPCError

from payouts import db
from payouts.channels import channel_keypair
from payouts.client import PayoutClient, SignatureRejected
from payouts.config import PayoutSettings
from payouts.models import PayoutState
from tests.devnet_harness import PASSPHRASE, DevnetAdmin, DevnetProcess, run_devnet
from tests.payout_checks import latest_ledger, payout, result_of, successful_transfers, wait_ledgers, xlm_balance
from tests.payout_harness import payout_settings, running_worker
from workflows.payout import PayoutWorkflow

SETTLE_LEDGERS = 6


@dataclass(frozen=True)
class Mode:
    name: str
    hot_key: bool
    channels: int
    payouts: int


MODES = [
    Mode("hot key", hot_key=True, channels=0, payouts=12),
    Mode("hot key over channels", hot_key=True, channels=2, payouts=6),
    Mode("external signer", hot_key=False, channels=0, payouts=8),
    Mode("external signer over channels", hot_key=False, channels=2, payouts=4),
]


def sign_transaction(unsigned_xdr: str, signer: Keypair) -> str:
    envelope = TransactionEnvelope.from_xdr(unsigned_xdr, PASSPHRASE)
    envelope.sign(signer)
    return envelope.to_xdr()


def sign_authorization(entry_xdr: str, signer: Keypair) -> str:
    entry = x.SorobanAuthorizationEntry.from_xdr(entry_xdr)
    creds = entry.credentials.address or entry.credentials.address_v2
    assert creds is not None
    return authorize_entry(entry, signer, creds.signature_expiration_ledger.uint32, PASSPHRASE).to_xdr()


async def sign_whatever_waits(payouts: PayoutClient, keys: list[str], signer: Keypair, stop: asyncio.Event) -> None:
    """The HSM: answers every payout of ``keys`` that awaits a signature, whichever run."""
    while not stop.is_set():
        for key in keys:
            try:
                status = await asyncio.wait_for(payouts.status(key), timeout=5)
            except (TimeoutError, RPCError):
                continue
            if status.state != PayoutState.AWAITING_SIGNATURE:
                continue
            if status.authorization_xdr is not None:
                signed = sign_authorization(status.authorization_xdr, signer)
            elif status.unsigned_xdr is not None:
                signed = sign_transaction(status.unsigned_xdr, signer)
            else:
                continue
            try:
                await payouts.submit_signature(key, signed)
            except (SignatureRejected, RPCError):
                pass  # the window moved on, or the run was reset meanwhile: asked again
        await asyncio.sleep(0.2)


async def completed_task_events(client: Client, key: str, run_id: str) -> list[int]:
    history = await client.get_workflow_handle(key, run_id=run_id).fetch_history()
    return [e.event_id for e in history.events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED]


async def reset_to(client: Client, key: str, run_id: str, event_id: int) -> str:
    """Reset run ``run_id`` of ``key`` to ``event_id`` (signals after it are reapplied, as
    the CLI's default); the new run's ID."""
    response = await client.workflow_service.reset_workflow_execution(
        ResetWorkflowExecutionRequest(
            namespace=client.namespace,
            workflow_execution=WorkflowExecution(workflow_id=key, run_id=run_id),
            reason="test: an operator resets the payout",
            workflow_task_finish_event_id=event_id,
            request_id=str(uuid.uuid4()),
        )
    )
    return str(response.run_id)


async def reset_everywhere(payouts: PayoutClient, key: str, run_id: str) -> list[str]:
    """Reset the paid run to each of its completed workflow tasks in turn, letting each new
    run finish; every new run's outcome (state, or the failure's message)."""
    client = payouts.client
    outcomes = []
    for event_id in await completed_task_events(client, key, run_id):
        new_run = await reset_to(client, key, run_id, event_id)
        try:
            outcome = await result_of(
                client.get_workflow_handle_for(PayoutWorkflow.run, key, run_id=new_run), timeout=120
            )
            outcomes.append(outcome.state)
        except WorkflowFailureError as exc:
            outcomes.append(f"failed: {exc.cause}")
    return outcomes


async def mode_settings(
    mode: Mode, admin: DevnetAdmin, devnet: DevnetProcess, database_url: str
) -> tuple[Keypair, PayoutSettings]:
    source = await admin.new_account()
    overrides: dict[str, object] = {}
    if not mode.hot_key:
        overrides.update(PAYOUTS_SIGN_WITH_HOT_KEY=False, PAYOUT_HOT_SIGNER_SECRET=None)
    if mode.channels:
        secret = Keypair.random().secret
        await asyncio.gather(*(admin.fund(channel_keypair(secret, i).public_key) for i in range(mode.channels)))
        overrides.update(PAYOUTS_CHANNEL_COUNT=mode.channels, PAYOUTS_CHANNEL_SECRET=secret)
    return source, payout_settings(devnet.url, source, database_url, **overrides)


@pytest.fixture(scope="module")
def slow_devnet() -> Iterator[DevnetProcess]:
    """Ledgers of a second: payouts started together queue for the source account long
    enough to wait on durable timers and heartbeat their workflow tasks."""
    with run_devnet(ledger_close_ms=1000) as process:
        yield process


@pytest.fixture(scope="module")
async def slow_admin(slow_devnet: DevnetProcess, http_session: aiohttp.ClientSession) -> DevnetAdmin:
    return DevnetAdmin(slow_devnet.url, http_session)


@pytest.fixture(scope="module")
async def slow_server(slow_devnet: DevnetProcess) -> AsyncIterator[SorobanServerAsync]:
    async with SorobanServerAsync(slow_devnet.url) as soroban:
        yield soroban


@pytest.mark.parametrize("mode", MODES, ids=[m.name for m in MODES])
async def test_resetting_a_paid_payout_to_any_event_never_pays_again(
    mode: Mode,
    temporal_client: Client,
    slow_devnet: DevnetProcess,
    slow_admin: DevnetAdmin,
    slow_server: SorobanServerAsync,
    tmp_path: Path,
) -> None:
    admin, server = slow_admin, slow_server
    source, settings = await mode_settings(mode, admin, slow_devnet, f"sqlite:///{tmp_path / 'payouts.db'}")
    winners = [await admin.new_account() for _ in range(mode.payouts)]
    requests = [payout(w.public_key, f"{i + 1}.5", prefix="reset") for i, w in enumerate(winners)]
    keys = [r.idempotency_key for r in requests]
    start = await latest_ledger(server)
    before = [await xlm_balance(server, w.public_key) for w in winners]
    stop = asyncio.Event()
    async with running_worker(temporal_client, settings) as payouts:
        signer = None if mode.hot_key else asyncio.create_task(sign_whatever_waits(payouts, keys, source, stop))
        try:
            handles = await asyncio.gather(*(payouts.pay(r) for r in requests))
            outcomes = await asyncio.gather(*(result_of(h, timeout=180) for h in handles))
            assert {o.state for o in outcomes} == {PayoutState.CONFIRMED}, outcomes
            paid_runs = [(await h.describe()).run_id for h in handles]
            after_resets = await asyncio.gather(
                *(reset_everywhere(payouts, key, run) for key, run in zip(keys, paid_runs, strict=True))
            )
        finally:
            stop.set()
            if signer is not None:
                await signer
    print("RESETS", after_resets)
    await wait_ledgers(server, SETTLE_LEDGERS)
    engine = db.make_engine(settings.DATABASE_URL)
    for request, outcome, balance, reset_outcomes in zip(requests, outcomes, before, after_resets, strict=True):
        paid = await successful_transfers(server, start, request.destination)
        assert [(t.tx_hash, t.stroops) for t in paid] == [(outcome.tx_hash, request.stroops)], (
            request.idempotency_key,
            paid,
        )
        assert await xlm_balance(server, request.destination) - balance == request.stroops
        # Every new run ends as the DB's record says: CONFIRMED, with the first payment.
        assert set(reset_outcomes) == {PayoutState.CONFIRMED}, reset_outcomes
        stored = db.get_payout(engine, request.idempotency_key)
        assert stored is not None and stored.status == PayoutState.CONFIRMED and stored.tx_hash == outcome.tx_hash
