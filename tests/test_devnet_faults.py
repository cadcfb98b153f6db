"""Each admin fault does what devnet/faults.py documents, observed from outside over HTTP.

Faults are cleared before and after every test, so the shared devnet is left healthy.
Timing is asserted only as order and causality (a delayed answer reflects a ledger that
closed after the request arrived), never as exact durations.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from stellar_sdk import Keypair, SorobanServerAsync
from stellar_sdk import xdr as x

from tests.devnet_harness import DevnetAdmin, result_code, sac_transfer_envelope
from tests.devnet_helpers import (
    account_state,
    get_transaction,
    payment_envelope,
    send,
    wait_for_transaction,
)

XLM = 10_000_000


@pytest.fixture(autouse=True)
async def no_faults(admin: DevnetAdmin) -> AsyncIterator[None]:
    await admin.clear_faults()
    yield
    await admin.clear_faults()


async def rules(admin: DevnetAdmin) -> list[dict[str, Any]]:
    described: list[dict[str, Any]] = (await admin.admin("GET", "faults"))["rules"]
    return described


async def latest_ledger(admin: DevnetAdmin) -> int:
    status, body = await admin.rpc("getLatestLedger")
    assert status == 200, body
    return int(body["result"]["sequence"])


async def http_status(admin: DevnetAdmin, method: str, params: Any = None) -> int:
    status, _ = await admin.rpc(method, params)
    return status


async def two_accounts(admin: DevnetAdmin) -> tuple[Keypair, Keypair]:
    alice, bob = await asyncio.gather(admin.new_account(), admin.new_account())
    return alice, bob


# -- drop_response -------------------------------------------------------------------------


async def test_drop_response_disconnects_but_the_transaction_is_applied(
    admin: DevnetAdmin, server: SorobanServerAsync
) -> None:
    alice, bob = await two_accounts(admin)
    bob_before = await account_state(admin, bob.public_key)
    envelope = await payment_envelope(server, alice, bob.public_key, "5")
    await admin.faults(rules=[{"kind": "drop_response", "method": "sendTransaction", "count": 1}])

    with pytest.raises(aiohttp.ClientError):  # the connection closes without an answer
        await admin.rpc("sendTransaction", {"transaction": envelope.to_xdr()})

    # The client could not know, but the transaction was queued and is applied.
    found = await wait_for_transaction(admin, envelope.hash_hex())
    assert found["status"] == "SUCCESS", found
    bob_after = await account_state(admin, bob.public_key)
    assert bob_before is not None and bob_after is not None
    assert bob_after.balance == bob_before.balance + 5 * XLM
    [rule] = await rules(admin)
    assert (rule["hits"], rule["remaining"]) == (1, 0)
    # Re-sending the same envelope (what a careful client does) is answered and cannot apply it twice.
    again = await send(admin, envelope.to_xdr())
    assert again["status"] == "TRY_AGAIN_LATER", again
    assert (await account_state(admin, bob.public_key)) == bob_after


async def test_drop_response_on_a_read_then_answers_again(admin: DevnetAdmin) -> None:
    await admin.faults(rules=[{"kind": "drop_response", "method": "getLatestLedger", "count": 1}])
    with pytest.raises(aiohttp.ClientError):
        await admin.rpc("getLatestLedger")
    assert await latest_ledger(admin) >= 1


# -- delay ---------------------------------------------------------------------------------


async def test_delay_processes_the_request_after_the_wait(admin: DevnetAdmin) -> None:
    delay_ms = 800
    await admin.faults(rules=[{"kind": "delay", "method": "getLatestLedger", "ms": delay_ms, "count": 1}])
    started = time.monotonic()
    delayed = asyncio.create_task(admin.rpc("getLatestLedger"))
    # The rule counts its hit when the request arrives, before the wait: poll until it has.
    for _ in range(200):
        if (await rules(admin))[0]["hits"] == 1:
            break
        await asyncio.sleep(0.01)
    else:
        pytest.fail("the delayed request never reached devnet")
    closed_after_arrival = await admin.close_ledger()
    # Other methods are not delayed: this answer overtakes the delayed one.
    status, body = await admin.rpc("getHealth")
    assert status == 200 and body["result"]["latestLedger"] >= closed_after_arrival
    assert not delayed.done(), "the delayed answer arrived before an undelayed later one"

    status, body = await delayed
    elapsed = time.monotonic() - started
    assert status == 200
    # Causality: it was processed after a ledger that closed after it arrived.
    assert body["result"]["sequence"] >= closed_after_arrival
    assert elapsed >= delay_ms / 1000 * 0.95
    # count=1: the next call is not delayed (it overtakes a fresh ledger close easily).
    assert await latest_ledger(admin) >= closed_after_arrival


# -- http_error ----------------------------------------------------------------------------


@pytest.mark.parametrize("status", [503, 500, None])
async def test_http_error_answers_status_without_effect(
    admin: DevnetAdmin, server: SorobanServerAsync, status: int | None
) -> None:
    alice, bob = await two_accounts(admin)
    alice_before = await account_state(admin, alice.public_key)
    envelope = await payment_envelope(server, alice, bob.public_key, "7")
    rule: dict[str, Any] = {"kind": "http_error", "method": "sendTransaction", "count": 1}
    if status is not None:
        rule["status"] = status
    await admin.faults(rules=[rule])

    answered, body = await admin.rpc("sendTransaction", {"transaction": envelope.to_xdr()})
    assert answered == (status or 503)
    assert body["status"] == answered and "result" not in body

    # No effect: not applied after ledgers close, sequence and balance untouched ...
    await admin.close_ledger()
    await admin.close_ledger()
    assert (await get_transaction(admin, envelope.hash_hex()))["status"] == "NOT_FOUND"
    assert await account_state(admin, alice.public_key) == alice_before
    # ... and not queued or banned: the same envelope is accepted now and applied.
    sent = await send(admin, envelope.to_xdr())
    assert sent["status"] == "PENDING", sent
    assert (await wait_for_transaction(admin, envelope.hash_hex()))["status"] == "SUCCESS"


# -- try_again_later -----------------------------------------------------------------------


async def test_try_again_later_does_not_queue(admin: DevnetAdmin, server: SorobanServerAsync) -> None:
    alice, bob = await two_accounts(admin)
    alice_before = await account_state(admin, alice.public_key)
    envelope = await payment_envelope(server, alice, bob.public_key, "2")
    await admin.faults(rules=[{"kind": "try_again_later", "count": 1}])

    sent = await send(admin, envelope.to_xdr())
    assert sent["status"] == "TRY_AGAIN_LATER" and sent["hash"] == envelope.hash_hex(), sent
    assert "errorResultXdr" not in sent

    await admin.close_ledger()
    await admin.close_ledger()
    assert (await get_transaction(admin, envelope.hash_hex()))["status"] == "NOT_FOUND"
    assert await account_state(admin, alice.public_key) == alice_before
    # Not queued (no DUPLICATE) and not banned: the retry is accepted.
    retry = await send(admin, envelope.to_xdr())
    assert retry["status"] == "PENDING", retry
    assert (await wait_for_transaction(admin, envelope.hash_hex()))["status"] == "SUCCESS"


# -- fee_surge -----------------------------------------------------------------------------


async def test_fee_surge(admin: DevnetAdmin, server: SorobanServerAsync) -> None:
    """Outside traffic fills every ledger bidding the surge fee: devnet's transactions that bid
    less wait (and are dropped after 4 ledgers), those that bid it are charged it, and
    getFeeStats counts the outside traffic."""
    cheap, rich = await two_accounts(admin)
    payee = await admin.new_account()
    cheap_before = await account_state(admin, cheap.public_key)
    low = await payment_envelope(server, cheap, payee.public_key, "1", base_fee=100)
    high = await payment_envelope(server, rich, payee.public_key, "1", base_fee=1_500)
    await admin.faults(fee_surge=1_000)

    # Each ledger closed under the surge adds a ledger's worth of 1,000-stroop fees.
    await admin.close_ledger()
    _, body = await admin.rpc("getFeeStats")
    for stats in (body["result"]["inclusionFee"], body["result"]["sorobanInclusionFee"]):
        assert stats["p50"] == stats["p90"] == stats["max"] == "1000", stats

    low_sent = await send(admin, low.to_xdr())
    high_sent = await send(admin, high.to_xdr())
    assert low_sent["status"] == high_sent["status"] == "PENDING", (low_sent, high_sent)
    received = low_sent["latestLedger"]

    # The one bidding above the surge fee is included; it is charged the surge fee.
    included = await wait_for_transaction(admin, high.hash_hex())
    assert included["status"] == "SUCCESS", included
    assert x.TransactionResult.from_xdr(included["resultXdr"]).fee_charged.int64 == 1_000

    # The cheap one waits in the queue (DUPLICATE on re-send) until it is 4 ledgers old ...
    for _ in range(10):
        again = await send(admin, low.to_xdr())
        if again["latestLedger"] >= received + 4:
            break
        assert again["status"] == "DUPLICATE", again
        assert (await get_transaction(admin, low.hash_hex()))["status"] == "NOT_FOUND"
        await admin.close_ledger()
    # ... then it is dropped (and banned for a while): never applied, nothing charged.
    assert again["status"] == "TRY_AGAIN_LATER", again
    assert (await get_transaction(admin, low.hash_hex()))["status"] == "NOT_FOUND"
    assert await account_state(admin, cheap.public_key) == cheap_before

    # Once the surge is over, the classic window (10 ledgers) forgets it.
    await admin.clear_faults()
    for _ in range(10):
        await admin.close_ledger()
    _, body = await admin.rpc("getFeeStats")
    assert int(body["result"]["inclusionFee"]["max"]) <= 100, body


# -- ledger_stall --------------------------------------------------------------------------


async def test_ledger_stall(admin: DevnetAdmin, server: SorobanServerAsync) -> None:
    alice, bob = await two_accounts(admin)
    envelope = await payment_envelope(server, alice, bob.public_key, "1")
    await admin.faults(ledger_stall=True)
    stalled_at = await latest_ledger(admin)
    # Neither the admin close nor the clock (250 ms cadence) closes a ledger while stalled.
    assert await admin.close_ledger() == stalled_at
    assert (await send(admin, envelope.to_xdr()))["status"] == "PENDING"
    deadline = time.monotonic() + 1.5  # six ledger intervals
    while time.monotonic() < deadline:
        assert await latest_ledger(admin) == stalled_at
        await asyncio.sleep(0.05)
    assert (await get_transaction(admin, envelope.hash_hex()))["status"] == "NOT_FOUND"

    await admin.clear_faults()
    # The clock resumes on its own ...
    for _ in range(100):
        if await latest_ledger(admin) > stalled_at:
            break
        await asyncio.sleep(0.05)
    else:
        pytest.fail("ledgers did not resume after the stall was cleared")
    # ... and the transaction queued during the stall is applied.
    assert (await wait_for_transaction(admin, envelope.hash_hex()))["status"] == "SUCCESS"


# -- consume-sequence ----------------------------------------------------------------------


async def test_consume_sequence_makes_a_prepared_transaction_fail_bad_seq(
    admin: DevnetAdmin, server: SorobanServerAsync
) -> None:
    alice, bob = await two_accounts(admin)
    prepared = await sac_transfer_envelope(server, alice, bob.public_key, 3 * XLM)
    before = await account_state(admin, alice.public_key)
    assert before is not None

    answer = await admin.admin("POST", "consume-sequence", {"account": alice.public_key})
    assert answer == {"account": alice.public_key, "sequence": str(before.seq_num + 1)}
    after = await account_state(admin, alice.public_key)
    assert after is not None
    assert (after.seq_num, after.balance) == (before.seq_num + 1, before.balance)

    sent = await send(admin, prepared.to_xdr())
    assert sent["status"] == "ERROR", sent
    assert result_code(sent["errorResultXdr"]) == "txBAD_SEQ"
    assert await account_state(admin, alice.public_key) == after


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "account"),
        ({"account": 5}, "account"),
        ({"account": "G" + "A" * 55}, "account"),
        ({"account": Keypair.random().public_key}, "does not exist"),
        ({"account": Keypair.random().public_key, "extra": 1}, "extra"),
    ],
)
async def test_consume_sequence_bad_body(
    admin: DevnetAdmin, http_session: aiohttp.ClientSession, body: dict[str, Any], field: str
) -> None:
    async with http_session.post(f"{admin.url}/admin/consume-sequence", json=body) as response:
        assert response.status == 400
        assert field in (await response.json())["detail"]


# -- count semantics, method filter, clearing ----------------------------------------------


async def test_count_semantics(admin: DevnetAdmin) -> None:
    await admin.faults(
        rules=[
            {"kind": "http_error", "method": "getHealth", "count": 1},
            {"kind": "http_error", "method": "getNetwork", "count": 2, "status": 500},
            {"kind": "http_error", "method": "getVersionInfo"},
        ]
    )
    assert [await http_status(admin, "getHealth") for _ in range(3)] == [503, 200, 200]
    assert [await http_status(admin, "getNetwork") for _ in range(3)] == [500, 500, 200]
    assert [await http_status(admin, "getVersionInfo") for _ in range(4)] == [503] * 4
    # The method filter: other methods are untouched.
    assert await http_status(admin, "getFeeStats") == 200
    described = {rule["method"]: (rule["hits"], rule["remaining"]) for rule in await rules(admin)}
    assert described == {"getHealth": (1, 0), "getNetwork": (2, 0), "getVersionInfo": (4, None)}

    await admin.clear_faults()
    assert await http_status(admin, "getVersionInfo") == 200


async def test_rule_without_method_hits_any_method(admin: DevnetAdmin) -> None:
    await admin.faults(rules=[{"kind": "http_error", "count": 2}])
    assert await http_status(admin, "getFeeStats") == 503
    assert await http_status(admin, "getLatestLedger") == 503
    assert await http_status(admin, "getFeeStats") == 200


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"rules": [{"kind": "explode"}]}', "rules.0.kind"),
        (b'{"rules": [{"kind": "delay", "ms": -1}]}', "rules.0.ms"),
        (b'{"rules": [{"kind": "delay", "ms": 600001}]}', "rules.0.ms"),
        (b'{"rules": [{"kind": "delay", "count": 0}]}', "rules.0.count"),
        (b'{"rules": [{"kind": "delay"}, {"kind": "http_error", "status": 404}]}', "rules.1.status"),
        (b'{"rules": [{"kind": "delay", "methd": "getHealth"}]}', "rules.0.methd"),
        (b'{"rules": [{"ms": 5}]}', "rules.0.kind"),
        (b'{"rules": {"kind": "delay"}}', "rules"),
        (b'{"rules": [{"kind": "delay", "ms": 5}], "fee_surge": 5}', "fee_surge"),
        (b'{"fee_surge": "lots"}', "fee_surge"),
        (b'{"ledger_stall": "maybe"}', "ledger_stall"),
        (b'{"stall": true}', "stall"),
        (b"[]", "body"),
        (b"not json", "body"),
        (b"", "body"),
    ],
)
async def test_invalid_fault_body_is_400_naming_the_field(
    admin: DevnetAdmin, http_session: aiohttp.ClientSession, body: bytes, field: str
) -> None:
    async with http_session.post(
        f"{admin.url}/admin/faults", data=body, headers={"Content-Type": "application/json"}
    ) as response:
        assert response.status == 400
        detail = (await response.json())["detail"]
    assert field in detail, detail
    # Nothing of a refused body is applied.
    assert await admin.admin("GET", "faults") == {"rules": [], "fee_surge": None, "ledger_stall": False}


async def test_delete_clears_everything(admin: DevnetAdmin, server: SorobanServerAsync) -> None:
    alice, bob = await two_accounts(admin)
    envelope = await payment_envelope(server, alice, bob.public_key, "1", base_fee=100)
    await admin.faults(
        rules=[{"kind": "http_error", "method": "getHealth"}, {"kind": "delay", "ms": 60_000}],
        fee_surge=5_000,
        ledger_stall=True,
    )
    described = await admin.admin("GET", "faults")
    assert len(described["rules"]) == 2 and described["fee_surge"] == 5_000 and described["ledger_stall"]
    stalled_at = await admin.close_ledger()

    cleared = await admin.admin("DELETE", "faults")
    assert cleared == {"rules": [], "fee_surge": None, "ledger_stall": False}
    assert await admin.admin("GET", "faults") == cleared
    # No delay (the 60 s rule would time this out), no error, ledgers close, normal fees.
    status, body = await asyncio.wait_for(admin.rpc("getHealth"), timeout=10)
    assert status == 200 and body["result"]["status"] == "healthy"
    assert await admin.close_ledger() > stalled_at
    assert (await send(admin, envelope.to_xdr()))["status"] == "PENDING"
    included = await wait_for_transaction(admin, envelope.hash_hex())
    assert included["status"] == "SUCCESS", included
    assert x.TransactionResult.from_xdr(included["resultXdr"]).fee_charged.int64 == 100
