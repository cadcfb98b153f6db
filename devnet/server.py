"""devnet's HTTP surface: JSON-RPC at ``/`` (and ``/soroban/rpc``), friendbot at
``/friendbot``, and the admin endpoint under ``/admin/`` for tests and demos.

Admin endpoint (not part of any real network; never expose it beyond localhost):

- ``GET /admin/faults`` — faults in force; ``POST /admin/faults`` with a
  :class:`~devnet.faults.FaultRequest` body adds rules/sets conditions;
  ``DELETE /admin/faults`` clears them all.
- ``POST /admin/consume-sequence`` ``{"account": "G…"}`` — use the account's next
  sequence number from outside, as another client would.
- ``POST /admin/payout-contract`` ``{"admin": "G…", "asset": "XLM" | "CODE:ISSUER"}`` —
  deploy the built-in payout contract; answers ``{"contract_id": "C…"}``.
- ``POST /admin/close-ledger`` — close a ledger now; answers ``{"sequence": <latest>}``.
- ``POST /admin/close-ledgers`` ``{"count": N}`` — close N ledgers at once (N an integer from 1
  to 200,000; anything else is a 400 naming ``count`` and changes nothing), one after the
  other through the same close path as every ledger: queued transactions are applied or
  dropped, temporary entries expire, history beyond the retention window is trimmed. Each
  ledger's close time is max(previous close time, now), so a batch shares (about) one close
  time. Answers ``{"sequence": <latest>}``. While a ledger stall is injected, nothing closes
  (as for ``close-ledger``). The batch runs in one go: nothing else is answered meanwhile
  (roughly a second per 100,000 empty ledgers).
- ``GET /admin/stats`` — queue size, ledger, recent close intervals (ms), sendTransaction
  answers per source account.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from stellar_sdk import Asset, StrKey

from devnet.faults import FaultRequest
from devnet.friendbot import Friendbot, FriendbotError
from devnet.ledger import MAX_CLOSE_LEDGERS, Devnet
from devnet.ledger_clock import LedgerClock
from devnet.rpc import INTERNAL_ERROR, INVALID_REQUEST, PARSE_ERROR, RpcError, RpcMethods

log = logging.getLogger("devnet.server")

MAX_BODY_BYTES = 512 * 1024


def _rpc_error(request_id: Any, code: int, message: str, status: int = 200) -> web.Response:
    body = {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}
    return web.json_response(body, status=status)


def _reject_constant(name: str) -> Any:
    """``NaN``/``Infinity`` are not JSON (RFC 8259); echoing them back would make the answer invalid JSON."""
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    """A JSON number too large for a float (``1e999``) would be echoed back as ``Infinity``."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text} is out of range")
    return value


def _problem(status: int, detail: str) -> web.Response:
    return web.json_response({"status": status, "detail": detail}, status=status)


class _ConsumeSequence(BaseModel):
    model_config = ConfigDict(extra="forbid")
    account: str


