"""``python -m devnet``: run the local Stellar network."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from aiohttp import web

from devnet.ledger import (
    DEFAULT_RETENTION_LEDGERS,
    PROTOCOL_VERSION,
    STANDALONE_PASSPHRASE,
    SUPPORTED_PROTOCOLS,
    Devnet,
)
from devnet.network_config import DEFAULT_MIN_TEMP_TTL, MAX_ENTRY_TTL, MAX_UINT32, PROTOCOL_MIN_TEMP_TTL
from devnet.server import DevnetServer


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="devnet", description="A local, protocol-faithful Stellar RPC.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--ledger-close-ms", type=int, default=5000, help="ledger cadence (default 5000)")
    parser.add_argument(
        "--state-file", type=Path, default=None, help="keep the ledger in this JSON file across restarts"
    )
    parser.add_argument("--passphrase", default=STANDALONE_PASSPHRASE)
    parser.add_argument("--max-tx-set-size", type=int, default=1000, help="transactions per ledger at most")
    parser.add_argument(
        "--min-temp-ttl",
        type=int,
        default=DEFAULT_MIN_TEMP_TTL,
        help=f"minimum TTL of temporary entries, in ledgers (default {DEFAULT_MIN_TEMP_TTL}, the protocol "
        "minimum; testnet runs 720)",
    )
    parser.add_argument(
        "--retention-ledgers",
        type=int,
        default=DEFAULT_RETENTION_LEDGERS,
        help=f"ledgers of transaction history kept (default {DEFAULT_RETENTION_LEDGERS:,}, stellar-rpc's "
        "HISTORY_RETENTION_WINDOW)",
    )
    parser.add_argument(
        "--protocol-version",
        type=int,
        default=PROTOCOL_VERSION,
        help=f"protocol the network runs: {' or '.join(map(str, SUPPORTED_PROTOCOLS))} (default {PROTOCOL_VERSION})",
    )
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    if args.ledger_close_ms < 10:
        parser.error("--ledger-close-ms must be at least 10")
    if args.ledger_close_ms > MAX_UINT32:
        parser.error(f"--ledger-close-ms must be at most {MAX_UINT32}")
    if not PROTOCOL_MIN_TEMP_TTL <= args.min_temp_ttl < MAX_ENTRY_TTL:
        parser.error(
            f"--min-temp-ttl must be between {PROTOCOL_MIN_TEMP_TTL} (the protocol minimum) and "
            f"{MAX_ENTRY_TTL - 1} (below the max entry TTL)"
        )
    if not 1 <= args.retention_ledgers <= MAX_UINT32:
        parser.error(f"--retention-ledgers must be between 1 and {MAX_UINT32}")
    if not 1 <= args.port <= 65535:
        parser.error("--port must be between 1 and 65535")
    if args.protocol_version not in SUPPORTED_PROTOCOLS:
        parser.error(
            f"--protocol-version must be {' or '.join(map(str, SUPPORTED_PROTOCOLS))}: the protocols devnet "
            f"models (those stellar-rpc 27.1.x serves), not {args.protocol_version}"
        )
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")

    try:
        devnet = Devnet(
            args.passphrase,
            retention_ledgers=args.retention_ledgers,
            max_tx_set_size=args.max_tx_set_size,
            state_file=args.state_file,
            min_temp_ttl=args.min_temp_ttl,
            ledger_close_ms=args.ledger_close_ms,
            protocol_version=args.protocol_version,
        )
    except (ValueError, KeyError, TypeError) as exc:  # a state file of another network, or not a state file
        parser.error(f"cannot use state file {args.state_file}: {exc}")
    url = f"http://{args.host}:{args.port}"
    server = DevnetServer(devnet, args.ledger_close_ms, url)
    print(f"devnet RPC URL:       {url}", flush=True)
    print(f"network passphrase:   {devnet.passphrase}", flush=True)
    print(f"friendbot URL:        {url}/friendbot", flush=True)
    web.run_app(server.app, host=args.host, port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
