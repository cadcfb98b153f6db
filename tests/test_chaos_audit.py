"""The chaos audit (bench/chaos/audit.py) on made-up facts: each kind of violation it must
catch, it catches, and a clean run passes. The real run is tests/test_chaos.py."""

from __future__ import annotations

from datetime import UTC, datetime

from stellar_sdk import Keypair

from bench.chaos.audit import AppliedTx, DbFact, PlannedPayout, TemporalFact, check, planned_stroops
from payouts import db
from payouts.models import PayoutState

PAYER, CHANNEL, WINNER = (Keypair.random().public_key for _ in range(3))
FEE = 100_000
CONFIRMED = PayoutState.CONFIRMED


def planned(index: int, mode: str = "hot") -> PlannedPayout:
    return PlannedPayout(index, f"k:{index}", mode, f"chaos-{mode}", PAYER, WINNER, planned_stroops(index))


def applied(p: PlannedPayout, tx_hash: str, *, successful: bool = True, stroops: int | None = None) -> AppliedTx:
    return AppliedTx(tx_hash, 10, successful, CHANNEL, FEE, (PAYER, WINNER, stroops or p.stroops))


def envelope(p: PlannedPayout, tx_hash: str, status: db.EnvelopeStatus) -> db.EnvelopeRecord:
    now = datetime.now(UTC)
    return db.EnvelopeRecord(
        1, p.key, 1, tx_hash, "AAAA", CHANNEL, 7, 0, status, FEE, 10, None, now, now, None, 9, None
    )


def paid_row(p: PlannedPayout, tx_hash: str) -> DbFact:
    return DbFact(CONFIRMED, tx_hash, None, (envelope(p, tx_hash, db.EnvelopeStatus.CONFIRMED),))


def moves(*paid: PlannedPayout, fees: int = 1) -> dict[str, int]:
    total = sum(p.stroops for p in paid)
    return {PAYER: -total, WINNER: total, CHANNEL: -fees * FEE}


def test_a_clean_run_passes_and_counts_outcomes() -> None:
    paid, failed, waiting, built = planned(0), planned(1), planned(2, "external-channels"), planned(3, "build-only")
    report = check(
        [paid, failed, waiting, built],
        [applied(paid, "a"), applied(failed, "b", successful=False)],
        {
            paid.key: TemporalFact("COMPLETED", CONFIRMED, "a"),
            failed.key: TemporalFact("FAILED", PayoutState.FAILED, error="fee 3 exceeds PAYOUTS_MAX_GAS_STROOPS=2"),
            waiting.key: TemporalFact("RUNNING", PayoutState.AWAITING_SIGNATURE),
            built.key: TemporalFact("COMPLETED", PayoutState.BUILT),
        },
        {
            paid.key: paid_row(paid, "a"),
            failed.key: DbFact(PayoutState.FAILED, None, "fee", (envelope(failed, "b", db.EnvelopeStatus.FAILED),)),
            waiting.key: DbFact(PayoutState.RECEIVED, None, None),
            built.key: DbFact(PayoutState.BUILT, None, None),
        },
        moves(paid, fees=2),
    )
    assert report.violations == []
    assert report.outcomes == {"confirmed": 1, "failed": 1, "awaiting signature": 1, "built": 1}
    assert report.failure_reasons == {"fee above cap": 1}


def test_two_payments_for_one_key_are_a_duplicate_shown_with_both_ledger_entries() -> None:
    p = planned(0)
    report = check(
        [p],
        [applied(p, "a"), applied(p, "b")],
        {p.key: TemporalFact("COMPLETED", CONFIRMED, "a")},
        {p.key: paid_row(p, "a")},
        {PAYER: -2 * p.stroops, WINNER: 2 * p.stroops, CHANNEL: -2 * FEE},
    )
    [duplicate] = [v for v in report.violations if v.kind == "duplicate"]
    text = duplicate.render()
    assert p.key in text and "tx a" in text and "tx b" in text and "envelope a" in text
    assert report.count("balance") == 2  # the payer and the winner moved twice the amount
    assert report.count("disagreement") == 1  # b was never recorded


