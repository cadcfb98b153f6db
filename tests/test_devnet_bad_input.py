"""Bad input never crashes devnet or corrupts its state.

Every malformed, invalid or unsupported request gets a JSON-RPC error that says what was
wrong (naming the parameter), devnet keeps answering, and nothing in the ledger changes:
a witness account's balance and sequence number, the queue and the transaction history
are the same before and after. A property-based test then throws random requests at it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from stellar_sdk import Address, Asset, Keypair, SorobanServerAsync, TransactionBuilder, TransactionEnvelope
from stellar_sdk import xdr as x

from tests.devnet_harness import PASSPHRASE, DevnetAdmin, DevnetProcess, sac_transfer_envelope
from tests.devnet_helpers import (
    AccountState,
    account_key_xdr,
    account_state,
    get_transaction,
    payment_envelope,
    send,
    wait_for_transaction,
)

PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS = -32700, -32600, -32601, -32602
NATIVE_SAC = Asset.native().contract_id(PASSPHRASE)
DOCUMENTED_ERRORS = {PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS}
METHODS = [
    "getHealth",
    "getNetwork",
    "getVersionInfo",
    "getLatestLedger",
    "getFeeStats",
    "getLedgerEntries",
    "getTransaction",
    "getTransactions",
    "sendTransaction",
    "simulateTransaction",
    "getEvents",
    "getLedgers",
]
A_HASH = "ab" * 32


@dataclass
class Witness:
    """An account whose state must never change because of bad input, and valid envelopes
    from it that are never submitted unmodified (until the end of the property test)."""

    keypair: Keypair
    payee: Keypair
    payment: str  # signed payment envelope, base64
    sac_transfer: str  # signed, prepared SAC transfer envelope, base64

    @property
    def account_id(self) -> str:
        return self.keypair.public_key


@dataclass(frozen=True)
class Snapshot:
    account: AccountState | None
    queue: int
    transactions: int


async def snapshot(admin: DevnetAdmin, witness: Witness) -> Snapshot:
    stats = await admin.admin("GET", "stats")
    return Snapshot(await account_state(admin, witness.account_id), stats["queue"], stats["transactions"])


async def assert_unharmed(devnet: DevnetProcess, admin: DevnetAdmin, witness: Witness, before: Snapshot) -> None:
    assert devnet.alive(), "devnet process died"
    status, body = await admin.rpc("getHealth")
    assert status == 200 and body["result"]["status"] == "healthy", body
    assert await snapshot(admin, witness) == before


@pytest.fixture(scope="module")
async def witness(admin: DevnetAdmin, server: SorobanServerAsync) -> Witness:
    keypair, payee = await admin.new_account(), await admin.new_account()
    payment = await payment_envelope(server, keypair, payee.public_key, "3")
    transfer = await sac_transfer_envelope(server, keypair, payee.public_key, 30_000_000)
    return Witness(keypair, payee, payment.to_xdr(), transfer.to_xdr())


@pytest.fixture
async def unharmed(devnet: DevnetProcess, admin: DevnetAdmin, witness: Witness) -> AsyncIterator[None]:
    """Checks, after the test, that devnet still answers and the witness state is unchanged."""
    before = await snapshot(admin, witness)
    yield
    await assert_unharmed(devnet, admin, witness, before)


def rpc_error(body: dict[str, Any]) -> dict[str, Any]:
    assert body.get("jsonrpc") == "2.0", body
    assert "result" not in body, body
    error: dict[str, Any] = body["error"]
    assert isinstance(error["code"], int) and isinstance(error["message"], str), body
    return error


# -- malformed JSON, unknown methods, bad requests ----------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b"{",
        b"not json at all",
        b"",
        b"\xff\xfe\x00garbage",
        b'{"jsonrpc": "2.0", "id": 1, "method": "getHealth"',
        b'{"jsonrpc": "2.0", "id": 1, "method": "getHealth",}',
        b'{"jsonrpc": "2.0", "id": NaN, "method": "getHealth"}',
        b'{"jsonrpc": "2.0", "id": 1e999, "method": "getHealth"}',
        b'{"jsonrpc": "2.0", "id": 1, "method": "getTransactions", "params": {"startLedger": Infinity}}',
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
    ],
    ids=[
        "open-brace",
        "text",
        "empty",
        "not-utf8",
        "truncated",
        "trailing-comma",
        "nan-id",
        "infinite-id",
        "infinity-param",
        "deep-array",
        "deep-object",
    ],
)
async def test_malformed_json_is_a_parse_error(admin: DevnetAdmin, unharmed: None, raw: bytes) -> None:
    status, body = await admin.post_raw(raw)
    assert status == 200
    error = rpc_error(body)
    assert error["code"] == PARSE_ERROR, body
    assert body["id"] is None


@pytest.mark.parametrize("method", ["getFoo", "gethealth", "", "admin/faults", "sendTransaction "])
async def test_unknown_method(admin: DevnetAdmin, unharmed: None, method: str) -> None:
    status, body = await admin.rpc(method, request_id="req-7")
    assert status == 200
    error = rpc_error(body)
    assert error["code"] == METHOD_NOT_FOUND
    assert method in error["message"]
    assert body["id"] == "req-7"


@pytest.mark.parametrize("method", ["getEvents", "getLedgers"])
async def test_unimplemented_real_method_is_not_supported(admin: DevnetAdmin, unharmed: None, method: str) -> None:
    _, body = await admin.rpc(method, {"startLedger": 1})
    error = rpc_error(body)
    assert error["code"] == METHOD_NOT_FOUND
    assert method in error["message"] and "not supported by devnet" in error["message"]


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ({"jsonrpc": "1.0", "id": 1, "method": "getHealth"}, "jsonrpc"),
        ({"jsonrpc": 2.0, "id": 1, "method": "getHealth"}, "jsonrpc"),
        ({"id": 1, "method": "getHealth"}, "jsonrpc"),
        ({"jsonrpc": "2.0", "id": 1}, "method"),
        ({"jsonrpc": "2.0", "id": 1, "method": 5}, "method"),
        ({"jsonrpc": "2.0", "id": {"a": 1}, "method": "getHealth"}, "id"),
        ({"jsonrpc": "2.0", "id": [1], "method": "getHealth"}, "id"),
        ({"jsonrpc": "2.0", "id": True, "method": "getHealth"}, "id"),
        (1, "request object"),
        ("getHealth", "request object"),
        (None, "request object"),
        ([{"jsonrpc": "2.0", "id": 1, "method": "getHealth"}], "batch"),
        ([], "batch"),
    ],
)
async def test_invalid_request(admin: DevnetAdmin, unharmed: None, message: Any, expected: str) -> None:
    status, body = await admin.post_raw(json.dumps(message).encode())
    assert status == 200
    error = rpc_error(body)
    assert error["code"] == INVALID_REQUEST, body
    assert expected in error["message"]


@pytest.mark.parametrize(
    ("method", "params", "names"),
    [
        ("getTransaction", {}, ["hash", "required"]),
        ("getTransaction", {"hash": 5}, ["hash", "string"]),
        ("getTransaction", {"hash": "zz"}, ["hash", "pattern"]),
        ("getTransaction", {"hash": A_HASH.upper()}, ["hash", "pattern"]),
        ("getTransaction", {"hash": A_HASH, "foo": 1}, ["foo"]),
        ("getTransaction", [A_HASH], ["params must be an object"]),
        ("getHealth", [], ["params must be an object"]),
        ("getHealth", "x", ["params must be an object"]),
        ("getNetwork", {"verbose": True}, ["verbose"]),
        ("getLedgerEntries", {}, ["keys", "required"]),
        ("getLedgerEntries", {"keys": []}, ["keys"]),
        ("getLedgerEntries", {"keys": "AAAA"}, ["keys"]),
        ("getLedgerEntries", {"keys": ["AAAA"] * 201}, ["keys"]),
        ("getLedgerEntries", {"keys": [1]}, ["keys.0"]),
        ("getTransactions", {}, ["startLedger", "pagination.cursor"]),
        ("getTransactions", {"startLedger": 0}, ["startLedger"]),
        ("getTransactions", {"startLedger": "1"}, ["startLedger"]),
        ("getTransactions", {"startLedger": 1.0}, ["startLedger"]),
        ("getTransactions", {"startLedger": True}, ["startLedger"]),
        ("getTransactions", {"pagination": {"limit": 0}}, ["pagination.limit"]),
        ("getTransactions", {"pagination": {"limit": 201}}, ["pagination.limit"]),
        ("getTransactions", {"pagination": {"cursor": "abc"}}, ["pagination.cursor"]),
        ("sendTransaction", {}, ["transaction", "required"]),
        ("sendTransaction", {"transaction": 123}, ["transaction"]),
        ("sendTransaction", {"transaction": ""}, ["transaction"]),
        ("sendTransaction", {"tx": "AAAA"}, ["transaction", "tx"]),
        ("simulateTransaction", {"transaction": "AAAA", "authMode": "bogus"}, ["authMode"]),
        (
            "simulateTransaction",
            {"transaction": "AAAA", "resourceConfig": {"instructionLeeway": -1}},
            ["resourceConfig.instructionLeeway"],
        ),
        ("simulateTransaction", {"transaction": "AAAA", "useUpgradedAuth": "yes"}, ["useUpgradedAuth"]),
        ("simulateTransaction", {"transaction": "AAAA", "xdrFormat": "xml"}, ["xdrFormat"]),
    ],
)
async def test_bad_params_name_the_field(
    admin: DevnetAdmin, unharmed: None, method: str, params: Any, names: list[str]
) -> None:
    status, body = await admin.rpc(method, params, request_id=42)
    assert status == 200
    error = rpc_error(body)
    assert error["code"] == INVALID_PARAMS, body
    assert body["id"] == 42
    for name in names:
        assert name in error["message"], (name, error)


@pytest.mark.parametrize(
    ("params", "names"),
    [
        ({"startLedger": 10**9}, ["start ledger (1000000000) must be between the oldest ledger"]),
        ({"startLedger": 1, "pagination": {"cursor": "1"}}, ["startLedger", "cursor"]),
    ],
)
async def test_get_transactions_requests_stellar_rpc_refuses_as_invalid(
    admin: DevnetAdmin, unharmed: None, params: Any, names: list[str]
) -> None:
    """stellar-rpc answers what GetTransactionsRequest.IsValid refuses with -32600 (InvalidRequest)."""
    status, body = await admin.rpc("getTransactions", params, request_id=42)
    assert status == 200
    error = rpc_error(body)
    assert error["code"] == INVALID_REQUEST, body
    assert body["id"] == 42
    for name in names:
        assert name in error["message"], (name, error)


async def test_ledger_keys_that_are_not_ledger_key_xdr_name_their_index(
    admin: DevnetAdmin, witness: Witness, unharmed: None
) -> None:
    good = account_key_xdr(witness.account_id)
    junk = base64.b64encode(random.Random(7).randbytes(40)).decode()
    truncated = good[: len(good) // 2]
    for index, bad in [(1, "!!not base64!!"), (2, junk), (1, truncated), (0, witness.payment)]:
        keys = [good] * index + [bad] + [good]
        _, body = await admin.rpc("getLedgerEntries", {"keys": keys})
        error = rpc_error(body)
        assert error["code"] == INVALID_PARAMS
        assert f"keys[{index}]" in error["message"], (bad, error)
        assert "LedgerKey" in error["message"]


# -- garbage transactions ----------------------------------------------------------------


def garbage_envelopes(valid: str) -> dict[str, str]:
    raw = base64.b64decode(valid)
    return {
        "random-bytes": base64.b64encode(random.Random(1).randbytes(300)).decode(),
        "truncated": base64.b64encode(raw[: len(raw) // 2]).decode(),
        "truncated-by-one": base64.b64encode(raw[:-1]).decode(),
        "trailing-bytes": base64.b64encode(raw + b"\x00\x00\x00\x00").decode(),
        "not-base64": "this is not base64!",
        "bad-padding": valid[:-2] + "=",
        "hex": raw.hex(),
        "union-discriminant": base64.b64encode(b"\x00\x00\x00\x63" + raw[4:]).decode(),
    }


@pytest.mark.parametrize("method", ["sendTransaction", "simulateTransaction"])
async def test_garbage_xdr_names_transaction(admin: DevnetAdmin, witness: Witness, unharmed: None, method: str) -> None:
    for name, envelope in garbage_envelopes(witness.payment).items():
        status, body = await admin.rpc(method, {"transaction": envelope})
        assert status == 200, name
        error = rpc_error(body)
        assert error["code"] == INVALID_PARAMS, (name, body)
        assert "transaction" in error["message"], (name, error)


async def test_oversize_body_is_413_with_json_rpc_error(admin: DevnetAdmin, witness: Witness, unharmed: None) -> None:
    huge = witness.payment + "A" * 600_000
    message = {"jsonrpc": "2.0", "id": 1, "method": "sendTransaction", "params": {"transaction": huge}}
    status, body = await admin.post_raw(json.dumps(message).encode())
    assert status == 413
    error = rpc_error(body)
    assert error["code"] == INVALID_REQUEST
    assert "larger than" in error["message"]


# -- well-formed but unsupported -----------------------------------------------------------


async def test_unsupported_envelopes_are_not_supported_by_devnet(
    admin: DevnetAdmin, server: SorobanServerAsync, witness: Witness, unharmed: None
) -> None:
    """Valid, signed transactions with the witness's next sequence number that devnet does
    not implement: refused with a clear message, and the sequence number is not used."""
    account = await server.load_account(witness.account_id)
    kp = witness.keypair

    def build(add: Callable[[TransactionBuilder], TransactionBuilder]) -> Any:
        builder = TransactionBuilder(account, PASSPHRASE, base_fee=100).set_timeout(300)
        tx = add(builder).build()
        account.sequence -= 1  # build() advanced it; every envelope uses the same next sequence
        tx.sign(kp)
        return tx

    set_options = build(lambda b: b.append_set_options_op(home_domain="example.com"))
    manage_data = build(lambda b: b.append_manage_data_op("key", b"value"))
    bump_seq = build(lambda b: b.append_bump_sequence_op(account.sequence + 10))
    payment = build(lambda b: b.append_payment_op(witness.payee.public_key, Asset.native(), "1"))
    fee_bump = TransactionBuilder.build_fee_bump_transaction(kp.public_key, 200, payment, PASSPHRASE)
    fee_bump.sign(kp)
    # Host functions other than a contract call and an asset's SAC deployment.
    upload = build(lambda b: b.append_upload_contract_wasm_op(b"\0asm\1\0\0\0"))
    from_address = build(lambda b: b.append_create_contract_op(bytes(32), kp.public_key, salt=bytes(32)))
    # CAP-71 delegated authorization (custom accounts).
    delegated = x.SorobanAuthorizationEntry(
        credentials=x.SorobanCredentials(
            x.SorobanCredentialsType.SOROBAN_CREDENTIALS_ADDRESS_WITH_DELEGATES,
            address_with_delegates=x.SorobanAddressCredentialsWithDelegates(
                address_credentials=x.SorobanAddressCredentials(
                    address=Address(witness.payee.public_key).to_xdr_sc_address(),
                    nonce=x.Int64(1),
                    signature_expiration_ledger=x.Uint32(1_000),
                    signature=x.SCVal(x.SCValType.SCV_VOID),
                ),
                delegates=[],
            ),
        ),
        root_invocation=x.SorobanAuthorizedInvocation(
            function=x.SorobanAuthorizedFunction(
                x.SorobanAuthorizedFunctionType.SOROBAN_AUTHORIZED_FUNCTION_TYPE_CONTRACT_FN,
                contract_fn=x.InvokeContractArgs(
                    contract_address=Address(NATIVE_SAC).to_xdr_sc_address(),
                    function_name=x.SCSymbol(b"balance"),
                    args=[],
                ),
            ),
            sub_invocations=[],
        ),
    )
    with_delegates = build(lambda b: b.append_invoke_contract_function_op(NATIVE_SAC, "balance", [], auth=[delegated]))
    cases = {
        "SET_OPTIONS": set_options.to_xdr(),
        "MANAGE_DATA": manage_data.to_xdr(),
        "BUMP_SEQUENCE": bump_seq.to_xdr(),
        "fee-bump": fee_bump.to_xdr(),
        "UPLOAD_CONTRACT_WASM": upload.to_xdr(),
        "from an address": from_address.to_xdr(),
        "ADDRESS_WITH_DELEGATES": with_delegates.to_xdr(),
    }
    for method in ("sendTransaction", "simulateTransaction"):
        for name, envelope in cases.items():
            _, body = await admin.rpc(method, {"transaction": envelope})
            error = rpc_error(body)
            assert error["code"] == INVALID_PARAMS, (method, name, body)
            assert "not supported by devnet" in error["message"], (method, name, error)
            assert name in error["message"], (method, name, error)


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("getTransaction", {"hash": A_HASH, "xdrFormat": "json"}),
        ("getTransactions", {"startLedger": 1, "xdrFormat": "json"}),
        ("getLedgerEntries", {"keys": ["AAAA"], "xdrFormat": "json"}),
        ("simulateTransaction", {"transaction": "AAAA", "xdrFormat": "json"}),
    ],
)
async def test_xdr_format_json_is_not_supported_by_devnet(
    admin: DevnetAdmin, unharmed: None, method: str, params: dict[str, Any]
) -> None:
    _, body = await admin.rpc(method, params)
    error = rpc_error(body)
    assert error["code"] == INVALID_PARAMS
    assert "xdrFormat" in error["message"] and "not supported by devnet" in error["message"], error


async def test_bad_input_does_not_disturb_valid_requests(admin: DevnetAdmin, witness: Witness) -> None:
    """Sanity check of the witness itself: the same channel still serves valid reads."""
    status, body = await admin.rpc("getTransaction", {"hash": A_HASH, "xdrFormat": "base64"})
    assert status == 200 and body["result"]["status"] == "NOT_FOUND"
    assert (await account_state(admin, witness.account_id)) is not None


# -- property-based: random requests -------------------------------------------------------

PARAM_NAMES = [
    "hash",
    "keys",
    "transaction",
    "startLedger",
    "pagination",
    "cursor",
    "limit",
    "xdrFormat",
    "resourceConfig",
    "authMode",
    "useUpgradedAuth",
]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


def flip(raw: bytes, flips: list[tuple[int, int]]) -> bytes:
    data = bytearray(raw)
    for position, mask in flips:
        data[position] ^= mask
    return bytes(data)


def mutations(raw: bytes) -> st.SearchStrategy[bytes]:
    flipped = st.lists(
        st.tuples(st.integers(0, len(raw) - 1), st.integers(1, 255)), min_size=1, max_size=4, unique_by=lambda t: t[0]
    ).map(lambda flips: flip(raw, flips))
    truncated = st.integers(0, len(raw) - 1).map(lambda n: raw[:n])
    spliced = st.tuples(st.integers(0, len(raw)), st.binary(min_size=1, max_size=16)).map(
        lambda t: raw[: t[0]] + t[1] + raw[t[0] :]
    )
    # Hypothesis favours small integers (the first bytes: the envelope type); a seeded
    # random.Random spreads flips over the whole envelope, so most mutants still decode.
    spread = st.tuples(st.integers(0, 2**32).map(random.Random), st.integers(1, 4)).map(
        lambda t: flip(raw, [(position, t[0].randint(1, 255)) for position in t[0].sample(range(len(raw)), t[1])])
    )
    return st.one_of(spread, spread, spread, flipped, truncated, spliced)


@dataclass
class Fuzz:
    body: bytes
    request: Any  # the decoded request, when the body is JSON

    def __repr__(self) -> str:
        return f"Fuzz({self.body[:300]!r})"


def to_fuzz(request: Any) -> Fuzz:
    try:
        return Fuzz(json.dumps(request, allow_nan=False).encode(), request)
    except ValueError:  # NaN or ±Infinity somewhere: not JSON, so devnet must answer a parse error
        return Fuzz(json.dumps(request).encode(), None)


def fuzz_requests(seeds: list[bytes], valid_strings: list[str]) -> st.SearchStrategy[Fuzz]:
    mutated_envelopes = st.sampled_from(seeds).flatmap(mutations).map(lambda b: base64.b64encode(b).decode())
    field_values = json_values | st.sampled_from(valid_strings) | mutated_envelopes
    params = st.one_of(
        st.none(),
        json_values,
        st.dictionaries(st.sampled_from(PARAM_NAMES), field_values, max_size=4),
        st.builds(lambda t: {"transaction": t}, mutated_envelopes),
    )
    ids = st.none() | st.integers() | st.text(max_size=10) | json_values
    rpc_shaped = st.fixed_dictionaries(
        {"jsonrpc": st.just("2.0"), "id": ids, "method": st.sampled_from(METHODS) | st.text(max_size=12)},
        optional={"params": params, "extra": json_values},
    )
    envelope_calls = st.builds(
        lambda method, t, rid: {"jsonrpc": "2.0", "id": rid, "method": method, "params": {"transaction": t}},
        st.sampled_from(["sendTransaction", "simulateTransaction"]),
        mutated_envelopes,
        st.integers(0, 10**6),
    )
    json_bodies = st.one_of(json_values, rpc_shaped, rpc_shaped, envelope_calls, envelope_calls).map(to_fuzz)
    raw_bodies = st.binary(max_size=512).map(lambda b: Fuzz(b, None))
    return st.one_of(json_bodies, json_bodies, json_bodies, raw_bodies)


def strict_json(text: str) -> Any:
    def reject(name: str) -> Any:
        raise ValueError(f"{name} in answer")

    return json.loads(text, parse_constant=reject)


def check_answer(fuzz: Fuzz, status: int, text: str) -> None:
    assert status in (200, 413), (status, text)
    body = strict_json(text)
    assert isinstance(body, dict) and body.get("jsonrpc") == "2.0", body
    assert "id" in body
    assert ("result" in body) != ("error" in body), body
    if "error" in body:
        error = body["error"]
        assert isinstance(error, dict) and isinstance(error.get("message"), str) and error["message"], body
        assert error.get("code") in DOCUMENTED_ERRORS, body  # never -32603: no input makes devnet fail inside
    request = fuzz.request
    if isinstance(request, dict) and request.get("jsonrpc") == "2.0" and isinstance(request.get("id"), (str, int)):
        if not isinstance(request["id"], bool):
            assert body["id"] == request["id"], body
    if "result" in body and isinstance(request, dict) and request.get("method") == "sendTransaction":
        # a mutated or random envelope is never accepted into the queue
        assert body["result"]["status"] != "PENDING", (fuzz, body)


async def test_random_requests_never_crash_devnet_or_change_state(
    devnet: DevnetProcess, admin: DevnetAdmin, http_session: aiohttp.ClientSession, witness: Witness
) -> None:
    before = await snapshot(admin, witness)
    fee_bump = TransactionBuilder.build_fee_bump_transaction(
        witness.account_id, 200, TransactionEnvelope.from_xdr(witness.payment, PASSPHRASE), PASSPHRASE
    )
    fee_bump.sign(witness.keypair)
    seeds = [base64.b64decode(e) for e in (witness.payment, witness.sac_transfer, fee_bump.to_xdr())]
    valid_strings = [A_HASH, account_key_xdr(witness.account_id), "base64", "json", "record", "enforce", "1", "0"]
    loop = asyncio.get_running_loop()

    async def post(body: bytes) -> tuple[int, str]:
        async with http_session.post(
            devnet.url, data=body, headers={"Content-Type": "application/json"}, timeout=aiohttp.ClientTimeout(total=20)
        ) as response:
            return response.status, await response.text()

    # Hypothesis drives examples synchronously, so it runs in a worker thread and hands each
    # request to this (the session's) event loop, where the shared aiohttp session lives.
    @settings(
        max_examples=150,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )
    @given(fuzz=fuzz_requests(seeds, valid_strings))
    def throw(fuzz: Fuzz) -> None:
        status, text = asyncio.run_coroutine_threadsafe(post(fuzz.body), loop).result(timeout=30)
        check_answer(fuzz, status, text)
        assert devnet.alive(), "devnet process died"

    await asyncio.to_thread(throw)

    await assert_unharmed(devnet, admin, witness, before)
    # The witness's untouched payment is still valid: nothing used its sequence number.
    sent = await send(admin, witness.payment)
    assert sent["status"] == "PENDING", sent
    applied = await wait_for_transaction(admin, sent["hash"])
    assert applied["status"] == "SUCCESS", applied
    after = await account_state(admin, witness.account_id)
    assert before.account is not None and after is not None
    assert after.seq_num == before.account.seq_num + 1
    assert (await get_transaction(admin, sent["hash"]))["ledger"] == applied["ledger"]
