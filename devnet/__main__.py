"""``python -m devnet``: run the local Stellar network."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from aiohttp import web

from devnet.fee_stats import DEFAULT_CLASSIC_WINDOW, DEFAULT_SOROBAN_WINDOW, MAX_WINDOW
from devnet.ledger import (
    DEFAULT_MAX_TX_SET_SIZE,
    DEFAULT_RETENTION_LEDGERS,
    PROTOCOL_VERSION,
    STANDALONE_PASSPHRASE,
    SUPPORTED_PROTOCOLS,
    Devnet,
    QueueSettings,
)
from devnet.network_config import DEFAULT_MIN_TEMP_TTL, MAX_ENTRY_TTL, MAX_UINT32, PROTOCOL_MIN_TEMP_TTL
from devnet.server import DevnetServer
from devnet.surge import DEFAULT_QUEUE_MULTIPLIER, DEFAULT_SOROBAN_LEDGER_MAX_TX_COUNT, SorobanLedgerLimits


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="devnet", description="A local, protocol-faithful Stellar RPC.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--ledger-close-ms",
        type=int,
        default=5000,
        help="ledger cadence, also the network's ledger_target_close_time_milliseconds (CONFIG_SETTING_SCP_TIMING) "
        "and the expected close time of the submission bound (default 5000, as mainnet)",
    )
    parser.add_argument(
        "--state-file", type=Path, default=None, help="keep the ledger in this JSON file across restarts"
    )
    parser.add_argument("--passphrase", default=STANDALONE_PASSPHRASE)
    parser.add_argument(
        "--max-tx-set-size",
        type=int,
        default=DEFAULT_MAX_TX_SET_SIZE,
        help=f"classic operations per ledger (default {DEFAULT_MAX_TX_SET_SIZE}, as mainnet's maxTxSetSize)",
    )
    parser.add_argument(
        "--soroban-ledger-max-tx-count",
        type=int,
        default=DEFAULT_SOROBAN_LEDGER_MAX_TX_COUNT,
        help=f"Soroban transactions per ledger (default {DEFAULT_SOROBAN_LEDGER_MAX_TX_COUNT}, mainnet's)",
    )
    parser.add_argument(
        "--queue-size-multiplier",
        type=int,
        default=DEFAULT_QUEUE_MULTIPLIER,
        help=f"classic queue room in ledgers (default {DEFAULT_QUEUE_MULTIPLIER}, as stellar-core)",
    )
    parser.add_argument(
        "--soroban-queue-size-multiplier",
        type=int,
        default=DEFAULT_QUEUE_MULTIPLIER,
        help=f"Soroban queue room in ledgers (default {DEFAULT_QUEUE_MULTIPLIER}, as stellar-core)",
    )
    parser.add_argument(
        "--classic-fee-stats-retention-window",
        type=int,
        default=DEFAULT_CLASSIC_WINDOW,
        help=f"ledgers in getFeeStats' inclusionFee (default {DEFAULT_CLASSIC_WINDOW}, as stellar-rpc)",
    )
    parser.add_argument(
        "--soroban-fee-stats-retention-window",
        type=int,
        default=DEFAULT_SOROBAN_WINDOW,
        help=f"ledgers in getFeeStats' sorobanInclusionFee (default {DEFAULT_SOROBAN_WINDOW}, as stellar-rpc)",
    )
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
    sizes = ("max_tx_set_size", "soroban_ledger_max_tx_count", "queue_size_multiplier", "soroban_queue_size_multiplier")
    for flag in sizes:
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be at least 1")
    if args.max_tx_set_size > MAX_UINT32:
        parser.error(f"--max-tx-set-size must be at most {MAX_UINT32} (the ledger header's maxTxSetSize is a uint32)")
    for flag in ("classic_fee_stats_retention_window", "soroban_fee_stats_retention_window"):
        if not 1 <= getattr(args, flag) <= MAX_WINDOW:
            parser.error(f"--{flag.replace('_', '-')} must be between 1 and {MAX_WINDOW}")
    settings = QueueSettings(
        soroban_limits=SorobanLedgerLimits(tx_count=args.soroban_ledger_max_tx_count),
        queue_multiplier=args.queue_size_multiplier,
        soroban_queue_multiplier=args.soroban_queue_size_multiplier,
        classic_fee_window=args.classic_fee_stats_retention_window,
        soroban_fee_window=args.soroban_fee_stats_retention_window,
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
            queue_settings=settings,
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
