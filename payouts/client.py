"""The SDK client platforms (and the starter CLI) use to start and follow payouts.

Start semantics (shared/DESIGN.md §3): the workflow ID is the idempotency key; a running
or completed payout under the key is reused (conflict policy USE_EXISTING, reuse policy
ALLOW_DUPLICATE_FAILED_ONLY), but only if the request's fingerprint, stored in the
workflow memo, matches — otherwise :class:`~payouts.errors.IdempotencyConflict`.

Nothing invalid is sent: :meth:`PayoutClient.pay` validates its request again (a
``PayoutRequest`` made by ``model_construct`` or ``model_copy(update=…)`` skipped
validation, and a workflow started with an invalid request fails its first task forever),
and a signed XDR longer than :data:`~payouts.envelopes.MAX_SIGNED_XDR_CHARS` is refused
before it reaches Temporal.
"""

from __future__ import annotations

from typing import Any

from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError

from payouts.envelopes import signed_xdr_size_problem
from payouts.errors import IdempotencyConflict
from payouts.messages import PayoutOutcome
from payouts.models import PayoutRequest, PayoutState, PayoutStatus
from workflows.payout import PAYOUT_ASSET, PAYOUT_STATUS, PayoutWorkflow

FINGERPRINT_MEMO = "fingerprint"


class SignatureRejected(ValueError):
    """A signed XDR was refused: by the workflow's check, or here for its size (then it
    was not sent); the message says why."""


def _check_size(signed_xdr: str) -> None:
    problem = signed_xdr_size_problem(signed_xdr)
    if problem is not None:
        raise SignatureRejected(f"signature rejected: {problem}; nothing was sent")


class PayoutClient:
    def __init__(self, client: Client, task_queue: str) -> None:
        self.client = client
        self.task_queue = task_queue

    async def pay(self, request: PayoutRequest) -> WorkflowHandle[PayoutWorkflow, PayoutOutcome]:
        """Start the payout, or return the existing one for the same key and request.

        Raises :class:`pydantic.ValidationError`, before contacting Temporal, if the
        request is invalid (it may have skipped validation)."""
        request = PayoutRequest.model_validate(request.model_dump(warnings=False))
        fingerprint = request.fingerprint()
        try:
            handle = await self.client.start_workflow(
                PayoutWorkflow.run,
                request,
                id=request.idempotency_key,
                task_queue=self.task_queue,
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
                memo={FINGERPRINT_MEMO: fingerprint},
                search_attributes=TypedSearchAttributes(
                    [
                        SearchAttributePair(PAYOUT_STATUS, PayoutState.RECEIVED.value),
                        SearchAttributePair(PAYOUT_ASSET, request.asset),
                    ]
                ),
            )
        except WorkflowAlreadyStartedError:
            # A completed payout under this key: never run again, but the same request
            # gets the same payout back.
            handle = self.client.get_workflow_handle_for(PayoutWorkflow.run, request.idempotency_key)
        stored = await (await handle.describe()).memo_value(FINGERPRINT_MEMO, default=None)
        if stored != fingerprint:
            raise IdempotencyConflict(request.idempotency_key, str(stored), fingerprint)
        return handle

    def handle(self, idempotency_key: str) -> WorkflowHandle[PayoutWorkflow, PayoutOutcome]:
        return self.client.get_workflow_handle_for(PayoutWorkflow.run, idempotency_key)

    async def status(self, idempotency_key: str) -> PayoutStatus:
        return await self.handle(idempotency_key).query(PayoutWorkflow.status)

    async def submit_signed_xdr(self, idempotency_key: str, signed_xdr: str) -> None:
        """Fire and forget (the signal); a rejection shows in :meth:`status`."""
        _check_size(signed_xdr)
        await self.handle(idempotency_key).signal(PayoutWorkflow.submit_signed_xdr, {"signed_xdr": signed_xdr})

    async def submit_signature(self, idempotency_key: str, signed_xdr: str) -> None:
        """Checked synchronously (the update); raises :class:`SignatureRejected` with the reason."""
        _check_size(signed_xdr)
        try:
            await self.handle(idempotency_key).execute_update(PayoutWorkflow.submit_signature, signed_xdr)
        except WorkflowUpdateFailedError as exc:
            cause: Any = exc.cause
            message = cause.message if isinstance(cause, ApplicationError) else str(cause)
            raise SignatureRejected(message) from None
