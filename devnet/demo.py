"""``python -m devnet.demo``: the local network at work, end to end.

Starts devnet, funds two accounts through friendbot, pays one from the other through the
XLM Stellar Asset Contract (simulate → sign → sendTransaction → getTransaction), and
prints what happened. Everything goes over HTTP with the unmodified stellar-sdk.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import subprocess
import sys
import time
from decimal import Decimal

import aiohttp
from stellar_sdk import Asset, Keypair, TransactionBuilder, scval
from stellar_sdk import xdr as x
from stellar_sdk.soroban_rpc import GetTransactionStatus, SendTransactionStatus
from stellar_sdk.soroban_server_async import SorobanServerAsync

STROOPS_PER_XLM = 10_000_000


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _wait_until_up(url: str, process: subprocess.Popen[bytes]) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(300):
            if process.poll() is not None:
                raise RuntimeError("devnet exited during start-up")
            try:
                async with session.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "getHealth"}) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError("devnet did not answer within 30 s")


async def _xlm_balance(server: SorobanServerAsync, account_id: str) -> Decimal:
    key = x.LedgerKey(
        x.LedgerEntryType.ACCOUNT, account=x.LedgerKeyAccount(Keypair.from_public_key(account_id).xdr_account_id())
    )
    entries = (await server.get_ledger_entries([key])).entries or []
    account = x.LedgerEntryData.from_xdr(entries[0].xdr).account
    assert account is not None
    return Decimal(account.balance.int64) / STROOPS_PER_XLM


async def run_demo(url: str, amount_xlm: Decimal) -> int:
    async with SorobanServerAsync(url) as server, aiohttp.ClientSession() as session:
        network = await server.get_network()
        print(f"network: {network.passphrase!r}, protocol {network.protocol_version}")
        payer, payee = Keypair.random(), Keypair.random()
        for name, keypair in (("payer", payer), ("payee", payee)):
            async with session.get(f"{network.friendbot_url}", params={"addr": keypair.public_key}) as response:
                funded = await response.json()
                if response.status != 200:
                    print(f"friendbot failed for the {name}: {funded}", file=sys.stderr)
                    return 1
            print(f"funded {name} {keypair.public_key} in ledger {funded['ledger']} (tx {funded['hash'][:12]}…)")

        before = await _xlm_balance(server, payee.public_key)
        stroops = int(amount_xlm * STROOPS_PER_XLM)
        sac = Asset.native().contract_id(network.passphrase)
        tx = (
            TransactionBuilder(await server.load_account(payer.public_key), network.passphrase, base_fee=100)
            .append_invoke_contract_function_op(
                sac,
                "transfer",
                [scval.to_address(payer.public_key), scval.to_address(payee.public_key), scval.to_int128(stroops)],
            )
            .set_timeout(60)
            .build()
        )
        prepared = await server.prepare_transaction(tx)
        prepared.sign(payer)
        print(f"paying {amount_xlm} XLM through the XLM SAC {sac}: fee bid {prepared.transaction.fee} stroops")
        sent = await server.send_transaction(prepared)
        if sent.status != SendTransactionStatus.PENDING:
            print(f"sendTransaction answered {sent.status.value}: {sent.error_result_xdr}", file=sys.stderr)
            return 1
        result = await server.poll_transaction(sent.hash, max_attempts=60)
        if result.status != GetTransactionStatus.SUCCESS:
            print(f"transaction {sent.hash} ended {result.status.value}", file=sys.stderr)
            return 1
        fee = x.TransactionResult.from_xdr(result.result_xdr or "").fee_charged.int64
        after = await _xlm_balance(server, payee.public_key)
        print(f"confirmed: tx {sent.hash} in ledger {result.ledger}, fee charged {fee} stroops")
        print(f"payee balance: {before} XLM -> {after} XLM")
        return 0 if after - before == amount_xlm else 1


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="devnet.demo", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--amount", type=Decimal, default=Decimal("25.5"), help="XLM to pay (default 25.5)")
    parser.add_argument("--ledger-close-ms", type=int, default=1000, help="devnet ledger cadence (default 1000)")
    args = parser.parse_args(argv)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [sys.executable, "-m", "devnet", "--port", str(port), "--ledger-close-ms", str(args.ledger_close_ms)]
    )
    started = time.monotonic()
    try:
        asyncio.run(_wait_until_up(url, process))
        code = asyncio.run(run_demo(url, args.amount))
    finally:
        process.terminate()
        process.wait(timeout=10)
    print(f"demo {'succeeded' if code == 0 else 'FAILED'} in {time.monotonic() - started:.1f} s")
    sys.exit(code)


if __name__ == "__main__":
    main()
