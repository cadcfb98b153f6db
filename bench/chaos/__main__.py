"""``python -m bench.chaos``: one chaos run and its audit; exit code 1 on any violation."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from bench.chaos.run import ChaosConfig, run_chaos


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__)
    parser.add_argument("--payouts", type=int, default=100, help="K, the number of idempotency keys")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--ledger-ms", type=int, default=1000)
    parser.add_argument("--arrival-seconds", type=float, help="spread the starts over this long (default K / 2)")
    parser.add_argument("--tail-seconds", type=float, default=20.0, help="faults go on this long after the last start")
    parser.add_argument("--fault-interval", type=float, default=2.0, help="mean seconds between faults")
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--postgres-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--settle-timeout", type=float, default=600.0)
    parser.add_argument("--work", type=Path, help="logs and databases here (default: a new temporary folder)")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")  # fmt: skip
    config = ChaosConfig(
        payouts=args.payouts,
        seed=args.seed,
        ledger_ms=args.ledger_ms,
        arrival_seconds=args.arrival_seconds if args.arrival_seconds is not None else args.payouts / 2,
        tail_seconds=args.tail_seconds,
        fault_interval=args.fault_interval,
        database=args.db,
        postgres_url=args.postgres_url,
        settle_timeout=args.settle_timeout,
        work=args.work,
    )
    result = asyncio.run(run_chaos(config))
    print(result.render())
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
