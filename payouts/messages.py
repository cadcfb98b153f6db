"""Messages between ``PayoutWorkflow`` and its activities.

Plain dataclasses with no Stellar imports, so the workflow sandbox can load them. None of
them ever carries a secret: envelopes and signatures are public once submitted.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Replacement:
    """An envelope the network refused (txTOO_LATE, txINSUFFICIENT_FEE) before accepting
    it: its replacement is built at once on the same source account and sequence number,
    so at most one of the two can ever apply, bidding at least ``min_inclusion_fee``."""

    source_account: str
    sequence: int
    min_inclusion_fee: int


@dataclass(frozen=True)
class BuildEnvelopeInput:
    idempotency_key: str
    attempt: int
    destination: str
    stroops: int
    asset: str
    external_signing: bool
    # With channels: the payout account's signed authorization entry (base64), which the
    # envelope carries.
    signed_authorization: str | None = None
    replaces: Replacement | None = None


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
    signed_entry_xdr: str | None = None  # hot key: signed at once; external: once accepted
    # The ledger through which its nonce is proven unused (recorded in the DB too).
    unused_through_ledger: int = 0


@dataclass(frozen=True)
class NonceReport:
    """What ``authorization_state`` proved about an authorization's nonce (and recorded)."""

    state: str  # a payouts.authorization.NonceState value
    unused_through_ledger: int
    used_ledger: int | None = None
    used_tx_hash: str | None = None
    # LIVE: when to look again, in seconds: soon enough that an absence still proves the
    # nonce unused, and preferably once it expired.
    recheck_seconds: int = 5


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
    built_at_ledger: int  # the RPC's latest ledger when built: the envelope can be in no ledger up to it
    # Unix time by which an external signature must arrive for the envelope to still be
    # accepted by the network (its bound less a margin in ledgers of the network's cadence).
    sign_by: int = 0
    signed_xdr: str | None = None
    # Channels: the nonce of the payout account's authorization it carries, and, when the
    # hot key made it for this envelope, that authorization (later carriers carry it too).
    auth_nonce: int | None = None
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
    confirm_poll_ms: int
    confirm_max_polls: int
    # It may share its sequence number with another envelope of the payout (a replacement
    # of a refused one, or one recorded by an earlier run): settled together.
    siblings_possible: bool = False


@dataclass(frozen=True)
class EnvelopeLookup:
    """``getTransaction`` by hash, with the RPC's window to judge a NOT_FOUND."""

    # SUCCESS | FAILED | NOT_FOUND (provably dead) | UNKNOWN (past its bound, but the
    # RPC's history no longer reaches the ledger it was built at: it may have applied) |
    # REFUSED (sendTransaction refused it before ever accepting it: result_code says why)
    status: str
    latest_ledger: int
    latest_close_time: int
    oldest_ledger: int
    ledger: int | None = None
    fee_charged: int | None = None
    result_code: str | None = None
    # SUCCESS by an envelope that replaced, or was replaced by, the one followed.
    tx_hash: str | None = None
    # REFUSED with txINSUFFICIENT_FEE: the inclusion fee the network said it needs.
    needed_inclusion_fee: int | None = None


@dataclass(frozen=True)
class PayoutPolicy:
    """The worker's operating mode and limits (from its settings), fixed for one run."""

    live_execution: bool
    sign_with_hot_key: bool
    max_attempts: int
    confirm_poll_ms: int
    confirm_max_polls: int
    uses_channels: bool
    fee_cap_wait_seconds: int = 0


@dataclass(frozen=True)
class RecordedEnvelope:
    """An envelope the DB knows for this payout and that is not settled yet."""

    tx_hash: str
    signed_xdr: str
    source_account: str
    sequence: int
    max_time: int
    attempt: int
    built_at_ledger: int | None = None  # None: recorded before it was kept


@dataclass(frozen=True)
class PayoutStart:
    """What ``start_payout`` found: the policy, and the durable past of this key."""

    policy: PayoutPolicy
    confirmed: PayoutOutcome | None
    unsettled: list[RecordedEnvelope]
    attempts_used: int
    # Channels: the key's authorization that may still pay (at most one), to carry again
    # or to settle before a new one is asked for.
    authorization: AuthorizationRequest | None = None


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


@dataclass(frozen=True)
class ParkedItem:
    """What a parked payout cannot settle: an envelope (``tx_hash``) that may have applied
    outside the RPC's history, or an authorization (``nonce``) whose use cannot be proven
    either way. ``reason`` is what operators read (status, DB, logs)."""

    idempotency_key: str
    reason: str
    tx_hash: str | None = None
    nonce: int | None = None
    valid_until_ledger: int | None = None


@dataclass(frozen=True)
class ParkResolution:
    """An operator's answer for a parked payout (the ``resolve_parked`` update): it was
    paid by ``paid_tx_hash``, or (``None``) the parked envelope or authorization never
    applied and the payout may go on."""

    item: ParkedItem
    paid_tx_hash: str | None
