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
    # With channels and an external signer: the payout account's signed authorization
    # entry (base64), which the envelope carries.
    signed_authorization: str | None = None


@dataclass(frozen=True)
class AuthorizationRequest:
    """Channels with an external signer: the payout account's authorization entry to sign.

    ``entry_xdr`` is the unsigned ``SorobanAuthorizationEntry`` (expiration ledger set);
    the signer signs ``payload_hex`` (see :mod:`payouts.authorization`) and answers with
    the entry, signature filled in.
    """

    entry_xdr: str
    payload_hex: str
    nonce: int
    valid_until_ledger: int
    expires_at: int  # unix time by which the workflow stops waiting for the signature
    signed_entry_xdr: str | None = None  # hot key: signed at once


@dataclass(frozen=True)
class BuiltEnvelope:
    """A simulated, fee-checked envelope on a leased source account.

    ``signed_xdr`` is set when the worker could sign it (hot key, or a channel carrying a
    signed authorization); otherwise an external signer must sign ``unsigned_xdr``.
    """

    unsigned_xdr: str
    tx_hash: str
    source_account: str
    sequence: int
    max_time: int
    fee: int
    resource_fee: int
    built_at_ledger: int  # the RPC's latest ledger when built: the envelope cannot be in an earlier one
    signed_xdr: str | None = None
    # Channels with the hot key: the payout account's signed authorization it carries,
    # which the payout keeps carrying until it is used or expired.
    authorization: AuthorizationRequest | None = None


@dataclass(frozen=True)
class SignatureInput:
    """A signature to check: a signed envelope for ``tx_hash``, or (with
    ``authorization`` set) a signed copy of that authorization entry."""

    tx_hash: str
    signed_xdr: str
    authorization: str | None = None


@dataclass(frozen=True)
class SettleInput:
    """An envelope to send (``signed_xdr``; None: only look it up) and follow until it is
    applied or provably dead, recording it first (promise 3) and releasing its lease after."""

    idempotency_key: str
    attempt: int
    envelope: BuiltEnvelope
    signed_xdr: str | None
    since_ledger: int | None
    confirm_poll_ms: int
    confirm_max_polls: int


@dataclass(frozen=True)
class EnvelopeLookup:
    """``getTransaction`` by hash, with the RPC's window to judge a NOT_FOUND."""

    status: str  # SUCCESS | FAILED | NOT_FOUND (settled: provably dead)
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
    uses_channels: bool


@dataclass(frozen=True)
class RecordedEnvelope:
    """An envelope the DB knows for this payout and that is not settled yet."""

    tx_hash: str
    signed_xdr: str
    source_account: str
    sequence: int
    max_time: int
    attempt: int


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
class PayoutOutcome:
    """How a payout ended: the workflow's result, and what ``finish_payout`` records."""

    idempotency_key: str
    state: str  # CONFIRMED | FAILED | BUILT
    tx_hash: str | None = None
    ledger: int | None = None
    fee_charged: int | None = None
    unsigned_xdr: str | None = None
    error: str | None = None
