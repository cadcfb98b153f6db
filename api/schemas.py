"""Request and answer bodies of the HTTP API, and its error shape.

Field names follow the seed's API examples (camelCase). A 4xx answer is
``{"error": "field: rule", "errors": [{"field", "message"}]}``; it never echoes the
input (a secret seed pasted into a field stays out of answers and logs).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from payouts.amounts import hide_secret_seeds
from payouts.envelopes import MAX_SIGNED_XDR_CHARS
from payouts.models import IDEMPOTENCY_KEY_PATTERN, PayoutState, PayoutStatus

# Request field names (the seed's) for PayoutRequest's own.
_FIELD_NAMES = {"payout_id": "payoutId", "destination": "destinationAccount", "idempotency_key": "idempotencyKey"}


class _CamelModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=False, frozen=True)


def _documented(pattern: str, description: str) -> Any:
    """A pattern for the OpenAPI document only: the field is checked by
    :class:`~payouts.models.PayoutRequest`, whose messages say more than "should match
    pattern" (and what no pattern can say: a StrKey's checksum, an amount above zero)."""
    return {"pattern": pattern, "description": description}


ASSET_DOC = _documented("^(XLM|USDC|[A-Za-z0-9]{1,12}:G[A-Z2-7]{55})$", "XLM, USDC or CODE:ISSUER")


class CreatePayoutBody(_CamelModel):
    model_config = ConfigDict(extra="forbid", strict=True, hide_input_in_errors=True)

    payout_id: str = Field(alias="payoutId", max_length=128, json_schema_extra=_documented(
        IDEMPOTENCY_KEY_PATTERN, "the platform's own ID for the payout"))  # fmt: skip
    destination_account: str = Field(alias="destinationAccount", max_length=56, json_schema_extra=_documented(
        "^[GC][A-Z2-7]{55}$", "G… account or C… contract (StrKey, valid checksum)"))  # fmt: skip
    amount: str = Field(max_length=21, json_schema_extra=_documented(
        r"^[0-9]{1,13}(\.[0-9]{1,7})?$", 'decimal string above zero, at most 7 places, e.g. "100.5"'))  # fmt: skip
    asset: str = Field(default="XLM", max_length=69, json_schema_extra=ASSET_DOC)
    idempotency_key: str = Field(
        alias="idempotencyKey",
        max_length=128,
        pattern=IDEMPOTENCY_KEY_PATTERN,
        description="the payout's workflow ID: the same request under it is the same payout",
    )


class SubmitSignedBody(_CamelModel):
    model_config = ConfigDict(extra="forbid", strict=True, hide_input_in_errors=True)

    signed_xdr: str = Field(alias="signedXdr", min_length=1, max_length=MAX_SIGNED_XDR_CHARS)


class PayoutStatusBody(_CamelModel):
    idempotency_key: str
    state: PayoutState
    attempt: int
    unsigned_xdr: str | None
    authorization_xdr: str | None
    authorization_payload: str | None
    tx_hash: str | None
    fee_charged: int | None
    ledger: int | None
    last_error: str | None

    @classmethod
    def of(cls, key: str, status: PayoutStatus) -> PayoutStatusBody:
        return cls.model_validate({"idempotency_key": key, **status.model_dump()}, by_name=True)


class SubmitSignedAnswer(_CamelModel):
    accepted: bool
    status: PayoutStatusBody


class PayoutListItem(_CamelModel):
    idempotency_key: str
    state: str | None
    asset: str | None
    execution_status: str
    started_at: datetime
    closed_at: datetime | None


class FieldError(BaseModel):
    field: str
    message: str


class ErrorBody(BaseModel):
    error: str
    errors: list[FieldError] = []


class ApiError(Exception):
    def __init__(self, status: int, error: str, errors: list[FieldError] | None = None) -> None:
        self.status, self.error, self.errors = status, error, errors or []


def error_response(status: int, error: str, errors: list[FieldError] | None = None) -> JSONResponse:
    body = ErrorBody(error=hide_secret_seeds(error), errors=errors or [])
    return JSONResponse(body.model_dump(), status_code=status)


def field_errors(errors: list[Any]) -> list[FieldError]:
    found = []
    for e in errors:
        loc = [str(p) for p in e["loc"] if str(p) not in ("body", "query", "path", "header")]
        if e["type"] == "json_invalid":  # its loc is the character position
            loc = []
        field = ".".join(_FIELD_NAMES.get(p, p) for p in loc) or "body"
        found.append(FieldError(field=field, message=hide_secret_seeds(str(e["msg"]).removeprefix("Value error, "))))
    return found


def summarize(errors: list[FieldError]) -> str:
    return "; ".join(f"{e.field}: {e.message}" for e in errors)
