"""The short chaos run of issues 6 and 13, on every push: K payouts across all operating
modes while every devnet fault, queue surges by outside filler accounts, a relayer
front-running the engine with a copied authorization, worker SIGKILLs (one while the
ledger moves past every authorization the worker issued), Temporal server restarts, app
DB outages, an operator's resets and terminate-and-start-again, duplicate and conflicting
starts and a misbehaving external signer hit the engine; then the independent audit
(bench/chaos/audit.py) and a replay of every run's history (bench/chaos/replay.py). Any
duplicate, lost payout, disagreement, parked payout or history that does not replay fails
the test with the audit's report: the keys, their envelopes and the ledger entries.

``CHAOS_SEED`` picks another seed (the fault sequence and the signer's plans follow from
it); ``CHAOS_PAYOUTS`` another K. The long run is ``python -m bench.chaos``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench.chaos.faults import WEIGHTS
from bench.chaos.run import ChaosConfig, run_chaos
from tests.pg_harness import postgres_admin_url

SEED = int(os.environ.get("CHAOS_SEED", "20261129"))
PAYOUTS = int(os.environ.get("CHAOS_PAYOUTS", "100"))


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_chaos_run_pays_each_key_at_most_once_and_the_books_agree(backend: str, tmp_path: Path) -> None:
    payouts = PAYOUTS if backend == "sqlite" else max(10, PAYOUTS // 2)
    config = ChaosConfig(
        payouts=payouts,
        seed=SEED,
        ledger_ms=1000,
        arrival_seconds=payouts / 2,
        tail_seconds=15,
        fault_interval=1.5,
        database=backend,
        postgres_url=postgres_admin_url() if backend == "postgresql" else ChaosConfig.postgres_url,
        settle_timeout=300,
        work=tmp_path,
    )
    result = await run_chaos(config)
    print(result.render())
    assert result.ok, result.render()
    # The run did what it claims: every kind of fault, every outcome path exercised.
    assert set(result.faults) == set(WEIGHTS), result.render()
    assert result.report.outcomes["confirmed"] > 0 and result.report.outcomes["built"] > 0
    # A front-run is counted only once the relayer's copy paid: the audit found that
    # payment as the key's one, named by the DB and Temporal (a copy that landed after the
    # relayer stopped looking counts in the audit only).
    assert result.report.paid_by_outside >= len(result.outside.front_runs) > 0, result.render()
    assert result.outside.surge.answers["PENDING"] > 0, result.render()
    assert result.starts["concurrent duplicate starts"] > 0
    assert sum(result.report.outcomes.values()) == payouts
    # Every run replays (a NONDETERMINISTIC violation otherwise): each key's, resets' too.
    assert result.replayed >= payouts + result.outside.resets, result.render()
