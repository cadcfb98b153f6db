"""Channel pool management (``starter channels ensure|list|merge``), end to end: the CLI's
``main`` runs in this process (in a thread, with its own event loop) against a real devnet
over HTTP and the app DB on SQLite and PostgreSQL.

What happened on chain is read from devnet (getLedgerEntries, getTransaction, and the
per-source-account count of sendTransaction answers in ``/admin/stats``), never from the
CLI's own account of it.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from stellar_sdk import Keypair
from stellar_sdk import xdr as x
from stellar_sdk.soroban_server_async import SorobanServerAsync

from payouts import cli, db, leases, pool
from payouts.channels import channel_keypair
from tests.devnet_harness import PASSPHRASE, DevnetAdmin, DevnetProcess
from tests.devnet_helpers import AccountState, account_state, payment_envelope, send, wait_for_transaction
from tests.payout_harness import REPO

XLM = 10_000_000
COUNT = 3  # PAYOUTS_CHANNEL_COUNT in these tests


@dataclass(frozen=True)
class Pool:
    """One test's payout account, channel secret and environment."""

    source: Keypair
    secret: str
    env: dict[str, str]
    database_url: str

    def channel(self, index: int) -> Keypair:
        return channel_keypair(self.secret, index)

    def accounts(self, count: int = COUNT) -> list[str]:
        return [self.channel(i).public_key for i in range(count)]


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def _environment(devnet: DevnetProcess, source: Keypair, secret: str, database_url: str) -> dict[str, str]:
    return {
        "SOROBAN_RPC_URL": devnet.url,
        "STELLAR_NETWORK_PASSPHRASE": PASSPHRASE,
        "PAYOUT_SOURCE_ACCOUNT": source.public_key,
        "PAYOUT_HOT_SIGNER_SECRET": source.secret,
        "PAYOUTS_CHANNEL_COUNT": str(COUNT),
        "PAYOUTS_CHANNEL_SECRET": secret,
        "PAYOUTS_CONFIRM_POLL_MS": "100",
        "DATABASE_URL": database_url,
    }


