"""Adversarial-input campaign (hypothesis) across the payout engine's edges.

What it throws, and what must hold:

- **Starter CLI** (``payouts.cli.main`` in this process; a few fixed cases as real
  ``starter.py`` processes): hostile ``pay`` arguments (negative, zero, exponent, NaN,
  >7 places, huge amounts; wrong-checksum, S… seed, M… muxed, T…/X… keys, empty and padded
  destinations; malformed assets; idempotency keys and payout IDs too long, empty, with
  forbidden or non-ASCII characters, SQL-ish strings, NUL bytes, non-UTF-8 argv bytes),
  hostile ``status``/``submit-signed`` keys, hostile ``sign`` secret files and XDR, and
  argparse-level garbage. Each exits 2 with one ``error: <flag>: <rule>`` line and no
  traceback, and never opens a connection to Temporal: the CLI talks to the real dev
  server through a counting TCP pass-through, and the count stays 0. Afterwards, against
  the real server and a worker with a SQLite app DB: no workflow on the task queue, no
  row in ``payouts``/``transactions``; then a valid ``pay --wait`` through the same path
  confirms.
- **SDK** (``PayoutRequest``, ``PayoutClient``): hostile values, wrong types and unknown
  fields are refused with a ``ValidationError`` whose location names the field (Python
  and JSON input); nothing reaches Temporal or the DB; a valid payout then confirms.
- **External signatures** on a live payout in ``AWAITING_SIGNATURE``: random text,
  base64 of random bytes, truncated and bit-flipped signed envelopes, junk characters in
  signed envelopes (the good one included), huge strings, another transaction, the built
  one altered, signed for another network, by the wrong key, with a stranger's signature,
  a bad hint, a short or empty signature, a fee-bump wrapper, malformed signal objects and non-string update
  arguments — through the update (``SignatureRejected`` with the reason) and the signal
  (``status.last_error``). The payout keeps waiting for the same envelope (same hash and
  unsigned XDR), the DB holds only the recorded unsigned envelope, the source account's
  sequence number does not move and the ledger holds no transfer; then the right
  signature confirms exactly once (app DB on SQLite, signature by update; on PostgreSQL,
  by signal).

Findings (each demonstrated by a ``test_finding_*`` test, marked ``xfail(strict=True)``
until it was fixed; all are fixed and their tests are regression tests, except the part
of 10 that needs a worker setting, still marked):

1. Amounts with a trailing newline (``"12\\n"``) or non-ASCII decimal digits
   (``"１２"``, ``"١٢.٥"``) pass ``PayoutRequest`` (``payouts/amounts.py`` uses Python's
   ``\\d`` and ``$``): ``starter.py pay --amount １２`` starts a workflow that pays 12 XLM.
2. An asset code with a trailing newline (``"EURC\\n:G…"``) passes validation
   (``payouts/assets.py``, ``$`` again); the workflow starts, writes to the DB and fails
   in simulation.
3. ``starter.py status``/``submit-signed`` accept a key with a trailing newline
   (``is_valid_idempotency_key`` uses ``re.match`` with ``$``) and connect to Temporal.
4. ``starter.py submit-signed`` connects to Temporal before it checks ``--xdr``/
   ``--xdr-file`` (neither or both given, unreadable file, text that is not base64 XDR);
   an unreadable ``--xdr-file`` then ends in a ``FileNotFoundError`` traceback.
5. ``starter.py sign --secret-file`` on a non-UTF-8 file ends in a ``UnicodeDecodeError``
   traceback instead of exit 2.
6. An unreachable ``TEMPORAL_ADDRESS`` ends every Temporal command in a ``RuntimeError``
   traceback (``Failed client connect``) instead of a message naming the variable.
7. ``PayoutClient.pay`` does not re-validate its request: a ``PayoutRequest`` made invalid
   by ``model_copy(update=…)`` or ``model_construct`` starts a workflow whose first task
   then fails forever ("Failed decoding arguments").
8. A signal whose payload is not an object (a string, a list, a number) is dropped by the
   Temporal SDK before the handler runs: ``status.last_error`` says nothing.
9. A signed envelope with non-base64 characters inside (``" "``, ``"!"``, a newline, e.g.
   line-wrapped base64) is **accepted** (the check decodes leniently), recorded verbatim
   and sent verbatim; the RPC refuses it as invalid base64 and the payout stays
   ``SUBMITTED`` forever, no longer accepting the good signature.
10. A ``submit_signature`` update of more than 2 MB wedges the workflow: its acceptance
    exceeds the worker's payload limit, every workflow task fails, and queries, updates
    and the good signature all go unanswered. Fixed: ``PayoutClient`` and the CLI refuse
    a signed XDR over ``MAX_SIGNED_XDR_CHARS`` before sending, the workflow's validator
    and signal handler refuse it too. Left: an update over 2 MB from another client still
    wedges the payout (the worker's rejection carries the request); a worker built with
    ``disable_payload_error_limit=True`` lets the server refuse it instead.
11. Unclear messages: a fee-bump envelope is rejected as "not a base64 transaction
    envelope XDR (ValueError)"; an amount of 14+ digits is "not a plain decimal string"
    rather than too large.
12. A secret seed typed into the wrong field is echoed: ``pay --asset CODE:S…`` prints the
    whole seed on stderr; ``str()`` of the ``ValidationError`` for ``destination=S…``
    shows 47 of its 56 characters (pydantic's ``input_value``).

Seen but not turned into tests: an update with a non-string argument failed with the
SDK's bare "Failed decoding arguments" (fixed: the validator names the type; the update
cases above check it); ``submit-signed`` printed "rejected: signature rejected: …"
(fixed: "error: signature rejected: …"); ``MAX_QUEUED_SIGNATURES`` keeps the newest 10
queued signals, so a burst of 10 bad signals landing in one workflow task with a good one
drops the good one silently; signals up to 2 MB each all stay in history (about 25 of
them reach the 50 MB history limit, which terminates the workflow).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from sqlalchemy import text
from stellar_sdk import (
    Account,
    DecoratedSignature,
    Keypair,
    MuxedAccount,
    Network,
    StrKey,
    TransactionBuilder,
    TransactionEnvelope,
)
from stellar_sdk.soroban_server_async import SorobanServerAsync
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Replayer

from payouts import db
from payouts.amounts import MAX_STROOPS, AmountError, to_stroops
from payouts.client import PayoutClient, SignatureRejected
from payouts.envelopes import EnvelopeError, check_signed_envelope
from payouts.messages import PayoutOutcome
from payouts.models import PayoutRequest, PayoutState, PayoutStatus
from tests.cli_harness import CliRun, run_cli
from tests.devnet_harness import PASSPHRASE, DevnetAdmin, DevnetProcess, free_port, sac_transfer_envelope
from tests.payout_checks import (
    XLM,
    awaiting_signature,
    latest_ledger,
    payout,
    result_of,
    successful_transfers,
    transfers,
    wait_for,
    wait_ledgers,
)
from tests.payout_harness import REPO, payout_settings, running_worker
from tests.test_payout_rejections import (
    DOES_NOT_VERIFY,
    HASH_DIFFERS,
    MALFORMED_SIGNAL,
    last_error_is,
    rejected_by_signal,
    signed,
)
from workflows.payout import PayoutWorkflow

T = TypeVar("T")

G = Keypair.random().public_key
C = StrKey.encode_contract(bytes(range(32)))
NOT_BASE64_XDR = "not a base64 transaction envelope XDR"
NOT_CANONICAL = "not canonical base64"
NO_SIGNATURE = "signature rejected: the signed XDR carries no signature"
KEY_RULE = "key: must be 1-128 characters of A-Z a-z 0-9 : _ -"
# Hypothesis examples here are cheap (no I/O before the rejection) but run in a thread;
# the health checks about slow data generation and filtering do not apply.
RELAXED = [HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large]
TEXT = st.characters(exclude_categories=["Cs"])  # lone surrogates cannot be encoded at all


# -- oracles, independent of the code under test -------------------------------------------

ASCII_AMOUNT = re.compile(r"[0-9]{1,13}(?:\.[0-9]{1,7})?")
KEY = re.compile(r"[A-Za-z0-9:_-]{1,128}")
ASSET_CODE = re.compile(r"[A-Za-z0-9]{1,12}")


def valid_amount(amount: str) -> bool:
    """A positive ASCII decimal of at most 7 places within int64 stroops (DESIGN §3)."""
    if ASCII_AMOUNT.fullmatch(amount) is None:
        return False
    whole, _, fraction = amount.partition(".")
    stroops = int(whole) * 10_000_000 + int(fraction.ljust(7, "0"))
    return 0 < stroops <= MAX_STROOPS


def amount_leak(amount: str) -> bool:
    """Finding 1: what Python's ``\\d``/``$`` let through although the rule refuses it."""
    body = amount.removesuffix("\n")
    return re.fullmatch(r"\d{1,13}(?:\.\d{1,7})?", body) is not None and (body != amount or not body.isascii())


