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

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError

from payouts.assets import validate_asset
from payouts.envelopes import signed_xdr_size_problem
from payouts.errors import IdempotencyConflict
from payouts.messages import PayoutOutcome
from payouts.models import PayoutRequest, PayoutState, PayoutStatus
from workflows.payout import PAYOUT_ASSET, PAYOUT_STATUS, PayoutWorkflow

FINGERPRINT_MEMO = "fingerprint"
MAX_LIST_LIMIT = 10_000


@dataclass(frozen=True)
class PayoutSummary:
    """One payout as Temporal visibility sees it (:meth:`PayoutClient.list_payouts`).

    ``state`` is the ``PayoutStatus`` search attribute: the workflow sets it at start and
    when a payout awaits a signature, is submitted and finishes (not on every step)."""

    idempotency_key: str
    state: str | None
    asset: str | None
    execution_status: str
    started_at: datetime
    closed_at: datetime | None


def list_query(states: Sequence[PayoutState] = (), asset: str | None = None) -> str:
    """The visibility query for payouts in any of ``states`` and of ``asset``. The values
    are checked first (an enum member, a valid asset), so they cannot change the query."""
    clauses = [f"WorkflowType = '{PayoutWorkflow.__name__}'"]
    if states:
        names = ", ".join(f"'{PayoutState(state).value}'" for state in states)
        clauses.append(f"{PAYOUT_STATUS.name} IN ({names})")
    if asset is not None:
        clauses.append(f"{PAYOUT_ASSET.name} = '{validate_asset(asset)}'")
    return " AND ".join(clauses)


class SignatureRejected(ValueError):
    """A signed XDR was refused: by the workflow's check, or here for its size (then it
    was not sent); the message says why."""


class ResolutionRejected(ValueError):
    """An operator's answer for a parked payout was refused; the message says why."""


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
                # Shown in the Web UI's list and history: what the payout is, nothing secret.
                static_summary=f"pay {request.amount} {request.asset} to {request.destination}",
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

    async def list_payouts(
        self, *, states: Sequence[PayoutState] = (), asset: str | None = None, limit: int = 100
    ) -> list[PayoutSummary]:
        """The newest ``limit`` payouts in ``states`` (any, if empty) and of ``asset``, of
        every task queue of the namespace (through visibility: it can lag by a moment)."""
        if not 1 <= limit <= MAX_LIST_LIMIT:
            raise ValueError(f"limit: must be 1..{MAX_LIST_LIMIT}, got {limit}")
        found = []
        async for execution in self.client.list_workflows(list_query(states, asset), limit=limit):
            found.append(
                PayoutSummary(
                    idempotency_key=execution.id,
                    state=execution.typed_search_attributes.get(PAYOUT_STATUS),
                    asset=execution.typed_search_attributes.get(PAYOUT_ASSET),
                    execution_status=execution.status.name if execution.status is not None else "UNKNOWN",
                    started_at=execution.start_time,
                    closed_at=execution.close_time,
                )
            )
        return found

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

    async def resolve_parked(self, idempotency_key: str, *, paid_tx_hash: str | None = None) -> None:
        """An operator's answer for a PARKED payout: paid by ``paid_tx_hash``, or (None)
        what was parked never applied and the payout goes on. Raises
        :class:`ResolutionRejected` when the payout is not parked or the hash is malformed."""
        answer: dict[str, object] = {"paid_tx_hash": paid_tx_hash} if paid_tx_hash is not None else {"not_paid": True}
        try:
            await self.handle(idempotency_key).execute_update(PayoutWorkflow.resolve_parked, answer)
        except WorkflowUpdateFailedError as exc:
            cause: Any = exc.cause
            raise ResolutionRejected(cause.message if isinstance(cause, ApplicationError) else str(cause)) from None
