"""Messages between ``PayoutWorkflow`` and its activities.

Plain dataclasses with no Stellar imports, so the workflow sandbox can load them. None of
them ever carries a secret: envelopes and signatures are public once submitted.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BuildEnvelopeInput:
    idempotency_key: str
    attempt: int
    destination: str
    stroops: int
    asset: str
    external_signing: bool


@dataclass(frozen=True)
class BuiltEnvelope:
    """A simulated, fee-checked, unsigned envelope."""

    unsigned_xdr: str
    tx_hash: str
    source_account: str
    sequence: int
    max_time: int
    fee: int
    resource_fee: int
    built_at_ledger: int  # the RPC's latest ledger when built: the envelope cannot be in an earlier one


@dataclass(frozen=True)
class SignatureInput:
    tx_hash: str
    signed_xdr: str


@dataclass(frozen=True)
class SubmitResult:
    """``sendTransaction``'s answer: PENDING, DUPLICATE, TRY_AGAIN_LATER or ERROR."""

    status: str
    latest_ledger: int
    error_code: str | None = None


@dataclass(frozen=True)
class EnvelopeLookup:
    """``getTransaction`` by hash, with the RPC's window to judge a NOT_FOUND."""

    status: str  # SUCCESS | FAILED | NOT_FOUND
    latest_ledger: int
    latest_close_time: int
    oldest_ledger: int
    ledger: int | None = None
    fee_charged: int | None = None
    result_code: str | None = None


@dataclass(frozen=True)
class PayoutPolicy:
    """The worker's operating mode and limits (from its settings), fixed for one run."""

    live_execution: bool
    sign_with_hot_key: bool
    max_attempts: int
    confirm_poll_ms: int
    confirm_max_polls: int


@dataclass(frozen=True)
class RecordedEnvelope:
    """An envelope the DB knows for this payout and that is not settled yet."""

    tx_hash: str
    signed_xdr: str
    max_time: int


@dataclass(frozen=True)
class PayoutStart:
    """What ``start_payout`` found: the policy, and the durable past of this key."""

    policy: PayoutPolicy
    confirmed: PayoutOutcome | None
    unsettled: list[RecordedEnvelope]
    attempts_used: int


@dataclass(frozen=True)
class RecordEnvelopeInput:
    idempotency_key: str
    attempt: int
    envelope: BuiltEnvelope
    signed_xdr: str


@dataclass(frozen=True)
class SettleEnvelopeInput:
    tx_hash: str
    status: str  # confirmed | failed | expired
    ledger: int | None = None
    fee_charged: int | None = None
    error: str | None = None


@dataclass(frozen=True)
class PayoutOutcome:
    """How a payout ended: the workflow's result, and what ``finish_payout`` records."""

    idempotency_key: str
    state: str  # CONFIRMED | FAILED | BUILT
    tx_hash: str | None = None
    ledger: int | None = None
    fee_charged: int | None = None
    unsigned_xdr: str | None = None
    error: str | None = None
