"""Replays every run a chaos run produced, as a worker picking a payout up would.

A payout whose history does not replay is stuck on its next worker: its workflow tasks
fail, its ``status`` query fails, and its signature update cannot be delivered. The live
run rarely shows it (a worker keeps a payout's state cached), so every history is
replayed with the workflow code in the default sandbox; a history that does not replay
is a violation, saved as JSON in the run's work directory for ``Replayer``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

from temporalio.client import Client, WorkflowHistory
from temporalio.worker import Replayer

from bench.chaos.audit import PlannedPayout
from workflows.payout import PayoutWorkflow


async def replay_histories(client: Client, planned: list[PlannedPayout], work: Path) -> tuple[int, list[str]]:
    """How many runs of the planned keys were replayed, and one violation per run whose
    history does not replay."""
    keys = {p.key for p in planned}
    queues = " OR ".join(f"TaskQueue = '{q}'" for q in sorted({p.task_queue for p in planned}))

    async def histories() -> AsyncIterator[WorkflowHistory]:
        async for found in client.list_workflows(queues):
            if found.id in keys:
                yield await client.get_workflow_handle(found.id, run_id=found.run_id).fetch_history()

    replayer = Replayer(workflows=[PayoutWorkflow], data_converter=client.data_converter)
    replayed, violations = 0, []
    async with replayer.workflow_replay_iterator(histories()) as results:
        async for result in results:
            replayed += 1
            if result.replay_failure is None:
                continue
            history = result.history
            saved = work / f"nondeterministic-{history.workflow_id.replace(':', '_')}-{history.run_id}.json"
            saved.write_text(history.to_json())
            violations.append(
                f"NONDETERMINISTIC {history.workflow_id} run {history.run_id}: {result.replay_failure} "
                f"(history in {saved})"
            )
    return replayed, violations
