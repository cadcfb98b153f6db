"""Channel accounts and source-account leases (promise 5), end to end: the real Temporal
dev server, devnet over HTTP, SQLite and PostgreSQL, worker processes.

What devnet answered is read from devnet itself (``/admin/stats`` counts sendTransaction
answers per source account), not from the engine's own account of it.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import pytest
from stellar_sdk import Keypair, Network
from stellar_sdk import xdr as x
from stellar_sdk.auth import authorize_entry
from stellar_sdk.soroban_server_async import SorobanServerAsync
from temporalio.client import Client

from payouts import db, leases
from payouts.authorization import authorization_payload
from payouts.channels import channel_keypair
from payouts.cli import sign_envelope
from payouts.client import PayoutClient, SignatureRejected
from payouts.config import PayoutSettings
from payouts.models import PayoutState
from tests.devnet_harness import PASSPHRASE, DevnetAdmin, DevnetProcess
from tests.payout_checks import (
    awaiting_signature,
    latest_ledger,
    payout,
    result_of,
    status_in,
    successful_transfers,
    wait_envelope_row,
    wait_for,
    xlm_balance,
)
from tests.payout_harness import payout_settings, running_worker, worker_process

CLASHES = ("TRY_AGAIN_LATER", "ERROR txBAD_SEQ")


async def channel_settings(
    admin: DevnetAdmin, devnet: DevnetProcess, database_url: str, count: int, **overrides: object
) -> tuple[Keypair, list[str], PayoutSettings]:
    """A funded payout account and ``count`` funded channels derived from a fresh secret."""
    source, secret = await admin.new_account(), Keypair.random().secret
    channels = [channel_keypair(secret, i).public_key for i in range(count)]
    await asyncio.gather(*(admin.fund(channel) for channel in channels))
    settings = payout_settings(
        devnet.url,
        source,
        database_url,
        PAYOUTS_CHANNEL_COUNT=count,
        PAYOUTS_CHANNEL_SECRET=secret,
        **overrides,
    )
    return source, channels, settings


async def send_answers(admin: DevnetAdmin, accounts: list[str]) -> dict[str, dict[str, int]]:
    answers: dict[str, dict[str, int]] = (await admin.admin("GET", "stats"))["send_answers"]
    return {account: answers.get(account, {}) for account in accounts}


def clashes(answers: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    return {a: {k: n for k, n in counts.items() if k in CLASHES} for a, counts in answers.items() if any(
        k in CLASHES for k in counts)}  # fmt: skip


async def test_channel_payouts_confirm_with_the_hot_key(
    temporal_client: Client, devnet: DevnetProcess, admin: DevnetAdmin, server: SorobanServerAsync, database_url: str
) -> None:
    """9 payouts over 3 channels: each pays once, carried by a channel that paid the fee,
    authorized by the payout account (whose sequence number never moves), and no channel
    ever had two envelopes in flight."""
    source, channels, settings = await channel_settings(admin, devnet, database_url, 3)
    winners = [await admin.new_account() for _ in range(9)]
    start, payer_sequence = await latest_ledger(server), (await server.load_account(source.public_key)).sequence
    channel_balances = [await xlm_balance(server, c) for c in channels]
    async with running_worker(temporal_client, settings) as payouts:
        handles = await asyncio.gather(*(payouts.pay(payout(w.public_key, "3")) for w in winners))
        outcomes = await asyncio.gather(*(result_of(h) for h in handles))
    assert {o.state for o in outcomes} == {PayoutState.CONFIRMED}
    for winner, outcome in zip(winners, outcomes, strict=True):
        [paid] = await successful_transfers(server, start, winner.public_key)
        assert paid.tx_hash == outcome.tx_hash and paid.stroops == 30_000_000
        assert paid.source in channels
    assert (await server.load_account(source.public_key)).sequence == payer_sequence
    fees = sum(o.fee_charged or 0 for o in outcomes)
    assert sum(channel_balances) - sum([await xlm_balance(server, c) for c in channels]) == fees
    answers = await send_answers(admin, channels)
    assert clashes(answers) == {}
    assert sum(n for counts in answers.values() for k, n in counts.items() if k == "PENDING") >= 9
    engine = db.make_engine(settings.DATABASE_URL)
    assert all(lease.holder is None for lease in leases.leases(engine) if lease.account in channels)


def sign_authorization(entry_xdr: str, signer: Keypair, passphrase: str = PASSPHRASE) -> str:
    entry = x.SorobanAuthorizationEntry.from_xdr(entry_xdr)
    creds = entry.credentials.address or entry.credentials.address_v2
    assert creds is not None
    return authorize_entry(entry, signer, creds.signature_expiration_ledger.uint32, passphrase).to_xdr()


async def test_channel_payout_with_an_external_signer_and_bad_signatures(
    temporal_client: Client,
    devnet: DevnetProcess,
    admin: DevnetAdmin,
    server: SorobanServerAsync,
    database_url: str,
    tmp_path: Path,
) -> None:
    """The signer gets the authorization entry and the payload it signs; wrong keys,
    altered entries, other networks and garbage are rejected with a reason (by the update
    and by the signal) and the payout keeps waiting; the right signature pays once."""
    source, channels, settings = await channel_settings(
        admin, devnet, database_url, 2, PAYOUTS_SIGN_WITH_HOT_KEY=False, PAYOUT_HOT_SIGNER_SECRET=None
    )
    winner = await admin.new_account()
    request = payout(winner.public_key, "7")
    key = request.idempotency_key
    start = await latest_ledger(server)
    async with running_worker(temporal_client, settings) as payouts:
        handle = await payouts.pay(request)
        status = await awaiting_signature(payouts, key)
        assert status.authorization_xdr is not None and status.unsigned_xdr is None
        entry = x.SorobanAuthorizationEntry.from_xdr(status.authorization_xdr)
        assert status.authorization_payload == authorization_payload(entry, PASSPHRASE).hex()

        altered = x.SorobanAuthorizationEntry.from_xdr(status.authorization_xdr)
        creds = altered.credentials.address or altered.credentials.address_v2
        assert creds is not None
        creds.signature_expiration_ledger = x.Uint32(creds.signature_expiration_ledger.uint32 + 1)
        bad: dict[str, str] = {
            "not a signer": sign_authorization(status.authorization_xdr, Keypair.random()),
            "entry differs": sign_authorization(altered.to_xdr(), source),
            "does not verify": sign_authorization(status.authorization_xdr, source, Network.TESTNET_NETWORK_PASSPHRASE),
            "not a base64 SorobanAuthorizationEntry": "AAAA",
            "carries no signature": status.authorization_xdr,
        }
        for reason, signed in bad.items():
            with pytest.raises(SignatureRejected, match=reason):
                await payouts.submit_signature(key, signed)
            await payouts.submit_signed_xdr(key, signed)
            await wait_for(
                lambda r=reason: _last_error_has(payouts, key, r),
                f"the signal's rejection ({reason})",  # type: ignore[misc]
            )
            assert (await payouts.status(key)).state == PayoutState.AWAITING_SIGNATURE

        # The right key, through the CLI that plays the HSM.
        secret_file = tmp_path / "hsm-secret"
        secret_file.write_text(source.secret)
        await payouts.submit_signature(key, sign_envelope(secret_file, status.authorization_xdr, PASSPHRASE))
        outcome = await result_of(handle)
    assert outcome.state == PayoutState.CONFIRMED
    [paid] = await successful_transfers(server, start, winner.public_key)
    assert paid.tx_hash == outcome.tx_hash and paid.source in channels
    assert clashes(await send_answers(admin, channels)) == {}


async def _last_error_has(payouts: PayoutClient, key: str, reason: str) -> bool | None:
    return True if reason in ((await payouts.status(key)).last_error or "") else None


@pytest.mark.parametrize("channel_count", [0, 2])
async def test_worker_processes_sharing_postgres_never_clash_on_an_account(
    temporal_client: Client,
    devnet: DevnetProcess,
    admin: DevnetAdmin,
    server: SorobanServerAsync,
    postgres_url: str,
    tmp_path: Path,
    channel_count: int,
) -> None:
    """Three worker processes on one task queue and one PostgreSQL DB pay 8 payouts
    started at once, from one payout account (no channels) or two channels: devnet never
    answers TRY_AGAIN_LATER or txBAD_SEQ for a leased account, and each payout pays once."""
    overrides: dict[str, Any] = {"TEMPORAL_ADDRESS": temporal_client.service_client.config.target_host}
    if channel_count:
        source, accounts, settings = await channel_settings(admin, devnet, postgres_url, channel_count, **overrides)
    else:
        source = await admin.new_account()
        accounts, settings = [source.public_key], payout_settings(devnet.url, source, postgres_url, **overrides)
    db.upgrade_database(postgres_url)
    winners = [await admin.new_account() for _ in range(8)]
    start = await latest_ledger(server)
    payouts = PayoutClient(temporal_client, settings.TEMPORAL_TASK_QUEUE)
    log = tmp_path / "workers.log"
    with worker_process(settings, log), worker_process(settings, log), worker_process(settings, log):
        handles = await asyncio.gather(*(payouts.pay(payout(w.public_key, "2")) for w in winners))
        outcomes = await asyncio.gather(*(result_of(h, timeout=180) for h in handles))
    assert {o.state for o in outcomes} == {PayoutState.CONFIRMED}, log.read_text()[-3000:]
    for winner in winners:
        assert len(await successful_transfers(server, start, winner.public_key)) == 1
    answers = await send_answers(admin, accounts)
    assert clashes(answers) == {}, answers
    engine = db.make_engine(postgres_url)
    try:
        workers = {
            r.source_account for key in (o.idempotency_key for o in outcomes) for r in db.envelopes_of(engine, key)
        }
        assert workers <= set(accounts)
    finally:
        engine.dispose()


async def test_a_killed_workers_lease_frees_once_its_envelope_settles(
    temporal_client: Client,
    devnet: DevnetProcess,
    admin: DevnetAdmin,
    server: SorobanServerAsync,
    database_url: str,
    tmp_path: Path,
) -> None:
    """The worker holding the only source account's lease is SIGKILLed with its envelope
    queued; a second payout waits; another worker settles the first (paid once) and the
    second pays right after, well before the first envelope's bound."""
    source = await admin.new_account()
    settings = payout_settings(
        devnet.url,
        source,
        database_url,
        TEMPORAL_ADDRESS=temporal_client.service_client.config.target_host,
        PAYOUTS_ENVELOPE_TTL_SECONDS=120,
    )
    db.upgrade_database(database_url)
    engine = db.make_engine(database_url)
    payouts = PayoutClient(temporal_client, settings.TEMPORAL_TASK_QUEUE)
    first, second = payout((await admin.new_account()).public_key, "1"), payout((await admin.new_account()).public_key)
    start = await latest_ledger(server)
    log = tmp_path / "workers.log"
    try:
        await admin.faults(ledger_stall=True)
        first_handle = await payouts.pay(first)
        with worker_process(settings, log) as doomed:
            await wait_for(lambda: status_in(payouts, first.idempotency_key, PayoutState.SUBMITTED), "SUBMITTED")
            second_handle = await payouts.pay(second)
            await asyncio.sleep(1)  # the second payout is now waiting for the lease
            doomed.send_signal(signal.SIGKILL)
            assert doomed.wait(timeout=10) == -signal.SIGKILL
        [held] = [lease for lease in leases.leases(engine) if lease.account == source.public_key]
        assert held.holder == first.idempotency_key
        await admin.faults(ledger_stall=False)
        with worker_process(settings, log):
            outcomes = [await result_of(first_handle, 120), await result_of(second_handle, 120)]
    finally:
        await admin.clear_faults()
    assert [o.state for o in outcomes] == [PayoutState.CONFIRMED, PayoutState.CONFIRMED]
    [sent] = db.envelopes_of(engine, first.idempotency_key)
    [after] = db.envelopes_of(engine, second.idempotency_key)
    assert after.sequence == sent.sequence + 1
    assert after.created_at.timestamp() < sent.max_time  # not stalled until the bound
    for request in (first, second):
        assert len(await successful_transfers(server, start, request.destination)) == 1
    assert clashes(await send_answers(admin, [source.public_key])) == {}


