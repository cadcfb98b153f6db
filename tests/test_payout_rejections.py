"""Promise 8: an external signature is checked before it is trusted.

While a payout waits for its external signature, every bad signed XDR is rejected with a
reason that names the problem — through the update (``PayoutClient.submit_signature`` raises
``SignatureRejected``) and through the signal (the reason shows in ``status.last_error``) —
and the payout keeps waiting for the same envelope. Then a good signature confirms it, once.

The source account needs two signatures: it runs on a second devnet whose state file gives
it thresholds low 1 / medium 2 / high 2, master weight 1 and a cosigner of weight 1 (devnet
has no SetOptions; a genesis state file is how it configures signers).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from stellar_sdk import Keypair, Network, TransactionEnvelope
from stellar_sdk.soroban_server_async import SorobanServerAsync
from temporalio.client import Client

from devnet.entries import AccountEntry, account_key
from devnet.ledger import Devnet
from payouts import db
from payouts.client import PayoutClient, SignatureRejected
from payouts.models import PayoutState, PayoutStatus
from tests.devnet_harness import PASSPHRASE, DevnetAdmin, DevnetProcess, run_devnet, sac_transfer_envelope
from tests.payout_checks import (
    XLM,
    awaiting_signature,
    latest_ledger,
    payout,
    result_of,
    successful_transfers,
    wait_for,
    wait_ledgers,
    xlm_balance,
)
from tests.payout_harness import payout_settings, running_worker
from workflows.payout import PayoutWorkflow

MALFORMED_SIGNAL = 'signal ignored: payload must be {"signed_xdr": "<base64 envelope>"}'
HASH_DIFFERS = "not the transaction that was built"
DOES_NOT_VERIFY = "does not verify for this transaction under the configured network"
BELOW_THRESHOLD = "signature weight 1 is below the source account's threshold 2"


@dataclass
class Multisig:
    process: DevnetProcess
    source: Keypair  # master weight 1; thresholds low 1, medium 2, high 2
    cosigner: Keypair  # the source account's other signer, weight 1


@pytest.fixture(scope="module")
def multisig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Multisig]:
    path: Path = tmp_path_factory.mktemp("multisig") / "state.json"
    source, cosigner = Keypair.random(), Keypair.random()
    genesis = Devnet(state_file=path)
    root = genesis.state.entries[account_key(genesis.root.public_key)]
    assert isinstance(root, AccountEntry)
    genesis.state.entries[account_key(source.public_key)] = AccountEntry(
        source.public_key,
        balance=10_000 * XLM,
        seq_num=1 << 32,
        num_sub_entries=1,
        thresholds=(1, 1, 2, 2),
        signers={cosigner.public_key: 1},
        last_modified=1,
    )
    root.balance -= 10_000 * XLM
    genesis.save()
    with run_devnet(250, state_file=path) as process:
        yield Multisig(process, source, cosigner)


@pytest.fixture
async def multisig_server(multisig: Multisig) -> AsyncIterator[SorobanServerAsync]:
    async with SorobanServerAsync(multisig.process.url) as server:
        yield server


def signed(unsigned_xdr: str, *signers: Keypair, passphrase: str = PASSPHRASE) -> str:
    envelope = TransactionEnvelope.from_xdr(unsigned_xdr, passphrase)
    for signer in signers:
        envelope.sign(signer)
    return envelope.to_xdr()


async def bad_signatures(
    m: Multisig, server: SorobanServerAsync, unsigned_xdr: str, destination: str
) -> list[tuple[str, str, str]]:
    """(what is wrong, signed XDR, the reason's expected text)."""
    both = (m.source, m.cosigner)
    tampered = TransactionEnvelope.from_xdr(unsigned_xdr, PASSPHRASE)
    tampered.transaction.fee += 1
    other = await sac_transfer_envelope(server, m.source, destination, 100 * XLM, sign=False)  # a bigger payout
    return [
        ("the built transaction, altered (fee)", signed(tampered.to_xdr(), *both), HASH_DIFFERS),
        ("another transaction", signed(other.to_xdr(), *both), HASH_DIFFERS),
        ("signed for another network",
         signed(unsigned_xdr, *both, passphrase=Network.TESTNET_NETWORK_PASSPHRASE), DOES_NOT_VERIFY),
        ("signed by the wrong key", signed(unsigned_xdr, Keypair.random()), DOES_NOT_VERIFY),
        ("the right keys and a stranger", signed(unsigned_xdr, *both, Keypair.random()), DOES_NOT_VERIFY),
        ("no signature", unsigned_xdr, "carries no signature"),
        ("the master key alone, below the medium threshold", signed(unsigned_xdr, m.source), BELOW_THRESHOLD),
        ("the cosigner alone, below the medium threshold", signed(unsigned_xdr, m.cosigner), BELOW_THRESHOLD),
        ("not base64 at all", "this is not XDR!", "not a base64 transaction envelope XDR"),
    ]  # fmt: skip


async def last_error_is(payouts: PayoutClient, key: str, expected: str) -> PayoutStatus | None:
    status = await payouts.status(key)
    return status if status.last_error == expected else None


async def rejected_by_signal(payouts: PayoutClient, key: str, signed_xdr: str, reason: str) -> PayoutStatus:
    """Send ``signed_xdr`` by signal and wait for its rejection in ``status.last_error``.

    A malformed signal first sets a known last error, so the rejection seen afterwards is
    this signal's (an earlier rejection may have had the same reason)."""
    handle = payouts.handle(key)
    await handle.signal(PayoutWorkflow.submit_signed_xdr, {"signedXdr": signed_xdr})
    await wait_for(lambda: last_error_is(payouts, key, MALFORMED_SIGNAL), "the malformed signal's last_error")
    await payouts.submit_signed_xdr(key, signed_xdr)

    async def rejected() -> PayoutStatus | None:
        status = await payouts.status(key)
        error = status.last_error or ""
        return status if error.startswith("signature rejected: ") and reason in error else None

    return await wait_for(rejected, f"a rejection naming {reason!r}")


@pytest.mark.parametrize("accept_via", ["update", "signal"])
async def test_bad_signatures_are_rejected_then_a_good_one_confirms_once(
    temporal_client: Client,
    multisig: Multisig,
    multisig_server: SorobanServerAsync,
    http_session: aiohttp.ClientSession,
    database_url: str,
    accept_via: str,
) -> None:
    m, server = multisig, multisig_server
    winner = Keypair.random()
    await DevnetAdmin(m.process.url, http_session).fund(winner.public_key)
    settings = payout_settings(
        m.process.url, m.source, database_url, PAYOUTS_SIGN_WITH_HOT_KEY=False, PAYOUT_HOT_SIGNER_SECRET=None
    )
    request = payout(winner.public_key, "8", prefix="multisig")
    key = request.idempotency_key
    start_ledger, balance = await latest_ledger(server), await xlm_balance(server, winner.public_key)
    sequence = (await server.load_account(m.source.public_key)).sequence

    async with running_worker(temporal_client, settings) as payouts:
        handle = await payouts.pay(request)
        waiting = await awaiting_signature(payouts, key)
        unsigned_xdr, tx_hash = waiting.unsigned_xdr, waiting.tx_hash
        assert unsigned_xdr is not None and tx_hash == TransactionEnvelope.from_xdr(unsigned_xdr, PASSPHRASE).hash_hex()

        for problem, bad_xdr, reason in await bad_signatures(m, server, unsigned_xdr, winner.public_key):
            try:
                await payouts.submit_signature(key, bad_xdr)
            except SignatureRejected as exc:
                rejection = str(exc)
            else:
                pytest.fail(f"accepted through the update: {problem}")
            assert rejection.startswith("signature rejected: ") and reason in rejection, (problem, rejection)
            status = await rejected_by_signal(payouts, key, bad_xdr, reason)
            assert (status.state, status.unsigned_xdr, status.tx_hash) == (
                PayoutState.AWAITING_SIGNATURE, unsigned_xdr, tx_hash), problem  # fmt: skip

        with pytest.raises(SignatureRejected, match="non-empty"):
            await payouts.submit_signature(key, "")
        for payload in ({}, {"signed_xdr": ""}, {"signed_xdr": 42}, {"xdr": unsigned_xdr}):
            with pytest.raises(SignatureRejected):  # sets another last_error first
                await payouts.submit_signature(key, "garbage")
            assert ((await payouts.status(key)).last_error or "").startswith("signature rejected: ")
            await payouts.handle(key).signal(PayoutWorkflow.submit_signed_xdr, payload)
            await wait_for(lambda: last_error_is(payouts, key, MALFORMED_SIGNAL), f"last_error after signal {payload}")
        status = await payouts.status(key)
        assert (status.state, status.unsigned_xdr) == (PayoutState.AWAITING_SIGNATURE, unsigned_xdr)
        # nothing was sent: the source account's sequence number has not moved
        assert (await server.load_account(m.source.public_key)).sequence == sequence

        good = signed(unsigned_xdr, m.source, m.cosigner)
        if accept_via == "update":
            await payouts.submit_signature(key, good)
        else:
            await payouts.submit_signed_xdr(key, good)
        outcome = await result_of(handle)

    assert (outcome.state, outcome.tx_hash) == (PayoutState.CONFIRMED, tx_hash)
    await wait_ledgers(server, 6)
    paid = await successful_transfers(server, start_ledger, winner.public_key)
    assert [(t.tx_hash, t.stroops) for t in paid] == [(tx_hash, request.stroops)]
    assert await xlm_balance(server, winner.public_key) - balance == request.stroops
    engine = db.make_engine(database_url)
    try:
        envelopes = db.envelopes_of(engine, key)
        assert [(e.tx_hash, e.status) for e in envelopes] == [(tx_hash, db.EnvelopeStatus.CONFIRMED)]
        assert len(TransactionEnvelope.from_xdr(envelopes[0].envelope_xdr, PASSPHRASE).signatures) == 2
    finally:
        engine.dispose()
