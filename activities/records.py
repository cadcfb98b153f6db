"""Activities that keep the durable record in the app DB (``payouts`` and ``transactions``).

Sync functions run in the worker's thread pool, as local activities: each DB call is its
own short transaction and safe to repeat, so retries (and re-runs after a lost workflow
task) are harmless. ``start_payout`` is also where a
run learns its key's past: an envelope that already confirmed (the key paid, even if
Temporal's history of that run is gone) or envelopes that were sent and never settled.
"""

from __future__ import annotations

from sqlalchemy.engine import Engine
from temporalio import activity
from temporalio.exceptions import ApplicationError

from payouts import db, leases
from payouts.channels import ChannelKeys
from payouts.config import PayoutSettings
from payouts.errors import IdempotencyConflict
from payouts.messages import (
    PayoutOutcome,
    PayoutPolicy,
    PayoutStart,
    RecordedEnvelope,
    RecordEnvelopeInput,
)
from payouts.models import PayoutRequest, PayoutState

IDEMPOTENCY_CONFLICT = "IdempotencyConflict"


class RecordActivities:
    def __init__(self, settings: PayoutSettings, engine: Engine) -> None:
        self.settings = settings
        self.engine = engine

    def policy(self) -> PayoutPolicy:
        s = self.settings
        return PayoutPolicy(
            live_execution=s.PAYOUTS_LIVE_EXECUTION,
            sign_with_hot_key=s.PAYOUTS_SIGN_WITH_HOT_KEY,
            max_attempts=s.PAYOUTS_MAX_ATTEMPTS,
            confirm_poll_ms=s.PAYOUTS_CONFIRM_POLL_MS,
            confirm_max_polls=s.PAYOUTS_CONFIRM_MAX_POLLS,
            uses_channels=ChannelKeys(s).pool.uses_channels,
        )

    @activity.defn
    def start_payout(self, request: PayoutRequest) -> PayoutStart:
        try:
            db.record_payout(self.engine, request)
        except IdempotencyConflict as exc:
            raise ApplicationError(str(exc), type=IDEMPOTENCY_CONFLICT, non_retryable=True) from None
        key = request.idempotency_key
        envelopes = db.envelopes_of(self.engine, key)
        paid = next((e for e in envelopes if e.status == db.EnvelopeStatus.CONFIRMED), None)
        confirmed = (
            PayoutOutcome(
                key, PayoutState.CONFIRMED, tx_hash=paid.tx_hash, ledger=paid.ledger, fee_charged=paid.fee_charged
            )
            if paid is not None
            else None
        )
        unsettled = [
            RecordedEnvelope(e.tx_hash, e.envelope_xdr, e.source_account, e.sequence, e.max_time, e.attempt)
            for e in envelopes
            if e.status in (db.EnvelopeStatus.QUEUED, db.EnvelopeStatus.SUBMITTED)
        ]
        return PayoutStart(
            policy=self.policy(),
            confirmed=confirmed,
            unsettled=unsettled,
            attempts_used=max((e.attempt for e in envelopes), default=0),
        )

    @activity.defn
    def record_envelope(self, recorded: RecordEnvelopeInput) -> None:
        built = recorded.envelope
        db.record_envelope(
            self.engine,
            recorded.idempotency_key,
            recorded.attempt,
            built.tx_hash,
            recorded.signed_xdr,
            built.source_account,
            built.sequence,
            built.max_time,
        )

    @activity.defn
    def finish_payout(self, outcome: PayoutOutcome) -> None:
        """Record the outcome and free any lease the payout still holds (its envelopes are
        all settled by now, e.g. one built and never sent because an older one paid)."""
        leases.release_all(self.engine, outcome.idempotency_key)
        db.set_payout_state(
            self.engine,
            outcome.idempotency_key,
            PayoutState(outcome.state),
            tx_hash=outcome.tx_hash,
            ledger=outcome.ledger,
            fee_charged=outcome.fee_charged,
            error=outcome.error,
        )
