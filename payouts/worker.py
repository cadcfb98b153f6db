"""Builds and runs the payout worker: ``PayoutWorkflow`` plus its activities on one task queue."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

from stellar_sdk.soroban_server_async import SorobanServerAsync
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Worker

from activities.chain import ChainActivities
from activities.records import RecordActivities
from payouts import db
from payouts.config import PayoutSettings, load_settings
from workflows.payout import PayoutWorkflow

log = logging.getLogger("payouts.worker")


async def connect(settings: PayoutSettings) -> Client:
    return await Client.connect(
        settings.TEMPORAL_ADDRESS, namespace=settings.TEMPORAL_NAMESPACE, data_converter=pydantic_data_converter
    )


def build_worker(
    client: Client, settings: PayoutSettings, rpc: SorobanServerAsync, executor: ThreadPoolExecutor
) -> Worker:
    """A worker for ``settings.TEMPORAL_TASK_QUEUE``; the DB schema must be migrated first."""
    chain = ChainActivities(settings, rpc)
    records = RecordActivities(settings, db.make_engine(settings.DATABASE_URL))
    return Worker(
        client,
        task_queue=settings.TEMPORAL_TASK_QUEUE,
        workflows=[PayoutWorkflow],
        activities=[
            chain.build_envelope,
            chain.sign_with_hot_key,
            chain.check_signature,
            chain.submit_envelope,
            chain.look_up_envelope,
            records.start_payout,
            records.record_envelope,
            records.mark_submitted,
            records.settle_envelope,
            records.finish_payout,
        ],
        activity_executor=executor,
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
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    asyncio.run(run_worker())
