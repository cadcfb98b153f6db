"""Activities that keep the durable record in the app DB (``payouts`` and ``transactions``).

Sync functions run in the worker's thread pool; each DB call is its own short
transaction and safe to repeat, so retries are harmless. ``start_payout`` is also where a
run learns its key's past: an envelope that already confirmed (the key paid, even if
Temporal's history of that run is gone) or envelopes that were sent and never settled.
"""

from __future__ import annotations

from sqlalchemy.engine import Engine
from temporalio import activity
from temporalio.exceptions import ApplicationError

from payouts import db
from payouts.config import PayoutSettings
from payouts.errors import IdempotencyConflict
from payouts.messages import (
    PayoutOutcome,
    PayoutPolicy,
    PayoutStart,
    RecordedEnvelope,
    RecordEnvelopeInput,
    SettleEnvelopeInput,
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
            RecordedEnvelope(e.tx_hash, e.envelope_xdr, e.max_time)
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
    def mark_submitted(self, tx_hash: str) -> None:
        """Called once, right after an envelope's first send and before it is settled."""
        db.mark_envelope(self.engine, tx_hash, db.EnvelopeStatus.SUBMITTED)

    @activity.defn
    def settle_envelope(self, settled: SettleEnvelopeInput) -> None:
        db.mark_envelope(
            self.engine,
            settled.tx_hash,
            settled.status,
            ledger=settled.ledger,
            fee_charged=settled.fee_charged,
            error=settled.error,
        )

    @activity.defn
    def finish_payout(self, outcome: PayoutOutcome) -> None:
        db.set_payout_state(
            self.engine,
            outcome.idempotency_key,
            PayoutState(outcome.state),
            tx_hash=outcome.tx_hash,
            ledger=outcome.ledger,
            fee_charged=outcome.fee_charged,
            error=outcome.error,
        )