def _apply(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    # Only this test's configuration: nothing leaks in from the shell running pytest.
    for name in list(os.environ):
        if name.startswith(("PAYOUT", "SOROBAN_", "STELLAR_", "DATABASE_URL", "TEMPORAL_")):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
async def pool_env(
    devnet: DevnetProcess, admin: DevnetAdmin, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> Pool:
    source, secret = await admin.new_account(), Keypair.random().secret
    env = _environment(devnet, source, secret, database_url)
    _apply(monkeypatch, env)
    return Pool(source, secret, env, database_url)


@pytest.fixture
def engine(pool_env: Pool) -> Iterator[Engine]:
    db.upgrade_database(pool_env.database_url)
    engine = db.make_engine(pool_env.database_url)
    try:
        yield engine
    finally:
        engine.dispose()


async def channels(capsys: pytest.CaptureFixture[str], *args: str) -> Run:
    """``starter channels …`` in this process; its exit code, stdout and stderr."""

    def call() -> int:
        try:
            cli.main(["channels", *args])
        except SystemExit as exc:
            return int(exc.code or 0)
        raise AssertionError("main() returned without sys.exit")

    code = await asyncio.to_thread(call)
    captured = capsys.readouterr()
    return Run(code, captured.out, captured.err)


async def state(admin: DevnetAdmin, account: str) -> AccountState | None:
    return await account_state(admin, account)


async def existing(admin: DevnetAdmin, account: str) -> AccountState:
    found = await account_state(admin, account)
    assert found is not None, f"{account} does not exist on chain"
    return found


async def sends_from(admin: DevnetAdmin, account: str) -> dict[str, int]:
    """sendTransaction answers devnet gave for envelopes from ``account``."""
    answers: dict[str, dict[str, int]] = (await admin.admin("GET", "stats"))["send_answers"]
    return answers.get(account, {})


async def fee_charged(admin: DevnetAdmin, tx_hash: str) -> tuple[int, str]:
    """The fee the chain charged for ``tx_hash`` and its source account."""
    found = await wait_for_transaction(admin, tx_hash)
    assert found["status"] == "SUCCESS", found
    fee = x.TransactionResult.from_xdr(found["resultXdr"]).fee_charged.int64
    envelope = x.TransactionEnvelope.from_xdr(found["envelopeXdr"])
    assert envelope.v1 is not None
    source = envelope.v1.tx.source_account.ed25519
    assert source is not None
    return fee, Keypair.from_raw_ed25519_public_key(source.uint256).public_key


def rows(engine: Engine) -> dict[str, leases.AccountLease]:
    return {lease.account: lease for lease in leases.leases(engine)}


def no_secrets(pool_env: Pool, run: Run) -> None:
    for secret in (pool_env.secret, pool_env.source.secret):
        assert secret not in run.out and secret not in run.err


# ---------------------------------------------------------------------------------------


async def test_ensure_creates_funded_channels_and_a_second_run_sends_nothing(
    admin: DevnetAdmin, pool_env: Pool, engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    source = pool_env.source.public_key
    before = await existing(admin, source)
    assert [await state(admin, a) for a in pool_env.accounts()] == [None] * COUNT

    run = await channels(capsys, "ensure", "--json")
    assert run.code == 0, run
    no_secrets(pool_env, run)
    [sent] = run.json()["transactions"]
    fee, tx_source = await fee_charged(admin, sent["tx_hash"])
    assert tx_source == source

    for account in pool_env.accounts():
        assert (await existing(admin, account)).balance == 20 * XLM
    after = await existing(admin, source)
    assert after.seq_num == before.seq_num + 1  # one transaction for the three creations
    assert before.balance - after.balance == COUNT * 20 * XLM + fee
    registered = rows(engine)
    for account in pool_env.accounts():
        assert registered[account].role == "channel" and registered[account].in_rotation
        assert registered[account].holder is None
    assert registered[source].role == "source" and registered[source].holder is None  # lease released

    answers = await sends_from(admin, source)
    again = await channels(capsys, "ensure")
    assert again.code == 0, again
    assert "nothing to send" in again.out and again.out.count("unchanged") == COUNT
    assert await existing(admin, source) == after  # same sequence number and balance
    assert await sends_from(admin, source) == answers  # not even a rejected attempt


async def test_ensure_batches_up_to_100_operations_per_transaction(
    admin: DevnetAdmin, pool_env: Pool, capsys: pytest.CaptureFixture[str]
) -> None:
    source = pool_env.source.public_key
    before = await existing(admin, source)
    run = await channels(capsys, "ensure", "--count", "101", "--balance", "2", "--json")
    assert run.code == 0, run
    assert [t["operations"] for t in run.json()["transactions"]] == [100, 1]
    assert (await existing(admin, source)).seq_num == before.seq_num + 2
    balances = await asyncio.gather(*(existing(admin, a) for a in pool_env.accounts(101)))
    assert {b.balance for b in balances} == {2 * XLM}


async def test_ensure_tops_up_a_drained_channel_and_puts_it_back_in_rotation(
    admin: DevnetAdmin, pool_env: Pool, engine: Engine, capsys: pytest.CaptureFixture[str], server: SorobanServerAsync
) -> None:
    assert (await channels(capsys, "ensure")).code == 0
    drained, full = pool_env.channel(0), pool_env.channel(1).public_key
    # Spend channel 0 down to 1.5 XLM (below the 2 XLM minimum): 20 - 18.49999 - 0.00001 fee.
    sink = await admin.new_account()
    spend = await payment_envelope(server, drained, sink.public_key, "18.4999900", base_fee=100)
    assert (await send(admin, spend.to_xdr()))["status"] == "PENDING"
    assert (await wait_for_transaction(admin, spend.hash_hex()))["status"] == "SUCCESS"
    assert (await existing(admin, drained.public_key)).balance == 15 * XLM // 10
    # What the worker does when it finds a channel short of fees.
    leases.take_out_of_rotation(engine, drained.public_key, "low on fees")
    assert leases.acquire(engine, "payout-1", [drained.public_key], 60) is None

    source_before = await existing(admin, pool_env.source.public_key)
    run = await channels(capsys, "ensure", "--json")
    assert run.code == 0, run
    report = run.json()
    assert [(f["channel"]["index"], f["before"], f["amount"]) for f in report["funded"]] == [
        (0, 15 * XLM // 10, 185 * XLM // 10)
    ]
    [sent] = report["transactions"]
    fee, _ = await fee_charged(admin, sent["tx_hash"])

    assert (await existing(admin, drained.public_key)).balance == 20 * XLM  # exactly the target
    assert (await existing(admin, full)).balance == 20 * XLM  # untouched
    source_after = await existing(admin, pool_env.source.public_key)
    assert source_before.balance - source_after.balance == 185 * XLM // 10 + fee
    row = rows(engine)[drained.public_key]
    assert row.in_rotation and row.note is None
    assert leases.acquire(engine, "payout-1", [drained.public_key], 60) == drained.public_key


async def test_ensure_waits_for_a_payout_holding_the_payout_account(
    admin: DevnetAdmin, pool_env: Pool, engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    """With no channels, a payout leases the payout account itself: ensure must not send
    on its sequence number until that lease is released."""
    source = pool_env.source.public_key
    leases.ensure_pool(engine, [source], "source")
    assert leases.acquire(engine, "payout-on-source", [source], 300) == source
    before = await existing(admin, source)
    ensuring = asyncio.create_task(channels(capsys, "ensure", "--count", "1"))
    await asyncio.sleep(2)
    assert not ensuring.done()
    assert await existing(admin, source) == before and await sends_from(admin, source) == {}
    assert leases.release(engine, source, "payout-on-source")
    run = await asyncio.wait_for(ensuring, 60)
    assert run.code == 0, run
    assert (await existing(admin, source)).seq_num == before.seq_num + 1
    assert (await existing(admin, pool_env.channel(0).public_key)).balance == 20 * XLM
    assert rows(engine)[source].holder is None


async def test_ensure_gives_up_on_a_payout_account_that_stays_leased(
    admin: DevnetAdmin,
    pool_env: Pool,
    engine: Engine,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(pool, "SOURCE_LEASE_WAIT_SECONDS", 1.0)
    source = pool_env.source.public_key
    leases.ensure_pool(engine, [source], "source")
    assert leases.acquire(engine, "payout-stuck", [source], 300) == source
    before = await existing(admin, source)
    run = await channels(capsys, "ensure")
    assert run.code == 1, run
    assert "PAYOUT_SOURCE_ACCOUNT" in run.err and "payout-stuck" in run.err
    assert await existing(admin, source) == before and await sends_from(admin, source) == {}
    assert [await state(admin, a) for a in pool_env.accounts()] == [None] * COUNT
    assert rows(engine)[source].holder == "payout-stuck"


async def test_nothing_is_sent_that_the_payout_account_cannot_pay_or_receive(
    admin: DevnetAdmin,
    pool_env: Pool,
    engine: Engine,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    source = pool_env.source.public_key
    before = await existing(admin, source)
    run = await channels(capsys, "ensure", "--count", "1", "--balance", "20000")
    assert run.code == 1, run
    assert "holds 10000.0000000 XLM" in run.err and "nothing was sent" in run.err
    assert await existing(admin, source) == before and await sends_from(admin, source) == {}
    assert rows(engine)[source].holder is None  # the lease taken to send was given back

    assert (await channels(capsys, "ensure", "--count", "1")).code == 0
    [channel] = pool_env.accounts(1)
    channel_before = await existing(admin, channel)
    monkeypatch.setenv("PAYOUT_SOURCE_ACCOUNT", Keypair.random().public_key)  # no such account
    run = await channels(capsys, "merge", "--count", "1")
    assert run.code == 1 and "does not exist on chain" in run.err, run
    assert await existing(admin, channel) == channel_before and await sends_from(admin, channel) == {}
    assert rows(engine)[channel].in_rotation


async def test_list_shows_each_channel(
    devnet: DevnetProcess, admin: DevnetAdmin, pool_env: Pool, engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (await channels(capsys, "ensure", "--count", "2", "--balance", "25.5")).code == 0
    first, second, third = pool_env.accounts()
    leases.take_out_of_rotation(engine, first, "parked by an operator")
    assert leases.acquire(engine, "payout-xyz", [second], 300) == second

    run = await channels(capsys, "list", "--json")
    assert run.code == 0, run
    listed = run.json()
    assert [(c["index"], c["account"]) for c in listed] == [(0, first), (1, second), (2, third)]
    assert [c["balance"] for c in listed] == ["25.5000000", "25.5000000", None]
    assert [c["balance_stroops"] for c in listed] == [255 * XLM // 10, 255 * XLM // 10, None]
    assert [(c["registered"], c["in_rotation"], c["note"]) for c in listed] == [
        (True, False, "parked by an operator"),
        (True, True, None),
        (False, False, None),
    ]
    assert listed[1]["holder"] == "payout-xyz" and listed[1]["lease_expires_at"] is not None
    assert listed[0]["holder"] is None and listed[2]["holder"] is None

    # The table, through the real entry point.
    table = subprocess.run(
        [sys.executable, "starter.py", "channels", "list"],
        cwd=REPO,
        env={**os.environ, **pool_env.env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert "balance (XLM)" in lines[0] and len(lines) == 1 + COUNT
    assert lines[1].split()[:3] == ["0", first, "25.5000000"] and "parked by an operator" in lines[1]
    assert lines[2].split()[:4] == ["1", second, "25.5000000", "in"] and "payout-xyz" in lines[2]
    assert lines[3].split()[:3] == ["2", third, "missing"] and "not registered" in lines[3]
    for secret in (pool_env.secret, pool_env.source.secret):
        assert secret not in table.stdout + table.stderr


async def test_merge_returns_the_channels_to_the_payout_account(
    admin: DevnetAdmin, pool_env: Pool, engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (await channels(capsys, "ensure")).code == 0
    source = pool_env.source.public_key
    held = {a: (await existing(admin, a)).balance for a in pool_env.accounts()}
    source_before = await existing(admin, source)

    run = await channels(capsys, "merge", "--json")
    assert run.code == 0, run
    no_secrets(pool_env, run)
    results = run.json()
    assert [(r["channel"]["account"], r["outcome"]) for r in results] == [(a, "merged") for a in pool_env.accounts()]
    fees = 0
    for result in results:
        fee, tx_source = await fee_charged(admin, result["transaction"]["tx_hash"])
        assert tx_source == result["channel"]["account"]  # the channel sent (and paid for) its own merge
        assert result["amount"] == held[tx_source] - fee
        fees += fee
    for account in pool_env.accounts():
        assert await state(admin, account) is None
    source_after = await existing(admin, source)
    assert source_after.balance - source_before.balance == sum(held.values()) - fees
    assert source_after.seq_num == source_before.seq_num  # the payout account sent nothing
    assert not set(pool_env.accounts()) & set(rows(engine))

    again = await channels(capsys, "merge")
    assert again.code == 0, again
    assert again.out.count("missing") == COUNT


async def test_merge_refuses_a_channel_leased_to_a_payout(
    admin: DevnetAdmin, pool_env: Pool, engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (await channels(capsys, "ensure", "--count", "2")).code == 0
    busy, free = pool_env.accounts(2)
    assert leases.acquire(engine, "payout-busy", [busy], 300) == busy
    busy_before = await existing(admin, busy)

    run = await channels(capsys, "merge", "--count", "2")
    assert run.code == 1, run
    assert "refused" in run.err and busy in run.err and "payout-busy" in run.err
    assert await existing(admin, busy) == busy_before and await sends_from(admin, busy) == {}
    assert await state(admin, free) is None
    row = rows(engine)[busy]
    assert row.holder == "payout-busy" and row.in_rotation and row.note is None  # as it was
    assert free not in rows(engine)

    assert leases.release(engine, busy, "payout-busy")
    run = await channels(capsys, "merge", "--count", "2")
    assert run.code == 0, run
    assert await state(admin, busy) is None and busy not in rows(engine)


async def test_merge_keeps_an_out_of_rotation_note_when_refusing(
    admin: DevnetAdmin, pool_env: Pool, engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    """A parked channel a payout still holds is refused and stays parked with its note."""
    assert (await channels(capsys, "ensure", "--count", "1")).code == 0
    [channel] = pool_env.accounts(1)
    assert leases.acquire(engine, "payout-parked", [channel], 300) == channel
    leases.take_out_of_rotation(engine, channel, "low on fees")
    run = await channels(capsys, "merge", "--count", "1")
    assert run.code == 1 and "payout-parked" in run.err
    row = rows(engine)[channel]
    assert not row.in_rotation and row.note == "low on fees" and row.holder == "payout-parked"
    assert await state(admin, channel) is not None


BAD_INPUT = [
    (["ensure", "--count", "0"], {}, "--count: must be at least 1"),
    (["ensure", "--count", "1001"], {}, "--count: must be at most 1000"),
    (["ensure", "--count", "two"], {}, "--count"),
    (["ensure", "--balance", "abc"], {}, "--balance"),
    (["ensure", "--balance", "-5"], {}, "--balance"),
    (["ensure", "--balance", "20.00000001"], {}, "--balance"),
    (["ensure", "--balance", "1.5"], {}, "PAYOUTS_CHANNEL_MIN_BALANCE_STROOPS"),
    (["merge", "--count", "0"], {}, "--count: must be at least 1"),
    (["merge", "--count", str(COUNT + 1)], {}, f"at most PAYOUTS_CHANNEL_COUNT ({COUNT})"),
    (["list", "--count", "0"], {}, "--count"),
    (["ensure"], {"PAYOUTS_CHANNEL_COUNT": "0"}, "PAYOUTS_CHANNEL_COUNT, which is 0"),
    (["ensure", "--count", "2"], {"PAYOUTS_CHANNEL_COUNT": "0", "PAYOUTS_CHANNEL_SECRET": None},
     "PAYOUTS_CHANNEL_SECRET: required"),
    (["list"], {"PAYOUTS_CHANNEL_SECRET": None}, "PAYOUTS_CHANNEL_SECRET"),
    (["ensure"], {"PAYOUT_HOT_SIGNER_SECRET": None}, "PAYOUT_HOT_SIGNER_SECRET: required"),
    (["ensure"], {"PAYOUTS_CHANNEL_SECRET": "SNOTAREALSECRET"}, "PAYOUTS_CHANNEL_SECRET: must be an S… secret seed"),
    (["ensure"], {"SOROBAN_RPC_URL": None}, "SOROBAN_RPC_URL: missing"),
]  # fmt: skip


@pytest.mark.parametrize(("args", "env", "message"), BAD_INPUT, ids=[" ".join(c[0]) + str(c[1]) for c in BAD_INPUT])
async def test_bad_input_exits_2_and_sends_nothing(
    devnet: DevnetProcess,
    admin: DevnetAdmin,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    env: dict[str, str | None],
    message: str,
) -> None:
    source, secret = await admin.new_account(), Keypair.random().secret
    database = tmp_path / "untouched.db"
    values: dict[str, str | None] = {**_environment(devnet, source, secret, f"sqlite:///{database}"), **env}
    _apply(monkeypatch, {k: v for k, v in values.items() if v is not None})
    before = await existing(admin, source.public_key)

    run = await channels(capsys, *args)
    assert run.code == 2, run
    assert message in run.err, run.err
    for value in (secret, source.secret, "SNOTAREALSECRET"):
        assert value not in run.out + run.err
    assert await existing(admin, source.public_key) == before and await sends_from(admin, source.public_key) == {}
    assert [await state(admin, channel_keypair(secret, i).public_key) for i in range(2)] == [None, None]
    assert not database.exists()  # checked before the DB was even opened
