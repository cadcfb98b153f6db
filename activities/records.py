"""Activities that keep the durable record in the app DB (``payouts`` and ``transactions``).

Sync functions run in the worker's thread pool, as local activities: each DB call is its
own short transaction and safe to repeat, so retries (and re-runs after a lost workflow
task) are harmless. ``start_payout`` is also where a
run learns its key's past: an envelope that already confirmed (the key paid, even if
Temporal's history of that run is gone) or envelopes that were sent and never settled.
"""

from __future__ import annotations

from sqlalchemy.engine import Engine
from sqlmodel import Session
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.failures import IDEMPOTENCY_CONFLICT, already_paid
from payouts import authorization_store, db, leases
from payouts.authorization import NonceState
from payouts.channels import ChannelKeys
from payouts.config import PayoutSettings
from payouts.errors import AlreadyPaid, IdempotencyConflict
from payouts.messages import (
    BuiltEnvelope,
    ParkedItem,
    ParkResolution,
    PayoutOutcome,
    PayoutPolicy,
    PayoutStart,
    RecordedEnvelope,
    RecordEnvelopeInput,
)
from payouts.models import PayoutRequest, PayoutState


def record_built(engine: Engine, payer: str, key: str, attempt: int, built: BuiltEnvelope, xdr: str) -> None:
    """:func:`payouts.db.record_envelope` for a built envelope (its XDR unsigned or signed),
    with the hot-key authorization it carries, if that is new, in the same transaction."""
    authorization = built.authorization

    def with_authorization(session: Session) -> None:
        assert authorization is not None and authorization.signed_entry_xdr is not None
        authorization_store.record_carried(
            session,
            key,
            payer,
            authorization.nonce,
            authorization.entry_xdr,
            authorization.signed_entry_xdr,
            authorization.valid_until_ledger,
            authorization.expires_at,
            authorization.unused_through_ledger,
        )

    db.record_envelope(
        engine,
        key,
        attempt,
        built.tx_hash,
        xdr,
        built.source_account,
        built.sequence,
        built.max_time,
        built_at_ledger=built.built_at_ledger,
        auth_nonce=built.auth_nonce,
        with_insert=with_authorization if authorization is not None and authorization.signed_entry_xdr else None,
    )


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
            fee_cap_wait_seconds=s.PAYOUTS_FEE_CAP_WAIT_SECONDS,
        )

    @activity.defn
    def start_payout(self, request: PayoutRequest) -> PayoutStart:
        try:
            db.record_payout(self.engine, request)
        except IdempotencyConflict as exc:
            raise ApplicationError(str(exc), type=IDEMPOTENCY_CONFLICT, non_retryable=True) from None
        key = request.idempotency_key
        with db.transaction(self.engine, write=False) as session:  # the key's past, in one read
            payout = db.payout_row(session, key)
            paid = None if payout is None else db.payment_in(session, payout)
            envelopes = db.envelopes_in(session, key)
            authorization = authorization_store.unsettled_in(session, key)
        passphrase = self.settings.STELLAR_NETWORK_PASSPHRASE
        unsettled = [
            RecordedEnvelope(
                e.tx_hash, e.envelope_xdr, e.source_account, e.sequence, e.max_time, e.attempt, e.built_at_ledger
            )
            for e in envelopes
            if e.status in (db.EnvelopeStatus.QUEUED, db.EnvelopeStatus.SUBMITTED)
        ]
        return PayoutStart(
            policy=self.policy(),
            confirmed=None if paid is None else self._paid(key, paid),
            unsettled=unsettled,
            attempts_used=max((e.attempt for e in envelopes), default=0),
            authorization=None if authorization is None else authorization.request(passphrase),
        )

    @staticmethod
    def _paid(key: str, paid: db.Payment) -> PayoutOutcome:
        return PayoutOutcome(
            key,
            PayoutState.CONFIRMED,
            tx_hash=paid.tx_hash,
            ledger=paid.ledger,
            fee_charged=paid.fee_charged,
            error=None
            if paid.tx_hash
            else "paid by a transaction this engine did not send, carrying its authorization",
        )

    @activity.defn
    def record_envelope(self, recorded: RecordEnvelopeInput) -> None:
        built = recorded.envelope
        try:
            payer = self.settings.PAYOUT_SOURCE_ACCOUNT
            record_built(self.engine, payer, recorded.idempotency_key, recorded.attempt, built, recorded.signed_xdr)
        except AlreadyPaid as exc:
            leases.release(self.engine, built.source_account, recorded.idempotency_key)
            raise already_paid(exc) from None

    @activity.defn
    def finish_payout(self, outcome: PayoutOutcome) -> PayoutOutcome:
        """Record the outcome and free any lease the payout still holds (its envelopes are
        all settled by now, e.g. one built and never sent because an older one paid).

        Returns what the DB holds: a run that would end FAILED or BUILT for a key the DB
        knows as paid (a reset or stale run) ends CONFIRMED with that payment instead."""
        leases.release_all(self.engine, outcome.idempotency_key)
        if outcome.state != PayoutState.CONFIRMED:
            paid = db.payment_of(self.engine, outcome.idempotency_key)
            if paid is not None:
                return self._paid(outcome.idempotency_key, paid)
        db.set_payout_state(
            self.engine,
            outcome.idempotency_key,
            PayoutState(outcome.state),
            tx_hash=outcome.tx_hash,
            ledger=outcome.ledger,
            fee_charged=outcome.fee_charged,
            error=outcome.error,
        )
        return outcome

    @activity.defn
    def park_payout(self, item: ParkedItem) -> PayoutOutcome | None:
        """Record the payout PARKED with the reason; the DB's payment instead, if it has one."""
        paid = db.payment_of(self.engine, item.idempotency_key)
        if paid is not None:
            return self._paid(item.idempotency_key, paid)
        db.set_payout_state(self.engine, item.idempotency_key, PayoutState.PARKED, error=item.reason)
        return None

    @activity.defn
    def resolve_parked(self, resolution: ParkResolution) -> PayoutOutcome | None:
        """Record an operator's answer for a parked payout. Paid: the payout is CONFIRMED
        with that transaction (returned). Not paid: the parked envelope is expired, the
        authorization unused, and the payout goes on (None)."""
        item, key, paid_by = resolution.item, resolution.item.idempotency_key, resolution.paid_tx_hash
        payer = self.settings.PAYOUT_SOURCE_ACCOUNT
        if paid_by is None:
            note = "an operator found it never applied"
            if item.tx_hash is not None:
                db.mark_envelope(self.engine, item.tx_hash, db.EnvelopeStatus.EXPIRED, error=note)
            if item.nonce is not None and item.valid_until_ledger is not None:
                authorization_store.observe(self.engine, payer, item.nonce, NonceState.UNUSED, item.valid_until_ledger)
            db.set_payout_state(self.engine, key, PayoutState.RECEIVED, error=f"resumed: {note}")
            return None
        note = f"an operator found the payout paid by transaction {paid_by}"
        if item.tx_hash is not None:
            status = db.EnvelopeStatus.CONFIRMED if item.tx_hash == paid_by else db.EnvelopeStatus.EXPIRED
            db.mark_envelope(self.engine, item.tx_hash, status, error=note)
        if item.nonce is not None:
            authorization_store.observe(self.engine, payer, item.nonce, NonceState.USED, 0, used_tx_hash=paid_by)
        db.set_payout_state(self.engine, key, PayoutState.CONFIRMED, tx_hash=paid_by, error=note)
        return PayoutOutcome(key, PayoutState.CONFIRMED, tx_hash=paid_by, error=note)

    @activity.defn
    def resume_payout(self, item: ParkedItem) -> None:
        """A parked payout settled after all: in flight again (RECEIVED) in the DB."""
        db.set_payout_state(
            self.engine, item.idempotency_key, PayoutState.RECEIVED, error=f"resumed after: {item.reason}"
        )