async def test_a_vanished_holders_lease_frees_only_after_its_envelopes_bound(
    temporal_client: Client,
    devnet: DevnetProcess,
    admin: DevnetAdmin,
    server: SorobanServerAsync,
    database_url: str,
    tmp_path: Path,
) -> None:
    """The payout holding the lease vanishes with its envelope sent (its worker SIGKILLed,
    its workflow terminated): the next payout gets the account only after that envelope's
    bound plus the margin, when it can no longer apply, and pays with a fresh sequence."""
    source = await admin.new_account()
    settings = payout_settings(
        devnet.url,
        source,
        database_url,
        PAYOUTS_ENVELOPE_TTL_SECONDS=10,
        TEMPORAL_ADDRESS=temporal_client.service_client.config.target_host,
    )
    db.upgrade_database(database_url)
    engine = db.make_engine(database_url)
    payouts = PayoutClient(temporal_client, settings.TEMPORAL_TASK_QUEUE)
    first, second = payout((await admin.new_account()).public_key, "1"), payout((await admin.new_account()).public_key)
    start = await latest_ledger(server)
    try:
        await admin.faults(ledger_stall=True)
        handle = await payouts.pay(first)
        with worker_process(settings, tmp_path / "worker.log") as doomed:
            abandoned = await wait_envelope_row(engine, first.idempotency_key, db.EnvelopeStatus.SUBMITTED)
            doomed.send_signal(signal.SIGKILL)
            assert doomed.wait(timeout=10) == -signal.SIGKILL
        await handle.terminate("operator gave up")
    finally:
        await admin.clear_faults()
    async with running_worker(temporal_client, settings) as payouts:
        outcome = await result_of(await payouts.pay(second), 120)
    assert outcome.state == PayoutState.CONFIRMED
    [after] = db.envelopes_of(engine, second.idempotency_key)
    assert after.created_at.timestamp() >= abandoned.max_time + leases.LEASE_MARGIN_SECONDS - 1
    # The abandoned envelope applied (unstalled before its bound); the next used the next sequence.
    assert len(await successful_transfers(server, start, first.destination)) == 1
    assert after.sequence == abandoned.sequence + 1
    assert clashes(await send_answers(admin, [source.public_key])) == {}