def test_confirmed_without_a_payment_is_lost() -> None:
    p = planned(0)
    report = check([p], [], {p.key: TemporalFact("COMPLETED", CONFIRMED, "a")}, {p.key: DbFact(CONFIRMED, "a", None)},
                   moves())  # fmt: skip
    assert [v.kind for v in report.violations if v.key == p.key] == ["lost"]


def test_a_payout_still_in_flight_is_lost() -> None:
    p = planned(0)
    report = check([p], [], {p.key: TemporalFact("RUNNING", PayoutState.SUBMITTED)}, {}, moves(fees=0))
    assert [v.kind for v in report.violations] == ["lost"]


def test_failed_but_paid_is_a_disagreement() -> None:
    p = planned(0)
    report = check(
        [p],
        [applied(p, "a")],
        {p.key: TemporalFact("FAILED", PayoutState.FAILED, error="5 attempts used")},
        {p.key: DbFact(PayoutState.FAILED, None, "5 attempts used", (envelope(p, "a", db.EnvelopeStatus.EXPIRED),))},
        moves(p),
    )
    assert "disagreement" in [v.kind for v in report.violations]


def test_db_naming_another_hash_is_a_disagreement() -> None:
    p = planned(0)
    row = envelope(p, "a", db.EnvelopeStatus.CONFIRMED)
    report = check([p], [applied(p, "a")], {p.key: TemporalFact("COMPLETED", CONFIRMED, "a")},
                   {p.key: DbFact(CONFIRMED, "b", None, (row,))}, moves(p))  # fmt: skip
    assert [v.kind for v in report.violations] == ["disagreement"]


def test_failed_without_reason_or_db_record_is_a_disagreement() -> None:
    a, b = planned(0), planned(1)
    report = check(
        [a, b],
        [],
        {a.key: TemporalFact("FAILED", PayoutState.FAILED, error=""), b.key: TemporalFact("FAILED", error="x")},
        {a.key: DbFact(PayoutState.FAILED, None, None), b.key: DbFact(PayoutState.SUBMITTED, None, None)},
        moves(fees=0),
    )
    assert sorted(v.key for v in report.violations if v.kind == "disagreement") == [a.key, b.key]


def test_a_payment_no_key_asked_for_is_reported() -> None:
    p = planned(0)
    conflicting = applied(p, "c", stroops=planned_stroops(0, conflicting=True))
    report = check([p], [conflicting], {p.key: TemporalFact("FAILED", error="x")},
                   {p.key: DbFact(PayoutState.FAILED, None, "x")}, moves(fees=1))  # fmt: skip
    assert "unknown payment" in [v.kind for v in report.violations]


def test_balances_must_move_by_confirmed_amounts_and_fees() -> None:
    p = planned(0)
    facts = ({p.key: TemporalFact("COMPLETED", CONFIRMED, "a")}, {p.key: paid_row(p, "a")})
    assert check([p], [applied(p, "a")], *facts, moves(p)).violations == []
    skewed = {**moves(p), CHANNEL: -FEE - 1}
    assert [v.key for v in check([p], [applied(p, "a")], *facts, skewed).violations] == [CHANNEL]


def test_envelope_rows_must_match_the_ledger() -> None:
    p = planned(0)
    rows = (
        envelope(p, "dead-but-applied", db.EnvelopeStatus.EXPIRED),
        envelope(p, "paid", db.EnvelopeStatus.CONFIRMED),
        envelope(p, "never-sent", db.EnvelopeStatus.SUBMITTED),
    )
    report = check(
        [p],
        [
            applied(p, "dead-but-applied", successful=False),
            applied(p, "paid"),
            applied(p, "unrecorded", successful=False),
        ],
        {p.key: TemporalFact("COMPLETED", CONFIRMED, "paid")},
        {p.key: DbFact(CONFIRMED, "paid", None, rows)},
        moves(p, fees=3),
    )
    details = sorted(v.detail for v in report.violations)
    assert details == [
        "envelope dead-but-applied was declared dead, yet ledger 10 applied it",
        "envelope never-sent is still submitted after its payout ended",
        "ledger 10 applied unrecorded, which the DB never recorded",
    ]


