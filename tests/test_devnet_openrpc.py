"""devnet's JSON-RPC responses, success and error, checked against the official Stellar RPC
OpenRPC specification (``../shared/reference/stellar-rpc.openrpc.json`` beside the repo).

Nothing here copies a schema by hand: :class:`OpenRpcSpec` walks the document (methods,
content descriptors and schemas, following any ``$ref`` through a ``referencing`` registry
that holds the whole document), and every response is validated with jsonschema against
its method's ``result.schema``. OpenRPC 1.x schema objects are JSON Schema draft 7, so
draft 7 is the default (a schema naming its own ``$schema`` gets that draft instead).

jsonschema alone would accept any extra field (the spec never sets
``additionalProperties``), so :meth:`OpenRpcSpec.undeclared` walks each response next to
its schema and lists every property the spec does not declare: devnet may not invent
fields. The spec describes no error objects; JSON-RPC error responses are checked against
the JSON-RPC 2.0 envelope (``code`` an integer, ``message`` a string).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft7Validator, validators
from referencing import Registry
from referencing.jsonschema import DRAFT7
from stellar_sdk import Asset, Keypair, SorobanServerAsync, TransactionBuilder, scval
from stellar_sdk import xdr as x

from tests.devnet_harness import PASSPHRASE, DevnetAdmin, result_code, sac_transfer_envelope

REPO_ROOT = Path(__file__).resolve().parents[1]
SPEC_DIR = REPO_ROOT.parent / "shared" / "reference"
SPEC_PATH = SPEC_DIR / "stellar-rpc.openrpc.json"

if not SPEC_PATH.is_file():
    pytest.skip(
        f"Stellar RPC OpenRPC spec not found at {SPEC_PATH} (expected in ../shared/reference/ "
        "relative to the repository root, as CI provides it); skipping the spec conformance tests",
        allow_module_level=True,
    )

SPEC_URI = "urn:stellar-rpc:openrpc"
XLM = 10_000_000

# -- the spec ----------------------------------------------------------------------------


def _escape(token: str | int) -> str:
    """A JSON pointer reference token (RFC 6901)."""
    return str(token).replace("~", "~0").replace("/", "~1")


class OpenRpcSpec:
    """An OpenRPC document, walked generically: every node is addressed by a URI
    (``urn:…#/json/pointer``) and ``$ref`` chains are followed wherever they appear."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        # OpenRPC 1.x: "Schema Objects MUST follow ... JSON Schema Specification 7 Draft".
        self.registry: Registry[Any] = Registry().with_resource(SPEC_URI, DRAFT7.create_resource(document))
        self.resolver = self.registry.resolver(base_uri=SPEC_URI)
        self.methods: dict[str, str] = {}
        for index in range(len(document["methods"])):
            method, location = self.follow(f"{SPEC_URI}#/methods/{index}")
            self.methods[method["name"]] = location
        self._validators: dict[str, Any] = {}

    def follow(self, location: str) -> tuple[Any, str]:
        """The node at ``location`` after following any ``$ref`` chain, and where it is."""
        seen: set[str] = set()
        node = self.resolver.lookup(location).contents
        while isinstance(node, dict) and isinstance(node.get("$ref"), str):
            if location in seen:
                raise ValueError(f"$ref cycle at {location}")
            seen.add(location)
            ref = node["$ref"]
            location = SPEC_URI + ref if ref.startswith("#") else ref
            node = self.resolver.lookup(location).contents
        return node, location

    # -- results -------------------------------------------------------------------------

    def result_schema(self, method: str) -> str:
        """Where ``method``'s result schema is (result and schema may be ``$ref``s)."""
        _, result = self.follow(f"{self.methods[method]}/result")
        _, schema = self.follow(f"{result}/schema")
        return schema

    def validator(self, location: str) -> Any:
        if location not in self._validators:
            schema, _ = self.follow(location)
            cls = Draft7Validator
            if isinstance(schema, dict):
                cls = validators.validator_for(schema, default=Draft7Validator)
            self._validators[location] = cls(
                {"$ref": location}, registry=self.registry, format_checker=cls.FORMAT_CHECKER
            )
        return self._validators[location]

    def schema_errors(self, location: str, value: Any) -> list[str]:
        errors = sorted(self.validator(location).iter_errors(value), key=lambda e: list(e.absolute_path))
        return [f"{e.json_path}: {e.message}" for e in errors]

    def result_problems(self, method: str, result: Any) -> list[str]:
        """Everything wrong with ``result`` as ``method``'s result: schema violations,
        then properties the spec does not declare."""
        location = self.result_schema(method)
        return self.schema_errors(location, result) + [
            f"{path}: not declared in the spec" for path in self.undeclared(result, location)
        ]

    # -- params --------------------------------------------------------------------------

    def params(self, method: str) -> dict[str, tuple[bool, str]]:
        """``name -> (required, schema location)`` for ``method``'s params."""
        method_node, location = self.follow(self.methods[method])
        out: dict[str, tuple[bool, str]] = {}
        for index in range(len(method_node.get("params", []))):
            descriptor, where = self.follow(f"{location}/params/{index}")
            _, schema = self.follow(f"{where}/schema")
            out[descriptor["name"]] = (bool(descriptor.get("required", False)), schema)
        return out

    def param_problems(self, method: str, params: Any) -> list[str]:
        """Why ``params`` is not a valid by-name request for ``method`` (empty if it is)."""
        method_node, _ = self.follow(self.methods[method])
        if params is None:
            params = {}
        if method_node.get("paramStructure", "either") == "by-name" and not isinstance(params, dict):
            return ["params: must be an object (paramStructure by-name)"]
        if not isinstance(params, dict):
            return []  # by-position requests are not used here
        declared = self.params(method)
        problems = [f"params.{name}: required" for name, (req, _) in declared.items() if req and name not in params]
        for name, value in params.items():
            if name not in declared:
                problems.append(f"params.{name}: not a parameter of {method}")
            else:
                problems += [f"params.{name}{p[1:]}" for p in self.schema_errors(declared[name][1], value)]
        return problems

    # -- undeclared properties ------------------------------------------------------------

    def _branches(self, location: str) -> list[tuple[Any, str]]:
        """The schema at ``location`` and all schemas it combines (allOf/anyOf/oneOf,
        if/then/else), each with ``$ref``s followed."""
        node, location = self.follow(location)
        out = [(node, location)]
        if isinstance(node, dict):
            for keyword in ("allOf", "anyOf", "oneOf"):
                for index in range(len(node.get(keyword, []))):
                    out += self._branches(f"{location}/{keyword}/{index}")
            for keyword in ("then", "else"):
                if keyword in node:
                    out += self._branches(f"{location}/{keyword}")
        return out

    def undeclared(self, value: Any, location: str | None, path: str = "$") -> list[str]:
        """JSON paths of the object properties in ``value`` that the schema at ``location``
        does not declare, at any depth (objects and arrays are walked with their schemas).

        A property is declared by ``properties``, a matching ``patternProperties``, or an
        explicit ``additionalProperties`` schema; the ``true`` schema declares anything below it.
        """
        if location is None:
            return self._all_properties(value, path)
        branches = self._branches(location)
        if any(node is True for node, _ in branches):
            return []
        schemas = [(node, where) for node, where in branches if isinstance(node, dict)]
        problems: list[str] = []
        if isinstance(value, dict):
            for key, item in value.items():
                candidates: list[str] = []
                for node, where in schemas:
                    matched = False
                    if key in node.get("properties", {}):
                        candidates.append(f"{where}/properties/{_escape(key)}")
                        matched = True
                    for pattern in node.get("patternProperties", {}):
                        if re.search(pattern, key):
                            candidates.append(f"{where}/patternProperties/{_escape(pattern)}")
                            matched = True
                    extra = node.get("additionalProperties")
                    if not matched and (extra is True or isinstance(extra, dict)):
                        candidates.append(f"{where}/additionalProperties")
                problems += self._best(item, candidates, f"{path}.{key}", undeclared_self=True)
        elif isinstance(value, list):
            for index, item in enumerate(value):
                candidates = []
                for node, where in schemas:
                    prefix, items = node.get("prefixItems"), node.get("items")
                    if isinstance(prefix, list) and index < len(prefix):
                        candidates.append(f"{where}/prefixItems/{index}")
                    elif isinstance(items, list):
                        if index < len(items):
                            candidates.append(f"{where}/items/{index}")
                        elif "additionalItems" in node:
                            candidates.append(f"{where}/additionalItems")
                    elif items is not None:
                        candidates.append(f"{where}/items")
                problems += self._best(item, candidates, f"{path}[{index}]", undeclared_self=False)
        return problems

    def _best(self, value: Any, candidates: list[str], path: str, undeclared_self: bool) -> list[str]:
        if not candidates:
            return [path] if undeclared_self else self._all_properties(value, path)
        found = [self.undeclared(value, candidate, path) for candidate in candidates]
        return [] if not all(found) else min(found, key=len)

    def _all_properties(self, value: Any, path: str) -> list[str]:
        if isinstance(value, dict):
            return [f"{path}.{key}" for key in value]
        if isinstance(value, list):
            return [p for index, item in enumerate(value) for p in self._all_properties(item, f"{path}[{index}]")]
        return []


SPEC = OpenRpcSpec(json.loads(SPEC_PATH.read_text()))

# JSON-RPC 2.0 (https://www.jsonrpc.org/specification §5, §5.1): the envelopes around results
# and errors. The OpenRPC document describes results only, so these come from JSON-RPC itself.
SUCCESS_ENVELOPE = {
    "type": "object",
    "required": ["jsonrpc", "id", "result"],
    "additionalProperties": False,
    "properties": {"jsonrpc": {"const": "2.0"}, "id": {"type": ["string", "number", "null"]}, "result": {}},
}
ERROR_ENVELOPE = {
    "type": "object",
    "required": ["jsonrpc", "id", "error"],
    "additionalProperties": False,
    "properties": {
        "jsonrpc": {"const": "2.0"},
        "id": {"type": ["string", "number", "null"]},
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "additionalProperties": False,
            "properties": {"code": {"type": "integer"}, "message": {"type": "string", "minLength": 1}, "data": {}},
        },
    },
}


