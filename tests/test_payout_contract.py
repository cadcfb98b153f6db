"""The second payout kind: ``PAYOUT_CONTRACT_ID`` set, payouts call the payout contract's
``distribute_winnings(to, amount)``, which pays from the contract's own balance."""

from __future__ import annotations

import uuid
from pathlib import Path

from stellar_sdk import Asset
from stellar_sdk.soroban_rpc import GetTransactionStatus
from stellar_sdk.soroban_server_async import SorobanServerAsync
from temporalio.client import Client

from payouts.envelopes import decode_payout
from payouts.models import PayoutRequest, PayoutState
from tests.devnet_harness import PASSPHRASE, DevnetAdmin, DevnetProcess, sac_transfer_envelope
from tests.payout_harness import payout_settings, running_worker

XLM = 10_000_000


async def test_contract_payout_pays_from_the_contract(
    temporal_client: Client, devnet: DevnetProcess, admin: DevnetAdmin, server: SorobanServerAsync, tmp_path: Path
) -> None:
    source, winner = await admin.new_account(), await admin.new_account()
    contract = (await admin.admin("POST", "payout-contract", {"admin": source.public_key, "asset": "XLM"}))[
        "contract_id"
    ]
    funding = await sac_transfer_envelope(server, source, contract, 500 * XLM)
    sent = await server.send_transaction(funding)
    assert (await server.poll_transaction(sent.hash, max_attempts=60)).status == GetTransactionStatus.SUCCESS

    settings = payout_settings(devnet.url, source, f"sqlite:///{tmp_path / 'payouts.db'}", PAYOUT_CONTRACT_ID=contract)
    key = f"contract:{uuid.uuid4().hex}"
    request = PayoutRequest(payout_id="c-1", destination=winner.public_key, amount="120", idempotency_key=key)
    async with running_worker(temporal_client, settings) as payouts:
        outcome = await (await payouts.pay(request)).result()
    assert outcome.state == PayoutState.CONFIRMED and outcome.tx_hash

    found = await server.get_transaction(outcome.tx_hash)
    call = decode_payout(found.envelope_xdr or "", PASSPHRASE)
    assert (call.contract_id, call.function, call.destination, call.stroops) == (
        contract,
        "distribute_winnings",
        winner.public_key,
        120 * XLM,
    )
    balance = await server.get_sac_balance(contract, Asset.native(), PASSPHRASE)
    assert balance.balance_entry is not None and balance.balance_entry.amount == 380 * XLM