# -- outside parties, operators' interventions and parked payouts ---------------------------

RELAYER, FILLER, SINK = (Keypair.random().public_key for _ in range(3))
OUTSIDE = frozenset({RELAYER, FILLER, SINK})


def relayed(p: PlannedPayout, tx_hash: str, *, successful: bool = True) -> AppliedTx:
    """A relayer's transaction carrying the payout account's authorization for ``p``."""
    return AppliedTx(tx_hash, 11, successful, RELAYER, FEE, (PAYER, WINNER, p.stroops))


def test_a_payment_carried_by_an_outside_relayer_is_the_keys_one_payment() -> None:
    p = planned(0, "hot-channels")
    rows = (envelope(p, "engine", db.EnvelopeStatus.EXPIRED),)  # dropped: the relayer used the nonce first
    report = check(
        [p],
        [relayed(p, "relayer")],
        {p.key: TemporalFact("COMPLETED", CONFIRMED, "relayer", "paid by a transaction this engine did not send")},
        {p.key: DbFact(CONFIRMED, "relayer", None, rows)},
        {PAYER: -p.stroops, WINNER: p.stroops, RELAYER: -FEE},
        OUTSIDE,
    )
    assert report.violations == []
    assert report.outcomes == {"confirmed": 1} and report.paid_by_outside == 1


def test_without_the_outside_accounts_a_relayers_payment_is_unrecorded() -> None:
    p = planned(0, "hot-channels")
    report = check(
        [p],
        [relayed(p, "relayer")],
        {p.key: TemporalFact("COMPLETED", CONFIRMED, "relayer")},
        {p.key: DbFact(CONFIRMED, "relayer", None)},
        {PAYER: -p.stroops, WINNER: p.stroops, RELAYER: -FEE},
    )
    assert [v.detail for v in report.violations] == ["ledger 11 applied relayer, which the DB never recorded"]


def test_a_relayers_payment_the_db_or_temporal_does_not_name_is_a_disagreement() -> None:
    a, b = planned(0, "hot-channels"), planned(1, "external-channels")
    report = check(
        [a, b],
        [relayed(a, "relayer-a"), relayed(b, "relayer-b")],
        {
            a.key: TemporalFact("COMPLETED", CONFIRMED, None),  # Temporal must name the relayer's hash
            b.key: TemporalFact("COMPLETED", CONFIRMED, "relayer-b"),
        },
        {a.key: DbFact(CONFIRMED, None, None), b.key: DbFact(CONFIRMED, None, None)},  # nor the DB's hash
        {PAYER: -a.stroops - b.stroops, WINNER: a.stroops + b.stroops, RELAYER: -2 * FEE},
        OUTSIDE,
    )
    assert sorted((v.key, v.detail) for v in report.violations) == [
        (a.key, "paid by relayer-a, but Temporal names None"),
        (b.key, "paid by relayer-b, but the DB says CONFIRMED None"),
    ]


def test_the_engine_and_a_relayer_both_paying_is_a_duplicate() -> None:
    p = planned(0, "hot-channels")
    report = check(
        [p],
        [applied(p, "engine"), relayed(p, "relayer")],
        {p.key: TemporalFact("COMPLETED", CONFIRMED, "engine")},
        {p.key: paid_row(p, "engine")},
        {PAYER: -2 * p.stroops, WINNER: 2 * p.stroops, CHANNEL: -FEE, RELAYER: -FEE},
        OUTSIDE,
    )
    assert report.count("duplicate") == 1