@pytest.mark.parametrize("channel_count", [0, 2])
async def test_a_happy_path_payout_takes_at_most_30_history_events(
    temporal_client: Client,
    devnet: DevnetProcess,
    admin: DevnetAdmin,
    server: SorobanServerAsync,
    tmp_path: Path,
    channel_count: int,
) -> None:
    """Local activities keep the history short: every event is stored, replayed and read
    by the Web UI, and a long history costs worker CPU on every cache miss."""
    sqlite_url = f"sqlite:///{tmp_path / 'payouts.db'}"
    if channel_count:
        _, _, settings = await channel_settings(admin, devnet, sqlite_url, channel_count)
    else:
        settings = payout_settings(devnet.url, await admin.new_account(), sqlite_url)
    winner = await admin.new_account()
    async with running_worker(temporal_client, settings) as payouts:
        handle = await payouts.pay(payout(winner.public_key, "1"))
        assert (await result_of(handle)).state == PayoutState.CONFIRMED
        events = [event async for event in handle.fetch_history_events()]
    assert len(events) <= 30, [e.event_type for e in events]


async def test_a_signed_authorization_that_expires_before_a_channel_is_free_is_asked_for_again(
    temporal_client: Client,
    devnet: DevnetProcess,
    admin: DevnetAdmin,
    server: SorobanServerAsync,
    database_url: str,
) -> None:
    """Every channel is busy until the signed authorization has expired: the payout does
    not fail on the doomed simulation, it asks the signer for a new authorization and pays
    once with that one."""
    source, channels, settings = await channel_settings(
        admin,
        devnet,
        database_url,
        2,
        PAYOUTS_SIGN_WITH_HOT_KEY=False,
        PAYOUT_HOT_SIGNER_SECRET=None,
        PAYOUTS_SIGNATURE_WINDOW_SECONDS=30,  # 30 ledgers: 7.5 s at the tests' 250 ms ledgers
    )
    winner = await admin.new_account()
    request = payout(winner.public_key, "4")
    key = request.idempotency_key
    start = await latest_ledger(server)
    engine = db.make_engine(settings.DATABASE_URL)
    async with running_worker(temporal_client, settings) as payouts:
        handle = await payouts.pay(request)
        first = await awaiting_signature(payouts, key)
        assert first.authorization_xdr is not None
        held = [await asyncio.to_thread(leases.acquire, engine, f"busy-{i}", channels, 120) for i in channels]
        assert sorted(a for a in held if a is not None) == sorted(channels)  # other payouts hold every channel
        await payouts.submit_signature(key, sign_authorization(first.authorization_xdr, source))
        creds = x.SorobanAuthorizationEntry.from_xdr(first.authorization_xdr).credentials
        expiration = (creds.address or creds.address_v2).signature_expiration_ledger.uint32  # type: ignore[union-attr]
        await wait_for(
            lambda: _ledger_past(server, expiration), f"ledger {expiration} (the authorization's last)", timeout=30
        )
        for holder, channel in zip(channels, held, strict=True):
            assert await asyncio.to_thread(leases.release, engine, str(channel), f"busy-{holder}")

        async def asked_again() -> str | None:
            status = await payouts.status(key)
            fresh = status.authorization_xdr
            waiting = status.state == PayoutState.AWAITING_SIGNATURE
            return fresh if waiting and fresh != first.authorization_xdr else None

        second = await wait_for(asked_again, "a new authorization to sign", timeout=30)
        await payouts.submit_signature(key, sign_authorization(second, source))
        outcome = await result_of(handle)
    assert outcome.state == PayoutState.CONFIRMED
    [paid] = await successful_transfers(server, start, winner.public_key)
    assert paid.tx_hash == outcome.tx_hash


async def _ledger_past(server: SorobanServerAsync, ledger: int) -> bool | None:
    return True if await latest_ledger(server) > ledger else None
