"""Metrics and logs of a worker process: its Prometheus endpoint (``PAYOUTS_METRICS_ADDRESS``)
serves the SDK's metrics and the payout counters and histograms, scraped over HTTP after
real payouts; its JSON log lines carry the workflow ID and the transaction hash."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from stellar_sdk import Keypair
from temporalio.client import Client, WorkflowFailureError

from payouts.client import PayoutClient
from payouts.models import PayoutState
from tests.devnet_harness import DevnetAdmin, DevnetProcess, free_port
from tests.payout_checks import payout, result_of, wait_for
from tests.payout_harness import payout_settings, worker_process


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = frozenset((k, v) for k, v in sample.labels.items() if k in ("asset", "reason", "le"))
            found[(sample.name, labels)] = sample.value
    return found


async def test_the_metrics_endpoint_counts_payouts_and_logs_carry_workflow_and_tx_hash(
    temporal_client: Client, devnet: DevnetProcess, admin: DevnetAdmin, tmp_path: Path
) -> None:
    """Two confirmed payouts and one that fails (its destination does not exist):
    ``payouts_confirmed_total`` 2, ``payouts_failed_total{reason="SimulationFailed"}`` 1, fee and
    time-to-confirm histograms with 2 observations each, the fee sum equal to the fees
    the payouts report, and the SDK's own ``temporal_*`` metrics beside them."""
    source, winner = await admin.new_account(), await admin.new_account()
    port = free_port()
    settings = payout_settings(devnet.url, source, f"sqlite:///{tmp_path / 'payouts.db'}",
                               PAYOUTS_METRICS_ADDRESS=f"127.0.0.1:{port}", PAYOUTS_LOG_FORMAT="json",
                               TEMPORAL_ADDRESS=temporal_client.service_client.config.target_host)  # fmt: skip
    payouts = PayoutClient(temporal_client, settings.TEMPORAL_TASK_QUEUE)
    log_path = tmp_path / "worker.log"
    with worker_process(settings, log_path):
        confirmed = [await result_of(await payouts.pay(payout(winner.public_key, "1.5"))) for _ in range(2)]
        failing = await payouts.pay(payout(Keypair.random().public_key, "1"))
        with pytest.raises(WorkflowFailureError):
            await failing.result()
        async with aiohttp.ClientSession() as http:

            async def scraped() -> str | None:
                async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
                    text = await response.text()
                return text if "payouts_failed" in text else None

            text = await wait_for(scraped, "the payout metrics", timeout=30)
    assert {o.state for o in confirmed} == {PayoutState.CONFIRMED}
    found = samples(text)
    xlm = frozenset({("asset", "XLM")})
    assert found[("payouts_confirmed_total", xlm)] == 2, text
    assert found[("payouts_failed_total", xlm | {("reason", "SimulationFailed")})] == 1, text
    assert found[("payouts_fee_charged_stroops_count", xlm)] == 2
    assert found[("payouts_fee_charged_stroops_sum", xlm)] == sum(o.fee_charged or 0 for o in confirmed)
    assert found[("payouts_time_to_confirm_count", xlm)] == 2
    assert found[("payouts_time_to_confirm_bucket", xlm | {("le", "+Inf")})] == 2
    assert any(name.startswith("temporal_workflow_completed") for name, _ in found), sorted({n for n, _ in found})
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    for outcome in confirmed:
        mine = [line for line in lines if line.get("workflow_id") == outcome.idempotency_key]
        assert any(line.get("tx_hash") == outcome.tx_hash and "CONFIRMED" in line["message"] for line in mine), mine
        assert any(line.get("tx_hash") == outcome.tx_hash and line.get("activity") for line in mine), mine
    assert source.secret not in log_path.read_text()