def test_a_relayers_failed_copy_is_only_its_fee() -> None:
    p = planned(0, "hot-channels")
    report = check(
        [p],
        [applied(p, "engine"), relayed(p, "relayer", successful=False)],
        {p.key: TemporalFact("COMPLETED", CONFIRMED, "engine")},
        {p.key: paid_row(p, "engine")},
        {PAYER: -p.stroops, WINNER: p.stroops, CHANNEL: -FEE, RELAYER: -FEE},
        OUTSIDE,
    )
    assert report.violations == [] and report.paid_by_outside == 0


def test_queue_fillers_transfers_are_outside_traffic_and_must_balance() -> None:
    p = planned(0)
    filler = AppliedTx("f", 12, True, FILLER, 3 * FEE, (FILLER, SINK, 1))
    facts = ({p.key: TemporalFact("COMPLETED", CONFIRMED, "a")}, {p.key: paid_row(p, "a")})
    balanced = {**moves(p), FILLER: -3 * FEE - 1, SINK: 1}
    report = check([p], [applied(p, "a"), filler], *facts, balanced, OUTSIDE)
    assert report.violations == [] and report.outside_transfers == 1
    # Not an outside account: a transfer nobody asked for.
    assert check([p], [applied(p, "a"), filler], *facts, balanced).count("unknown payment") == 1
    # The filler's transfer did not move the sink: a balance violation names it.
    skewed = {**balanced, SINK: 0}
    assert [v.key for v in check([p], [applied(p, "a"), filler], *facts, skewed, OUTSIDE).violations] == [SINK]


def test_a_parked_payout_is_a_violation_of_its_own_kind() -> None:
    a, b = planned(0, "hot-channels"), planned(1, "external-channels")
    report = check(
        [a, b],
        [],
        {
            a.key: TemporalFact("RUNNING", PayoutState.PARKED, error="nonce 7 ... answer with resolve_parked"),
            b.key: TemporalFact("RUNNING", PayoutState.SUBMITTED),
        },
        {a.key: DbFact(PayoutState.PARKED, None, "nonce 7"), b.key: DbFact(PayoutState.PARKED, None, "envelope")},
        moves(fees=0),
    )
    assert sorted((v.kind, v.key) for v in report.violations) == [("parked", a.key), ("parked", b.key)]
    assert report.outcomes == {"parked": 2}


def test_fee_cap_waits_end_paid_or_failed_and_both_pass() -> None:
    waited, gave_up = planned(0), planned(1)
    error = "fee 3000123 stroops exceeds PAYOUTS_MAX_GAS_STROOPS=2000000"
    report = check(
        [waited, gave_up],
        [applied(waited, "a")],
        {
            waited.key: TemporalFact("COMPLETED", CONFIRMED, "a"),
            gave_up.key: TemporalFact("FAILED", PayoutState.FAILED, error=error),
        },
        {waited.key: paid_row(waited, "a"), gave_up.key: DbFact(PayoutState.FAILED, None, error)},
        moves(waited),
    )
    assert report.violations == []
    assert report.outcomes == {"confirmed": 1, "failed": 1} and report.failure_reasons == {"fee above cap": 1}


def test_a_terminated_latest_run_is_lost() -> None:
    p = planned(0)
    report = check([p], [], {p.key: TemporalFact("TERMINATED")}, {p.key: DbFact(PayoutState.SUBMITTED, None, None)},
                   moves(fees=0))  # fmt: skip
    assert [v.kind for v in report.violations] == ["lost"]


def test_the_db_must_name_the_applied_hash_even_when_temporal_names_none() -> None:
    p = planned(0)
    rows = (envelope(p, "a", db.EnvelopeStatus.CONFIRMED),)
    report = check([p], [applied(p, "a")], {p.key: TemporalFact("COMPLETED", CONFIRMED, None)},
                   {p.key: DbFact(CONFIRMED, None, None, rows)}, moves(p))  # fmt: skip
    assert [v.detail for v in report.violations] == ["paid by a, but the DB says CONFIRMED None"]
