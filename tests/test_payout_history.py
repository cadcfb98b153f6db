"""What workflow histories hold: no secret anywhere (promise 6), and deterministic replay.

One module-scoped run pays in every mode (hot key, external with a rejected signature
first, build-only, fee cap exceeded) with the worker in this process, capturing its logs;
the tests then search the histories (as JSON), the DB and the logs for the hot-key
secret, and replay every history with ``Replayer``.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from stellar_sdk import Keypair, TransactionEnvelope
from temporalio.client import Client, WorkflowFailureError, WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from payouts.client import PayoutClient, SignatureRejected
from payouts.models import PayoutRequest, PayoutState
from tests.devnet_harness import PASSPHRASE, DevnetAdmin, DevnetProcess
from tests.payout_harness import payout_settings, running_worker
from workflows.payout import PayoutWorkflow


@dataclass
class RecordedRun:
    secret: str
    histories: list[WorkflowHistory]
    database: Path
    logs: str


def _request(destination: str, amount: str = "5") -> PayoutRequest:
    key = f"history:{uuid.uuid4().hex}"
    return PayoutRequest(payout_id=key[-12:], destination=destination, amount=amount, idempotency_key=key)


async def _await_state(payouts: PayoutClient, key: str, state: PayoutState) -> str:
    for _ in range(400):
        status = await payouts.status(key)
        if status.state == state:
            return status.unsigned_xdr or ""
        await asyncio.sleep(0.05)
    raise AssertionError(f"{key} never reached {state}")


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture(scope="module")
async def recorded(
    temporal_client: Client, devnet: DevnetProcess, admin: DevnetAdmin, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[RecordedRun]:
    source, winner = await admin.new_account(), await admin.new_account()
    database = tmp_path_factory.mktemp("history") / "payouts.db"
    url = f"sqlite:///{database}"
    collect = _Collect()
    collect.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s %(exc_text)s"))
    root = logging.getLogger()
    root.addHandler(collect)
    previous_level = root.level
    root.setLevel(logging.DEBUG)
    handles = []
    try:
        hot = payout_settings(devnet.url, source, url)
        async with running_worker(temporal_client, hot) as payouts:
            request = _request(winner.public_key)
            handles.append(await payouts.pay(request))
            assert (await handles[-1].result()).state == PayoutState.CONFIRMED

        external = payout_settings(
            devnet.url, source, url, PAYOUTS_SIGN_WITH_HOT_KEY=False, PAYOUT_HOT_SIGNER_SECRET=None
        )
        async with running_worker(temporal_client, external) as payouts:
            request = _request(winner.public_key, "6")
            handles.append(await payouts.pay(request))
            unsigned = await _await_state(payouts, request.idempotency_key, PayoutState.AWAITING_SIGNATURE)
            wrong = TransactionEnvelope.from_xdr(unsigned, PASSPHRASE)
            wrong.sign(Keypair.random())
            with pytest.raises(SignatureRejected):
                await payouts.submit_signature(request.idempotency_key, wrong.to_xdr())
            await payouts.submit_signed_xdr(request.idempotency_key, wrong.to_xdr())  # rejected via the signal too
            good = TransactionEnvelope.from_xdr(unsigned, PASSPHRASE)
            good.sign(source)
            await payouts.submit_signature(request.idempotency_key, good.to_xdr())
            assert (await handles[-1].result()).state == PayoutState.CONFIRMED

        build_only = payout_settings(devnet.url, source, url, PAYOUTS_LIVE_EXECUTION=False)
        async with running_worker(temporal_client, build_only) as payouts:
            handles.append(await payouts.pay(_request(winner.public_key, "7")))
            assert (await handles[-1].result()).state == PayoutState.BUILT

        capped = payout_settings(devnet.url, source, url, PAYOUTS_MAX_GAS_STROOPS=500, PAYOUTS_FEE_CAP_WAIT_SECONDS=0)
        async with running_worker(temporal_client, capped) as payouts:
            handles.append(await payouts.pay(_request(winner.public_key, "8")))
            with pytest.raises(WorkflowFailureError):
                await handles[-1].result()
    finally:
        root.removeHandler(collect)
        root.setLevel(previous_level)
    histories = [await handle.fetch_history() for handle in handles]
    yield RecordedRun(source.secret, histories, database, "\n".join(collect.lines))


async def test_secret_is_in_no_history(recorded: RecordedRun) -> None:
    assert len(recorded.histories) == 4
    for history in recorded.histories:
        text = history.to_json()
        assert "EVENT_TYPE_MARKER_RECORDED" in text  # the history (local activity results) really is there
        assert recorded.secret not in text


async def test_secret_is_not_in_the_database(recorded: RecordedRun) -> None:
    with sqlite3.connect(recorded.database) as connection:
        dump = "\n".join(connection.iterdump())
    assert "transactions" in dump and "payouts" in dump
    assert recorded.secret not in dump


async def test_secret_is_not_in_the_logs(recorded: RecordedRun) -> None:
    assert recorded.logs  # the worker did log (activity failures, signature rejections)
    assert recorded.secret not in recorded.logs


async def test_histories_replay_deterministically(recorded: RecordedRun) -> None:
    replayer = Replayer(workflows=[PayoutWorkflow], data_converter=pydantic_data_converter)
    for history in recorded.histories:
        result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
        assert result.replay_failure is None, f"{history.workflow_id}: {result.replay_failure}"
