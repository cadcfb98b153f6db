"""The HTTP API platforms use to start and follow payouts (FastAPI).

Endpoints (JSON, field names as in the seed's API examples, camelCase):

- ``POST /api/payouts/create`` ``{payoutId, destinationAccount, amount, asset?,
  idempotencyKey}`` → the payout's status. Idempotent: the same request under a key
  returns the same payout; another request under it is ``409``. ``?waitSeconds=N``
  (≤ 30) waits until the payout has moved past building (it then carries the unsigned
  XDR an external signer needs).
- ``GET /api/payouts/{key}`` → the status (``404`` if no payout has that key).
- ``POST /api/payouts/{key}/submit-signed`` ``{signedXdr}`` → checked synchronously
  (the workflow's update): ``200`` accepted, ``422`` rejected with the reason.
- ``GET /api/payouts?status=…&asset=…&limit=…`` → payouts through Temporal visibility.
- ``GET /healthz`` (no key needed), ``GET /openapi.json``, ``GET /docs``.

Every ``/api`` call needs an API key from ``PAYOUTS_API_KEYS`` in ``X-API-Key`` (or
``Authorization: Bearer …``), compared in constant time. Bodies above
:data:`MAX_BODY_BYTES` are refused with ``413`` before they are read. A ``4xx`` names the
field and the rule (``{"error": …, "errors": [{"field", "message"}]}``) and never echoes
the input (a secret seed pasted into a field stays out of responses and logs).
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal, TypeVar

from fastapi import Depends, FastAPI, Path, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic.alias_generators import to_camel
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError, RPCStatusCode

from payouts.amounts import hide_secret_seeds
from payouts.assets import AssetError, validate_asset
from payouts.client import MAX_LIST_LIMIT, PayoutClient, SignatureRejected
from payouts.config import TemporalSettings, load
from payouts.envelopes import MAX_SIGNED_XDR_CHARS
from payouts.errors import IdempotencyConflict
from payouts.models import IDEMPOTENCY_KEY_PATTERN, PayoutRequest, PayoutState, PayoutStatus
from workflows.payout import PayoutWorkflow

T = TypeVar("T")

MAX_BODY_BYTES = MAX_SIGNED_XDR_CHARS + 4096  # the largest body is a signed XDR
MAX_WAIT_SECONDS = 30
QUERY_TIMEOUT = timedelta(seconds=10)  # a status query needs a worker to answer it
# Request field names (the seed's) for PayoutRequest's own.
_FIELD_NAMES = {"payout_id": "payoutId", "destination": "destinationAccount", "idempotency_key": "idempotencyKey"}


class ApiSettings(TemporalSettings):
    """``PAYOUTS_API_KEYS``: comma-separated keys, each at least 24 characters."""

    PAYOUTS_API_KEYS: SecretStr
    PAYOUTS_API_HOST: str = "127.0.0.1"
    PAYOUTS_API_PORT: int = Field(default=8000, ge=1, le=65535)
    PAYOUTS_LOG_FORMAT: Literal["text", "json"] = "text"

    @field_validator("PAYOUTS_API_KEYS")
    @classmethod
    def _keys(cls, value: SecretStr) -> SecretStr:
        keys = _split_keys(value)
        if not keys or any(len(k) < 24 for k in keys):
            raise ValueError("give one or more keys of at least 24 characters, comma-separated")
        return value

    def api_keys(self) -> list[bytes]:
        return [k.encode() for k in _split_keys(self.PAYOUTS_API_KEYS)]


def _split_keys(value: SecretStr) -> list[str]:
    return [k.strip() for k in value.get_secret_value().split(",") if k.strip()]


def load_api_settings(**overrides: object) -> ApiSettings:
    """API settings from the environment; :class:`~payouts.config.ConfigError` names every
    missing or invalid variable (never a key's value)."""
    return load(ApiSettings, **overrides)


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


def _error_response(status: int, error: str, errors: list[FieldError] | None = None) -> JSONResponse:
    body = ErrorBody(error=hide_secret_seeds(error), errors=errors or [])
    return JSONResponse(body.model_dump(), status_code=status)


def _field_errors(errors: list[Any]) -> list[FieldError]:
    found = []
    for e in errors:
        loc = [str(p) for p in e["loc"] if str(p) not in ("body", "query", "path", "header")]
        if e["type"] == "json_invalid":  # its loc is the character position
            loc = []
        field = ".".join(_FIELD_NAMES.get(p, p) for p in loc) or "body"
        found.append(FieldError(field=field, message=hide_secret_seeds(str(e["msg"]).removeprefix("Value error, "))))
    return found


def _summary(errors: list[FieldError]) -> str:
    return "; ".join(f"{e.field}: {e.message}" for e in errors)


class ApiKeyGate:
    """401 for a request under ``/api`` without a valid key in ``X-API-Key`` or
    ``Authorization: Bearer``, before its body is read. Every key is compared, in
    constant time, whichever matches."""

    def __init__(self, app: ASGIApp, keys: list[bytes]) -> None:
        self.app, self.keys = app, keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (scope["path"] == "/api" or scope["path"].startswith("/api/")):
            headers = dict(scope["headers"])
            given = headers.get(b"x-api-key")
            scheme, _, token = headers.get(b"authorization", b"").partition(b" ")
            if given is None and scheme.lower() == b"bearer":
                given = token.strip()
            if not given:
                error = "authentication: send an API key in X-API-Key (or Authorization: Bearer)"
            elif not any([hmac.compare_digest(given, key) for key in self.keys]):
                error = "authentication: the API key is not valid"
            else:
                await self.app(scope, receive, send)
                return
            response = _error_response(401, error)
            response.headers["WWW-Authenticate"] = "Bearer"
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


class BodySizeLimit:
    """Refuses a body over ``max_bytes`` with 413: at once if Content-Length says so,
    otherwise once the bytes read pass the limit. The body is read here, before the
    app sees it (the framework would turn an error raised while it reads into a 400)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._refuse(scope, receive, send)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = _error_response(413, f"request body: larger than {self.max_bytes} bytes")
        await response(scope, receive, send)


def _payouts(request: Request) -> PayoutClient:
    payouts: PayoutClient = request.app.state.payouts
    return payouts


Payouts = Annotated[PayoutClient, Depends(_payouts)]
Key = Annotated[str, Path(pattern=IDEMPOTENCY_KEY_PATTERN, max_length=128, description="the idempotency key")]


def create_app(settings: ApiSettings, client: Client | None = None) -> FastAPI:
    """The API for ``settings``; with ``client`` given (tests) it is used, otherwise the
    app connects to Temporal when it starts."""
    keys = settings.api_keys()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        connected = client or await Client.connect(
            settings.TEMPORAL_ADDRESS, namespace=settings.TEMPORAL_NAMESPACE, data_converter=pydantic_data_converter
        )
        app.state.payouts = PayoutClient(connected, settings.TEMPORAL_TASK_QUEUE)
        yield

    app = FastAPI(
        title="Stellar payout engine",
        version="1",
        description=__doc__,
        lifespan=lifespan,
        responses={
            400: {"model": ErrorBody},
            401: {"model": ErrorBody},
            413: {"model": ErrorBody},
            422: {"model": ErrorBody},
        },
    )
    app.add_middleware(BodySizeLimit, max_bytes=MAX_BODY_BYTES)
    app.add_middleware(ApiKeyGate, keys=keys)  # outermost: nothing is read for a caller without a key
    # Documents the scheme in the OpenAPI; ApiKeyGate enforces it before a body is read.
    documented = [Security(APIKeyHeader(name="X-API-Key", auto_error=False)), Security(HTTPBearer(auto_error=False))]

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return _error_response(exc.status, exc.error, exc.errors)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = _field_errors(list(exc.errors()))
        return _error_response(422, _summary(errors), errors)

    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException) -> JSONResponse:
        if exc.status_code == 400:  # the framework could not parse the body
            problem = FieldError(field="body", message="not a JSON document (UTF-8)")
            return _error_response(400, f"body: {problem.message}", [problem])
        response = _error_response(exc.status_code, str(exc.detail))
        response.headers.update(exc.headers or {})  # e.g. 405's Allow
        return response

    @app.get("/healthz", include_in_schema=True)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/api/payouts/create", dependencies=documented,
              responses={409: {"model": ErrorBody}, 503: {"model": ErrorBody}})  # fmt: skip
    async def create_payout(
        body: CreatePayoutBody,
        payouts: Payouts,
        wait_seconds: Annotated[int, Query(alias="waitSeconds", ge=0, le=MAX_WAIT_SECONDS)] = 0,
    ) -> PayoutStatusBody:
        try:
            request = PayoutRequest(
                payout_id=body.payout_id,
                destination=body.destination_account,
                amount=body.amount,
                asset=body.asset,
                idempotency_key=body.idempotency_key,
            )
        except ValidationError as exc:
            errors = _field_errors(exc.errors(include_input=False))
            raise ApiError(422, _summary(errors), errors) from None
        try:
            await _temporal(payouts.pay(request))
        except IdempotencyConflict as exc:
            raise ApiError(
                409, str(exc), [FieldError(field="idempotencyKey", message="names another payout")]
            ) from None
        key = request.idempotency_key
        status = await _status(payouts, key)
        deadline = time.monotonic() + wait_seconds
        while status.state in (PayoutState.RECEIVED, PayoutState.BUILDING) and time.monotonic() < deadline:
            await asyncio.sleep(0.25)
            status = await _status(payouts, key)
        return PayoutStatusBody.of(key, status)

    @app.get("/api/payouts/{key}", dependencies=documented,
             responses={404: {"model": ErrorBody}, 503: {"model": ErrorBody}})  # fmt: skip
    async def get_payout(key: Key, payouts: Payouts) -> PayoutStatusBody:
        return PayoutStatusBody.of(key, await _status(payouts, key))

    @app.post("/api/payouts/{key}/submit-signed", dependencies=documented,
              responses={404: {"model": ErrorBody}, 503: {"model": ErrorBody}})  # fmt: skip
    async def submit_signed(key: Key, body: SubmitSignedBody, payouts: Payouts) -> SubmitSignedAnswer:
        await _status(payouts, key)  # 404 before anything is sent to a payout that does not exist
        try:
            await _temporal(payouts.submit_signature(key, body.signed_xdr))
        except SignatureRejected as exc:
            reason = str(exc).removeprefix("signature rejected: ")
            raise ApiError(422, f"signedXdr: {reason}", [FieldError(field="signedXdr", message=reason)]) from None
        return SubmitSignedAnswer(accepted=True, status=PayoutStatusBody.of(key, await _status(payouts, key)))

    @app.get("/api/payouts", dependencies=documented, responses={503: {"model": ErrorBody}})
    async def list_payouts(
        payouts: Payouts,
        status: Annotated[list[PayoutState] | None, Query(description="repeat for several")] = None,
        asset: Annotated[str | None, Query(max_length=69, json_schema_extra=ASSET_DOC)] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIST_LIMIT)] = 100,
    ) -> list[PayoutListItem]:
        if asset is not None:
            try:
                validate_asset(asset)
            except AssetError as exc:
                raise ApiError(422, f"asset: {exc}", [FieldError(field="asset", message=str(exc))]) from None
        found = await _temporal(payouts.list_payouts(states=status or [], asset=asset, limit=limit))
        return [PayoutListItem.model_validate(vars(p), by_name=True) for p in found]

    return app


async def _temporal(call: Awaitable[T]) -> T:
    """``call``, with Temporal being unreachable or busy answered by 503."""
    try:
        return await call
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise ApiError(404, "no payout has this idempotency key") from None
        raise ApiError(503, f"Temporal answered {exc.status.name}; try again") from None


async def _status(payouts: PayoutClient, key: str) -> PayoutStatus:
    return await _temporal(payouts.handle(key).query(PayoutWorkflow.status, rpc_timeout=QUERY_TIMEOUT))
