"""The payout request and its status: the public contract of shared/DESIGN.md §3.

A :class:`PayoutRequest` is validated where it enters (client, API, CLI), never inside a
workflow: an invalid model there would make the workflow task retry forever. Its
validation errors name the field and the rule and never show a secret seed typed into the
wrong field (promise 6): pydantic's echo of the input is off, and the amount and asset
rules quote their input with seeds hidden (:func:`payouts.amounts.shown`).
"""

from __future__ import annotations

import hashlib
import json
import re
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, field_validator
from stellar_sdk import StrKey

from payouts.amounts import SECRET_SEED, to_stroops
from payouts.assets import validate_asset

IDEMPOTENCY_KEY_PATTERN = r"^[A-Za-z0-9:_-]{1,128}$"
# Used with fullmatch: re.match would let "$" accept a trailing newline.
_KEY = re.compile(IDEMPOTENCY_KEY_PATTERN)


class PayoutRequest(BaseModel):
    """One payout. ``idempotency_key`` becomes the workflow ID, verbatim.

    Destinations are G… accounts or C… contracts. Muxed M… addresses are rejected on
    purpose: a payout pays one ledger account, and a platform that tracks sub-accounts
    keeps that mapping itself.
    """

    # hide_input_in_errors: pydantic would otherwise put (most of) the rejected value in
    # str(ValidationError), a seed pasted as the destination included.
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, hide_input_in_errors=True)

    payout_id: str = Field(min_length=1, max_length=128, pattern=IDEMPOTENCY_KEY_PATTERN)
    destination: str
    amount: str
    asset: str = "XLM"
    idempotency_key: str = Field(min_length=1, max_length=128, pattern=IDEMPOTENCY_KEY_PATTERN)

    @field_validator("destination")
    @classmethod
    def _destination(cls, value: str) -> str:
        if value.startswith("M"):
            raise ValueError("muxed (M…) destinations are not supported; pay the G… account")
        if SECRET_SEED.fullmatch(value):
            raise ValueError("must be a G… account ID or a C… contract ID, not an S… secret seed")
        if not (StrKey.is_valid_ed25519_public_key(value) or StrKey.is_valid_contract(value)):
            raise ValueError("must be a G… account ID or a C… contract ID (StrKey with a valid checksum)")
        return value

    @field_validator("amount")
    @classmethod
    def _amount(cls, value: str) -> str:
        to_stroops(value)
        return value

    @field_validator("asset")
    @classmethod
    def _asset(cls, value: str) -> str:
        return validate_asset(value)

    @property
    def stroops(self) -> int:
        return to_stroops(self.amount)

    def fingerprint(self) -> str:
        """What makes two requests under one key the same payout: ``sha256`` over the
        payout ID, destination, amount in stroops and asset (so ``"1.50"`` equals ``"1.5"``)."""
        canonical = json.dumps([self.payout_id, self.destination, self.stroops, self.asset], separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


def is_valid_idempotency_key(key: str) -> bool:
    return _KEY.fullmatch(key) is not None


class PayoutState(StrEnum):
    """Where a payout is; also the value of the ``PayoutStatus`` search attribute."""

    RECEIVED = "RECEIVED"
    BUILDING = "BUILDING"
    BUILT = "BUILT"  # build-only mode: the unsigned XDR is the result
    AWAITING_SIGNATURE = "AWAITING_SIGNATURE"
    SUBMITTED = "SUBMITTED"
    CONFIRMED = "CONFIRMED"
    FAILED = "FAILED"
    # The engine cannot prove whether an envelope or an authorization it handed out was
    # applied (the RPC's history no longer reaches it): nothing new is built or signed
    # until an operator resolves it (README, "Parked payouts").
    PARKED = "PARKED"


class PayoutStatus(BaseModel):
    """Answer of the ``status`` query. Never carries a secret."""

    state: PayoutState
    attempt: int = 0
    unsigned_xdr: str | None = None
    # Channels with an external signer: the authorization entry to sign, and its payload.
    authorization_xdr: str | None = None
    authorization_payload: str | None = None
    tx_hash: str | None = None
    fee_charged: int | None = None
    ledger: int | None = None
    last_error: str | None = None