def valid_asset(asset: str) -> bool:
    if asset in ("XLM", "USDC"):
        return True
    code, sep, issuer = asset.partition(":")
    return bool(
        sep and ASSET_CODE.fullmatch(code) and code.upper() != "XLM" and StrKey.is_valid_ed25519_public_key(issuer)
    )


def asset_leak(asset: str) -> bool:
    """Finding 2: a code ending in a newline passes ``^[A-Za-z0-9]{1,12}$``."""
    code, sep, issuer = asset.partition(":")
    return bool(
        sep and code.endswith("\n") and ASSET_CODE.fullmatch(code[:-1]) and StrKey.is_valid_ed25519_public_key(issuer)
    )


def valid_destination(destination: str) -> bool:
    return StrKey.is_valid_ed25519_public_key(destination) or StrKey.is_valid_contract(destination)


# -- hostile values --------------------------------------------------------------------------

BASE32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"

HOSTILE_AMOUNTS = [
    *["", "0", "00", "0.0", "0.0000000", "-1", "-0", "+1", "-0.5", "1e3", "1E-7", "1e+2", ".5", "1.", "."],
    *["1..2", "1.2.3", "NaN", "nan", "Infinity", "-inf", "0x1A", "1_000", "1,000", "1 000", " 1", "1 ", "\t1"],
    *["1.00000001", "0.00000001", "922337203685.4775808", "922337203686", "99999999999999", "1" + "0" * 40],
    *["9" * 1000, "1\x00", "\x001", "1.5\r", "1/2", "½", "²", "①", "Ⅻ", "1\u200b", "\u202e1", "'; DROP TABLE x"],
]
AMOUNT_RULES = (
    "is not a plain decimal string",
    "has more than 7 decimal places",
    "must be greater than 0",
    "exceeds the largest Stellar amount",
)


