"""``PayoutWorkflow``: one payout, paid at most once (shared/DESIGN.md §3–§5).

The workflow ID is the caller's idempotency key. The flow:

    start_payout (DB record; the key's durable past)
      → settle envelopes an earlier run left unsettled
      → attempts: build + simulate + fee check → [build-only: return BUILT]
                  → sign (hot key | external signature via signal/update)
                  → record envelope → submit / look up / resubmit the same envelope
                    until SUCCESS, FAILED or provably dead
      → CONFIRMED | FAILED

An envelope is provably dead (promise 2) only when ``getTransaction`` says NOT_FOUND
from an RPC whose latest closed ledger closed after the envelope's ``max_time`` and whose
retention still reaches back to the envelope's first submission. Only then is a new
envelope built; every other answer (lost responses, TRY_AGAIN_LATER, errors) leads to a
lookup by hash and a resubmission of the same envelope (promise 4).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeKey
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.chain import NON_RETRYABLE, ChainActivities
    from activities.records import RecordActivities
    from payouts.messages import (
        BuildEnvelopeInput,
        BuiltEnvelope,
        EnvelopeLookup,
        PayoutOutcome,
        PayoutPolicy,
        RecordEnvelopeInput,
        SettleEnvelopeInput,
        SignatureInput,
    )
    from payouts.models import PayoutRequest, PayoutState, PayoutStatus

PAYOUT_STATUS = SearchAttributeKey.for_keyword("PayoutStatus")
PAYOUT_ASSET = SearchAttributeKey.for_keyword("PayoutAsset")

# Chain calls: retry transport failures with backoff, for as long as it takes; the
# answers that settle something are non-retryable ApplicationErrors.
CHAIN_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=10),
    non_retryable_error_types=NON_RETRYABLE,
)
CHAIN_TIMEOUT = timedelta(seconds=10)
DB_RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=200), maximum_interval=timedelta(seconds=10))
DB_TIMEOUT = timedelta(seconds=10)
# Stop waiting for a signature this long before the envelope's bound, so that a signed
# envelope still has time to reach a ledger.
SIGNING_MARGIN_SECONDS = 15
MAX_QUEUED_SIGNATURES = 10
PAYOUT_FAILED = "PayoutFailed"


@workflow.defn(name="PayoutWorkflow")
class PayoutWorkflow:
    def __init__(self) -> None:
        self._status = PayoutStatus(state=PayoutState.RECEIVED)
        self._signatures: list[str] = []
        self._awaiting: BuiltEnvelope | None = None
        self._accepted_signature: str | None = None

    # -- the flow ----------------------------------------------------------------------

    @workflow.run
    async def run(self, request: PayoutRequest) -> PayoutOutcome:
        key = request.idempotency_key
        start = await workflow.execute_activity_method(
            RecordActivities.start_payout, request, start_to_close_timeout=DB_TIMEOUT, retry_policy=DB_RETRY
        )
        if start.confirmed is not None:
            return await self._finish(start.confirmed)
        policy = start.policy
        for old in start.unsettled:
            lookup = await self._settle(old.tx_hash, old.signed_xdr, old.max_time, None, policy)
            if lookup.status == "SUCCESS":
                return await self._confirmed(key, old.tx_hash, lookup)

        # Attempts are numbered across runs (a failed payout may be started again under
        # its key); each run gets PAYOUTS_MAX_ATTEMPTS of its own.
        attempt, last_attempt = start.attempts_used, start.attempts_used + policy.max_attempts
        error = "no attempt was made"
        while attempt < last_attempt:
            attempt += 1
            self._set_state(PayoutState.BUILDING, attempt=attempt)
            try:
                built = await workflow.execute_activity_method(
                    ChainActivities.build_envelope,
                    BuildEnvelopeInput(
                        key,
                        attempt,
                        request.destination,
                        request.stroops,
                        request.asset,
                        external_signing=policy.live_execution and not policy.sign_with_hot_key,
                    ),
                    start_to_close_timeout=CHAIN_TIMEOUT,
                    retry_policy=CHAIN_RETRY,
                )
            except ActivityError as exc:
                # Fee above the cap or a failing simulation: nothing was signed or sent.
                return await self._finish(PayoutOutcome(key, PayoutState.FAILED, error=_reason(exc)))
            if not policy.live_execution:
                return await self._finish(PayoutOutcome(key, PayoutState.BUILT, unsigned_xdr=built.unsigned_xdr))

            if policy.sign_with_hot_key:
                signed = await workflow.execute_activity_method(
                    ChainActivities.sign_with_hot_key,
                    built,
                    start_to_close_timeout=CHAIN_TIMEOUT,
                    retry_policy=CHAIN_RETRY,
                )
            else:
                # The envelope leaves our hands here: the signer could submit it itself,
                # so it is recorded now and is only ever replaced once provably dead.
                await self._record_envelope(key, attempt, built, built.unsigned_xdr)
                maybe_signed = await self._await_signature(built)
                if maybe_signed is None:
                    self._status.last_error = "no valid signature arrived before the envelope's bound"
                    lookup = await self._settle(built.tx_hash, None, built.max_time, built.built_at_ledger, policy)
                    if lookup.status == "SUCCESS":
                        return await self._confirmed(key, built.tx_hash, lookup)
                    if lookup.status == "NOT_FOUND":
                        # Provably dead and never signed by us: rebuilding is safe, and an
                        # unsigned window does not use an attempt.
                        attempt -= 1
                        continue
                    error = f"envelope {built.tx_hash} failed on-chain ({lookup.result_code})"
                    continue
                signed = maybe_signed

            await self._record_envelope(key, attempt, built, signed)
            self._set_state(PayoutState.SUBMITTED, tx_hash=built.tx_hash)
            lookup = await self._settle(built.tx_hash, signed, built.max_time, built.built_at_ledger, policy)
            if lookup.status == "SUCCESS":
                return await self._confirmed(key, built.tx_hash, lookup)
            error = (
                f"envelope {built.tx_hash} failed on-chain ({lookup.result_code})"
                if lookup.status == "FAILED"
                else f"envelope {built.tx_hash} expired unapplied"
            )
            self._status.last_error = error
        return await self._finish(
            PayoutOutcome(key, PayoutState.FAILED, error=f"{policy.max_attempts} attempts used; last: {error}")
        )

    async def _record_envelope(self, key: str, attempt: int, built: BuiltEnvelope, xdr: str) -> None:
        await workflow.execute_activity_method(
            RecordActivities.record_envelope,
            RecordEnvelopeInput(key, attempt, built, xdr),
            start_to_close_timeout=DB_TIMEOUT,
            retry_policy=DB_RETRY,
        )

    async def _settle(
        self, tx_hash: str, signed_xdr: str | None, max_time: int, since_ledger: int | None, policy: PayoutPolicy
    ) -> EnvelopeLookup:
        """Submit, look up and resubmit the same envelope until it is applied (SUCCESS or
        FAILED) or provably dead (NOT_FOUND, returned as such); records the settlement.

        With ``signed_xdr`` None (a signer never answered) it only looks the envelope up.
        ``since_ledger`` is a ledger the envelope cannot predate (its build, else its first
        send): NOT_FOUND counts only from an RPC whose retention still reaches it.
        """
        submitted = False
        while True:
            polls = policy.confirm_max_polls
            if signed_xdr is not None:
                sent = await workflow.execute_activity_method(
                    ChainActivities.submit_envelope,
                    signed_xdr,
                    start_to_close_timeout=CHAIN_TIMEOUT,
                    retry_policy=CHAIN_RETRY,
                )
                if since_ledger is None:
                    since_ledger = sent.latest_ledger
                if not submitted:
                    submitted = True
                    await workflow.execute_activity_method(
                        RecordActivities.mark_submitted,
                        tx_hash,
                        start_to_close_timeout=DB_TIMEOUT,
                        retry_policy=DB_RETRY,
                    )
                if sent.status not in ("PENDING", "DUPLICATE"):
                    self._status.last_error = f"sendTransaction answered {sent.status} {sent.error_code or ''}".strip()
                    # Ambiguous (it may already be in a ledger): look it up once, then resend.
                    polls = 1
            for _ in range(polls):
                await workflow.sleep(timedelta(milliseconds=policy.confirm_poll_ms))
                lookup = await workflow.execute_activity_method(
                    ChainActivities.look_up_envelope,
                    tx_hash,
                    start_to_close_timeout=CHAIN_TIMEOUT,
                    retry_policy=CHAIN_RETRY,
                )
                if since_ledger is None:
                    since_ledger = lookup.latest_ledger
                if lookup.status in ("SUCCESS", "FAILED") or (
                    lookup.latest_close_time > max_time and lookup.oldest_ledger <= since_ledger
                ):
                    await workflow.execute_activity_method(
                        RecordActivities.settle_envelope,
                        SettleEnvelopeInput(
                            tx_hash,
                            {"SUCCESS": "confirmed", "FAILED": "failed"}.get(lookup.status, "expired"),
                            ledger=lookup.ledger,
                            fee_charged=lookup.fee_charged,
                            error=lookup.result_code if lookup.status == "FAILED" else None,
                        ),
                        start_to_close_timeout=DB_TIMEOUT,
                        retry_policy=DB_RETRY,
                    )
                    return lookup

    async def _await_signature(self, built: BuiltEnvelope) -> str | None:
        """The first valid external signature, or None once the envelope's bound is near."""
        self._awaiting, self._accepted_signature = built, None
        self._set_state(PayoutState.AWAITING_SIGNATURE, unsigned_xdr=built.unsigned_xdr, tx_hash=built.tx_hash)
        deadline = built.max_time - SIGNING_MARGIN_SECONDS
        try:
            while self._accepted_signature is None:
                remaining = deadline - workflow.now().timestamp()
                if remaining <= 0:
                    return None
                try:
                    await workflow.wait_condition(
                        lambda: bool(self._signatures) or self._accepted_signature is not None,
                        timeout=timedelta(seconds=remaining),
                    )
                except TimeoutError:
                    return None
                if self._accepted_signature is None and self._signatures:
                    candidate = self._signatures.pop(0)
                    reason = await self._check_signature(built, candidate)
                    if reason is None:
                        self._accepted_signature = candidate
            return self._accepted_signature
        finally:
            self._awaiting = None
            self._status.unsigned_xdr = None

    async def _check_signature(self, built: BuiltEnvelope, signed_xdr: str) -> str | None:
        reason = await workflow.execute_activity_method(
            ChainActivities.check_signature,
            SignatureInput(built.tx_hash, signed_xdr),
            start_to_close_timeout=CHAIN_TIMEOUT,
            retry_policy=CHAIN_RETRY,
        )
        if reason is not None:
            self._status.last_error = f"signature rejected: {reason}"
        return reason

    async def _confirmed(self, key: str, tx_hash: str, lookup: EnvelopeLookup) -> PayoutOutcome:
        return await self._finish(
            PayoutOutcome(
                key, PayoutState.CONFIRMED, tx_hash=tx_hash, ledger=lookup.ledger, fee_charged=lookup.fee_charged
            )
        )

    async def _finish(self, outcome: PayoutOutcome) -> PayoutOutcome:
        await workflow.execute_activity_method(
            RecordActivities.finish_payout, outcome, start_to_close_timeout=DB_TIMEOUT, retry_policy=DB_RETRY
        )
        self._set_state(
            PayoutState(outcome.state),
            tx_hash=outcome.tx_hash,
            ledger=outcome.ledger,
            fee_charged=outcome.fee_charged,
            unsigned_xdr=outcome.unsigned_xdr,
            last_error=outcome.error,
        )
        if outcome.state == PayoutState.FAILED:
            # A failed workflow (not a completed one) is what lets ALLOW_DUPLICATE_FAILED_ONLY
            # start the key again; FAILED is only reached when no envelope can apply.
            raise ApplicationError(outcome.error or "payout failed", type=PAYOUT_FAILED, non_retryable=True)
        return outcome

    def _set_state(self, state: PayoutState, **fields: Any) -> None:
        self._status = self._status.model_copy(
            update={"state": state, **{k: v for k, v in fields.items() if v is not None}}
        )
        workflow.upsert_search_attributes([PAYOUT_STATUS.value_set(state.value)])

    # -- queries, signals, updates -------------------------------------------------------

    @workflow.query
    def status(self) -> PayoutStatus:
        return self._status

    @workflow.signal
    def submit_signed_xdr(self, payload: dict[str, Any]) -> None:
        """Fire and forget: ``{"signed_xdr": "<base64 envelope>"}``; a rejection shows in ``status``."""
        signed = payload.get("signed_xdr") if isinstance(payload, dict) else None
        if not isinstance(signed, str) or not signed:
            self._status.last_error = 'signal ignored: payload must be {"signed_xdr": "<base64 envelope>"}'
            return
        if self._awaiting is None:
            self._status.last_error = "signal ignored: the payout is not awaiting a signature"
            return
        self._signatures = [*self._signatures, signed][-MAX_QUEUED_SIGNATURES:]

    @workflow.update
    async def submit_signature(self, signed_xdr: str) -> str:
        """Validated synchronously: ``accepted``, or raises with the rejection's reason."""
        built = self._awaiting
        assert built is not None  # guaranteed by the validator
        reason = await self._check_signature(built, signed_xdr)
        if reason is not None:
            raise ApplicationError(f"signature rejected: {reason}", type="SignatureRejected")
        if self._awaiting is not built:
            raise ApplicationError(
                "the envelope expired while its signature was checked; sign the new one in status",
                type="SignatureRejected",
            )
        if self._accepted_signature is None:
            self._accepted_signature = signed_xdr
        return "accepted"

    @submit_signature.validator
    def _validate_signature(self, signed_xdr: str) -> None:
        if not isinstance(signed_xdr, str) or not signed_xdr:
            raise ValueError("signed_xdr must be a non-empty base64 transaction envelope")
        if self._awaiting is None:
            raise ValueError(f"the payout is not awaiting a signature (state {self._status.state.value})")


def _reason(error: ActivityError) -> str:
    cause = error.cause
    return cause.message if isinstance(cause, ApplicationError) else str(error)
