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
import time
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Annotated, Literal, TypeVar

from fastapi import Depends, FastAPI, Path, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader, HTTPBearer
from pydantic import Field, SecretStr, ValidationError, field_validator
from starlette.exceptions import HTTPException
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError, RPCStatusCode

from api.guards import ApiKeyGate, BodySizeLimit
from api.schemas import (
    ASSET_DOC,
    ApiError,
    CreatePayoutBody,
    ErrorBody,
    FieldError,
    PayoutListItem,
    PayoutStatusBody,
    SubmitSignedAnswer,
    SubmitSignedBody,
    error_response,
    field_errors,
    summarize,
)
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
        return error_response(exc.status, exc.error, exc.errors)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = field_errors(list(exc.errors()))
        return error_response(422, summarize(errors), errors)

    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException) -> JSONResponse:
        if exc.status_code == 400:  # the framework could not parse the body
            problem = FieldError(field="body", message="not a JSON document (UTF-8)")
            return error_response(400, f"body: {problem.message}", [problem])
        response = error_response(exc.status_code, str(exc.detail))
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
            errors = field_errors(exc.errors(include_input=False))
            raise ApiError(422, summarize(errors), errors) from None
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