def hostile_amounts() -> st.SearchStrategy[str]:
    generated = st.one_of(
        st.sampled_from(HOSTILE_AMOUNTS),
        st.decimals(allow_nan=True, allow_infinity=True).map(str),
        st.floats().map(repr),
        st.builds(
            lambda whole, fraction: f"{whole}.{fraction}",
            st.integers(0, 10**12),
            st.text("0123456789", min_size=8, max_size=20),
        ),
        st.integers(MAX_STROOPS // 10_000_000 + 1, 10**40).map(str),
        st.integers(max_value=0).map(str),
        st.text(TEXT, max_size=40),
    )
    return generated.filter(lambda a: not valid_amount(a) and not amount_leak(a))


def muxed(account: str, index: int) -> str:
    return str(MuxedAccount(account, index).account_muxed)


def broken_checksum(address: str, position: int, replacement: str) -> str:
    """``address`` with one character replaced (CRC16 catches every single-character change)."""
    position %= len(address)
    if address[position] == replacement:
        replacement = "A" if replacement != "A" else "B"
    return address[:position] + replacement + address[position + 1 :]


HOSTILE_DESTINATIONS = [
    *["", " ", "\n", G + " ", " " + G, G + "\n", G.lower(), G[:-1], G + "A", G[1:], "G" * 56, "C" * 56],
    *[C.lower(), C[:-1], G + "\x00", "G", "M", "'; DROP TABLE payouts; --", G.replace("G", "Ｇ", 1)],
    *[StrKey.encode_pre_auth_tx(bytes(32)), StrKey.encode_sha256_hash(bytes(32)), muxed(G, 0), muxed(G, 2**64 - 1)],
    *[StrKey.encode_liquidity_pool(bytes(32)), Keypair.random().secret],
]
DESTINATION_RULES = ("muxed (M…) destinations are not supported", "must be a G… account ID or a C… contract ID")


def hostile_destinations() -> st.SearchStrategy[str]:
    generated = st.one_of(
        st.sampled_from(HOSTILE_DESTINATIONS),
        st.builds(broken_checksum, st.sampled_from([G, C]), st.integers(0, 55), st.sampled_from(BASE32)),
        st.binary(min_size=32, max_size=32).map(StrKey.encode_ed25519_secret_seed),
        st.integers(0, 2**64 - 1).map(lambda index: muxed(G, index)),
        st.text(TEXT, max_size=70),
    )
    return generated.filter(lambda d: not valid_destination(d))


HOSTILE_ASSETS = [
    *["", "xlm", "Xlm", "XLM ", " XLM", "USDC ", "usdc", "BTC", "EURC:", ":" + G, "EURC:" + G.lower()],
    *["EURC:" + Keypair.random().secret, "EURC:" + muxed(G, 1), "EURC:" + C, "TOOLONGCODE13:" + G, "EU RC:" + G],
    *["EURC :" + G, "€URO:" + G, "XLM:" + G, "xlm:" + G, "EURC:" + G + ":x", "EURC::" + G, "EURC\x00:" + G],
    *["ＥＵＲＣ:" + G, "EURC:" + G + "\n", "\nEURC:" + G, "'; DROP TABLE payouts; --"],
]
ASSET_RULES = (
    "must be XLM, USDC or CODE:ISSUER",
    "must be 1-12 letters or digits",
    "is not allowed: the native asset is plain XLM",
    "must be a G… account ID",
)


def hostile_assets() -> st.SearchStrategy[str]:
    generated = st.one_of(
        st.sampled_from(HOSTILE_ASSETS),
        st.text(TEXT, max_size=20).map(lambda code: f"{code}:{G}"),
        st.text(TEXT, max_size=70),
    )
    return generated.filter(lambda a: not valid_asset(a) and not asset_leak(a))


HOSTILE_KEYS = [
    *["", "k" * 129, "has space", "a/b", "a.b", "'; DROP TABLE payouts; --", '" OR 1=1 --', "k\x00", "\x00"],
    *["ключ", "kéy", "k\n", "\nk", "k\t", "%s", "${HOME}", "../../etc/passwd", "*", "k" * 10_000, "🙂", "k\r\n"],
    *["ｋｅｙ", "k\u200b", "WorkflowId = 'x'", "a'b", "k\\"],
]
KEY_RULES = (
    "String should match pattern",
    "String should have at least 1 character",
    "String should have at most 128 characters",
)


def hostile_keys(*, allow_trailing_newline: bool = True) -> st.SearchStrategy[str]:
    """Keys (and payout IDs) outside ``[A-Za-z0-9:_-]{1,128}``; without ``allow_trailing_newline``
    a valid key plus ``"\\n"`` is left out (finding 3, for the CLI's own key check)."""

    def hostile(key: str) -> bool:
        if KEY.fullmatch(key) is not None:
            return False
        return allow_trailing_newline or KEY.fullmatch(key.removesuffix("\n")) is None

    return st.one_of(st.sampled_from(HOSTILE_KEYS), st.text(TEXT, max_size=200)).filter(hostile)


# -- the CLI in this process, and a Temporal connection counter ------------------------------


class CountingProxy:
    """A TCP pass-through to the real Temporal dev server that counts connections: the CLI
    under test talks to Temporal through it, so a count of 0 proves it never tried."""

    def __init__(self, target: str) -> None:
        host, _, port = target.rpartition(":")
        self.target = (host, int(port))
        self.connections = 0
        self.address = ""
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    async def __aenter__(self) -> CountingProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.address = f"127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
            await asyncio.gather(_pipe(reader, upstream_writer), _pipe(upstream_reader, writer))
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            self._tasks.discard(task)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65_536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


def assert_usage_error(run: CliRun, prefix: str, rules: tuple[str, ...] = ()) -> None:
    """Exit 2, one ``error: …`` line starting with ``prefix`` and naming one of ``rules``."""
    assert run.crash is None and run.code == 2, run.describe()
    assert "Traceback" not in run.stderr, run.describe()
    assert run.stderr.startswith(f"error: {prefix}") and run.stderr.count("\n") == 1, run.describe()
    assert not rules or any(rule in run.stderr for rule in rules), run.describe()


@dataclass(frozen=True)
class CliTarget:
    proxy: CountingProxy
    task_queue: str


@pytest.fixture
async def cli_target(temporal_client: Client, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[CliTarget]:
    """The CLI's environment: the real dev server behind a counting proxy, a fresh task queue."""
    async with CountingProxy(temporal_client.service_client.config.target_host) as proxy:
        target = CliTarget(proxy, f"campaign-{uuid.uuid4().hex[:8]}")
        monkeypatch.setenv("TEMPORAL_ADDRESS", proxy.address)
        monkeypatch.setenv("TEMPORAL_NAMESPACE", temporal_client.namespace)
        monkeypatch.setenv("TEMPORAL_TASK_QUEUE", target.task_queue)
        yield target


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'payouts.db'}"


def row_counts(database_url: str) -> tuple[int, int]:
    """Rows in ``payouts`` and ``transactions``."""
    engine = db.make_engine(database_url)
    try:
        with engine.connect() as connection:
            payouts = connection.execute(text("SELECT COUNT(*) FROM payouts")).scalar_one()
            envelopes = connection.execute(text("SELECT COUNT(*) FROM transactions")).scalar_one()
        return int(payouts), int(envelopes)
    finally:
        engine.dispose()


async def workflows_on(client: Client, task_queue: str) -> list[str]:
    return [run.id async for run in client.list_workflows(f"TaskQueue = '{task_queue}'")]


async def only_workflow_on(client: Client, task_queue: str, key: str) -> None:
    """Visibility lists exactly ``key`` on the queue (waiting for it to show up first)."""

    async def listed() -> list[str] | None:
        found = await workflows_on(client, task_queue)
        return found if key in found else None

    assert await wait_for(listed, f"{key} in visibility", timeout=15) == [key]


def runner(loop: asyncio.AbstractEventLoop) -> Callable[[Awaitable[T]], T]:
    """Run a coroutine on the test's event loop from hypothesis' thread."""

    def run(awaitable: Awaitable[T]) -> T:
        async def wrapped() -> T:
            return await awaitable

        return asyncio.run_coroutine_threadsafe(wrapped(), loop).result(timeout=120)

    return run


# -- 1 + 4: the CLI ----------------------------------------------------------------------------

PAY_FLAGS = ("payout-id", "destination", "amount", "asset", "key")
PAY_RULES = {
    "payout-id": KEY_RULES,
    "destination": DESTINATION_RULES,
    "amount": AMOUNT_RULES,
    "asset": ASSET_RULES,
    "key": KEY_RULES,
}


@dataclass(frozen=True)
class PayCase:
    values: dict[str, str]
    hostile: frozenset[str]

    @property
    def argv(self) -> list[str]:
        # --flag=value, so that values starting with "-" stay values
        return ["pay", *[f"--{flag}={value}" for flag, value in self.values.items()]]


@st.composite
def pay_cases(draw: st.DrawFn) -> PayCase:
    hostile = draw(st.sets(st.sampled_from(PAY_FLAGS), min_size=1))
    strategies = {
        "payout-id": hostile_keys(),
        "destination": hostile_destinations(),
        "amount": hostile_amounts(),
        "asset": hostile_assets(),
        "key": hostile_keys(),
    }
    key = f"cli:{draw(st.uuids()).hex}"
    valid = {"payout-id": "p-1", "destination": G, "amount": "1.5", "asset": "XLM", "key": key}
    values = {flag: draw(strategies[flag]) if flag in hostile else valid[flag] for flag in PAY_FLAGS}
    return PayCase(values, frozenset(hostile))


ARGPARSE_GARBAGE: list[list[str]] = [
    [],
    ["frobnicate"],
    ["pay"],
    ["pay", "--amount"],
    ["pay", "--payout-id=p", "--destination=" + G, "--amount=1", "--key=k", "--bogus=1"],
    ["status"],
    ["status", "a", "b"],
    ["submit-signed"],
    ["sign"],
    ["sign", "--xdr=AAAA"],
    ["channels"],
    ["--version"],
]


async def test_cli_pay_rejects_hostile_arguments_before_connecting(
    temporal_client: Client,
    devnet: DevnetProcess,
    admin: DevnetAdmin,
    server: SorobanServerAsync,
    cli_target: CliTarget,
    tmp_path: Path,
) -> None:
    source, winner = await asyncio.gather(admin.new_account(), admin.new_account())
    database_url = sqlite_url(tmp_path)
    config = payout_settings(devnet.url, source, database_url, TEMPORAL_TASK_QUEUE=cli_target.task_queue)
    proxy = cli_target.proxy

    @settings(max_examples=250, deadline=None, suppress_health_check=RELAXED)
    @given(case=pay_cases())
    def attack(case: PayCase) -> None:
        run = run_cli(case.argv)
        assert run.crash is None and run.code == 2, (case, run.describe())
        assert run.stderr.startswith("error: --") and "Traceback" not in run.stderr, (case, run.describe())
        for flag in case.hostile:
            assert f"--{flag}: " in run.stderr, (flag, case, run.describe())
            assert any(rule in run.stderr for rule in PAY_RULES[flag]), (flag, case, run.describe())
        assert run.stdout == ""
        assert proxy.connections == 0, (case, "the CLI connected to Temporal")

    def garbage() -> None:
        for argv in ARGPARSE_GARBAGE:
            run = run_cli(argv)
            assert run.crash is None and run.code == 2 and "Traceback" not in run.stderr, (argv, run.describe())
            assert run.stderr.startswith("usage: starter"), (argv, run.describe())

    async with running_worker(temporal_client, config):
        await asyncio.to_thread(attack)
        await asyncio.to_thread(garbage)
        assert proxy.connections == 0
        assert await workflows_on(temporal_client, cli_target.task_queue) == []
        assert row_counts(database_url) == (0, 0)

        # The engine is healthy: a valid payout through the same path confirms.
        key = f"cli:{uuid.uuid4().hex}"
        start = await latest_ledger(server)
        argv = ["pay", "--payout-id=p-ok", f"--destination={winner.public_key}", "--amount=2.5", f"--key={key}"]
        run = await asyncio.to_thread(run_cli, [*argv, "--wait"])
        assert run.code == 0 and run.crash is None, run.describe()
        outcome = json.loads(run.stdout)
        assert outcome["state"] == PayoutState.CONFIRMED and outcome["idempotency_key"] == key
    assert proxy.connections > 0
    await only_workflow_on(temporal_client, cli_target.task_queue, key)
    assert row_counts(database_url) == (1, 1)
    await wait_ledgers(server, 2)
    paid = await successful_transfers(server, start, winner.public_key)
    assert [(t.tx_hash, t.stroops) for t in paid] == [(outcome["tx_hash"], 25_000_000)]


@dataclass(frozen=True)
class SignCase:
    secret: str | None  # None: the file is missing; "<dir>": a directory
    xdr: str
    passphrase: str


async def test_cli_status_submit_and_sign_reject_hostile_arguments_before_connecting(
    temporal_client: Client, server: SorobanServerAsync, admin: DevnetAdmin, cli_target: CliTarget, tmp_path: Path
) -> None:
    proxy = cli_target.proxy
    source, winner = await asyncio.gather(admin.new_account(), admin.new_account())
    envelope = await sac_transfer_envelope(server, source, winner.public_key, XLM, sign=False)
    unsigned = envelope.to_xdr()
    raw = base64.b64decode(unsigned)
    xdrs = st.one_of(
        st.sampled_from(["", "AAAA", "====", "not base64!", unsigned, unsigned[:-4], unsigned[: len(unsigned) // 2]]),
        st.text(TEXT, max_size=200),
        st.binary(max_size=300).map(lambda b: base64.b64encode(b).decode()),
        st.integers(1, len(raw) - 1).map(lambda n: base64.b64encode(raw[:n]).decode()),
    )

    @settings(max_examples=120, deadline=None, suppress_health_check=RELAXED)
    @given(
        key=hostile_keys(allow_trailing_newline=False),
        command=st.sampled_from(["status", "submit-signed", "submit-signed-no-wait"]),
        xdr=xdrs,
    )
    def attack_key(key: str, command: str, xdr: str) -> None:
        if command == "status":
            argv = ["status", "--", key]
        else:
            argv = ["submit-signed", f"--xdr={xdr}", *(["--no-wait"] if command.endswith("no-wait") else []), "--", key]
        run = run_cli(argv)
        assert_usage_error(run, KEY_RULE)
        assert proxy.connections == 0, (argv, "the CLI connected to Temporal")

    secrets = st.one_of(
        st.none(),
        st.just("<dir>"),
        st.sampled_from(["", " ", G, muxed(G, 3), "S" + "A" * 55, source.secret[:-1], source.secret + "A"]),
        st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=80),
    )

    @settings(max_examples=80, deadline=None, suppress_health_check=RELAXED)
    @given(
        case=st.builds(
            SignCase,
            secret=st.one_of(secrets, st.just(source.secret)),
            xdr=xdrs,
            passphrase=st.one_of(st.just(PASSPHRASE), st.text(TEXT, max_size=40)),
        )
    )
    def attack_sign(case: SignCase) -> None:
        path = tmp_path / f"secret-{uuid.uuid4().hex}"
        if case.secret == "<dir>":
            path.mkdir()
        elif case.secret is not None:
            path.write_text(case.secret, encoding="utf-8")
        run = run_cli(["sign", f"--secret-file={path}", f"--xdr={case.xdr}", f"--network-passphrase={case.passphrase}"])
        assert proxy.connections == 0, (case, "sign connected to Temporal")
        if case.secret is None or case.secret == "<dir>":
            assert_usage_error(run, "--secret-file: cannot read ")
        elif case.secret.strip() != source.secret:
            assert_usage_error(run, "--secret-file: ", ("does not hold an S… secret seed",))
        elif run.code == 0:  # random bytes can be an authorization entry: it gets signed
            assert run.crash is None and run.stdout.strip() and "Traceback" not in run.stderr, run.describe()
        else:
            assert_usage_error(run, "--xdr: ", (NOT_BASE64_XDR,))

    await asyncio.to_thread(attack_key)
    await asyncio.to_thread(attack_sign)
    assert proxy.connections == 0
    assert await workflows_on(temporal_client, cli_target.task_queue) == []


async def test_cli_hostile_arguments_in_real_processes(
    temporal_client: Client,
    devnet: DevnetProcess,
    admin: DevnetAdmin,
    cli_target: CliTarget,
    tmp_path: Path,
) -> None:
    """A handful of fixed cases through ``python starter.py`` itself: exit 2, the flag and
    the rule on stderr, no traceback, no connection; then a valid ``pay --wait`` confirms."""
    env = {
        **os.environ,
        "TEMPORAL_ADDRESS": cli_target.proxy.address,
        "TEMPORAL_NAMESPACE": temporal_client.namespace,
        "TEMPORAL_TASK_QUEUE": cli_target.task_queue,
    }

    async def starter(*argv: str | bytes) -> tuple[int, str, str]:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "starter.py",
            *argv,
            cwd=REPO,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode is not None
        return process.returncode, out.decode(errors="replace"), err.decode(errors="replace")

    valid = ["--payout-id=p-1", f"--destination={G}", "--amount=1"]
    cases: list[tuple[list[str | bytes], str]] = [
        (["pay", *valid[:2], b"--amount=\xff1", "--key=k1"], "error: --amount: amount '\\udcff1' is not a plain"),
        (["pay", *valid[:2], "--amount=1e3", "--key=k1"], "error: --amount: amount '1e3' is not a plain decimal"),
        (["pay", "--payout-id=p-1", f"--destination={muxed(G, 7)}", "--amount=1", "--key=k1"],
         "error: --destination: muxed"),
        (["pay", *valid, "--key='; DROP TABLE payouts; --"], "error: --key: String should match pattern"),
        (["pay", *valid, "--asset=EURC:" + Keypair.random().secret, "--key=k1"], "error: --asset: asset issuer"),
        (["status", "--", "-k ey"], "error: key: must be 1-128 characters"),
        (["sign", f"--secret-file={tmp_path / 'missing'}", "--xdr=AAAA", "--network-passphrase=x"],
         "error: --secret-file: cannot read"),
    ]  # fmt: skip
    answers = await asyncio.gather(*(starter(*argv) for argv, _ in cases))
    for (argv, expected), (code, out, err) in zip(cases, answers, strict=True):
        assert (code, out) == (2, ""), (argv, code, out, err)
        assert err.startswith(expected) and "Traceback" not in err, (argv, err)
    assert cli_target.proxy.connections == 0

    source, winner = await asyncio.gather(admin.new_account(), admin.new_account())
    config = payout_settings(devnet.url, source, sqlite_url(tmp_path), TEMPORAL_TASK_QUEUE=cli_target.task_queue)
    key = f"cli:{uuid.uuid4().hex}"
    async with running_worker(temporal_client, config):
        code, out, err = await starter(
            "pay", "--payout-id=p-1", f"--destination={winner.public_key}", "--amount=1", f"--key={key}", "--wait"
        )
    assert code == 0 and "Traceback" not in err, (code, out, err)
    assert json.loads(out)["state"] == PayoutState.CONFIRMED
    await only_workflow_on(temporal_client, cli_target.task_queue, key)


# -- 2 + 4: the SDK ----------------------------------------------------------------------------

FIELD_STRATEGIES: dict[str, Callable[[], st.SearchStrategy[str]]] = {
    "payout_id": hostile_keys,
    "destination": hostile_destinations,
    "amount": hostile_amounts,
    "asset": hostile_assets,
    "idempotency_key": hostile_keys,
}
WRONG_TYPES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.binary(max_size=10),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@dataclass(frozen=True)
class SdkCase:
    body: dict[str, Any]
    field: str
    kind: str  # "value", "type" or "extra"


@st.composite
def sdk_cases(draw: st.DrawFn) -> SdkCase:
    body: dict[str, Any] = {
        "payout_id": "p-1",
        "destination": G,
        "amount": "1.5",
        "asset": "XLM",
        "idempotency_key": f"sdk:{draw(st.uuids()).hex}",
    }
    kind = draw(st.sampled_from(["value", "type", "extra"]))
    if kind == "extra":
        field = draw(st.text(TEXT, min_size=1, max_size=20).filter(lambda name: name not in body))
        body[field] = draw(st.one_of(st.text(TEXT, max_size=10), WRONG_TYPES))
    else:
        field = draw(st.sampled_from(sorted(FIELD_STRATEGIES)))
        body[field] = draw(FIELD_STRATEGIES[field]() if kind == "value" else WRONG_TYPES)
    return SdkCase(body, field, kind)


async def test_sdk_hostile_requests_start_nothing(
    temporal_client: Client, devnet: DevnetProcess, admin: DevnetAdmin, tmp_path: Path
) -> None:
    source, winner = await asyncio.gather(admin.new_account(), admin.new_account())
    database_url = sqlite_url(tmp_path)
    config = payout_settings(devnet.url, source, database_url)

    @settings(max_examples=300, deadline=None, suppress_health_check=RELAXED)
    @given(case=sdk_cases())
    def attack(case: SdkCase) -> None:
        with pytest.raises(ValidationError) as info:
            PayoutRequest.model_validate(case.body)
        errors = info.value.errors()
        assert errors and errors[0]["loc"] == (case.field,), (case, errors)
        if case.kind == "extra":
            assert errors[0]["type"] == "extra_forbidden", (case, errors)
        try:
            body = json.dumps(case.body, allow_nan=False)
        except (TypeError, ValueError):
            return  # bytes and the like have no JSON form: the HTTP edge never sees them
        with pytest.raises(ValidationError) as info:
            PayoutRequest.model_validate_json(body)
        assert info.value.errors()[0]["loc"] == (case.field,), (case, info.value.errors())

    await asyncio.to_thread(attack)
    async with running_worker(temporal_client, config) as payouts:
        assert await workflows_on(temporal_client, config.TEMPORAL_TASK_QUEUE) == []
        assert row_counts(database_url) == (0, 0)
        request = payout(winner.public_key, "0.0000001", prefix="sdk")
        outcome = await result_of(await payouts.pay(request))
    assert outcome.state == PayoutState.CONFIRMED
    await only_workflow_on(temporal_client, config.TEMPORAL_TASK_QUEUE, request.idempotency_key)
    assert row_counts(database_url) == (1, 1)


# -- 3: the signature path ---------------------------------------------------------------------


@dataclass
class Waiting:
    """A live payout in AWAITING_SIGNATURE (external signing) and what it was built from."""

    payouts: PayoutClient
    handle: WorkflowHandle[PayoutWorkflow, PayoutOutcome]
    request: PayoutRequest
    source: Keypair
    unsigned_xdr: str
    tx_hash: str
    start_ledger: int
    sequence: int
    database_url: str

    @property
    def key(self) -> str:
        return self.request.idempotency_key

    async def still_waiting(self) -> PayoutStatus:
        status = await self.payouts.status(self.key)
        assert (status.state, status.unsigned_xdr, status.tx_hash) == (
            PayoutState.AWAITING_SIGNATURE,
            self.unsigned_xdr,
            self.tx_hash,
        ), status
        return status


@asynccontextmanager
async def awaiting_payout(
    temporal_client: Client,
    devnet: DevnetProcess,
    admin: DevnetAdmin,
    server: SorobanServerAsync,
    database_url: str,
) -> AsyncIterator[Waiting]:
    source, winner = await asyncio.gather(admin.new_account(), admin.new_account())
    config = payout_settings(
        devnet.url, source, database_url, PAYOUTS_SIGN_WITH_HOT_KEY=False, PAYOUT_HOT_SIGNER_SECRET=None
    )
    request = payout(winner.public_key, "4.2", prefix="campaign")
    start_ledger = await latest_ledger(server)
    sequence = (await server.load_account(source.public_key)).sequence
    async with running_worker(temporal_client, config) as payouts:
        handle = await payouts.pay(request)
        try:
            status = await awaiting_signature(payouts, request.idempotency_key)
            assert status.unsigned_xdr is not None and status.tx_hash is not None
            yield Waiting(
                payouts, handle, request, source, status.unsigned_xdr, status.tx_hash, start_ledger, sequence,
                database_url,
            )  # fmt: skip
        finally:
            if (await handle.describe()).status == WorkflowExecutionStatus.RUNNING:
                await handle.terminate("the test is over")  # a wedged or stuck payout (a finding)


@dataclass(frozen=True)
class Hostile:
    label: str
    payload: Any
    reason: str  # expected in the rejection ("" for any "signature rejected: " reason)
    channel: str  # "both" (update and signal), "signal" (a malformed signal object), "update" (raw)


def re_signed(unsigned_xdr: str, signatures: list[DecoratedSignature]) -> str:
    envelope = TransactionEnvelope.from_xdr(unsigned_xdr, PASSPHRASE)
    envelope.signatures = signatures
    return envelope.to_xdr()


def insert_junk(xdr: str, junk: list[tuple[int, str]]) -> str:
    for position, char in junk:
        position %= len(xdr) + 1
        xdr = xdr[:position] + char + xdr[position:]
    return xdr


async def hostile_signatures(
    w: Waiting, server: SorobanServerAsync
) -> tuple[list[Hostile], st.SearchStrategy[Hostile]]:
    """Fixed cases (each thrown every run) and a strategy for generated ones."""
    unsigned, source = w.unsigned_xdr, w.source
    good = signed(unsigned, source)
    good_raw = base64.b64decode(good)
    [good_signature] = TransactionEnvelope.from_xdr(good, PASSPHRASE).signatures
    tampered = TransactionEnvelope.from_xdr(unsigned, PASSPHRASE)
    tampered.transaction.fee += 1
    other = await sac_transfer_envelope(server, source, w.request.destination, 100 * XLM, sign=False)
    wrong_key = signed(unsigned, Keypair.random())
    fee_bump = TransactionBuilder.build_fee_bump_transaction(
        source.public_key, 10_000, TransactionEnvelope.from_xdr(good, PASSPHRASE), PASSPHRASE
    )
    fee_bump.sign(source)
    bad_hint = bytes(b ^ 0xFF for b in good_signature.signature_hint)
    fixed = [
        Hostile("the built transaction, altered (fee)", signed(tampered.to_xdr(), source), HASH_DIFFERS, "both"),
        Hostile("another transaction", signed(other.to_xdr(), source), HASH_DIFFERS, "both"),
        Hostile("the good signature on another transaction", re_signed(other.to_xdr(), [good_signature]),
                HASH_DIFFERS, "both"),
        Hostile("signed for another network", signed(unsigned, source, passphrase=Network.TESTNET_NETWORK_PASSPHRASE),
                "it was signed for the network", "both"),
        Hostile("signed by the wrong key", wrong_key, DOES_NOT_VERIFY, "both"),
        Hostile("the right key and a stranger", signed(unsigned, source, Keypair.random()), DOES_NOT_VERIFY, "both"),
        Hostile("a bad signature hint", re_signed(unsigned, [DecoratedSignature(bad_hint, good_signature.signature)]),
                DOES_NOT_VERIFY, "both"),
        Hostile("a short signature",
                re_signed(unsigned, [DecoratedSignature(good_signature.signature_hint, good_signature.signature[:63])]),
                DOES_NOT_VERIFY, "both"),
        Hostile("an empty signature", re_signed(unsigned, [DecoratedSignature(good_signature.signature_hint, b"")]),
                DOES_NOT_VERIFY, "both"),
        Hostile("no signature", unsigned, "carries no signature", "both"),
        Hostile("a fee-bump envelope around the signed transaction", fee_bump.to_xdr(),
                "fee-bump envelopes are not accepted", "both"),
        Hostile("empty", "", "signed_xdr must be a non-empty base64 transaction envelope", "update"),
    ]  # fmt: skip
    malformed_signals = [
        None, {}, {"signed_xdr": ""}, {"signed_xdr": 42}, {"signed_xdr": None}, {"signed_xdr": ["x"]},
        {"signed_xdr": {"a": good}}, {"signed_xdr": True}, {"signedXdr": good}, {"xdr": good}, {"SIGNED_XDR": good},
        {"signed_xdr ": good},
    ]  # fmt: skip
    non_strings: list[Any] = [42, 1.5, True, ["x"], {"signed_xdr": good}, [good]]
    junk = st.lists(st.tuples(st.integers(0, 10_000), st.sampled_from(" !*.#\n\t-_~\x00")), min_size=1, max_size=4)
    fixed += [Hostile("malformed signal", payload, MALFORMED_SIGNAL, "signal") for payload in malformed_signals]
    fixed += [
        Hostile("update argument of another type", payload, "base64 transaction envelope (a string), not ", "update")
        for payload in non_strings
    ]
    return fixed, st.one_of(
        st.text(TEXT, min_size=1, max_size=300).map(lambda s: Hostile("random text", s, "", "both")),
        st.binary(min_size=1, max_size=2_000).map(
            lambda b: Hostile("base64 of random bytes", base64.b64encode(b).decode(), NOT_BASE64_XDR, "both")
        ),
        st.integers(1, len(good) - 1).map(lambda n: Hostile("truncated (text)", good[:n], NOT_BASE64_XDR, "both")),
        st.integers(1, len(good_raw) - 1).map(
            lambda n: Hostile("truncated (bytes)", base64.b64encode(good_raw[:n]).decode(), NOT_BASE64_XDR, "both")
        ),
        st.tuples(st.integers(0, len(good_raw) - 1), st.integers(1, 255)).map(
            lambda flip: Hostile(
                "a byte flipped",
                base64.b64encode(
                    good_raw[: flip[0]] + bytes([good_raw[flip[0]] ^ flip[1]]) + good_raw[flip[0] + 1 :]
                ).decode(),
                "",
                "both",
            )
        ),
        # Junk characters make any envelope, the good one too, a rejection for its encoding:
        # it would be recorded and sent verbatim, and the network decodes base64 strictly.
        st.tuples(st.sampled_from([unsigned, wrong_key, good]), junk).map(
            lambda t: Hostile("junk characters in a signed envelope", insert_junk(t[0], t[1]), NOT_CANONICAL, "both")
        ),
        st.integers(100_000, 200_000).map(lambda n: Hostile("a huge string", "A" * n, NOT_BASE64_XDR, "both")),
    )


async def throw(w: Waiting, hostile: Hostile) -> None:
    """One hostile payload through its channel(s); the payout must go on waiting."""
    payouts, key, handle = w.payouts, w.key, w.handle
    if hostile.channel == "update":
        argument: Any = hostile.payload
        with pytest.raises(WorkflowUpdateFailedError) as failed:
            await handle.execute_update(PayoutWorkflow.submit_signature, argument)
        assert hostile.reason in str(failed.value.cause), (hostile, failed.value.cause)
    elif hostile.channel == "signal":
        # Set another last_error first, so the one seen afterwards is this signal's.
        with pytest.raises(SignatureRejected):
            await payouts.submit_signature(key, w.unsigned_xdr)
        assert (await payouts.status(key)).last_error == NO_SIGNATURE
        await handle.signal(PayoutWorkflow.submit_signed_xdr, hostile.payload)
        await wait_for(lambda: last_error_is(payouts, key, MALFORMED_SIGNAL), f"the malformed signal {hostile}")
    else:
        with pytest.raises(SignatureRejected) as rejected:
            await payouts.submit_signature(key, hostile.payload)
        message = str(rejected.value)
        assert message.startswith("signature rejected: ") and hostile.reason in message, (hostile.label, message)
        await rejected_by_signal(payouts, key, hostile.payload, hostile.reason)
    await w.still_waiting()


async def assert_nothing_sent(w: Waiting, server: SorobanServerAsync) -> None:
    """Only the recorded unsigned envelope exists; nothing reached the ledger."""
    assert (await server.load_account(w.source.public_key)).sequence == w.sequence
    assert await transfers(server, w.start_ledger, w.request.destination) == []
    engine = db.make_engine(w.database_url)
    try:
        rows = db.envelopes_of(engine, w.key)
    finally:
        engine.dispose()
    assert [(r.tx_hash, r.status, r.envelope_xdr) for r in rows] == [
        (w.tx_hash, db.EnvelopeStatus.QUEUED, w.unsigned_xdr)
    ], rows


async def test_hostile_signatures_keep_the_payout_waiting_then_a_good_one_confirms_once(
    temporal_client: Client,
    devnet: DevnetProcess,
    admin: DevnetAdmin,
    server: SorobanServerAsync,
    database_url: str,
) -> None:
    # The good signature arrives by update on SQLite and by signal on PostgreSQL.
    accept_via = "signal" if database_url.startswith("postgresql") else "update"
    loop = asyncio.get_running_loop()
    run = runner(loop)
    async with awaiting_payout(temporal_client, devnet, admin, server, database_url) as w:
        fixed, generated = await hostile_signatures(w, server)
        for hostile in fixed:
            await throw(w, hostile)
        thrown: list[str] = []

        @settings(max_examples=30, deadline=None, suppress_health_check=RELAXED, database=None)
        @given(hostile=generated)
        def attack(hostile: Hostile) -> None:
            thrown.append(hostile.label)
            run(throw(w, hostile))

        await asyncio.to_thread(attack)
        assert len(thrown) >= 30 and len(set(thrown)) >= 4, thrown
        await w.still_waiting()
        await assert_nothing_sent(w, server)

        good = signed(w.unsigned_xdr, w.source)
        if accept_via == "update":
            await w.payouts.submit_signature(w.key, good)
        else:
            await w.payouts.submit_signed_xdr(w.key, good)
        outcome = await result_of(w.handle)
        assert (outcome.state, outcome.tx_hash) == (PayoutState.CONFIRMED, w.tx_hash)
        assert (await w.payouts.status(w.key)).state == PayoutState.CONFIRMED

    await wait_ledgers(server, 4)
    applied = await transfers(server, w.start_ledger, w.request.destination)
    assert [(t.tx_hash, t.stroops, t.successful) for t in applied] == [(w.tx_hash, w.request.stroops, True)]
    engine = db.make_engine(database_url)
    try:
        assert [(r.tx_hash, r.status) for r in db.envelopes_of(engine, w.key)] == [
            (w.tx_hash, db.EnvelopeStatus.CONFIRMED)
        ]
    finally:
        engine.dispose()


# -- findings ----------------------------------------------------------------------------------


async def replays(handle: WorkflowHandle[PayoutWorkflow, PayoutOutcome]) -> None:
    """The payout's history replays deterministically against the workflow code."""
    replayer = Replayer(workflows=[PayoutWorkflow], data_converter=pydantic_data_converter)
    result = await replayer.replay_workflow(await handle.fetch_history(), raise_on_replay_failure=False)
    assert result.replay_failure is None, result.replay_failure


@pytest.mark.parametrize("amount", ["12\n", "１２", "١٢.٥", "𝟙", "12.5\n"])
def test_finding_amount_with_non_ascii_digits_or_a_trailing_newline_is_refused(amount: str) -> None:
    with pytest.raises(ValidationError):
        PayoutRequest(payout_id="p-1", destination=G, amount=amount, idempotency_key="k-1")


def test_finding_asset_code_with_a_trailing_newline_is_refused() -> None:
    with pytest.raises(ValidationError):
        PayoutRequest(payout_id="p-1", destination=G, amount="1", asset=f"EURC\n:{G}", idempotency_key="k-1")


@pytest.mark.parametrize("command", ["status", "submit-signed"])
async def test_finding_cli_key_with_a_trailing_newline_is_refused_before_connecting(
    cli_target: CliTarget, command: str
) -> None:
    argv = ["status", "k-1\n"] if command == "status" else ["submit-signed", "k-1\n", "--xdr=AAAA"]
    run = await asyncio.to_thread(run_cli, argv)
    assert cli_target.proxy.connections == 0, run.describe()
    assert_usage_error(run, KEY_RULE)


def offline_envelope() -> TransactionEnvelope:
    """A signed (non-payout) envelope, built without a network."""
    source = Keypair.random()
    envelope = (
        TransactionBuilder(Account(source.public_key, 1), PASSPHRASE, base_fee=100)
        .append_bump_sequence_op(2)
        .set_timeout(60)
        .build()
    )
    envelope.sign(source)
    return envelope


def fee_bumped(envelope: TransactionEnvelope) -> str:
    bump = TransactionBuilder.build_fee_bump_transaction(
        envelope.transaction.source.account_id, 1000, envelope, PASSPHRASE
    )
    return bump.to_xdr()


SIGNED = offline_envelope().to_xdr()


@pytest.mark.parametrize(
    ("arguments", "rule"),
    [
        ([], "give exactly one of --xdr and --xdr-file"),
        (["--xdr=AAAA", "--xdr-file=x"], "give exactly one of --xdr and --xdr-file"),
        (["--xdr-file=/nonexistent/signed.xdr"], "cannot read"),
        (["--xdr=not base64!"], "not a base64 transaction envelope XDR"),
        (["--xdr=" + SIGNED[:40] + "\n" + SIGNED[40:]], "not canonical base64"),
        (["--xdr=" + fee_bumped(offline_envelope())], "fee-bump envelopes are not accepted"),
        (["--xdr=" + "A" * 300_000], "MAX_SIGNED_XDR_CHARS"),
    ],
    ids=["neither", "both", "missing-file", "not-base64", "line-break", "fee-bump", "too-long"],
)
async def test_finding_cli_submit_signed_checks_its_xdr_before_connecting(
    cli_target: CliTarget, arguments: list[str], rule: str
) -> None:
    run = await asyncio.to_thread(run_cli, ["submit-signed", "k-1", *arguments])
    assert run.crash is None and cli_target.proxy.connections == 0, run.describe()
    assert_usage_error(run, "--xdr", (rule,))


@pytest.mark.parametrize(
    ("content", "rule"),
    [
        (b"\xff\xfe" + SIGNED.encode(), "is not UTF-8 text"),
        ((SIGNED + "\n").encode(), ""),  # surrounding whitespace is fine
        ("\n".join(SIGNED[i : i + 64] for i in range(0, len(SIGNED), 64)).encode(), "not canonical base64"),
    ],
    ids=["not-utf8", "trailing-newline", "line-wrapped"],
)
async def test_cli_submit_signed_checks_its_xdr_file_before_connecting(
    cli_target: CliTarget, tmp_path: Path, content: bytes, rule: str
) -> None:
    path = tmp_path / "signed.xdr"
    path.write_bytes(content)
    run = await asyncio.to_thread(run_cli, ["submit-signed", "k-1", f"--xdr-file={path}"])
    if not rule:  # valid: it is sent, and Temporal knows no payout k-1
        assert run.code == 1 and cli_target.proxy.connections > 0 and "NOT_FOUND" in run.stderr, run.describe()
        return
    assert cli_target.proxy.connections == 0, run.describe()
    assert_usage_error(run, "--xdr-file: ", (rule,))


async def test_finding_cli_sign_with_a_non_utf8_secret_file_exits_2(tmp_path: Path) -> None:
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"\xff\xfeS\x00")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "starter.py", "sign", f"--secret-file={secret}", "--xdr=AAAA", "--network-passphrase=x",
        cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(process.communicate(), 60)
    stderr = err.decode(errors="replace")
    assert "Traceback" not in stderr and process.returncode == 2, stderr
    assert stderr.startswith("error: --secret-file: "), stderr


async def test_finding_cli_unreachable_temporal_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEMPORAL_ADDRESS", f"127.0.0.1:{free_port()}")
    run = await asyncio.to_thread(run_cli, ["status", "k-1"])
    assert run.crash is None and run.code in (1, 2), run.describe()
    assert "TEMPORAL_ADDRESS" in run.stderr, run.describe()


def bypassed(how: str, field: str, value: str) -> PayoutRequest:
    valid = payout(G, prefix="bypass")
    if how == "model_copy":
        return valid.model_copy(update={field: value})
    return PayoutRequest.model_construct(**{**valid.model_dump(), field: value})


@pytest.mark.parametrize(
    ("how", "field", "value"),
    [("model_copy", "destination", "garbage"), ("model_construct", "asset", "BTC"),
     ("model_copy", "payout_id", "has space")],
)  # fmt: skip
async def test_finding_sdk_client_refuses_a_request_that_skipped_validation(
    temporal_client: Client, how: str, field: str, value: str
) -> None:
    request = bypassed(how, field, value)
    payouts = PayoutClient(temporal_client, f"campaign-{uuid.uuid4().hex[:8]}")  # no worker: nothing runs it
    try:
        with pytest.raises((ValidationError, ValueError)):
            await payouts.pay(request)
    finally:
        try:
            handle = payouts.handle(request.idempotency_key)
            if (await handle.describe()).status == WorkflowExecutionStatus.RUNNING:
                await handle.terminate("started with an invalid request")
        except RPCError as exc:
            assert exc.status == RPCStatusCode.NOT_FOUND


async def test_finding_signal_with_a_non_object_payload_is_reported(
    temporal_client: Client, devnet: DevnetProcess, admin: DevnetAdmin, server: SorobanServerAsync, tmp_path: Path
) -> None:
    async with awaiting_payout(temporal_client, devnet, admin, server, sqlite_url(tmp_path)) as w:
        for payload in ("a string", [w.unsigned_xdr], 42):
            with pytest.raises(SignatureRejected):
                await w.payouts.submit_signature(w.key, w.unsigned_xdr)
            await w.handle.signal("submit_signed_xdr", payload)
            await wait_for(lambda: last_error_is(w.payouts, w.key, MALFORMED_SIGNAL), f"signal {payload!r}", timeout=3)
        await w.payouts.submit_signature(w.key, signed(w.unsigned_xdr, w.source))
        assert (await result_of(w.handle, timeout=15)).state == PayoutState.CONFIRMED
    await replays(w.handle)


async def test_finding_signature_with_non_base64_characters_is_refused_or_paid(
    temporal_client: Client, devnet: DevnetProcess, admin: DevnetAdmin, server: SorobanServerAsync, tmp_path: Path
) -> None:
    async with awaiting_payout(temporal_client, devnet, admin, server, sqlite_url(tmp_path)) as w:
        good = signed(w.unsigned_xdr, w.source)
        wrapped = "\n".join(good[i : i + 64] for i in range(0, len(good), 64)).replace("A", " A", 1)
        try:
            await w.payouts.submit_signature(w.key, wrapped)
        except SignatureRejected:
            await w.still_waiting()
            await w.payouts.submit_signature(w.key, good)
        outcome = await result_of(w.handle, timeout=8)  # a healthy payout confirms in 1-2 s here
        assert (outcome.state, outcome.tx_hash) == (PayoutState.CONFIRMED, w.tx_hash)


async def test_finding_oversized_signature_update_leaves_the_payout_answering(
    temporal_client: Client, devnet: DevnetProcess, admin: DevnetAdmin, server: SorobanServerAsync, tmp_path: Path
) -> None:
    async with awaiting_payout(temporal_client, devnet, admin, server, sqlite_url(tmp_path)) as w:
        # The SDK client refuses an oversized signed XDR before sending anything...
        for send in (w.payouts.submit_signature, w.payouts.submit_signed_xdr):
            with pytest.raises(SignatureRejected, match="MAX_SIGNED_XDR_CHARS"):
                await send(w.key, "A" * 2_200_000)
        # ...and the workflow refuses one over its limit from any other client: the update
        # in its validator (a rejected update is not written to history), the signal in
        # its handler, with the reason in status.
        too_long = "A" * 300_000
        with pytest.raises(WorkflowUpdateFailedError) as failed:
            await asyncio.wait_for(w.handle.execute_update(PayoutWorkflow.submit_signature, too_long), 10)
        assert "MAX_SIGNED_XDR_CHARS" in str(failed.value.cause), failed.value.cause
        events = (await w.handle.fetch_history()).events
        assert not any(e.HasField("workflow_execution_update_accepted_event_attributes") for e in events)
        await w.handle.signal(PayoutWorkflow.submit_signed_xdr, {"signed_xdr": too_long})

        async def ignored() -> PayoutStatus | None:
            status = await w.payouts.status(w.key)
            error = status.last_error or ""
            return status if error.startswith("signal ignored: ") and "MAX_SIGNED_XDR_CHARS" in error else None

        await wait_for(ignored, "the oversized signal's last_error", timeout=5)
        await asyncio.wait_for(w.still_waiting(), 5)
        await w.payouts.submit_signature(w.key, signed(w.unsigned_xdr, w.source))
        assert (await result_of(w.handle, timeout=15)).state == PayoutState.CONFIRMED
    await replays(w.handle)  # the signal handler's size limit is behind a patch marker


async def test_finding_update_over_the_payload_limit_from_another_client_leaves_the_payout_answering(
    temporal_client: Client, devnet: DevnetProcess, admin: DevnetAdmin, server: SorobanServerAsync, tmp_path: Path
) -> None:
    async with awaiting_payout(temporal_client, devnet, admin, server, sqlite_url(tmp_path)) as w:
        try:
            await asyncio.wait_for(w.handle.execute_update(PayoutWorkflow.submit_signature, "A" * 2_200_000), 5)
        except (WorkflowUpdateFailedError, WorkflowUpdateRPCTimeoutOrCancelledError, TimeoutError, RPCError):
            pass  # refused, one way or another; the payout must stay usable
        await asyncio.wait_for(w.still_waiting(), 5)
        await w.payouts.submit_signature(w.key, signed(w.unsigned_xdr, w.source))
        assert (await result_of(w.handle, timeout=15)).state == PayoutState.CONFIRMED


def test_finding_fee_bump_rejection_names_the_fee_bump() -> None:
    source = Keypair.random()
    builder = TransactionBuilder(Account(source.public_key, 1), PASSPHRASE, base_fee=100)
    inner = builder.append_bump_sequence_op(2).set_timeout(60).build()
    inner.sign(source)
    bump = TransactionBuilder.build_fee_bump_transaction(source.public_key, 1000, inner, PASSPHRASE)
    bump.sign(source)
    with pytest.raises(EnvelopeError) as info:
        check_signed_envelope(bump.to_xdr(), inner.hash_hex(), PASSPHRASE, {source.public_key: 1}, 1)
    assert "fee" in str(info.value).lower() and NOT_BASE64_XDR not in str(info.value)


def test_finding_too_large_amount_says_so() -> None:
    with pytest.raises(AmountError, match="exceeds the largest"):
        to_stroops("99999999999999")


def test_campaign_oracles_agree_with_the_rules() -> None:
    """The oracles the strategies filter with accept what the rules accept (so filtering
    does not hide a finding) and refuse the leaks the findings describe."""
    for amount in ("1", "0.0000001", "922337203685.4775807", "100.5"):
        assert valid_amount(amount) and to_stroops(amount) > 0
    for amount in ("12\n", "１２", "١٢.٥"):
        assert amount_leak(amount) and not valid_amount(amount)
    assert not amount_leak("12") and not amount_leak("1e3")
    assert valid_asset(f"EURC:{G}") and asset_leak(f"EURC\n:{G}") and asset_leak(f"XLM\n:{G}")
    assert not asset_leak(f"\n:{G}") and not asset_leak(f"EU RC:{G}")


@pytest.mark.parametrize("edge", ["cli-asset", "sdk-destination"])
async def test_finding_a_misplaced_secret_seed_is_not_echoed(cli_target: CliTarget, edge: str) -> None:
    seed = Keypair.random().secret
    if edge == "cli-asset":
        argv = ["pay", "--payout-id=p-1", f"--destination={G}", "--amount=1", f"--asset=EURC:{seed}", "--key=k-1"]
        run = await asyncio.to_thread(run_cli, argv)
        assert_usage_error(run, "--asset: ")
        message = run.stderr
    else:
        with pytest.raises(ValidationError) as info:
            PayoutRequest(payout_id="p-1", destination=seed, amount="1", idempotency_key="k-1")
        message = str(info.value)
    assert not any(seed[i : i + 12] in message for i in range(len(seed) - 11)), message