def envelope_problems(schema: dict[str, Any], body: Any) -> list[str]:
    return [f"{e.json_path}: {e.message}" for e in Draft7Validator(schema).iter_errors(body)]


# -- talking to devnet ------------------------------------------------------------------

_ids = itertools.count(1)


class SpecClient:
    """Raw JSON-RPC to devnet; every answer is checked against the spec before it is used."""

    def __init__(self, admin: DevnetAdmin) -> None:
        self.admin = admin

    @staticmethod
    def _request_id() -> int | str:
        n = next(_ids)
        return n if n % 2 else f"openrpc-{n}"  # both kinds of id must be echoed

    async def result(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Call ``method`` with spec-valid ``params``; return its result after checking
        the envelope, the result schema and undeclared properties."""
        assert not (problems := SPEC.param_problems(method, params)), f"test sends invalid params: {problems}"
        request_id = self._request_id()
        status, body = await self.admin.rpc(method, params, request_id=request_id)
        assert status == 200, (status, body)
        assert not (problems := envelope_problems(SUCCESS_ENVELOPE, body)), f"{method}: {problems}\n{body}"
        assert body["id"] == request_id
        result = body["result"]
        problems = SPEC.result_problems(method, result)
        assert not problems, f"{method} result does not match the spec:\n" + "\n".join(problems) + f"\n{result}"
        return result

    async def unchecked(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Call ``method`` without the spec checks: for setting up a case, so that a
        non-conforming answer fails the case about it rather than every case."""
        status, body = await self.admin.rpc(method, params, request_id=self._request_id())
        assert status == 200 and "result" in body, (status, body)
        return dict(body["result"])

    async def error(self, method: str, params: Any, code: int) -> dict[str, Any]:
        """Call ``method`` expecting a JSON-RPC error with ``code``; return the error object."""
        request_id = self._request_id()
        status, body = await self.admin.rpc(method, params, request_id=request_id)
        return check_error(status, body, request_id, code)


def check_error(status: int, body: Any, request_id: Any, code: int) -> dict[str, Any]:
    assert status == 200, (status, body)
    assert not (problems := envelope_problems(ERROR_ENVELOPE, body)), f"{problems}\n{body}"
    assert body["id"] == request_id
    assert body["error"]["code"] == code, body
    return dict(body["error"])


async def settle(rpc: SpecClient, tx_hash: str, attempts: int = 80) -> dict[str, Any]:
    """getTransaction (unchecked) until the transaction is no longer NOT_FOUND."""
    for _ in range(attempts):
        result = await rpc.unchecked("getTransaction", {"hash": tx_hash})
        if result["status"] != "NOT_FOUND":
            return result
        await asyncio.sleep(0.1)
    raise AssertionError(f"transaction {tx_hash} did not land")


def account_key(keypair: Keypair) -> str:
    return x.LedgerKey(x.LedgerEntryType.ACCOUNT, account=x.LedgerKeyAccount(keypair.xdr_account_id())).to_xdr()


def contract_instance_key(contract_id: str) -> str:
    address = scval.to_address(contract_id).address
    assert address is not None
    return x.LedgerKey(
        x.LedgerEntryType.CONTRACT_DATA,
        contract_data=x.LedgerKeyContractData(
            contract=address,
            key=x.SCVal(x.SCValType.SCV_LEDGER_KEY_CONTRACT_INSTANCE),
            durability=x.ContractDataDurability.PERSISTENT,
        ),
    ).to_xdr()


def config_setting_key(setting: x.ConfigSettingID) -> str:
    return x.LedgerKey(
        x.LedgerEntryType.CONFIG_SETTING, config_setting=x.LedgerKeyConfigSetting(config_setting_id=setting)
    ).to_xdr()


def invoke_transfer(account: Any, source: Keypair, destination: str, amount: int, function: str = "transfer") -> Any:
    return (
        TransactionBuilder(account, PASSPHRASE, base_fee=100)
        .append_invoke_contract_function_op(
            Asset.native().contract_id(PASSPHRASE),
            function,
            [scval.to_address(source.public_key), scval.to_address(destination), scval.to_int128(amount)],
        )
        .set_timeout(300)
        .build()
    )


def payment(account: Any, source: Keypair, destination: str, amount: str) -> Any:
    tx = (
        TransactionBuilder(account, PASSPHRASE, base_fee=100)
        .append_payment_op(destination, Asset.native(), amount)
        .set_timeout(300)
        .build()
    )
    tx.sign(source)
    return tx


# -- a shared history: one SUCCESS and one FAILED soroban transaction --------------------


@dataclass
class History:
    alice: Keypair
    bob: Keypair
    success_hash: str
    success_ledger: int
    drain_hash: str
    failed_hash: str


@pytest.fixture(scope="module")
async def rpc(admin: DevnetAdmin) -> SpecClient:
    return SpecClient(admin)


@pytest.fixture(scope="module")
async def history(rpc: SpecClient, admin: DevnetAdmin, server: SorobanServerAsync) -> History:
    alice, bob = await admin.new_account(), await admin.new_account()
    ok = await sac_transfer_envelope(server, alice, bob.public_key, 10 * XLM)
    sent = await rpc.unchecked("sendTransaction", {"transaction": ok.to_xdr()})
    assert sent["status"] == "PENDING", sent
    success = await settle(rpc, sent["hash"])
    assert success["status"] == "SUCCESS", success

    # A transfer of 5,000 XLM, simulated while alice holds ~9,990, sent after a classic
    # payment (the sequence number before it) has taken 9,000: it fails at apply.
    account = await server.load_account(alice.public_key)
    drain = payment(account, alice, bob.public_key, "9000")
    failing = await server.prepare_transaction(invoke_transfer(account, alice, bob.public_key, 5_000 * XLM))
    failing.sign(alice)
    assert failing.transaction.sequence == drain.transaction.sequence + 1
    sent = await rpc.unchecked("sendTransaction", {"transaction": drain.to_xdr()})
    assert sent["status"] == "PENDING", sent
    assert (await settle(rpc, sent["hash"]))["status"] == "SUCCESS"
    drain_hash = sent["hash"]
    sent = await rpc.unchecked("sendTransaction", {"transaction": failing.to_xdr()})
    assert sent["status"] == "PENDING", sent
    failed = await settle(rpc, sent["hash"])
    assert failed["status"] == "FAILED", failed
    return History(alice, bob, success["txHash"], success["ledger"], drain_hash, failed["txHash"])


# -- success and outcome cases, one test id each -----------------------------------------


@dataclass
class Ctx:
    rpc: SpecClient
    admin: DevnetAdmin
    server: SorobanServerAsync
    history: History


Case = Callable[[Ctx], Awaitable[None]]
CASES: dict[str, tuple[str, Case]] = {}


def case(test_id: str, method: str) -> Callable[[Case], Case]:
    def register(fn: Case) -> Case:
        CASES[test_id] = (method, fn)
        return fn

    return register


@case("getHealth", "getHealth")
async def _health(ctx: Ctx) -> None:
    result = await ctx.rpc.result("getHealth")
    assert result["status"] == "healthy"


@case("getNetwork", "getNetwork")
async def _network(ctx: Ctx) -> None:
    assert (await ctx.rpc.result("getNetwork"))["passphrase"] == PASSPHRASE


@case("getVersionInfo", "getVersionInfo")
async def _version(ctx: Ctx) -> None:
    await ctx.rpc.result("getVersionInfo")


@case("getLatestLedger", "getLatestLedger")
async def _latest(ctx: Ctx) -> None:
    result = await ctx.rpc.result("getLatestLedger")
    assert x.LedgerHeaderHistoryEntry.from_xdr(result["headerXdr"]).header.ledger_seq.uint32 == result["sequence"]


@case("getFeeStats", "getFeeStats")
async def _fees(ctx: Ctx) -> None:
    await ctx.rpc.result("getFeeStats")


@case("getFeeStats-surge", "getFeeStats")
async def _fees_surge(ctx: Ctx) -> None:
    await ctx.admin.faults(fee_surge=1_000)
    try:
        await ctx.admin.close_ledger()  # a ledger of outside traffic bidding 1,000
        result = await ctx.rpc.result("getFeeStats")
    finally:
        await ctx.admin.clear_faults()
    assert result["inclusionFee"]["p50"] == "1000"
    assert result["sorobanInclusionFee"]["ledgerCount"] >= 1


@case("getLedgerEntries-found", "getLedgerEntries")
async def _entries_found(ctx: Ctx) -> None:
    keys = [account_key(ctx.history.alice), contract_instance_key(Asset.native().contract_id(PASSPHRASE))]
    result = await ctx.rpc.result("getLedgerEntries", {"keys": keys, "xdrFormat": "base64"})
    assert [e["key"] for e in result["entries"]] == keys
    assert "liveUntilLedgerSeq" in result["entries"][1]


@case("getLedgerEntries-config-settings", "getLedgerEntries")
async def _entries_config(ctx: Ctx) -> None:
    keys = [config_setting_key(x.ConfigSettingID.CONFIG_SETTING_STATE_ARCHIVAL)]
    keys.append(config_setting_key(x.ConfigSettingID.CONFIG_SETTING_SCP_TIMING))
    result = await ctx.rpc.result("getLedgerEntries", {"keys": keys})
    assert [e["key"] for e in result["entries"]] == keys
    # Not Soroban entries: no TTL (stellar-core QueryServer sets liveUntilLedgerSeq for those only).
    assert all("liveUntilLedgerSeq" not in e for e in result["entries"]), result


@case("getLedgerEntries-not-found", "getLedgerEntries")
async def _entries_missing(ctx: Ctx) -> None:
    result = await ctx.rpc.result("getLedgerEntries", {"keys": [account_key(Keypair.random())]})
    assert result["entries"] == []


@case("getTransaction-SUCCESS", "getTransaction")
async def _tx_success(ctx: Ctx) -> None:
    result = await ctx.rpc.result("getTransaction", {"hash": ctx.history.success_hash, "xdrFormat": "base64"})
    assert result["status"] == "SUCCESS"


@case("getTransaction-FAILED", "getTransaction")
async def _tx_failed(ctx: Ctx) -> None:
    result = await ctx.rpc.result("getTransaction", {"hash": ctx.history.failed_hash})
    assert result["status"] == "FAILED"
    assert result_code(result["resultXdr"]) == "txFAILED"


@case("getTransaction-NOT_FOUND", "getTransaction")
async def _tx_not_found(ctx: Ctx) -> None:
    result = await ctx.rpc.result("getTransaction", {"hash": "ab" * 32})
    assert result["status"] == "NOT_FOUND"


@case("getTransactions-startLedger", "getTransactions")
async def _txs_start(ctx: Ctx) -> None:
    result = await ctx.rpc.result(
        "getTransactions", {"startLedger": ctx.history.success_ledger, "pagination": {"limit": 10}}
    )
    statuses = {t["txHash"]: t["status"] for t in result["transactions"]}
    assert statuses[ctx.history.success_hash] == "SUCCESS"
    assert statuses[ctx.history.failed_hash] == "FAILED"


@case("getTransactions-cursor", "getTransactions")
async def _txs_cursor(ctx: Ctx) -> None:
    start = ctx.history.success_ledger
    whole = await ctx.rpc.result("getTransactions", {"startLedger": start, "pagination": {"limit": 10}})
    first = await ctx.rpc.result("getTransactions", {"startLedger": start, "pagination": {"limit": 1}})
    rest = await ctx.rpc.result("getTransactions", {"pagination": {"cursor": first["cursor"], "limit": 9}})
    paged = [t["txHash"] for t in first["transactions"] + rest["transactions"]]
    assert paged == [t["txHash"] for t in whole["transactions"]]
    assert {ctx.history.success_hash, ctx.history.drain_hash, ctx.history.failed_hash} <= set(paged)


@case("getTransactions-cursor-past-end", "getTransactions")
async def _txs_end(ctx: Ctx) -> None:
    latest = (await ctx.rpc.result("getLatestLedger"))["sequence"]
    page = await ctx.rpc.result("getTransactions", {"startLedger": latest, "pagination": {"limit": 200}})
    after = await ctx.rpc.result("getTransactions", {"pagination": {"cursor": page["cursor"]}})
    assert after["transactions"] == []


@case("simulateTransaction-success", "simulateTransaction")
async def _simulate_ok(ctx: Ctx) -> None:
    account = await ctx.server.load_account(ctx.history.bob.public_key)
    tx = invoke_transfer(account, ctx.history.bob, ctx.history.alice.public_key, XLM)
    result = await ctx.rpc.result("simulateTransaction", {"transaction": tx.to_xdr(), "authMode": "record"})
    assert "error" not in result and result["results"][0]["auth"], result


@case("simulateTransaction-error-host", "simulateTransaction")
async def _simulate_host_error(ctx: Ctx) -> None:
    account = await ctx.server.load_account(ctx.history.bob.public_key)
    tx = invoke_transfer(account, ctx.history.bob, ctx.history.alice.public_key, XLM, function="no_such_function")
    result = await ctx.rpc.result("simulateTransaction", {"transaction": tx.to_xdr()})
    assert result["error"], result


@case("simulateTransaction-error-not-invocation", "simulateTransaction")
async def _simulate_not_invocation(ctx: Ctx) -> None:
    account = await ctx.server.load_account(ctx.history.bob.public_key)
    tx = payment(account, ctx.history.bob, ctx.history.alice.public_key, "1")
    result = await ctx.rpc.result("simulateTransaction", {"transaction": tx.to_xdr()})
    assert result["error"], result


@case("sendTransaction-PENDING", "sendTransaction")
async def _send_pending(ctx: Ctx) -> None:
    carol = await ctx.admin.new_account()
    tx = payment(await ctx.server.load_account(carol.public_key), carol, ctx.history.bob.public_key, "1")
    result = await ctx.rpc.result("sendTransaction", {"transaction": tx.to_xdr()})
    assert result["status"] == "PENDING", result
    await settle(ctx.rpc, result["hash"])


async def _queued_under_stall(ctx: Ctx, then: Callable[[Any, Any], Awaitable[None]]) -> None:
    """With no ledger closing, queue one payment of a new account, then run ``then``
    with that envelope and the account's next one."""
    carol = await ctx.admin.new_account()
    account = await ctx.server.load_account(carol.public_key)
    first = payment(account, carol, ctx.history.bob.public_key, "1")
    second = payment(account, carol, ctx.history.bob.public_key, "2")
    await ctx.admin.faults(ledger_stall=True)
    try:
        queued = await ctx.rpc.result("sendTransaction", {"transaction": first.to_xdr()})
        assert queued["status"] == "PENDING", queued
        await then(first, second)
    finally:
        await ctx.admin.clear_faults()
    await settle(ctx.rpc, queued["hash"])


@case("sendTransaction-DUPLICATE", "sendTransaction")
async def _send_duplicate(ctx: Ctx) -> None:
    async def again(first: Any, _: Any) -> None:
        result = await ctx.rpc.result("sendTransaction", {"transaction": first.to_xdr()})
        assert result["status"] == "DUPLICATE", result

    await _queued_under_stall(ctx, again)


@case("sendTransaction-TRY_AGAIN_LATER", "sendTransaction")
async def _send_try_again_later(ctx: Ctx) -> None:
    async def next_one(_: Any, second: Any) -> None:
        result = await ctx.rpc.result("sendTransaction", {"transaction": second.to_xdr()})
        assert result["status"] == "TRY_AGAIN_LATER", result

    await _queued_under_stall(ctx, next_one)


@case("sendTransaction-ERROR-bad-seq", "sendTransaction")
async def _send_error_seq(ctx: Ctx) -> None:
    account = await ctx.server.load_account(ctx.history.bob.public_key)
    account.sequence += 5
    tx = payment(account, ctx.history.bob, ctx.history.alice.public_key, "1")
    result = await ctx.rpc.result("sendTransaction", {"transaction": tx.to_xdr()})
    assert result["status"] == "ERROR" and result_code(result["errorResultXdr"]) == "txBAD_SEQ", result


@case("sendTransaction-ERROR-unsigned", "sendTransaction")
async def _send_error_auth(ctx: Ctx) -> None:
    account = await ctx.server.load_account(ctx.history.bob.public_key)
    tx = payment(account, ctx.history.bob, ctx.history.alice.public_key, "1")
    tx.signatures.clear()
    result = await ctx.rpc.result("sendTransaction", {"transaction": tx.to_xdr()})
    assert result["status"] == "ERROR" and result_code(result["errorResultXdr"]) == "txBAD_AUTH", result


@pytest.mark.parametrize("case_id", list(CASES))
async def test_result_matches_spec(
    case_id: str, rpc: SpecClient, admin: DevnetAdmin, server: SorobanServerAsync, history: History
) -> None:
    _, run = CASES[case_id]
    await run(Ctx(rpc, admin, server, history))


# -- JSON-RPC errors ---------------------------------------------------------------------


@dataclass(frozen=True)
class ErrorCase:
    method: str
    params: Any
    code: int
    spec_invalid: bool = False  # the spec itself rules these params out
    message: str | None = None


TX_HASH = "ab" * 32
ERROR_CASES: dict[str, ErrorCase] = {
    "unknown-method": ErrorCase("getFoo", None, -32601),
    "getEvents-not-supported": ErrorCase("getEvents", {"startLedger": 1}, -32601, message="not supported by devnet"),
    "getLedgers-not-supported": ErrorCase("getLedgers", {"startLedger": 1}, -32601, message="not supported by devnet"),
    "getHealth-unknown-param": ErrorCase("getHealth", {"verbose": True}, -32602, spec_invalid=True),
    "getNetwork-positional-params": ErrorCase("getNetwork", [1], -32602, spec_invalid=True),
    "getVersionInfo-unknown-param": ErrorCase("getVersionInfo", {"x": 1}, -32602, spec_invalid=True),
    "getLatestLedger-unknown-param": ErrorCase("getLatestLedger", {"x": 1}, -32602, spec_invalid=True),
    "getFeeStats-unknown-param": ErrorCase("getFeeStats", {"x": 1}, -32602, spec_invalid=True),
    "getLedgerEntries-missing-keys": ErrorCase("getLedgerEntries", {}, -32602, spec_invalid=True),
    "getLedgerEntries-keys-not-array": ErrorCase("getLedgerEntries", {"keys": "AAAA"}, -32602, spec_invalid=True),
    "getLedgerEntries-key-not-xdr": ErrorCase("getLedgerEntries", {"keys": ["not xdr"]}, -32602),
    "getLedgerEntries-ttl-key": ErrorCase(
        "getLedgerEntries",
        {"keys": [x.LedgerKey(x.LedgerEntryType.TTL, ttl=x.LedgerKeyTtl(x.Hash(bytes(32)))).to_xdr()]},
        -32602,
        message="ledger ttl entries cannot be queried directly",
    ),
    "getLedgerEntries-config-setting-not-modelled": ErrorCase(
        "getLedgerEntries",
        {"keys": [config_setting_key(x.ConfigSettingID.CONFIG_SETTING_CONTRACT_COMPUTE_V0)]},
        -32602,
        message="not supported by devnet",
    ),
    "getTransactions-cursor-before-oldest": ErrorCase(
        "getTransactions", {"pagination": {"cursor": "0"}}, -32602, message="does not contain metadata for ledger: 0"
    ),
    "getTransaction-bad-hash": ErrorCase("getTransaction", {"hash": "xyz"}, -32602, spec_invalid=True),
    "getTransaction-missing-hash": ErrorCase("getTransaction", {}, -32602, spec_invalid=True),
    "getTransactions-no-start": ErrorCase("getTransactions", {}, -32602),
    # stellar-rpc answers what GetTransactionsRequest.IsValid refuses with -32600 (InvalidRequest).
    "getTransactions-start-and-cursor": ErrorCase(
        "getTransactions", {"startLedger": 2, "pagination": {"cursor": "8589934592"}}, -32600
    ),
    "getTransactions-start-beyond-latest": ErrorCase("getTransactions", {"startLedger": 10**9}, -32600),
    "getTransactions-start-not-number": ErrorCase("getTransactions", {"startLedger": "2"}, -32602, spec_invalid=True),
    "getTransactions-limit-not-number": ErrorCase(
        "getTransactions", {"startLedger": 2, "pagination": {"limit": "5"}}, -32602, spec_invalid=True
    ),
    "sendTransaction-missing-transaction": ErrorCase("sendTransaction", {}, -32602, spec_invalid=True),
    "sendTransaction-not-xdr": ErrorCase("sendTransaction", {"transaction": "not xdr"}, -32602),
    "simulateTransaction-not-xdr": ErrorCase("simulateTransaction", {"transaction": "AAAA"}, -32602),
    "simulateTransaction-bad-authMode": ErrorCase(
        "simulateTransaction", {"transaction": "AAAA", "authMode": "everything"}, -32602, spec_invalid=True
    ),
}


@pytest.mark.parametrize("case_id", list(ERROR_CASES))
async def test_jsonrpc_error_envelope(case_id: str, rpc: SpecClient) -> None:
    error_case = ERROR_CASES[case_id]
    if error_case.method in SPEC.methods:
        problems = SPEC.param_problems(error_case.method, error_case.params)
        assert bool(problems) == error_case.spec_invalid, problems
    else:
        assert error_case.code == -32601
    error = await rpc.error(error_case.method, error_case.params, error_case.code)
    if error_case.message is not None:
        assert error_case.message in error["message"]


@pytest.mark.parametrize(
    ("body", "code"),
    [
        pytest.param(b"{not json", -32700, id="parse-error"),
        pytest.param(b'{"jsonrpc": "1.0", "id": null, "method": "getHealth"}', -32600, id="invalid-request"),
    ],
)
async def test_jsonrpc_error_envelope_raw(body: bytes, code: int, admin: DevnetAdmin) -> None:
    status, answer = await admin.post_raw(body)
    check_error(status, answer, None, code)


# -- every method, and the checker itself ------------------------------------------------

DEVNET_UNSUPPORTED = {"getEvents", "getLedgers"}


def test_every_spec_method_is_covered() -> None:
    """Each method in the spec has a success case here, or (getEvents/getLedgers, which
    devnet does not implement) an error case; no case names a method the spec lacks."""
    with_results = {method for method, _ in CASES.values()}
    with_errors = {c.method for c in ERROR_CASES.values() if c.method in DEVNET_UNSUPPORTED}
    assert with_results <= set(SPEC.methods)
    assert set(SPEC.methods) == with_results | with_errors
    assert with_results.isdisjoint(DEVNET_UNSUPPORTED)


EXAMPLES = [
    pytest.param(name, index, id=f"{name}-{index}")
    for name, location in SPEC.methods.items()
    for index in range(len(SPEC.follow(location)[0].get("examples", [])))
]
# Where the spec's own examples disagree with its schemas (devnet follows the schemas):
SPEC_EXAMPLE_ERRATA = {
    # a string, as the real stellar-rpc sends it; the schema says number
    ("sendTransaction", "$.latestLedgerCloseTime"),
    # the deprecated simulation "cost", no longer in the schema
    ("simulateTransaction", "$.cost"),
}


@pytest.mark.parametrize(("method", "index"), EXAMPLES)
def test_spec_examples_pass_the_checker(method: str, index: int) -> None:
    """The checker accepts the spec's own example results (no false positives)."""
    _, pairing = SPEC.follow(f"{SPEC.methods[method]}/examples/{index}")
    _, result = SPEC.follow(f"{pairing}/result")
    value = SPEC.follow(result)[0]["value"]
    problems = [p for p in SPEC.result_problems(method, value) if (method, p.split(":")[0]) not in SPEC_EXAMPLE_ERRATA]
    assert not problems


def _example(method: str) -> Any:
    _, result = SPEC.follow(f"{SPEC.methods[method]}/examples/0/result")
    return json.loads(json.dumps(SPEC.follow(result)[0]["value"]))


def _mutate_number(value: dict[str, Any]) -> None:
    value["sequence"] = str(value["sequence"])


def _mutate_top(value: dict[str, Any]) -> None:
    value["devnetOnly"] = True


def _mutate_nested(value: dict[str, Any]) -> None:
    value["transactions"][0]["devnetOnly"] = 1


def _mutate_deep(value: dict[str, Any]) -> None:
    value["transactions"][0]["events"] = {"contractEventsXdr": [[{"decoded": "x"}]]}


def _mutate_enum(value: dict[str, Any]) -> None:
    value["status"] = "QUEUED"


@pytest.mark.parametrize(
    ("method", "mutate", "expected"),
    [
        pytest.param("getLatestLedger", _mutate_number, "$.sequence: '", id="number-as-string"),
        pytest.param("getLatestLedger", _mutate_top, "$.devnetOnly: not declared", id="undeclared-top"),
        pytest.param(
            "getTransactions", _mutate_nested, "$.transactions[0].devnetOnly: not declared", id="undeclared-nested"
        ),
        pytest.param("getTransactions", _mutate_deep, "contractEventsXdr[0][0]", id="object-where-string"),
        pytest.param("getTransaction", _mutate_enum, "$.status: 'QUEUED' is not one of", id="enum"),
    ],
)
def test_checker_rejects_violations(method: str, mutate: Callable[[dict[str, Any]], None], expected: str) -> None:
    value = _example(method)
    assert not SPEC.result_problems(method, value)
    mutate(value)
    problems = SPEC.result_problems(method, value)
    assert any(expected in p for p in problems), problems
