"""Fast workflow test: a signature by update checked while another was accepted.

The workflow runs on the real Temporal dev server against stubbed activities (the chain
and DB steps are not what is tested here), so that how long each signature check takes
can be chosen. A right signature by update arrives while the main coroutine checks
another right one sent by signal; the update waits for the check in flight (the
workflow runs one local activity at a time, see ``PayoutWorkflow._local``) and is then
answered truly: "accepted", since the payout goes on with an equivalent signature of the
same request. The payout pays once and its history replays.

The chaos run replays every history it produces (bench/chaos/replay.py): that is where
overlapping local activities were seen to break replay.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from stellar_sdk import Keypair
from temporalio import activity
from temporalio.client import Client, WorkflowHandle
from temporalio.worker import Replayer, Worker

from payouts.messages import (
    AuthorizationRequest,
    BuiltEnvelope,
    EnvelopeLookup,
    PayoutOutcome,
    PayoutPolicy,
    PayoutStart,
    RecordEnvelopeInput,
    SettleInput,
    SignatureInput,
)
from payouts.models import PayoutRequest, PayoutState
from payouts.worker import WORKFLOW_RUNNER
from workflows.payout import PayoutWorkflow

DESTINATION = Keypair.random().public_key
SLOW_CHECK_SECONDS = 3.0
# Short workflow tasks: the worker heartbeats one held open by a slow local activity
# after 80 % of this, so signals and updates are delivered while checks run.
TASK_TIMEOUT = timedelta(seconds=2)
POLICY = PayoutPolicy(
    live_execution=True,
    sign_with_hot_key=False,
    max_attempts=3,
    confirm_poll_ms=100,
    confirm_max_polls=10,
    uses_channels=True,
)


class StubActivities:
    """The activities an external-signer payout without channels calls, answering at once,
    except the check of a signature starting with ``slow``."""

    @activity.defn(name="start_payout")
    def start_payout(self, request: PayoutRequest) -> PayoutStart:
        return PayoutStart(policy=POLICY, confirmed=None, unsettled=[], attempts_used=0)

    @activity.defn(name="request_authorization")
    async def request_authorization(self, request: object) -> AuthorizationRequest:
        return AuthorizationRequest(
            "entry", "00" * 32, nonce=7, valid_until_ledger=1000, expires_at=int(time.time()) + 600
        )

    @activity.defn(name="build_envelope")
    async def build_envelope(self, request: object) -> BuiltEnvelope:
        now = int(time.time())
        return BuiltEnvelope(
            unsigned_xdr="unsigned",
            tx_hash="ab" * 32,
            source_account=DESTINATION,
            sequence=1,
            max_time=now + 600,
            fee=100,
            resource_fee=0,
            built_at_ledger=1,
            sign_by=now + 500,
            signed_xdr="signed by a channel",
            auth_nonce=7,
        )

    @activity.defn(name="record_envelope")
    def record_envelope(self, recorded: RecordEnvelopeInput) -> None:
        return None

    @activity.defn(name="check_signature")
    async def check_signature(self, signature: SignatureInput) -> str | None:
        if signature.signed_xdr.startswith("slow"):
            await asyncio.sleep(SLOW_CHECK_SECONDS)
        return None if "good" in signature.signed_xdr else "not signed by the payout account"

    @activity.defn(name="settle_envelope")
    async def settle_envelope(self, request: SettleInput) -> EnvelopeLookup:
        return EnvelopeLookup("SUCCESS", latest_ledger=5, latest_close_time=0, oldest_ledger=1, ledger=5)

    @activity.defn(name="finish_payout")
    def finish_payout(self, outcome: PayoutOutcome) -> PayoutOutcome:
        return outcome


@asynccontextmanager
async def _worker(client: Client, task_queue: str) -> AsyncIterator[None]:
    stubs = StubActivities()
    activities: list[Callable[..., Any]] = [
        stubs.start_payout,
        stubs.request_authorization,
        stubs.build_envelope,
        stubs.record_envelope,
        stubs.check_signature,
        stubs.settle_envelope,
        stubs.finish_payout,
    ]
    with ThreadPoolExecutor(max_workers=4) as executor:
        async with Worker(
            client,
            task_queue=task_queue,
            workflows=[PayoutWorkflow],
            activities=activities,
            activity_executor=executor,
            workflow_runner=WORKFLOW_RUNNER,
        ):
            yield


async def _awaiting_signature(client: Client, task_queue: str) -> WorkflowHandle[Any, Any]:
    key = f"race:{uuid.uuid4().hex}"
    request = PayoutRequest(payout_id=key[-12:], destination=DESTINATION, amount="5", idempotency_key=key)
    handle = await client.start_workflow(
        PayoutWorkflow.run, request, id=key, task_queue=task_queue, task_timeout=TASK_TIMEOUT
    )
    for _ in range(200):
        if (await handle.query(PayoutWorkflow.status)).state == PayoutState.AWAITING_SIGNATURE:
            return handle
        await asyncio.sleep(0.05)
    raise AssertionError(f"{handle.id} never awaited a signature")


async def _assert_replays(client: Client, handle: WorkflowHandle[Any, Any]) -> None:
    history = await handle.fetch_history()
    replayer = Replayer(workflows=[PayoutWorkflow], data_converter=client.data_converter)
    replayed = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert replayed.replay_failure is None, f"the history does not replay: {replayed.replay_failure}"


async def test_an_update_checked_while_a_signal_was_accepted_is_answered_accepted(temporal_client: Client) -> None:
    """A right signature by update arrives while the main coroutine checks another right
    one (by signal): the payout goes on with the first, and the update is told so, not
    that the envelope expired."""
    task_queue = f"races-{uuid.uuid4().hex[:8]}"
    async with _worker(temporal_client, task_queue):
        handle = await _awaiting_signature(temporal_client, task_queue)
        await handle.signal(PayoutWorkflow.submit_signed_xdr, {"signed_xdr": "slow-good"})
        await asyncio.sleep(SLOW_CHECK_SECONDS / 3)
        assert await handle.execute_update(PayoutWorkflow.submit_signature, "fast-good") == "accepted"
        assert (await handle.result()).state == PayoutState.CONFIRMED
    await _assert_replays(temporal_client, handle)
