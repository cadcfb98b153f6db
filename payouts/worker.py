"""Builds and runs the payout worker: ``PayoutWorkflow`` plus its activities on one task queue."""

from __future__ import annotations

import asyncio
import logging
import sys
from concurrent.futures import ThreadPoolExecutor

from stellar_sdk.soroban_server_async import SorobanServerAsync
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities.chain import ChainActivities
from activities.records import RecordActivities
from activities.settlement import SettlementActivities
from payouts import db, leases
from payouts.config import ConfigError, PayoutSettings, load_settings
from payouts.logs import configure_logging
from workflows import metrics
from workflows.payout import PayoutWorkflow

log = logging.getLogger("payouts.worker")

# The sandbox imports a workflow's module afresh for every workflow run, which cost about
# 10 ms of CPU per payout (profiled with bench/payout_throughput.py). The workflow module
# holds no state and does no I/O (everything else it imports is passed through already),
# so it is passed through too. The price: the sandbox no longer guards that module's own
# globals; the replay tests (tests/test_payout_history.py) run it in the default sandbox.
WORKFLOW_RUNNER = SandboxedWorkflowRunner(
    restrictions=SandboxRestrictions.default.with_passthrough_modules("workflows", "payouts", "activities")
)


def metrics_runtime(bind_address: str) -> Runtime:
    """A Temporal runtime serving Prometheus metrics on ``bind_address``: the SDK's
    (``temporal_*``: task latencies, schedule-to-start, slots, …) and the payouts'
    (:mod:`workflows.metrics`), durations in seconds."""
    prometheus = PrometheusConfig(
        bind_address=bind_address,
        counters_total_suffix=True,
        durations_as_seconds=True,
        histogram_bucket_overrides=metrics.BUCKETS,
    )
    return Runtime(telemetry=TelemetryConfig(metrics=prometheus))


async def connect(settings: PayoutSettings) -> Client:
    runtime = metrics_runtime(settings.PAYOUTS_METRICS_ADDRESS) if settings.PAYOUTS_METRICS_ADDRESS else None
    return await Client.connect(
        settings.TEMPORAL_ADDRESS,
        namespace=settings.TEMPORAL_NAMESPACE,
        data_converter=pydantic_data_converter,
        runtime=runtime,
    )


def build_worker(
    client: Client, settings: PayoutSettings, rpc: SorobanServerAsync, executor: ThreadPoolExecutor
) -> Worker:
    """A worker for ``settings.TEMPORAL_TASK_QUEUE``; the DB schema must be migrated first.

    The source-account pool (the payout account, or the channels) is registered in the
    lease table here, so every worker agrees on it.
    """
    engine = db.make_engine(settings.DATABASE_URL)
    chain = ChainActivities(settings, rpc, engine)
    leases.ensure_pool(engine, list(chain.keys.pool.accounts), chain.keys.pool.role)
    records = RecordActivities(settings, engine)
    settlement = SettlementActivities(rpc, engine, settings.PAYOUT_SOURCE_ACCOUNT, on_release=chain.lease_released)
    return Worker(
        client,
        task_queue=settings.TEMPORAL_TASK_QUEUE,
        workflows=[PayoutWorkflow],
        activities=[
            chain.build_envelope,
            chain.request_authorization,
            chain.authorization_state,
            chain.check_signature,
            settlement.settle_envelope,
            records.start_payout,
            records.record_envelope,
            records.finish_payout,
            records.park_payout,
            records.resume_payout,
            records.resolve_parked,
        ],
        activity_executor=executor,
        workflow_runner=WORKFLOW_RUNNER,
        # Every payout waiting for a lease or a confirmation stays cached: evicting one
        # means replaying its history on the next task.
        max_cached_workflows=10_000,
        # The answer to an update carries its argument, even a rejection: checked here, an
        # argument over the server's 2 MB limit (a hostile client's `submit_signature`)
        # would fail every workflow task of the payout. Sent on, the server refuses that
        # update and the payout goes on. The engine's own payloads are a few KB.
        disable_payload_error_limit=True,
    )


async def run_worker(settings: PayoutSettings | None = None) -> None:
    settings = settings or load_settings()
    db.upgrade_database(settings.DATABASE_URL)
    client = await connect(settings)
    async with SorobanServerAsync(settings.SOROBAN_RPC_URL) as rpc:
        with ThreadPoolExecutor(max_workers=16) as executor:
            worker = build_worker(client, settings, rpc, executor)
            log.info("worker on task queue %s, RPC %s", settings.TEMPORAL_TASK_QUEUE, settings.SOROBAN_RPC_URL)
            await worker.run()


def main() -> None:
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    configure_logging(settings.PAYOUTS_LOG_FORMAT)
    asyncio.run(run_worker(settings))
