"""Shared fixtures: one devnet process per test session (fast ledgers), SDK clients, the
real Temporal dev server, and the app DB on SQLite and PostgreSQL (tests/pg_harness.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
from stellar_sdk import SorobanServerAsync
from temporalio.client import Client

from tests.devnet_harness import DevnetAdmin, DevnetProcess, run_devnet
from tests.payout_harness import temporal_environment
from tests.pg_harness import database_url, postgres_database, postgres_url

__all__ = ["database_url", "postgres_database", "postgres_url"]  # fixtures for every test module


@pytest.fixture(scope="session")
def devnet() -> Iterator[DevnetProcess]:
    with run_devnet(ledger_close_ms=250) as process:
        yield process


@pytest.fixture(scope="session")
async def http_session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture(scope="session")
def admin(devnet: DevnetProcess, http_session: aiohttp.ClientSession) -> DevnetAdmin:
    return DevnetAdmin(devnet.url, http_session)


@pytest.fixture(scope="session")
async def server(devnet: DevnetProcess) -> AsyncIterator[SorobanServerAsync]:
    async with SorobanServerAsync(devnet.url) as soroban:
        yield soroban


@pytest.fixture(scope="session")
async def temporal_client() -> AsyncIterator[Client]:
    async with temporal_environment() as env:
        yield env.client
