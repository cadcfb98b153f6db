"""Payout metrics, recorded by ``PayoutWorkflow`` when a payout finishes.

They go through the workflow's metric meter (:func:`temporalio.workflow.metric_meter`),
which records nothing while a history is replayed, so a payout is counted once however
often its workflow is replayed or moved between workers; and they are served by the
worker runtime's Prometheus endpoint next to the SDK's own metrics
(``PAYOUTS_METRICS_ADDRESS``, see :mod:`payouts.worker`).

Labels stay few and bounded: ``asset`` is ``XLM``, ``USDC`` or ``issued`` (never an
issuer), ``reason`` is a failure kind (an error type such as ``FeeCapExceeded``), never
a message, a key or an account.
"""

from __future__ import annotations

from temporalio import workflow

from payouts.messages import PayoutOutcome
from payouts.models import PayoutState

CONFIRMED = "payouts_confirmed"
FAILED = "payouts_failed"
BUILT = "payouts_built"
PARKED = "payouts_parked"
FEE_CHARGED = "payouts_fee_charged_stroops"
TIME_TO_CONFIRM = "payouts_time_to_confirm"
# Bucket bounds for the Prometheus endpoint (the SDK's defaults are for milliseconds).
BUCKETS: dict[str, list[float]] = {
    FEE_CHARGED: [100, 1_000, 10_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 10_000_000],
    TIME_TO_CONFIRM: [1, 2, 5, 10, 20, 30, 60, 120, 300, 900, 3600],
}


def asset_label(asset: str) -> str:
    return asset if asset in ("XLM", "USDC") else "issued"


def record_outcome(outcome: PayoutOutcome, asset: str, failure_kind: str | None) -> None:
    meter = workflow.metric_meter().with_additional_attributes({"asset": asset_label(asset)})
    if outcome.state == PayoutState.CONFIRMED:
        meter.create_counter(CONFIRMED, "payouts paid and confirmed on-chain").add(1)
        if outcome.fee_charged is not None:
            meter.create_histogram(FEE_CHARGED, "fee charged per confirmed payout", "stroops").record(
                outcome.fee_charged
            )
        waited = workflow.now() - workflow.info().start_time
        meter.create_histogram_timedelta(TIME_TO_CONFIRM, "from the run's start to confirmation").record(waited)
    elif outcome.state == PayoutState.FAILED:
        meter.create_counter(FAILED, "payouts failed (nothing paid), by kind").add(
            1, {"reason": failure_kind or "Unknown"}
        )
    elif outcome.state == PayoutState.BUILT:
        meter.create_counter(BUILT, "payouts built for submission elsewhere (build-only mode)").add(1)


def record_parked(asset: str, what: str) -> None:
    """A payout parked for an operator; ``what`` is ``envelope`` or ``authorization``."""
    meter = workflow.metric_meter().with_additional_attributes({"asset": asset_label(asset)})
    meter.create_counter(PARKED, "payouts parked: whether something handed out applied is unknown").add(
        1, {"what": what}
    )
