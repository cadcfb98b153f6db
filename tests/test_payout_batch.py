"""``starter.py batch`` and ``starter.py list``: a whole round from a file, and finding
payouts by their search attributes.

The batch runs against the real dev server and devnet, with a worker in this process; the
CLI runs in a thread of its own (it has its own event loop). What was paid is read from
the ledger, not from the summary the CLI prints.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from stellar_sdk import Keypair
from stellar_sdk.soroban_server_async import SorobanServerAsync
from temporalio.client import Client

from payouts.amounts import from_stroops
from payouts.batch import BatchFileError, read_batch_file
from tests.cli_harness import CliRun, run_cli
from tests.devnet_harness import DevnetAdmin, DevnetProcess
from tests.payout_checks import latest_ledger, successful_transfers, transfers, wait_for
from tests.payout_harness import payout_settings, running_worker
from tests.test_payout_channels import channel_settings


def write_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    columns = ["payout_id", "destination", "amount", "asset", "idempotency_key"]
    lines = [",".join(columns)] + [",".join(row.get(c, "") for c in columns) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def cli_env(temporal_client: Client, monkeypatch: pytest.MonkeyPatch) -> Any:
    def point_at(task_queue: str) -> None:
        monkeypatch.setenv("TEMPORAL_ADDRESS", temporal_client.service_client.config.target_host)
        monkeypatch.setenv("TEMPORAL_NAMESPACE", temporal_client.namespace)
        monkeypatch.setenv("TEMPORAL_TASK_QUEUE", task_queue)

    return point_at


async def workflows_on(client: Client, task_queue: str) -> list[str]:
    return [run.id async for run in client.list_workflows(f"TaskQueue = '{task_queue}'")]


def summary(run: CliRun) -> list[dict[str, Any]]:
    assert run.crash is None, run.describe()
    rows: list[dict[str, Any]] = json.loads(run.stdout)
    return rows


async def test_a_batch_of_200_rows_pays_each_row_once_and_a_rerun_pays_nothing(
    temporal_client: Client,
    devnet: DevnetProcess,
    admin: DevnetAdmin,
    server: SorobanServerAsync,
    tmp_path: Path,
    cli_env: Any,
) -> None:
    """200 rows over 10 destinations, 8 channels: exit 0, every row CONFIRMED in the
    summary with the hash of the one ledger transfer of its amount; the same file again
    reports the same payments and sends nothing."""
    database_url = f"sqlite:///{tmp_path / 'payouts.db'}"
    _, _, settings = await channel_settings(admin, devnet, database_url, 8)
    destinations = [(await admin.new_account()).public_key for _ in range(10)]
    batch_id = uuid.uuid4().hex[:8]
    rows = [
        {
            "payout_id": f"round-{i}",
            "destination": destinations[i % 10],
            "amount": from_stroops(10_000_000 + i),  # unique per row: the ledger tells rows apart
            "idempotency_key": f"batch-{batch_id}-{i}",
        }
        for i in range(200)
    ]
    file = write_csv(tmp_path / "round.csv", rows)
    cli_env(settings.TEMPORAL_TASK_QUEUE)
    start = await latest_ledger(server)
    async with running_worker(temporal_client, settings):
        first = await asyncio.to_thread(run_cli, ["batch", str(file), "--json", "--timeout", "600"])
        assert first.code == 0, first.describe()
        paid = [t for d in destinations for t in await successful_transfers(server, start, d)]
        second = await asyncio.to_thread(run_cli, ["batch", str(file), "--json", "--timeout", "600"])
        assert second.code == 0, second.describe()
    by_amount = Counter(t.stroops for t in paid)
    assert sorted(by_amount) == [10_000_000 + i for i in range(200)] and set(by_amount.values()) == {1}
    hash_of = {t.stroops: t.tx_hash for t in paid}
    reported = summary(first)
    assert [r["line"] for r in reported] == list(range(2, 202))
    for row, i in zip(reported, range(200), strict=True):
        assert row["idempotency_key"] == f"batch-{batch_id}-{i}" and row["state"] == "CONFIRMED", row
        assert row["tx_hash"] == hash_of[10_000_000 + i] and row["fee_charged"] > 0, row
    assert "progress: confirmed 200 · failed 0 · awaiting signature 0 · in flight 0" in first.stderr
    assert summary(second) == reported
    again = [t for d in destinations for t in await transfers(server, start, d)]
    assert len(again) == 200, "the second run of the file sent something"


async def test_a_batch_ends_when_only_signatures_are_missing_and_says_so(
    temporal_client: Client,
    devnet: DevnetProcess,
    admin: DevnetAdmin,
    tmp_path: Path,
    cli_env: Any,
) -> None:
    """External signing: the batch follows the payouts until each waits for a signature,
    reports them AWAITING_SIGNATURE and exits 1 (not everything confirmed)."""
    source = await admin.new_account()
    database_url = f"sqlite:///{tmp_path / 'payouts.db'}"
    settings = payout_settings(devnet.url, source, database_url, PAYOUTS_SIGN_WITH_HOT_KEY=False,
                               PAYOUT_HOT_SIGNER_SECRET=None)  # fmt: skip
    destination = (await admin.new_account()).public_key
    key = f"batch-{uuid.uuid4().hex[:8]}"
    file = tmp_path / "one.jsonl"
    file.write_text(json.dumps({"payout_id": "p1", "destination": destination, "amount": "5", "idempotency_key": key}))
    cli_env(settings.TEMPORAL_TASK_QUEUE)
    async with running_worker(temporal_client, settings):
        run = await asyncio.to_thread(run_cli, ["batch", str(file), "--json", "--timeout", "120"])
    assert run.code == 1, run.describe()
    [row] = summary(run)
    assert row["state"] == "AWAITING_SIGNATURE" and row["idempotency_key"] == key
    assert "awaiting signature 1 · in flight 0" in run.stderr


BAD_CSV = """payout_id,destination,amount,asset,idempotency_key
ok-1,{dest},10,,key-ok-1
bad-amount,{dest},-5,,key-bad-amount
bad-destination,GABC,10,,key-bad-destination
ok-2,{dest},1.5,XLM,key-ok-2
again,{dest},3,,key-ok-1
short,{dest},10
bad-asset,{dest},10,XLM:nobody,key-bad-asset
"""


async def test_a_file_with_bad_rows_starts_nothing_and_names_each_bad_row(
    temporal_client: Client, tmp_path: Path, cli_env: Any
) -> None:
    task_queue = f"batch-{uuid.uuid4().hex[:8]}"
    cli_env(task_queue)
    file = tmp_path / "round.csv"
    file.write_text(BAD_CSV.format(dest=Keypair.random().public_key))
    run = await asyncio.to_thread(run_cli, ["batch", str(file)])
    assert run.crash is None and run.code == 2, run.describe()
    assert "5 problem(s), nothing was started" in run.stderr, run.describe()
    for expected in (
        "line 3: amount:",
        "line 4: destination:",
        "line 6: idempotency_key: 'key-ok-1' is already used on line 2",
        "line 7: 3 cells; the header has 5",
        "line 8: asset:",
    ):
        assert expected in run.stderr, (expected, run.stderr)
    assert "line 2:" not in run.stderr and "line 5:" not in run.stderr
    assert await workflows_on(temporal_client, task_queue) == []


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("empty.csv", "", "no rows"),
        ("header.csv", "payout_id,destination,amount,idempotency_key\n", "no rows"),
        ("columns.csv", "payout_id,to,amount,idempotency_key\n", "unknown column 'to'"),
        ("missing.csv", "payout_id,destination,amount\n", "column 'idempotency_key' is missing"),
        ("rows.jsonl", '{"payout_id": "a"}\n\n[1]\n', "line 3: a row must be a JSON object, not list"),
        ("types.jsonl", '{"payout_id": "a", "destination": "G", "amount": 5, "idempotency_key": "k"}\n', "amount:"),
        ("latin1.csv", "payout_id\n\xe9\n", "not UTF-8"),
    ],
)
def test_bad_files_are_refused_with_the_line_and_the_rule(
    tmp_path: Path, name: str, content: str, expected: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content.encode("latin-1"))
    with pytest.raises(BatchFileError) as refused:
        read_batch_file(path)
    assert expected in str(refused.value)


def test_a_json_lines_file_reports_every_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text('{"payout_id": "a"}\n\n[1]\n{"x": 1}\nnot json\n')
    with pytest.raises(BatchFileError) as refused:
        read_batch_file(path)
    lines = [p.line for p in refused.value.problems]
    assert lines == [1, 3, 4, 5], refused.value.problems


async def test_list_finds_payouts_by_status_and_asset(
    temporal_client: Client,
    devnet: DevnetProcess,
    admin: DevnetAdmin,
    tmp_path: Path,
    cli_env: Any,
) -> None:
    """Two confirmed payouts and one awaiting a signature: ``list --status`` tells them
    apart through the PayoutStatus search attribute, and bad filters exit 2."""
    source = await admin.new_account()
    database_url = f"sqlite:///{tmp_path / 'payouts.db'}"
    hot = payout_settings(devnet.url, source, database_url)
    key = uuid.uuid4().hex[:8]
    file = tmp_path / "two.jsonl"
    destination = (await admin.new_account()).public_key
    file.write_text("\n".join(json.dumps({"payout_id": f"p{i}", "destination": destination, "amount": "2",
                                          "idempotency_key": f"list-{key}-{i}"}) for i in range(2)))  # fmt: skip
    cli_env(hot.TEMPORAL_TASK_QUEUE)
    async with running_worker(temporal_client, hot):
        done = await asyncio.to_thread(run_cli, ["batch", str(file), "--json", "--timeout", "120"])
    assert done.code == 0, done.describe()

    async def listed(*flags: str) -> set[str]:
        run = await asyncio.to_thread(run_cli, ["list", "--json", "--limit", "1000", *flags])
        assert run.code == 0, run.describe()
        return {p["idempotency_key"] for p in json.loads(run.stdout) if p["idempotency_key"].startswith(f"list-{key}")}

    expected = {f"list-{key}-0", f"list-{key}-1"}

    async def confirmed() -> set[str] | None:  # visibility may lag the close by a moment
        found = await listed("--status", "CONFIRMED", "--asset", "XLM")
        return found if found == expected else None

    assert await wait_for(confirmed, "the confirmed payouts in visibility", timeout=15) == expected
    assert await listed("--status", "FAILED", "--status", "AWAITING_SIGNATURE") == set()
    assert await listed("--asset", "USDC") == set()
    for flags, message in (
        (["--status", "PAID"], "invalid choice: 'PAID'"),
        (["--limit", "0"], "error: --limit: must be 1..10000"),
        (["--asset", "USD:nobody"], "error: --asset: asset issuer"),
    ):
        run = await asyncio.to_thread(run_cli, ["list", *flags])
        assert run.code == 2 and message in run.stderr, (flags, run.describe())