class _CloseLedgers(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    count: int = Field(ge=1, le=MAX_CLOSE_LEDGERS)


class _DeployPayout(BaseModel):
    model_config = ConfigDict(extra="forbid")
    admin: str
    asset: str = "XLM"


def parse_asset(text: str) -> Asset:
    """``XLM``/``native`` or ``CODE:ISSUER``; ValueError naming the rule otherwise."""
    if text in ("XLM", "native"):
        return Asset.native()
    code, _, issuer = text.partition(":")
    if not issuer:
        raise ValueError("asset: must be XLM or CODE:ISSUER")
    return Asset(code, issuer)


class DevnetServer:
    def __init__(self, devnet: Devnet, ledger_close_ms: int, public_url: str) -> None:
        if ledger_close_ms != devnet.network_config.ledger_close_ms:
            # CONFIG_SETTING_SCP_TIMING tells clients the cadence: it must be the clock's.
            raise ValueError(
                f"ledger_close_ms: the clock's {ledger_close_ms} ms differs from the network's ledger close "
                f"target {devnet.network_config.ledger_close_ms} ms (Devnet(ledger_close_ms=...))"
            )
        self.devnet = devnet
        self.clock = LedgerClock(devnet, ledger_close_ms)
        self.friendbot = Friendbot(devnet, self.clock)
        self.rpc = RpcMethods(devnet, public_url.rstrip("/") + "/friendbot")
        self.app = web.Application(client_max_size=MAX_BODY_BYTES)
        self.app.add_routes(
            [
                web.post("/", self.handle_rpc),
                web.post("/soroban/rpc", self.handle_rpc),
                web.get("/friendbot", self.handle_friendbot),
                web.post("/friendbot", self.handle_friendbot),
                web.get("/admin/faults", self.get_faults),
                web.post("/admin/faults", self.add_faults),
                web.delete("/admin/faults", self.clear_faults),
                web.post("/admin/consume-sequence", self.consume_sequence),
                web.post("/admin/payout-contract", self.deploy_payout_contract),
                web.post("/admin/close-ledger", self.close_ledger),
                web.post("/admin/close-ledgers", self.close_ledgers),
                web.get("/admin/stats", self.stats),
            ]
        )
        self.app.on_startup.append(self._start)
        self.app.on_cleanup.append(self._stop)

    async def _start(self, _: web.Application) -> None:
        self.clock.start()
        self.friendbot.start()

    async def _stop(self, _: web.Application) -> None:
        await self.friendbot.stop()
        await self.clock.stop()
        self.devnet.save()

    # -- JSON-RPC --------------------------------------------------------------------

    async def handle_rpc(self, request: web.Request) -> web.StreamResponse:
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _rpc_error(None, INVALID_REQUEST, f"request body larger than {MAX_BODY_BYTES} bytes", status=413)
        try:
            message = json.loads(raw, parse_constant=_reject_constant, parse_float=_finite_float)
        except (ValueError, RecursionError):  # JSONDecodeError, UnicodeDecodeError, NaN/Infinity, deep nesting
            return _rpc_error(None, PARSE_ERROR, "parse error: request body is not valid JSON")
        if isinstance(message, list):
            return _rpc_error(None, INVALID_REQUEST, "batch requests are not supported by devnet")
        if not isinstance(message, dict):
            return _rpc_error(None, INVALID_REQUEST, "invalid request: body must be a JSON-RPC request object")
        request_id = message.get("id")
        if request_id is not None and (isinstance(request_id, bool) or not isinstance(request_id, (str, int, float))):
            return _rpc_error(None, INVALID_REQUEST, "invalid request: id must be a string, a number or null")
        if message.get("jsonrpc") != "2.0":
            return _rpc_error(request_id, INVALID_REQUEST, 'invalid request: jsonrpc must be "2.0"')
        method = message.get("method")
        if not isinstance(method, str):
            return _rpc_error(request_id, INVALID_REQUEST, "invalid request: method must be a string")

        faults = self.devnet.faults
        delay = faults.take("delay", method)
        if delay is not None:
            await asyncio.sleep(delay.ms / 1000)
        failure = faults.take("http_error", method)
        if failure is not None:
            return _problem(failure.status, "injected fault")
        try:
            result = self.rpc.call(method, message.get("params"))
            response = web.json_response({"jsonrpc": "2.0", "id": request_id, "result": result})
        except RpcError as exc:
            response = _rpc_error(request_id, exc.code, exc.message)
        except Exception:  # answer -32603 rather than drop the connection; the cause is logged
            log.exception("%s failed", method)
            response = _rpc_error(request_id, INTERNAL_ERROR, "internal error")
        if faults.take("drop_response", method) is not None:
            assert request.transport is not None
            request.transport.close()
        return response

    # -- friendbot -------------------------------------------------------------------

    async def handle_friendbot(self, request: web.Request) -> web.Response:
        address = request.query.get("addr", "")
        try:
            body = await self.friendbot.fund(address)
        except FriendbotError as exc:
            return _problem(exc.status, exc.detail)
        return web.json_response(body)

    # -- admin -----------------------------------------------------------------------

    async def _body(self, request: web.Request, model: type[BaseModel]) -> BaseModel:
        try:
            return model.model_validate_json(await request.read())
        except ValidationError as exc:
            detail = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors())
            raise web.HTTPBadRequest(
                text=json.dumps({"status": 400, "detail": detail}), content_type="application/json"
            ) from None

    async def get_faults(self, _: web.Request) -> web.Response:
        return web.json_response(self.devnet.faults.describe())

    async def add_faults(self, request: web.Request) -> web.Response:
        body = await self._body(request, FaultRequest)
        assert isinstance(body, FaultRequest)
        self.devnet.faults.apply(body)
        return web.json_response(self.devnet.faults.describe())

    async def clear_faults(self, _: web.Request) -> web.Response:
        self.devnet.faults.clear()
        return web.json_response(self.devnet.faults.describe())

    async def consume_sequence(self, request: web.Request) -> web.Response:
        body = await self._body(request, _ConsumeSequence)
        assert isinstance(body, _ConsumeSequence)
        try:
            sequence = self.devnet.consume_sequence(body.account)
        except ValueError as exc:
            return _problem(400, str(exc))
        self.devnet.save()  # like an applied transaction, the used sequence number must survive a restart
        return web.json_response({"account": body.account, "sequence": str(sequence)})

    async def deploy_payout_contract(self, request: web.Request) -> web.Response:
        body = await self._body(request, _DeployPayout)
        assert isinstance(body, _DeployPayout)
        if not StrKey.is_valid_ed25519_public_key(body.admin):
            return _problem(400, "admin: must be a G… account ID")
        try:
            contract_id = self.devnet.deploy_payout_contract(body.admin, parse_asset(body.asset))
        except ValueError as exc:
            return _problem(400, str(exc))
        return web.json_response({"contract_id": contract_id})

    async def close_ledger(self, _: web.Request) -> web.Response:
        await self.clock.close_now()
        return web.json_response({"sequence": self.devnet.latest.sequence})

    async def close_ledgers(self, request: web.Request) -> web.Response:
        body = await self._body(request, _CloseLedgers)
        assert isinstance(body, _CloseLedgers)
        sequence = await self.clock.close_many(body.count)
        return web.json_response({"sequence": sequence})

    async def stats(self, _: web.Request) -> web.Response:
        return web.json_response(
            {
                "latest_ledger": self.devnet.latest.sequence,
                "queue": len(self.devnet.queue),
                "transactions": len(self.devnet.transactions),
                "close_intervals_ms": self.clock.close_intervals_ms[-200:],
                # sendTransaction answers per source account: {"G…": {"PENDING": 3, "ERROR txBAD_SEQ": 1}}
                "send_answers": {source: dict(counts) for source, counts in self.devnet.send_answers.items()},
            }
        )
