"""``PayoutWorkflow``: one payout, paid at most once (shared/DESIGN.md §3–§5).

The workflow ID is the caller's idempotency key. The flow:

    start_payout (DB record; the key's durable past)
      → settle envelopes an earlier run left unsettled
      → attempts: lease a source account + build + simulate + fee check
                  → [build-only: return BUILT]
                  → sign (hot key | external signature via signal/update)
                  → settle: record, send, follow and resend the same envelope
                    until SUCCESS, FAILED or provably dead; release the lease
      → CONFIRMED | FAILED

With channel accounts (:mod:`payouts.channels`) the payout account authorizes the
transfer with a Soroban authorization entry and channels carry it: the flow asks for the
authorization once (signed by the hot key, or by the external signer), then carries the
same signed entry in envelopes until one applies; a new authorization is asked for only
once the old one can provably never be used (:meth:`ChainActivities.authorization_state`).

An envelope is provably dead (promise 2) only when ``getTransaction`` says NOT_FOUND
from an RPC whose latest closed ledger closed after the envelope's ``max_time`` and whose
retention still reaches back to the envelope's first submission. Only then is a new
envelope built; every other answer (lost responses, TRY_AGAIN_LATER, errors) leads to a
lookup by hash and a resubmission of the same envelope (promise 4).

Short steps that send nothing (DB records, building, checking) are local activities, so
a payout's history stays short; the step that sends is a regular activity, scheduled in
history before it runs.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeKey
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.chain import AUTHORIZATION_EXPIRED, NON_RETRYABLE, ChainActivities
    from activities.records import RecordActivities
    from activities.settlement import UNSETTLED_ENVELOPE, SettlementActivities
    from payouts.envelopes import signed_xdr_size_problem
    from payouts.messages import (
        AuthorizationRequest,
        BuildEnvelopeInput,
        BuiltEnvelope,
        EnvelopeLookup,
        PayoutOutcome,
        PayoutPolicy,
        RecordedEnvelope,
        RecordEnvelopeInput,
        SettleInput,
        SignatureInput,
    )
    from payouts.models import PayoutRequest, PayoutState, PayoutStatus
    from workflows import metrics

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
# Building waits for a free source account (up to a few seconds per attempt, then
# NoFreeAccount, retried), then builds: its timeout covers both. The retries back off to
# half a minute: a backlog of payouts for a few accounts must cost little while it waits.
BUILD_TIMEOUT = timedelta(seconds=30)
BUILD_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=500),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    non_retryable_error_types=NON_RETRYABLE,
)
# A local activity retried within the worker keeps its workflow task open, and the worker
# heartbeats that task (a round of history events) every few seconds: with a thousand
# payouts queued for 4 channels, those heartbeats saturated the Temporal server (seen in
# the chaos run, bench/chaos). Retries waiting longer than this sleep on a durable timer.
LOCAL_RETRY_THRESHOLD = timedelta(seconds=2)
SETTLE_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    maximum_interval=timedelta(seconds=5),
    non_retryable_error_types=[UNSETTLED_ENVELOPE],
)
SETTLE_HEARTBEAT = timedelta(seconds=20)
SETTLE_SLACK = timedelta(minutes=5)  # beyond the envelope's bound, to see it dead
DB_RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=200), maximum_interval=timedelta(seconds=10))
DB_TIMEOUT = timedelta(seconds=10)
# Stop waiting for a signature this long before the envelope's bound, so that a signed
# envelope still has time to reach a ledger.
SIGNING_MARGIN_SECONDS = 15
# How often a payout checks whether an authorization nobody carried has expired.
AUTHORIZATION_CHECK_INTERVAL = timedelta(seconds=5)
MAX_QUEUED_SIGNATURES = 10
# Patch marking the signal handler's size limit on signed XDR (MAX_SIGNED_XDR_CHARS).
SIGNED_XDR_SIZE_LIMIT = "signed-xdr-size-limit"
PAYOUT_FAILED = "PayoutFailed"


@workflow.defn(name="PayoutWorkflow")
class PayoutWorkflow:
    def __init__(self) -> None:
        self._status = PayoutStatus(state=PayoutState.RECEIVED)
        self._signatures: list[str] = []
        self._awaiting: BuiltEnvelope | AuthorizationRequest | None = None
        self._accepted_signature: str | None = None
        self._attempt = 0
        self._error = "no attempt was made"
        self._asset = "XLM"

    # -- the flow ----------------------------------------------------------------------

    @workflow.run
    async def run(self, request: PayoutRequest) -> PayoutOutcome:
        key, self._asset = request.idempotency_key, request.asset
        start = await workflow.execute_local_activity_method(
            RecordActivities.start_payout,
            request,
            start_to_close_timeout=DB_TIMEOUT,
            retry_policy=DB_RETRY,
            summary="record the payout (unique key)",
        )
        if start.confirmed is not None:
            return await self._finish(start.confirmed, count=False)  # counted by the run that paid
        policy = start.policy
        paid = await self._settle_recorded(key, start.unsettled, policy)
        if paid is not None:
            return paid

        # Attempts are numbered across runs (a failed payout may be started again under
        # its key); each run gets PAYOUTS_MAX_ATTEMPTS of its own.
        self._attempt, last_attempt = start.attempts_used, start.attempts_used + policy.max_attempts
        external = policy.live_execution and not policy.sign_with_hot_key
        authorization: AuthorizationRequest | None = None
        signed_authorization: str | None = None
        while self._attempt < last_attempt:
            self._attempt += 1
            self._set_state(PayoutState.BUILDING, attempt=self._attempt)
            build = BuildEnvelopeInput(
                key, self._attempt, request.destination, request.stroops, request.asset, external
            )
            if external and policy.uses_channels and signed_authorization is None:
                authorization = await self._local(ChainActivities.request_authorization, build)
                signed_authorization = await self._await_signature(authorization)
                if signed_authorization is None:
                    self._status.last_error = "no valid signature arrived before the authorization's window closed"
                    if await self._authorization_used(authorization):
                        return await self._paid_elsewhere(key, authorization)
                    self._attempt -= 1  # an unsigned window does not use an attempt
                    continue
            try:
                built = await self._local(
                    ChainActivities.build_envelope,
                    BuildEnvelopeInput(
                        key,
                        self._attempt,
                        request.destination,
                        request.stroops,
                        request.asset,
                        external,
                        signed_authorization,
                    ),
                    retry_policy=BUILD_RETRY,
                    timeout=BUILD_TIMEOUT,
                    summary=f"lease an account, build and simulate envelope (attempt {self._attempt})",
                )
            except (ActivityError, ApplicationError) as exc:
                # Fee above the cap or a failing simulation: nothing was signed or sent.
                # (A signed authorization may exist: FAILED only once it cannot be used.)
                if authorization is not None and await self._authorization_used(authorization):
                    return await self._paid_elsewhere(key, authorization)
                if _error_type(exc) == AUTHORIZATION_EXPIRED:
                    # Expired unused before a channel could carry it: ask for a new one;
                    # like an unsigned window, that does not use an attempt.
                    self._status.last_error = _reason(exc)
                    authorization = signed_authorization = None
                    self._attempt -= 1
                    continue
                outcome = PayoutOutcome(key, PayoutState.FAILED, error=_reason(exc))
                return await self._finish(outcome, failure_kind=_error_type(exc) or "BuildFailed")
            if not policy.live_execution:
                return await self._finish(PayoutOutcome(key, PayoutState.BUILT, unsigned_xdr=built.unsigned_xdr))
            if built.authorization is not None:
                # Signed with the hot key for this carrier: later carriers carry it too.
                authorization, signed_authorization = built.authorization, built.authorization.signed_entry_xdr

            signed = built.signed_xdr
            if signed is None:
                # The envelope leaves our hands here: the signer could submit it itself,
                # so it is recorded now and is only ever replaced once provably dead.
                await self._local(
                    RecordActivities.record_envelope,
                    RecordEnvelopeInput(key, self._attempt, built, built.unsigned_xdr),
                    summary=f"record envelope {built.tx_hash[:16]}… before the signer sees it",
                )
                signed = await self._await_signature(built)
                if signed is None:
                    self._status.last_error = "no valid signature arrived before the envelope's bound"
                    lookup = await self._settle(key, self._attempt, built, None, built.built_at_ledger, policy)
                    if lookup is None or lookup.status == "NOT_FOUND":
                        # Provably dead and never signed by us: rebuilding is safe, and an
                        # unsigned window does not use an attempt.
                        self._attempt -= 1
                        continue
                    if lookup.status == "SUCCESS":
                        return await self._confirmed(key, built.tx_hash, lookup)
                    self._error = f"envelope {built.tx_hash} failed on-chain ({lookup.result_code})"
                    continue

            self._set_state(PayoutState.SUBMITTED, tx_hash=built.tx_hash, upsert=True)
            lookup = await self._settle(key, self._attempt, built, signed, built.built_at_ledger, policy)
            if lookup is None:
                # An older envelope of this payout was recorded but unsettled (a lost
                # workflow task): it was settled first; this one was never sent.
                restart = await workflow.execute_local_activity_method(
                    RecordActivities.start_payout, request, start_to_close_timeout=DB_TIMEOUT, retry_policy=DB_RETRY
                )
                paid = await self._settle_recorded(key, restart.unsettled, policy)
                if paid is not None:
                    return paid
                self._attempt -= 1
                continue
            if lookup.status == "SUCCESS":
                return await self._confirmed(key, built.tx_hash, lookup)
            self._error = (
                f"envelope {built.tx_hash} failed on-chain ({lookup.result_code})"
                if lookup.status == "FAILED"
                else f"envelope {built.tx_hash} expired unapplied"
            )
            self._status.last_error = self._error
            if authorization is not None:
                state = await self._local(ChainActivities.authorization_state, authorization)
                if state == "used":
                    return await self._paid_elsewhere(key, authorization)
                if state == "expired":
                    authorization = signed_authorization = None
        if authorization is not None and await self._authorization_used(authorization):
            return await self._paid_elsewhere(key, authorization)
        return await self._finish(
            PayoutOutcome(key, PayoutState.FAILED, error=f"{policy.max_attempts} attempts used; last: {self._error}"),
            failure_kind="AttemptsExhausted",
        )

    async def _local(
        self,
        activity: Any,
        arg: Any,
        *,
        retry_policy: RetryPolicy = CHAIN_RETRY,
        timeout: timedelta = CHAIN_TIMEOUT,
        summary: str | None = None,
    ) -> Any:
        return await workflow.execute_local_activity_method(
            activity,
            arg,
            start_to_close_timeout=timeout,
            retry_policy=retry_policy,
            local_retry_threshold=LOCAL_RETRY_THRESHOLD,
            summary=summary,
        )

    async def _settle_recorded(
        self, key: str, unsettled: list[RecordedEnvelope], policy: PayoutPolicy
    ) -> PayoutOutcome | None:
        """Settle envelopes an earlier run (or a lost workflow task) recorded; the outcome
        if one of them paid."""
        for old in unsettled:
            built = BuiltEnvelope(
                unsigned_xdr=old.signed_xdr,
                tx_hash=old.tx_hash,
                source_account=old.source_account,
                sequence=old.sequence,
                max_time=old.max_time,
                fee=0,
                resource_fee=0,
                built_at_ledger=0,
            )
            lookup = await self._settle(key, old.attempt, built, old.signed_xdr, None, policy)
            if lookup is not None and lookup.status == "SUCCESS":
                return await self._confirmed(key, old.tx_hash, lookup)
        return None

    async def _settle(
        self,
        key: str,
        attempt: int,
        built: BuiltEnvelope,
        signed_xdr: str | None,
        since_ledger: int | None,
        policy: PayoutPolicy,
    ) -> EnvelopeLookup | None:
        """Send (unless ``signed_xdr`` is None) and follow the envelope until it is settled;
        None if it was not sent because an older envelope of the payout is unsettled."""
        remaining = max(0, built.max_time - int(workflow.now().timestamp()))
        try:
            lookup: EnvelopeLookup = await workflow.execute_activity_method(
                SettlementActivities.settle_envelope,
                SettleInput(
                    key, attempt, built, signed_xdr, since_ledger, policy.confirm_poll_ms, policy.confirm_max_polls
                ),
                start_to_close_timeout=timedelta(seconds=remaining) + SETTLE_SLACK,
                heartbeat_timeout=max(SETTLE_HEARTBEAT, 3 * timedelta(milliseconds=policy.confirm_poll_ms)),
                retry_policy=SETTLE_RETRY,
                summary=f"{'send and confirm' if signed_xdr else 'look up'} envelope {built.tx_hash[:16]}…",
            )
        except ActivityError as exc:
            if isinstance(exc.cause, ApplicationError) and exc.cause.type == UNSETTLED_ENVELOPE:
                return None
            raise
        return lookup

    async def _authorization_used(self, authorization: AuthorizationRequest) -> bool:
        """Wait until the authorization is used or expired; True if a transaction used it."""
        while True:
            state = await self._local(ChainActivities.authorization_state, authorization)
            if state != "live":
                return bool(state == "used")
            await workflow.sleep(AUTHORIZATION_CHECK_INTERVAL)

    async def _paid_elsewhere(self, key: str, authorization: AuthorizationRequest) -> PayoutOutcome:
        return await self._finish(
            PayoutOutcome(
                key,
                PayoutState.CONFIRMED,
                error=f"paid by a transaction this engine did not send, carrying its authorization "
                f"(nonce {authorization.nonce})",
            )
        )

    async def _await_signature(self, awaited: BuiltEnvelope | AuthorizationRequest) -> str | None:
        """The first valid external signature, or None once the envelope's bound (or the
        authorization's window) is near."""
        self._awaiting, self._accepted_signature = awaited, None
        if isinstance(awaited, AuthorizationRequest):
            self._set_state(
                PayoutState.AWAITING_SIGNATURE,
                authorization_xdr=awaited.entry_xdr,
                authorization_payload=awaited.payload_hex,
                upsert=True,
            )
            deadline = awaited.expires_at - SIGNING_MARGIN_SECONDS
        else:
            self._set_state(
                PayoutState.AWAITING_SIGNATURE, unsigned_xdr=awaited.unsigned_xdr, tx_hash=awaited.tx_hash, upsert=True
            )
            deadline = awaited.max_time - SIGNING_MARGIN_SECONDS
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
                    reason = await self._check_signature(awaited, candidate)
                    if reason is None:
                        self._accepted_signature = candidate
            return self._accepted_signature
        finally:
            self._awaiting = None
            self._status.unsigned_xdr = None
            self._status.authorization_xdr = self._status.authorization_payload = None

    async def _check_signature(self, awaited: BuiltEnvelope | AuthorizationRequest, signed_xdr: str) -> str | None:
        check = (
            SignatureInput("", signed_xdr, authorization=awaited.entry_xdr)
            if isinstance(awaited, AuthorizationRequest)
            else SignatureInput(awaited.tx_hash, signed_xdr)
        )
        reason: str | None = await self._local(ChainActivities.check_signature, check, summary="check a signature")
        if reason is not None:
            self._status.last_error = f"signature rejected: {reason}"
        return reason

    async def _confirmed(self, key: str, tx_hash: str, lookup: EnvelopeLookup) -> PayoutOutcome:
        """Paid: ``settle_envelope`` recorded it with the envelope and freed the lease."""
        return await self._finish(
            PayoutOutcome(
                key, PayoutState.CONFIRMED, tx_hash=tx_hash, ledger=lookup.ledger, fee_charged=lookup.fee_charged
            ),
            recorded=True,
        )

    async def _finish(
        self, outcome: PayoutOutcome, *, recorded: bool = False, count: bool = True, failure_kind: str | None = None
    ) -> PayoutOutcome:
        if not recorded:
            await workflow.execute_local_activity_method(
                RecordActivities.finish_payout,
                outcome,
                start_to_close_timeout=DB_TIMEOUT,
                retry_policy=DB_RETRY,
                summary=f"record the outcome: {outcome.state}",
            )
        self._set_state(
            PayoutState(outcome.state),
            tx_hash=outcome.tx_hash,
            ledger=outcome.ledger,
            fee_charged=outcome.fee_charged,
            unsigned_xdr=outcome.unsigned_xdr,
            last_error=outcome.error,
            upsert=True,
        )
        if count:
            metrics.record_outcome(outcome, self._asset, failure_kind)
        workflow.logger.info("payout %s", outcome.state, extra={"tx_hash": outcome.tx_hash, "reason": outcome.error})
        if outcome.state == PayoutState.FAILED:
            # A failed workflow (not a completed one) is what lets ALLOW_DUPLICATE_FAILED_ONLY
            # start the key again; FAILED is only reached when no envelope can apply.
            raise ApplicationError(outcome.error or "payout failed", type=PAYOUT_FAILED, non_retryable=True)
        return outcome

    def _set_state(self, state: PayoutState, *, upsert: bool = False, **fields: Any) -> None:
        """Update the status query; ``upsert`` also the ``PayoutStatus`` search attribute
        (only for states operators search for: each upsert is a history event)."""
        self._status = self._status.model_copy(
            update={"state": state, **{k: v for k, v in fields.items() if v is not None}}
        )
        if upsert:
            workflow.upsert_search_attributes([PAYOUT_STATUS.value_set(state.value)])

    # -- queries, signals, updates -------------------------------------------------------

    @workflow.query
    def status(self) -> PayoutStatus:
        return self._status

    @workflow.signal
    def submit_signed_xdr(self, payload: Any) -> None:
        """Fire and forget: ``{"signed_xdr": "<base64 envelope>"}``; a rejection shows in ``status``.

        Typed ``Any`` on purpose: with a narrower type the SDK drops a payload it cannot
        convert before this handler runs, and the sender would never learn why."""
        signed = payload.get("signed_xdr") if isinstance(payload, dict) else None
        if not isinstance(signed, str) or not signed:
            self._status.last_error = 'signal ignored: payload must be {"signed_xdr": "<base64 envelope>"}'
            return
        too_long = signed_xdr_size_problem(signed)
        # Patched: histories from before the limit queued such a signal and checked it.
        if too_long is not None and workflow.patched(SIGNED_XDR_SIZE_LIMIT):
            self._status.last_error = f"signal ignored: {too_long}"
            return
        if self._awaiting is None:
            self._status.last_error = "signal ignored: the payout is not awaiting a signature"
            return
        self._signatures = [*self._signatures, signed][-MAX_QUEUED_SIGNATURES:]

    @workflow.update
    async def submit_signature(self, signed_xdr: Any) -> str:
        """Validated synchronously: ``accepted``, or raises with the rejection's reason.

        Typed ``Any`` so that an argument of another type reaches the validator, which
        says what is wrong, instead of failing the SDK's conversion with a bare message."""
        built = self._awaiting
        assert built is not None and isinstance(signed_xdr, str)  # guaranteed by the validator
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
    def _validate_signature(self, signed_xdr: Any) -> None:
        # A rejected update is not written to history: what fails here costs nothing.
        if not isinstance(signed_xdr, str):
            kind = type(signed_xdr).__name__
            raise ValueError(f"signed_xdr must be a non-empty base64 transaction envelope (a string), not {kind}")
        if not signed_xdr:
            raise ValueError("signed_xdr must be a non-empty base64 transaction envelope")
        too_long = signed_xdr_size_problem(signed_xdr)
        if too_long is not None:
            raise ValueError(too_long)
        if self._awaiting is None:
            raise ValueError(f"the payout is not awaiting a signature (state {self._status.state.value})")


def _reason(error: ActivityError | ApplicationError) -> str:
    """The message of an activity's failure (a local activity's arrives unwrapped)."""
    cause = error.cause if isinstance(error, ActivityError) else error
    return cause.message if isinstance(cause, ApplicationError) else str(error)


def _error_type(error: ActivityError | ApplicationError) -> str | None:
    cause = error.cause if isinstance(error, ActivityError) else error
    return cause.type if isinstance(cause, ApplicationError) else None
