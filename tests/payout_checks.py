"""What the payout integration tests ask of the ledger, of Temporal and of the clock.

The ledger's word is read with ``getTransactions`` / ``getLedgerEntries`` from devnet, never
from the payout engine's DB, so a test can hold the DB against it.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy.engine import Engine
from stellar_sdk import Asset, Keypair
from stellar_sdk import xdr as x
from stellar_sdk.soroban_server_async import SorobanServerAsync
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.workflowservice.v1 import DeleteWorkflowExecutionRequest
from temporalio.client import Client, WorkflowExecutionDescription, WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode

from payouts import db
from payouts.client import PayoutClient
from payouts.envelopes import EnvelopeError, decode_payout
from payouts.messages import PayoutOutcome
from payouts.models import PayoutRequest, PayoutState, PayoutStatus
from tests.devnet_harness import PASSPHRASE

T = TypeVar("T")
XLM = 10_000_000
RESULT_TIMEOUT = 90.0
NATIVE_SAC = Asset.native().contract_id(PASSPHRASE)


def payout(destination: str, amount: str = "12.5", key: str | None = None, prefix: str = "test") -> PayoutRequest:
    key = key or f"{prefix}:{uuid.uuid4().hex}"
    return PayoutRequest(payout_id=f"p-{key[-20:]}", destination=destination, amount=amount, idempotency_key=key)


async def wait_for(
    probe: Callable[[], Awaitable[T | None]], what: str, timeout: float = 30.0, every: float = 0.05
) -> T:
    """Poll ``probe`` until it returns something other than None."""
    deadline = time.monotonic() + timeout
    while True:
        found = await probe()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(every)


async def result_of(handle: WorkflowHandle[Any, PayoutOutcome], timeout: float = RESULT_TIMEOUT) -> PayoutOutcome:
    """The payout's outcome; a payout that does not finish in time fails the test, not hangs it
    (e.g. a DB activity that refuses to rewrite a settled fact retries forever)."""
    return await asyncio.wait_for(handle.result(), timeout)


async def status_in(payouts: PayoutClient, key: str, state: PayoutState) -> PayoutStatus | None:
    status = await payouts.status(key)
    return status if status.state == state else None


async def awaiting_signature(payouts: PayoutClient, key: str) -> PayoutStatus:
    return await wait_for(lambda: status_in(payouts, key, PayoutState.AWAITING_SIGNATURE), f"{key} AWAITING_SIGNATURE")


async def xlm_balance(server: SorobanServerAsync, account_id: str) -> int:
    return (await account_entry(server, account_id)).balance.int64


async def account_entry(server: SorobanServerAsync, account_id: str) -> x.AccountEntry:
    account = x.LedgerKeyAccount(Keypair.from_public_key(account_id).xdr_account_id())
    entries = (await server.get_ledger_entries([x.LedgerKey(x.LedgerEntryType.ACCOUNT, account=account)])).entries
    assert entries, f"account {account_id} does not exist"
    data = x.LedgerEntryData.from_xdr(entries[0].xdr).account
    assert data is not None
    return data


async def latest_ledger(server: SorobanServerAsync) -> int:
    return (await server.get_latest_ledger()).sequence


async def wait_ledgers(server: SorobanServerAsync, count: int) -> int:
    target = await latest_ledger(server) + count

    async def reached() -> int | None:
        latest = await latest_ledger(server)
        return latest if latest >= target else None

    return await wait_for(reached, f"ledger {target}")


@dataclass(frozen=True)
class Transfer:
    """An applied XLM SAC ``transfer`` (successful or not), as the ledger reports it."""

    tx_hash: str
    ledger: int
    source: str
    destination: str
    stroops: int
    successful: bool
    close_time: int


async def transfers(server: SorobanServerAsync, start_ledger: int, destination: str | None = None) -> list[Transfer]:
    """Every applied XLM SAC ``transfer`` since ``start_ledger`` (to ``destination`` if
    given), read from the ledger with ``getTransactions``."""
    found: list[Transfer] = []
    page_size = 200
    page = await server.get_transactions(start_ledger=start_ledger, limit=page_size)
    for _ in range(10_000):
        for tx in page.transactions:
            try:
                call = decode_payout(tx.envelope_xdr, PASSPHRASE)
            except EnvelopeError:
                continue  # friendbot, classic payments
            if call.contract_id != NATIVE_SAC or call.function != "transfer":
                continue
            if destination is None or call.destination == destination:
                successful = tx.status == "SUCCESS"
                found.append(
                    Transfer(
                        tx.transaction_hash,
                        tx.ledger,
                        call.source,
                        call.destination,
                        call.stroops,
                        successful,
                        tx.created_at,
                    )
                )
        if len(page.transactions) < page_size:
            return found
        page = await server.get_transactions(cursor=page.cursor, limit=page_size)
    raise AssertionError("getTransactions never reached the latest ledger")


async def successful_transfers(server: SorobanServerAsync, start_ledger: int, destination: str) -> list[Transfer]:
    return [t for t in await transfers(server, start_ledger, destination) if t.successful]


async def runs_of(client: Client, key: str) -> list[WorkflowExecutionDescription]:
    """Every run Temporal knows under workflow ID ``key`` (visibility; newest first)."""
    return [run async for run in client.list_workflows(f"WorkflowId = '{key}'")]  # type: ignore[misc]


async def wait_runs(client: Client, key: str, count: int) -> list[WorkflowExecutionDescription]:
    async def listed() -> list[WorkflowExecutionDescription] | None:
        runs = await runs_of(client, key)
        return runs if len(runs) >= count else None

    return await wait_for(listed, f"{count} run(s) of {key} in visibility", timeout=15)


async def delete_history(client: Client, key: str) -> None:
    """Delete the current run of workflow ``key``, as retention would; wait until it is gone."""
    run = (await client.get_workflow_handle(key).describe()).run_id
    execution = WorkflowExecution(workflow_id=key, run_id=run)
    await client.workflow_service.delete_workflow_execution(
        DeleteWorkflowExecutionRequest(namespace=client.namespace, workflow_execution=execution)
    )

    async def gone() -> bool | None:
        try:
            await client.get_workflow_handle(key, run_id=run).describe()
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                return True
            raise
        return None

    await wait_for(gone, f"the history of {key} (run {run}) to be deleted", timeout=30, every=0.1)


async def wait_envelope_row(
    engine: Engine, key: str, status: db.EnvelopeStatus, timeout: float = 30
) -> db.EnvelopeRecord:
    async def probe() -> db.EnvelopeRecord | None:
        return next((r for r in db.envelopes_of(engine, key) if r.status == status), None)

    return await wait_for(probe, f"an envelope row of {key} in status {status.value}", timeout=timeout)
