"""Starts a real devnet process on a free port for tests, and talks to its admin side."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from stellar_sdk import Asset, Keypair, Network, SorobanServerAsync, TransactionBuilder, scval
from stellar_sdk import xdr as x

PASSPHRASE = Network.STANDALONE_NETWORK_PASSPHRASE


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class DevnetProcess:
    url: str
    process: subprocess.Popen[bytes]

    def alive(self) -> bool:
        return self.process.poll() is None


@contextmanager
def run_devnet(ledger_close_ms: int = 200, *extra: str, state_file: Path | None = None) -> Iterator[DevnetProcess]:
    port = free_port()
    args = [sys.executable, "-m", "devnet", "--port", str(port), "--ledger-close-ms", str(ledger_close_ms), *extra]
    if state_file is not None:
        args += ["--state-file", str(state_file)]
    # stderr goes to a file, not a pipe: nobody drains a pipe while tests run, and once ~64 KB
    # of log lines fill it, devnet blocks on its next write and stops answering.
    stderr = tempfile.TemporaryFile()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=stderr, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    try:
        while True:
            try:
                urllib.request.urlopen(f"{url}/admin/stats", timeout=1).read()
                break
            except (urllib.error.URLError, ConnectionError):
                if process.poll() is not None or time.monotonic() > deadline:
                    if process.poll() is None:
                        process.kill()
                        process.wait()
                    stderr.seek(0)
                    raise RuntimeError(f"devnet did not start: {stderr.read().decode(errors='replace')}") from None
                time.sleep(0.05)
        try:
            yield DevnetProcess(url, process)
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
    finally:
        stderr.close()


class DevnetAdmin:
    """Friendbot, the admin endpoint, and raw JSON-RPC over aiohttp."""

    def __init__(self, url: str, session: aiohttp.ClientSession) -> None:
        self.url = url
        self.session = session

    async def fund(self, address: str) -> dict[str, Any]:
        async with self.session.get(f"{self.url}/friendbot", params={"addr": address}) as response:
            body: dict[str, Any] = await response.json()
            if response.status != 200:
                raise RuntimeError(f"friendbot: {response.status} {body}")
            return body

    async def new_account(self) -> Keypair:
        keypair = Keypair.random()
        await self.fund(keypair.public_key)
        return keypair

    async def admin(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        async with self.session.request(method, f"{self.url}/admin/{path}", json=body) as response:
            payload = await response.json()
            if response.status != 200:
                raise RuntimeError(f"admin {path}: {response.status} {payload}")
            return payload

    async def faults(self, **body: Any) -> Any:
        return await self.admin("POST", "faults", body)

    async def clear_faults(self) -> Any:
        return await self.admin("DELETE", "faults")

    async def close_ledger(self) -> int:
        return int((await self.admin("POST", "close-ledger"))["sequence"])

    async def close_ledgers(self, count: int) -> int:
        """Close ``count`` ledgers at once (``POST /admin/close-ledgers``); the latest sequence."""
        return int((await self.admin("POST", "close-ledgers", {"count": count}))["sequence"])

    async def rpc(self, method: str, params: Any = None, request_id: Any = 1) -> tuple[int, dict[str, Any]]:
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params is not None:
            message["params"] = params
        async with self.session.post(self.url, json=message) as response:
            return response.status, await response.json()

    async def post_raw(self, data: bytes) -> tuple[int, dict[str, Any]]:
        async with self.session.post(self.url, data=data, headers={"Content-Type": "application/json"}) as response:
            return response.status, await response.json(content_type=None)


@asynccontextmanager
async def devnet_clients(process: DevnetProcess) -> AsyncIterator[tuple[DevnetAdmin, SorobanServerAsync]]:
    """The admin side and an SDK client of a devnet a test module runs for itself."""
    async with aiohttp.ClientSession() as session, SorobanServerAsync(process.url) as server:
        yield DevnetAdmin(process.url, session), server


async def sac_transfer_envelope(
    server: SorobanServerAsync,
    source: Keypair,
    destination: str,
    amount: int,
    asset: Asset | None = None,
    timeout: int = 300,
    sign: bool = True,
) -> Any:
    """A prepared (simulated) SAC ``transfer`` from ``source`` to ``destination``."""
    asset = asset or Asset.native()
    account = await server.load_account(source.public_key)
    tx = (
        TransactionBuilder(account, PASSPHRASE, base_fee=100)
        .append_invoke_contract_function_op(
            asset.contract_id(PASSPHRASE),
            "transfer",
            [scval.to_address(source.public_key), scval.to_address(destination), scval.to_int128(amount)],
        )
        .set_timeout(timeout)
        .build()
    )
    prepared = await server.prepare_transaction(tx)
    if sign:
        prepared.sign(source)
    return prepared


def result_code(error_result_xdr: str) -> str:
    return x.TransactionResult.from_xdr(error_result_xdr).result.code.name
