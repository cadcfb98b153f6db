"""Every devnet option is validated: a bad value is refused before anything starts, naming
the option and its rule.

``python -m devnet`` exits with status 2 and the flag's name and rule on stderr (nothing is
served, no state file is touched); ``Devnet(...)`` and ``QueueSettings(...)`` raise
``ValueError`` naming the field. The options come from three parts of devnet (the network
configuration and history, the protocol, the queue and fee statistics), so this file checks
them side by side.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from devnet.ledger import Devnet, QueueSettings
from devnet.surge import SorobanLedgerLimits

UINT32_OVER = str(2**32)


@pytest.mark.parametrize(
    ("flag", "value", "rule"),
    [
        ("--ledger-close-ms", "9", "--ledger-close-ms must be at least 10"),
        ("--ledger-close-ms", UINT32_OVER, "--ledger-close-ms must be at most 4294967295"),
        ("--min-temp-ttl", "15", "--min-temp-ttl must be between 16"),
        ("--min-temp-ttl", "3110400", "--min-temp-ttl must be between 16"),
        ("--retention-ledgers", "0", "--retention-ledgers must be between 1 and 4294967295"),
        ("--protocol-version", "25", "--protocol-version must be 26 or 27"),
        ("--max-tx-set-size", "0", "--max-tx-set-size must be at least 1"),
        ("--max-tx-set-size", UINT32_OVER, "--max-tx-set-size must be at most 4294967295"),
        ("--soroban-ledger-max-tx-count", "0", "--soroban-ledger-max-tx-count must be at least 1"),
        ("--queue-size-multiplier", "0", "--queue-size-multiplier must be at least 1"),
        ("--soroban-queue-size-multiplier", "-1", "--soroban-queue-size-multiplier must be at least 1"),
        ("--classic-fee-stats-retention-window", "0", "--classic-fee-stats-retention-window must be between 1"),
        ("--soroban-fee-stats-retention-window", "1001", "--soroban-fee-stats-retention-window must be between 1"),
    ],
)
def test_bad_flag_is_refused_with_its_name_and_rule(tmp_path: Path, flag: str, value: str, rule: str) -> None:
    state_file = tmp_path / "state.json"
    run = subprocess.run(
        [sys.executable, "-m", "devnet", "--port", "1", "--state-file", str(state_file), flag, value],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2, run
    assert rule in run.stderr, run.stderr
    assert "Traceback" not in run.stderr
    assert not state_file.exists()  # refused before any state was made


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"retention_ledgers": 0}, "retention_ledgers"),
        ({"max_tx_set_size": 0}, "max_tx_set_size"),
        ({"max_tx_set_size": 2**32}, "max_tx_set_size"),
        ({"protocol_version": 28}, "protocol_version"),
        ({"min_temp_ttl": 15}, "min_temp_ttl"),
        ({"ledger_close_ms": 0}, "ledger_close_ms"),
    ],
)
def test_bad_devnet_option_names_its_field(options: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=f"^{field}: "):
        Devnet(**options)


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"soroban_limits": SorobanLedgerLimits(tx_count=0)}, "soroban_limits.tx_count"),
        ({"queue_multiplier": 0}, "queue_multiplier"),
        ({"soroban_queue_multiplier": 0}, "soroban_queue_multiplier"),
        ({"classic_fee_window": 0}, "classic_fee_window"),
        ({"soroban_fee_window": 1001}, "soroban_fee_window"),
    ],
)
def test_bad_queue_setting_names_its_field(options: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=f"^{field}: "):
        QueueSettings(**options)
