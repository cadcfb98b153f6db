"""History retention as stellar-rpc keeps it, and ``POST /admin/close-ledgers``.

The devnet here runs with ``--retention-ledgers 10`` and a one-hour ledger clock: the tests
close every ledger themselves, so they know the latest ledger of every read.

stellar-rpc (cmd/stellar-rpc/internal/db: trimLedgers, trimTransactions) keeps the ledgers
from latest + 1 - window to latest; getTransaction answers NOT_FOUND for a transaction
trimmed away; getTransactions refuses a startLedger outside [oldestLedger, latestLedger]
with -32600 ("start ledger (N) must be between the oldest ledger: O and the latest ledger:
L for this rpc instance") and a cursor into a trimmed ledger with -32602 ("database does not
contain metadata for ledger: N").
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from stellar_sdk import Keypair, SorobanServerAsync

from tests.devnet_harness import DevnetAdmin, DevnetProcess, run_devnet
from tests.devnet_helpers import get_transaction, payment_envelope, send

WINDOW = 10
CLOCK_MS = 3_600_000  # the tests close every ledger themselves
# A time bound past the submission bound of a network expecting hour-long ledgers
# (maxTime ≥ last close + 2 × the expected close time), or every transaction is txTOO_LATE.
TIMEOUT_S = 3 * CLOCK_MS // 1000
MAX_CLOSE_LEDGERS = 200_000
INVALID_REQUEST, INVALID_PARAMS = -32600, -32602


@pytest.fixture(scope="module")
def manual_devnet() -> Iterator[DevnetProcess]:
    with run_devnet(CLOCK_MS, "--retention-ledgers", str(WINDOW)) as process:
        yield process


@pytest.fixture(scope="module")
async def manual(manual_devnet: DevnetProcess) -> AsyncIterator[tuple[DevnetAdmin, SorobanServerAsync]]:
    async with aiohttp.ClientSession() as session, SorobanServerAsync(manual_devnet.url) as server:
        yield DevnetAdmin(manual_devnet.url, session), server


async def fund(admin: DevnetAdmin, count: int) -> list[Keypair]:
    """Friendbot-funded accounts on a devnet whose ledgers the test closes."""
    tasks = [asyncio.create_task(admin.new_account()) for _ in range(count)]
    for _ in range(500):
        if all(t.done() for t in tasks):
            break
        if (await admin.admin("GET", "stats"))["queue"]:
            await admin.close_ledger()
        else:
            await asyncio.sleep(0.01)
    return [await t for t in tasks]


async def health(admin: DevnetAdmin) -> dict[str, Any]:
    status, body = await admin.rpc("getHealth")
    assert status == 200, body
    result: dict[str, Any] = body["result"]
    return result


async def get_transactions(admin: DevnetAdmin, params: dict[str, Any]) -> dict[str, Any]:
    status, body = await admin.rpc("getTransactions", params)
    assert status == 200, body
    return body


async def applied_payment(admin: DevnetAdmin, server: SorobanServerAsync) -> tuple[str, int]:
    """A payment applied in the next ledger: (hash, ledger)."""
    alice, bob = await fund(admin, 2)
    envelope = await payment_envelope(server, alice, bob.public_key, timeout=TIMEOUT_S)
    assert (await send(admin, envelope.to_xdr()))["status"] == "PENDING"
    ledger = await admin.close_ledger()
    found = await get_transaction(admin, envelope.hash_hex())
    assert found["status"] == "SUCCESS" and found["ledger"] == ledger, found
    return envelope.hash_hex(), ledger


# -- retention ------------------------------------------------------------------------------


async def test_history_older_than_the_window_is_forgotten(manual: tuple[DevnetAdmin, SorobanServerAsync]) -> None:
    admin, server = manual
    assert (await health(admin))["ledgerRetentionWindow"] == WINDOW
    tx_hash, ledger = await applied_payment(admin, server)
    page = await get_transactions(admin, {"startLedger": ledger, "pagination": {"limit": 1}})
    cursor = page["result"]["cursor"]

    # The transaction's ledger is the oldest one kept: latest + 1 - window.
    assert await admin.close_ledgers(WINDOW - 1) == ledger + WINDOW - 1
    window = await health(admin)
    assert (window["oldestLedger"], window["latestLedger"]) == (ledger, ledger + WINDOW - 1)
    found = await get_transaction(admin, tx_hash)
    assert found["status"] == "SUCCESS" and found["oldestLedger"] == ledger, found
    body = await get_transactions(admin, {"startLedger": ledger})
    assert tx_hash in [t["txHash"] for t in body["result"]["transactions"]], body
    assert "result" in await get_transactions(admin, {"pagination": {"cursor": cursor}})

    # One ledger later it is outside the window.
    assert await admin.close_ledger() == ledger + WINDOW
    window = await health(admin)
    assert (window["oldestLedger"], window["latestLedger"]) == (ledger + 1, ledger + WINDOW)
    found = await get_transaction(admin, tx_hash)
    assert found["status"] == "NOT_FOUND" and found["oldestLedger"] == ledger + 1, found
    body = await get_transactions(admin, {"startLedger": ledger})
    assert body["error"]["code"] == INVALID_REQUEST, body
    assert body["error"]["message"] == (
        f"start ledger ({ledger}) must be between the oldest ledger: {ledger + 1} "
        f"and the latest ledger: {ledger + WINDOW} for this rpc instance"
    )
    body = await get_transactions(admin, {"pagination": {"cursor": cursor}})
    assert body["error"]["code"] == INVALID_PARAMS, body
    assert body["error"]["message"] == f"database does not contain metadata for ledger: {ledger}"
    body = await get_transactions(admin, {"startLedger": ledger + 1})
    assert body["result"]["oldestLedger"] == ledger + 1 and body["result"]["transactions"] == [], body


async def test_retention_window_applies_to_the_history_of_a_state_file(tmp_path: Path) -> None:
    """A devnet restarted with a narrower window forgets what lies outside it at once."""
    path = tmp_path / "devnet.json"
    with run_devnet(CLOCK_MS, "--retention-ledgers", "100", state_file=path) as first:
        async with aiohttp.ClientSession() as session, SorobanServerAsync(first.url) as server:
            admin = DevnetAdmin(first.url, session)
            tx_hash, ledger = await applied_payment(admin, server)
            latest = await admin.close_ledgers(WINDOW)
            assert (await get_transaction(admin, tx_hash))["status"] == "SUCCESS"
    with run_devnet(CLOCK_MS, "--retention-ledgers", str(WINDOW), state_file=path) as second:
        async with aiohttp.ClientSession() as session:
            admin = DevnetAdmin(second.url, session)
            window = await health(admin)
            assert (window["oldestLedger"], window["latestLedger"]) == (latest + 1 - WINDOW, latest)
            assert (await get_transaction(admin, tx_hash))["status"] == "NOT_FOUND"
            assert ledger < latest + 1 - WINDOW


@pytest.mark.parametrize("value", ["0", "-5", str(2**32)])
def test_retention_ledgers_out_of_range_is_refused(value: str) -> None:
    with pytest.raises(RuntimeError, match="--retention-ledgers must be between 1 and"):
        with run_devnet(CLOCK_MS, "--retention-ledgers", value):
            pass


# -- close-ledgers ---------------------------------------------------------------------------


async def test_close_ledgers_advances_by_count_through_the_close_path(
    manual: tuple[DevnetAdmin, SorobanServerAsync],
) -> None:
    admin, server = manual
    alice, bob = await fund(admin, 2)
    envelope = await payment_envelope(server, alice, bob.public_key, timeout=TIMEOUT_S)
    assert (await send(admin, envelope.to_xdr()))["status"] == "PENDING"
    before = (await server.get_latest_ledger()).sequence
    assert await admin.close_ledgers(3) == before + 3
    assert (await server.get_latest_ledger()).sequence == before + 3
    # The queued transaction was applied in the first of them, as on any close ...
    found = await get_transaction(admin, envelope.hash_hex())
    assert found["status"] == "SUCCESS" and found["ledger"] == before + 1, found
    # ... and closing past the window trims the history.
    assert await admin.close_ledgers(WINDOW) == before + 3 + WINDOW
    window = await health(admin)
    assert window["oldestLedger"] == before + 4
    assert (await get_transaction(admin, envelope.hash_hex()))["status"] == "NOT_FOUND"
    # The documented maximum is accepted.
    assert await admin.close_ledgers(MAX_CLOSE_LEDGERS) == before + 3 + WINDOW + MAX_CLOSE_LEDGERS


@pytest.mark.parametrize(
    ("body", "names"),
    [
        (b'{"count": 0}', ["count", "greater than or equal to 1"]),
        (b'{"count": -3}', ["count", "greater than or equal to 1"]),
        (b'{"count": 200001}', ["count", "less than or equal to 200000"]),
        (b'{"count": "5"}', ["count", "integer"]),
        (b'{"count": 2.5}', ["count", "integer"]),
        (b'{"count": 5.0}', ["count", "integer"]),
        (b'{"count": true}', ["count", "integer"]),
        (b'{"count": null}', ["count", "integer"]),
        (b"{}", ["count", "required"]),
        (b'{"count": 5, "extra": 1}', ["extra", "not permitted"]),
        (b"[5]", ["body"]),
        (b"not json", ["body", "JSON"]),
        (b"", ["body", "JSON"]),
    ],
)
async def test_close_ledgers_refuses_bad_bodies_and_changes_nothing(
    manual: tuple[DevnetAdmin, SorobanServerAsync], body: bytes, names: list[str]
) -> None:
    admin, server = manual
    before = (await server.get_latest_ledger()).sequence
    async with admin.session.post(
        f"{admin.url}/admin/close-ledgers", data=body, headers={"Content-Type": "application/json"}
    ) as response:
        assert response.status == 400
        detail = (await response.json())["detail"]
    for name in names:
        assert name in detail, (name, detail)
    assert (await server.get_latest_ledger()).sequence == before
