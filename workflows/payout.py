"""``PayoutWorkflow``: one payout, paid at most once (shared/DESIGN.md §3–§5).

The workflow ID is the caller's idempotency key. The flow:

    start_payout (DB record; the key's durable past)
      → settle envelopes an earlier run left unsettled
      → attempts: [channels: the payout account's authorization, recorded before it
                   leaves the worker; signed by the hot key or the external signer]
                  lease a source account + build + simulate + fee check
                  → [build-only: return BUILT]
                  → sign (hot key | external signature via signal/update)
                  → settle: record, send, follow and resend the same envelope
                    until SUCCESS, FAILED or provably dead; release the lease
      → CONFIRMED | FAILED   (or PARKED until an operator answers, see below)

The DB, not this history, answers "did this key pay?": every new envelope and
authorization is refused for a key the DB knows as paid (``AlreadyPaid``), and the run
then finishes CONFIRMED with that payment. This is what keeps an operator's reset (to
any event), a terminated-and-restarted run or a lost history from paying twice.

With channel accounts (:mod:`payouts.channels`) the payout account authorizes the
transfer with a Soroban authorization entry and channels carry it: the flow carries the
same signed entry in envelopes until one applies; a new authorization is asked for only
once the old one can provably never be used (:meth:`ChainActivities.authorization_state`).

An envelope is provably dead (promise 2) only when ``getTransaction`` says NOT_FOUND
from an RPC whose latest closed ledger closed after the envelope's ``max_time`` and whose
retention still reaches back to the ledger after the one it was built at. Only then is a
new envelope built; every other answer (lost responses, TRY_AGAIN_LATER, errors) leads to
a lookup by hash and a resubmission of the same envelope (promise 4).

When the engine cannot prove either way whether something it handed out applied (an
envelope past its bound but outside the RPC's history; a nonce whose use would have
expired from the ledger and whose ledgers the RPC no longer holds), the payout is
PARKED: nothing new is built or signed, the state shows in ``status``, the
``PayoutStatus`` search attribute, the DB and a metric, and it looks again from time to
time until an operator answers with the ``resolve_parked`` update (README, "Parked
payouts").

Short steps that send nothing (DB records, building, checking) are local activities, so
a payout's history stays short; the step that sends is a regular activity, scheduled in
history before it runs. Local activities run one at a time, the signature update's
included, so that a history replays as it ran (:meth:`PayoutWorkflow._local`).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeKey
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.chain import ChainActivities
    from activities.failures import (
        ALREADY_PAID,
        AUTHORIZATION_EXPIRED,
        FEE_CAP_EXCEEDED,
        NON_RETRYABLE,
        UNSETTLED_ENVELOPE,
    )
    from activities.records import RecordActivities
    from activities.settlement import REFUSED, UNKNOWN, SettlementActivities
    from payouts.authorization import NonceState
    from payouts.envelopes import signed_xdr_size_problem
    from payouts.messages import (
        AuthorizationRequest,
        BuildEnvelopeInput,
        BuiltEnvelope,
        EnvelopeLookup,
        NonceReport,
        ParkedItem,
        ParkResolution,
        PayoutOutcome,
        PayoutPolicy,
        PayoutStart,
        RecordedEnvelope,
        RecordEnvelopeInput,
        Replacement,
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
    non_retryable_error_types=[UNSETTLED_ENVELOPE, ALREADY_PAID],
)
SETTLE_HEARTBEAT = timedelta(seconds=20)
SETTLE_SLACK = timedelta(minutes=5)  # beyond the envelope's bound, to see it dead
DB_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    maximum_interval=timedelta(seconds=10),
    non_retryable_error_types=[ALREADY_PAID],
)
DB_TIMEOUT = timedelta(seconds=10)
# Stop waiting for an authorization's signature this long before its window closes.
SIGNING_MARGIN_SECONDS = 15
# A parked payout looks again (the RPC may have been pointed at a longer history) this
# often at first, backing off to PARKED_RECHECK_MAX.
PARKED_RECHECK_FIRST = timedelta(minutes=1)
PARKED_RECHECK_MAX = timedelta(hours=1)
# Envelopes the network refuses before accepting (txTOO_LATE, txINSUFFICIENT_FEE) are
# replaced without using an attempt this many times in a row; after that each is one.
MAX_FREE_REFUSALS = 10
# A fee above the cap is built again after this long, doubling up to FEE_WAIT_MAX.
FEE_WAIT_FIRST = timedelta(seconds=5)
FEE_WAIT_MAX = timedelta(minutes=1)
MAX_QUEUED_SIGNATURES = 10
# Patch marking the signal handler's size limit on signed XDR (MAX_SIGNED_XDR_CHARS).
SIGNED_XDR_SIZE_LIMIT = "signed-xdr-size-limit"
PAYOUT_FAILED = "PayoutFailed"
_TX_HASH = re.compile(r"[0-9a-f]{64}")
Settled = TypeVar("Settled")


class _AlreadyPaid(Exception):
    """An activity found the key paid in the DB: the run stops and reports that payment."""


@workflow.defn(name="PayoutWorkflow")
class PayoutWorkflow:
    def __init__(self) -> None:
        self._status = PayoutStatus(state=PayoutState.RECEIVED)
        self._signatures: list[str] = []
        self._awaiting: BuiltEnvelope | AuthorizationRequest | None = None
        self._accepted_signature: str | None = None
        # The last request that got its signature: an update checking an equivalent
        # signature of it while another was accepted is answered "accepted" too.
        self._signed: BuiltEnvelope | AuthorizationRequest | None = None
        self._parked: ParkedItem | None = None
        self._state_before_park = PayoutState.RECEIVED
        self._resolution: ParkResolution | None = None
        self._attempt = 0
        self._refusals = 0
        self._fees_above_cap_since: datetime | None = None
        self._fee_wait = timedelta(0)
        self._error = "no attempt was made"
        self._request: PayoutRequest | None = None
        self._policy: PayoutPolicy | None = None
        self._asset = "XLM"
        # One local activity at a time (see _local).
        self._local_activity_slot = asyncio.Lock()

    # -- the flow ----------------------------------------------------------------------

    @workflow.run
    async def run(self, request: PayoutRequest) -> PayoutOutcome:
        self._request, self._asset = request, request.asset
        try:
            return await self._pay(request)
        except _AlreadyPaid:
            # The DB knows a payment this run did not see (a reset, a stale or restarted
            # run): it is the outcome. Counted by the run that paid.
            start = await self._start(request)
            assert start.confirmed is not None, "AlreadyPaid without a payment in the DB"
            return await self._finish(start.confirmed, count=False)

    async def _pay(self, request: PayoutRequest) -> PayoutOutcome:
        key = request.idempotency_key
        start = await self._start(request)
        if start.confirmed is not None:
            return await self._finish(start.confirmed, count=False)  # counted by the run that paid
        policy = self._policy = start.policy
        paid = await self._settle_recorded(key, start.unsettled, policy)
        if paid is not None:
            return paid

        # Attempts are numbered across runs (a failed payout may be started again under
        # its key); each run gets PAYOUTS_MAX_ATTEMPTS of its own.
        self._attempt, last_attempt = start.attempts_used, start.attempts_used + policy.max_attempts
        external = policy.live_execution and not policy.sign_with_hot_key
        authorizes = policy.live_execution and policy.uses_channels
        authorization = start.authorization if authorizes else None
        replaces: Replacement | None = None
        while self._attempt < last_attempt:
            self._attempt += 1
            self._set_state(PayoutState.BUILDING, attempt=self._attempt)
            build = BuildEnvelopeInput(
                key, self._attempt, request.destination, request.stroops, request.asset, external, replaces=replaces
            )
            if authorizes and external:
                if authorization is None:
                    authorization = await self._local(
                        ChainActivities.request_authorization,
                        build,
                        summary="record the payout account's authorization",
                    )
                if authorization.signed_entry_xdr is None:
                    signed_entry = await self._await_signature(authorization)
                    if signed_entry is None:
                        self._status.last_error = "no valid signature arrived before the authorization's window closed"
                        outcome = await self._settle_authorization(key, authorization)
                        if outcome is not None:
                            return outcome
                        authorization = None
                        self._attempt -= 1  # an unsigned window does not use an attempt
                        continue
                    authorization = replace(authorization, signed_entry_xdr=signed_entry)
            if authorization is not None:
                build = replace(build, signed_authorization=authorization.signed_entry_xdr)
            try:
                built = await self._local(
                    ChainActivities.build_envelope,
                    build,
                    retry_policy=BUILD_RETRY,
                    timeout=BUILD_TIMEOUT,
                    summary=f"lease an account, build and simulate envelope (attempt {self._attempt})",
                )
            except (ActivityError, ApplicationError) as exc:
                if _error_type(exc) == FEE_CAP_EXCEEDED and await self._wait_out_fees(_reason(exc), policy):
                    self._attempt -= 1  # nothing was signed or sent: not an attempt
                    continue
                if authorization is None and authorizes:
                    # The hot key may have made one in a build that failed afterwards (a
                    # timeout, a fee above the cap): recorded, so the DB hands it back.
                    authorization = (await self._start(request)).authorization
                if authorization is not None:
                    # A signed authorization exists: the payout is FAILED only once it
                    # provably never paid (expired before a channel carried it: ask again).
                    expired = _error_type(exc) == AUTHORIZATION_EXPIRED
                    self._status.last_error = _reason(exc)
                    outcome = await self._settle_authorization(key, authorization)
                    if outcome is not None:
                        return outcome
                    authorization = None
                    if expired:
                        self._attempt -= 1  # like an unsigned window, that does not use an attempt
                        continue
                # Fee above the cap or a failing simulation: nothing was signed or sent.
                outcome = PayoutOutcome(key, PayoutState.FAILED, error=_reason(exc))
                return await self._end(outcome, _error_type(exc) or "BuildFailed")
            self._fees_above_cap_since, self._fee_wait = None, timedelta(0)
            if built.authorization is not None:
                # Made by the hot key for this envelope: later carriers carry it too.
                authorization = built.authorization
            if not policy.live_execution:
                return await self._finish(PayoutOutcome(key, PayoutState.BUILT, unsigned_xdr=built.unsigned_xdr))

            signed = built.signed_xdr
            if signed is None:
                # The envelope leaves our hands here: the signer could submit it itself,
                # so it is recorded now and is only ever replaced once provably dead.
                await self._local(
                    RecordActivities.record_envelope,
                    RecordEnvelopeInput(key, self._attempt, built, built.unsigned_xdr),
                    retry_policy=DB_RETRY,
                    timeout=DB_TIMEOUT,
                    summary=f"record envelope {built.tx_hash[:16]}… before the signer sees it",
                )
                signed = await self._await_signature(built)
                if signed is None:
                    self._status.last_error = "no valid signature arrived before the envelope's bound"
                    looked_up = await self._settle(key, self._attempt, built, None, policy)
                    if isinstance(looked_up, PayoutOutcome):
                        return looked_up
                    if looked_up is None or looked_up.status == "NOT_FOUND":
                        # Provably dead and never signed by us: rebuilding is safe, and an
                        # unsigned window does not use an attempt.
                        self._attempt -= 1
                        continue
                    if looked_up.status == "SUCCESS":
                        return await self._confirmed(key, built.tx_hash, looked_up)
                    self._error = f"envelope {built.tx_hash} failed on-chain ({looked_up.result_code})"
                    continue

            self._set_state(PayoutState.SUBMITTED, tx_hash=built.tx_hash, upsert=True)
            lookup = await self._settle(
                key, self._attempt, built, signed, policy, siblings_possible=replaces is not None
            )
            if isinstance(lookup, PayoutOutcome):
                return lookup
            if lookup is None:
                # An older envelope of this payout was recorded but unsettled (a lost
                # workflow task, a reset): it is settled first; this one was never sent.
                restart = await self._start(request)
                paid = await self._settle_recorded(key, restart.unsettled, policy)
                if paid is not None:
                    return paid
                if authorizes:
                    authorization = restart.authorization  # the recorded one is carried
                self._attempt -= 1
                continue
            if lookup.status == REFUSED:
                # Never accepted: replaced at once on its sequence number (so at most one
                # of the two applies), bidding at least the fee the network named. Not an
                # attempt, unless the network keeps refusing.
                self._status.last_error = f"envelope {built.tx_hash} refused ({lookup.result_code}); replaced at once"
                bid = max(lookup.needed_inclusion_fee or 0, built.fee - built.resource_fee)
                replaces = Replacement(built.source_account, built.sequence, bid)
                self._refusals += 1
                if self._refusals <= MAX_FREE_REFUSALS:
                    self._attempt -= 1
                continue
            replaces, self._refusals = None, 0
            if lookup.status == "SUCCESS":
                return await self._confirmed(key, lookup.tx_hash or built.tx_hash, lookup)
            self._error = (
                f"envelope {built.tx_hash} failed on-chain ({lookup.result_code})"
                if lookup.status == "FAILED"
                else f"envelope {built.tx_hash} expired unapplied"
            )
            self._status.last_error = self._error
            if authorization is not None:
                report = await self._nonce_report(authorization)
                authorization = replace(authorization, unused_through_ledger=report.unused_through_ledger)
                if report.state != NonceState.LIVE:
                    outcome = await self._settled_authorization(key, authorization, report)
                    if outcome is not None:
                        return outcome
                    authorization = None
        if authorization is not None:
            outcome = await self._settle_authorization(key, authorization)
            if outcome is not None:
                return outcome
        outcome = PayoutOutcome(
            key, PayoutState.FAILED, error=f"{policy.max_attempts} attempts used; last: {self._error}"
        )
        return await self._end(outcome, "AttemptsExhausted")

    async def _end(self, outcome: PayoutOutcome, failure_kind: str | None = None) -> PayoutOutcome:
        """Finish with ``outcome`` once every envelope of the key is settled: one refused
        and never replaced (its replacement could not be built, or an outside transaction
        used the authorization first) is settled first; if it paid after all, that is the
        outcome. The DB then holds no envelope that could still apply."""
        assert self._request is not None and self._policy is not None
        restart = await self._start(self._request)
        paid = await self._settle_recorded(self._request.idempotency_key, restart.unsettled, self._policy)
        if paid is not None:
            return paid
        return await self._finish(outcome, failure_kind=failure_kind)

    # -- steps ---------------------------------------------------------------------------

    async def _start(self, request: PayoutRequest) -> PayoutStart:
        start: PayoutStart = await self._local(
            RecordActivities.start_payout,
            request,
            retry_policy=DB_RETRY,
            timeout=DB_TIMEOUT,
            summary="record the payout (unique key)",
        )
        return start

    async def _local(
        self,
        activity: Any,
        arg: Any,
        *,
        retry_policy: RetryPolicy = CHAIN_RETRY,
        timeout: timedelta = CHAIN_TIMEOUT,
        summary: str | None = None,
    ) -> Any:
        """Run a local activity, never while another is in flight.

        The signature update's handler checks a signature while the main coroutine may be
        running its own step. Live, overlapping local activities resolve in the order they
        finish; on replay the SDK resolves them in another order or grouping
        (temporalio/sdk-python#1578, #1881), so the coroutines resume in another order and
        the history no longer replays: the payout's next worker, and its status query,
        fail with a non-determinism error (seen in the chaos run). With one at a time,
        there is only one order. Uncontended, the lock does not yield: the commands of a
        payout without concurrent handlers are unchanged."""
        async with self._local_activity_slot:
            try:
                return await workflow.execute_local_activity_method(
                    activity,
                    arg,
                    start_to_close_timeout=timeout,
                    retry_policy=retry_policy,
                    local_retry_threshold=LOCAL_RETRY_THRESHOLD,
                    summary=summary,
                )
            except (ActivityError, ApplicationError) as exc:
                if _error_type(exc) == ALREADY_PAID:
                    raise _AlreadyPaid() from exc
                raise

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
                # Recorded before the ledger was kept: only an RPC holding every ledger
                # from the first can prove it dead.
                built_at_ledger=old.built_at_ledger if old.built_at_ledger is not None else 0,
            )
            lookup = await self._settle(key, old.attempt, built, None, policy, siblings_possible=True)
            if isinstance(lookup, PayoutOutcome):
                return lookup
            if lookup is not None and lookup.status == "SUCCESS":
                return await self._confirmed(key, old.tx_hash, lookup)
        return None

    async def _settle(
        self,
        key: str,
        attempt: int,
        built: BuiltEnvelope,
        signed_xdr: str | None,
        policy: PayoutPolicy,
        *,
        siblings_possible: bool = False,
    ) -> EnvelopeLookup | PayoutOutcome | None:
        """Send (unless ``signed_xdr`` is None) and follow the envelope until it is settled;
        None if it was not sent because an older envelope of the payout is unsettled. An
        envelope whose fate is unknown parks the payout: the operator's answer (the
        payout's outcome, or NOT_FOUND: it never applied) or the later lookup that
        settled it."""
        lookup = await self._follow(key, attempt, built, signed_xdr, policy, siblings_possible)
        if lookup is None or lookup.status != UNKNOWN:
            return lookup
        return await self._park_envelope(key, attempt, built, lookup, policy)

    async def _follow(
        self,
        key: str,
        attempt: int,
        built: BuiltEnvelope,
        signed_xdr: str | None,
        policy: PayoutPolicy,
        siblings_possible: bool = False,
    ) -> EnvelopeLookup | None:
        """The settle activity: its lookup (UNKNOWN included), or None (an older envelope
        of the payout is unsettled)."""
        remaining = max(0, built.max_time - int(workflow.now().timestamp()))
        try:
            lookup: EnvelopeLookup = await workflow.execute_activity_method(
                SettlementActivities.settle_envelope,
                SettleInput(
                    key,
                    attempt,
                    built,
                    signed_xdr,
                    policy.confirm_poll_ms,
                    policy.confirm_max_polls,
                    siblings_possible,
                ),
                start_to_close_timeout=timedelta(seconds=remaining) + SETTLE_SLACK,
                heartbeat_timeout=max(SETTLE_HEARTBEAT, 3 * timedelta(milliseconds=policy.confirm_poll_ms)),
                retry_policy=SETTLE_RETRY,
                summary=f"{'send and confirm' if signed_xdr else 'look up'} envelope {built.tx_hash[:16]}…",
            )
        except ActivityError as exc:
            kind = _error_type(exc)
            if kind == UNSETTLED_ENVELOPE:
                return None
            if kind == ALREADY_PAID:
                raise _AlreadyPaid() from exc
            raise
        return lookup

    async def _park_envelope(
        self, key: str, attempt: int, built: BuiltEnvelope, lookup: EnvelopeLookup, policy: PayoutPolicy
    ) -> EnvelopeLookup | PayoutOutcome:
        item = ParkedItem(
            key,
            f"envelope {built.tx_hash} is past its bound, but the RPC's history (from ledger "
            f"{lookup.oldest_ledger}) no longer reaches ledger {built.built_at_ledger + 1}: whether it applied is "
            "unknown; find out from a full history and answer with resolve_parked",
            tx_hash=built.tx_hash,
        )

        async def recheck() -> EnvelopeLookup | None:
            again = await self._follow(key, attempt, built, None, policy, siblings_possible=True)
            return again if again is not None and again.status != UNKNOWN else None

        outcome, settled = await self._stay_parked(item, recheck)
        if outcome is not None:
            return outcome
        # Settled by a later look, or an operator found it never applied.
        return settled if settled is not None else replace(lookup, status="NOT_FOUND")

    async def _wait_out_fees(self, reason: str, policy: PayoutPolicy) -> bool:
        """A fee above the cap (a surge): sleep on a durable timer, backing off, and say to
        build again, until PAYOUTS_FEE_CAP_WAIT_SECONDS have passed since the fee first
        went above the cap; then False (the payout fails, nothing sent)."""
        now = workflow.now()
        self._fees_above_cap_since = self._fees_above_cap_since or now
        give_up = self._fees_above_cap_since + timedelta(seconds=policy.fee_cap_wait_seconds)
        if now >= give_up:
            return False
        self._fee_wait = min(self._fee_wait * 2, FEE_WAIT_MAX) if self._fee_wait else FEE_WAIT_FIRST
        self._status.last_error = f"{reason}; waiting for fees to fall, until {give_up.isoformat(timespec='seconds')}"
        await workflow.sleep(min(self._fee_wait, give_up - now))
        return True

    # -- authorizations (channels) ----------------------------------------------------

    async def _nonce_report(self, authorization: AuthorizationRequest) -> NonceReport:
        report: NonceReport = await self._local(
            ChainActivities.authorization_state, authorization, summary=f"check nonce {authorization.nonce}"
        )
        return report

    async def _settle_authorization(self, key: str, authorization: AuthorizationRequest) -> PayoutOutcome | None:
        """Wait until the authorization can provably never pay again: the payout's outcome if
        a transaction used it (or an operator says it paid), None if it provably never did."""
        while True:
            report = await self._nonce_report(authorization)
            authorization = replace(authorization, unused_through_ledger=report.unused_through_ledger)
            if report.state != NonceState.LIVE:
                return await self._settled_authorization(key, authorization, report)
            await workflow.sleep(timedelta(seconds=report.recheck_seconds))

    async def _settled_authorization(
        self, key: str, authorization: AuthorizationRequest, report: NonceReport
    ) -> PayoutOutcome | None:
        """The outcome for a nonce that is no longer LIVE: paid elsewhere (USED), None
        (UNUSED), or what an operator decides (UNKNOWN: parked)."""
        if report.state == NonceState.USED:
            return await self._paid_elsewhere(key, authorization, report)
        if report.state == NonceState.UNUSED:
            return None
        item = ParkedItem(
            key,
            f"authorization nonce {authorization.nonce} (valid until ledger {authorization.valid_until_ledger}) "
            f"was last proven unused at ledger {authorization.unused_through_ledger}; its use would have expired "
            "from the ledger and the RPC's history no longer reaches it: whether it paid is unknown; find out from "
            "a full history and answer with resolve_parked",
            nonce=authorization.nonce,
            valid_until_ledger=authorization.valid_until_ledger,
        )

        async def recheck() -> NonceReport | None:
            again = await self._nonce_report(authorization)
            return again if again.state != NonceState.UNKNOWN else None

        outcome, settled = await self._stay_parked(item, recheck)
        if outcome is not None:
            return outcome
        if settled is not None and settled.state == NonceState.USED:
            return await self._paid_elsewhere(key, authorization, settled)
        return None  # proven unused by a later look, or an operator found it never paid

    async def _paid_elsewhere(
        self, key: str, authorization: AuthorizationRequest, report: NonceReport
    ) -> PayoutOutcome:
        outcome = PayoutOutcome(
            key,
            PayoutState.CONFIRMED,
            tx_hash=report.used_tx_hash,
            ledger=report.used_ledger,
            error=f"paid by a transaction this engine did not send, carrying its authorization "
            f"(nonce {authorization.nonce})",
        )
        return await self._end(outcome)

    # -- parking -------------------------------------------------------------------------

    async def _stay_parked(
        self, item: ParkedItem, recheck: Callable[[], Awaitable[Settled | None]]
    ) -> tuple[PayoutOutcome | None, Settled | None]:
        """Park the payout until an operator answers or ``recheck`` (run after a minute,
        backing off to an hour) settles what is parked. ``(outcome, None)`` when that ends
        the payout (paid: the DB already knew, or the operator says so); ``(None, value)``
        when a later look settled it; ``(None, None)`` when the operator found that what
        was parked never applied."""
        paid = await self._park(item)
        if paid is not None:
            return paid, None
        wait = PARKED_RECHECK_FIRST
        while True:
            resolution = await self._wait_for_resolution(wait)
            if resolution is not None:
                return await self._resolve(resolution), None
            settled = await recheck()
            if settled is not None:
                await self._unpark()
                return None, settled
            wait = min(wait * 2, PARKED_RECHECK_MAX)

    async def _park(self, item: ParkedItem) -> PayoutOutcome | None:
        """Show the payout PARKED (status, search attribute, DB, a metric) until
        :meth:`_unpark` or an operator's answer; the outcome instead if the DB already
        knows a payment."""
        workflow.logger.warning("payout PARKED: %s", item.reason)
        paid: PayoutOutcome | None = await self._local(
            RecordActivities.park_payout, item, retry_policy=DB_RETRY, timeout=DB_TIMEOUT, summary="park the payout"
        )
        if paid is not None:
            return await self._finish(paid, recorded=True, count=False)
        self._parked, self._state_before_park = item, self._status.state
        self._set_state(PayoutState.PARKED, last_error=item.reason, upsert=True)
        metrics.record_parked(self._asset, "envelope" if item.tx_hash is not None else "authorization")
        return None

    async def _unpark(self) -> None:
        """Settled after all (a later look found the answer): back in flight, in the DB too."""
        assert self._parked is not None
        await self._local(
            RecordActivities.resume_payout,
            self._parked,
            retry_policy=DB_RETRY,
            timeout=DB_TIMEOUT,
            summary="resume the payout",
        )
        self._parked = None
        self._set_state(self._state_before_park, upsert=True)

    async def _wait_for_resolution(self, timeout: timedelta) -> ParkResolution | None:
        try:
            await workflow.wait_condition(lambda: self._resolution is not None, timeout=timeout)
        except TimeoutError:
            return None
        resolution, self._resolution = self._resolution, None
        return resolution

    async def _resolve(self, resolution: ParkResolution) -> PayoutOutcome | None:
        """Record an operator's answer: the payout's outcome if it was paid, else None."""
        outcome: PayoutOutcome | None = await self._local(
            RecordActivities.resolve_parked,
            resolution,
            retry_policy=DB_RETRY,
            timeout=DB_TIMEOUT,
            summary="record the operator's answer",
        )
        self._parked = None
        if outcome is None:
            self._set_state(self._state_before_park, upsert=True)
            return None
        return await self._finish(outcome, recorded=True)

    # -- signatures ------------------------------------------------------------------------

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
            deadline = awaited.sign_by
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
                    if reason is None and self._accepted_signature is None:
                        self._accepted_signature = candidate
            self._signed = awaited
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

    # -- outcomes --------------------------------------------------------------------------

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
            # The DB's answer wins: a run that would fail a key the DB knows as paid
            # reports that payment instead.
            stored: PayoutOutcome = await self._local(
                RecordActivities.finish_payout,
                outcome,
                retry_policy=DB_RETRY,
                timeout=DB_TIMEOUT,
                summary=f"record the outcome: {outcome.state}",
            )
            if stored.state != outcome.state:
                outcome, count, failure_kind = stored, False, None
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
            if self._signed is built:
                # Another signature of the same request was accepted while this one was
                # checked (signatures of one payload are equivalent): the payout goes on.
                return "accepted"
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

    @workflow.update
    def resolve_parked(self, answer: Any) -> str:
        """An operator's answer for a PARKED payout: ``{"paid_tx_hash": "<64 hex>"}`` (it
        was paid by that transaction: the payout is CONFIRMED with it) or
        ``{"not_paid": true}`` (what was parked never applied: the payout goes on).
        Checked by the validator; ``recorded`` once accepted."""
        assert self._parked is not None and isinstance(answer, dict)  # guaranteed by the validator
        self._resolution = ParkResolution(self._parked, answer.get("paid_tx_hash"))
        return "recorded"

    @resolve_parked.validator
    def _validate_resolution(self, answer: Any) -> None:
        if self._parked is None or self._resolution is not None:
            raise ValueError(f"the payout is not parked (state {self._status.state.value})")
        if not isinstance(answer, dict) or len(answer) != 1:
            raise ValueError('answer must be {"paid_tx_hash": "<64 lowercase hex>"} or {"not_paid": true}')
        paid_by = answer.get("paid_tx_hash")
        if "paid_tx_hash" in answer and not (isinstance(paid_by, str) and _TX_HASH.fullmatch(paid_by)):
            raise ValueError("paid_tx_hash must be a transaction hash: 64 lowercase hex digits")
        if "not_paid" in answer and answer["not_paid"] is not True:
            raise ValueError("not_paid must be true")
        if "paid_tx_hash" not in answer and "not_paid" not in answer:
            raise ValueError('answer must be {"paid_tx_hash": "<64 lowercase hex>"} or {"not_paid": true}')


def _reason(error: ActivityError | ApplicationError) -> str:
    """The message of an activity's failure (a local activity's arrives unwrapped)."""
    cause = error.cause if isinstance(error, ActivityError) else error
    return cause.message if isinstance(cause, ApplicationError) else str(error)


def _error_type(error: ActivityError | ApplicationError) -> str | None:
    cause = error.cause if isinstance(error, ActivityError) else error
    return cause.type if isinstance(cause, ApplicationError) else None
