"""Source-account leases (promise 5) in the DB, on SQLite and PostgreSQL: exclusive,
idempotent for their holder, crash-safe (a lease frees itself only after its envelope's
bound), and race-free when many threads, or processes, acquire at once."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update
from sqlalchemy.engine import Engine
from stellar_sdk import Keypair

from payouts import db, leases
from payouts.leases import LEASE_MARGIN_SECONDS, AccountLeaseRow, LeaseLost

POOL = [Keypair.random().public_key for _ in range(4)]


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    db.upgrade_database(database_url)
    engine = db.make_engine(database_url)
    leases.ensure_pool(engine, POOL, "channel")
    try:
        yield engine
    finally:
        engine.dispose()


def held(engine: Engine) -> dict[str, str | None]:
    return {lease.account: lease.holder for lease in leases.leases(engine)}


def expire(engine: Engine, account: str) -> None:
    with db.transaction(engine, write=True) as session:
        session.exec(  # type: ignore[call-overload]
            update(AccountLeaseRow)
            .where(AccountLeaseRow.account == account)  # type: ignore[arg-type]
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )


def test_each_account_goes_to_one_holder_and_the_pool_runs_dry(engine: Engine) -> None:
    got = [leases.acquire(engine, f"payout-{i}", POOL, 60) for i in range(len(POOL))]
    assert sorted(a for a in got if a is not None) == sorted(POOL)
    assert leases.acquire(engine, "one-too-many", POOL, 60) is None
    assert held(engine) == {account: f"payout-{i}" for i, account in enumerate(got) if account}


def test_acquire_is_idempotent_for_its_holder(engine: Engine) -> None:
    first = leases.acquire(engine, "payout-a", POOL, 60)
    assert leases.acquire(engine, "payout-a", POOL, 60) == first
    assert Counter(held(engine).values())["payout-a"] == 1


def test_release_frees_only_for_the_holder(engine: Engine) -> None:
    account = leases.acquire(engine, "payout-a", POOL[:1], 60)
    assert account == POOL[0]
    assert leases.release(engine, account, "payout-b") is False
    assert leases.acquire(engine, "payout-b", POOL[:1], 60) is None
    assert leases.release(engine, account, "payout-a") is True
    assert leases.release(engine, account, "payout-a") is False  # a repeated call
    assert leases.acquire(engine, "payout-b", POOL[:1], 60) == account


def test_a_bound_lease_lasts_until_its_envelope_is_dead(engine: Engine) -> None:
    """A crashed holder's lease frees itself only after its envelope's bound plus the margin."""
    account = leases.acquire(engine, "payout-a", POOL[:1], 1)
    assert account is not None
    max_time = int(time.time()) + 600
    leases.bind(engine, account, "payout-a", "ab" * 32, max_time)
    [lease] = [lease for lease in leases.leases(engine) if lease.account == account]
    assert lease.tx_hash == "ab" * 32
    assert lease.expires_at == datetime.fromtimestamp(max_time + LEASE_MARGIN_SECONDS, UTC)
    time.sleep(1.1)  # past the acquire-time hold of 1 s: the bound still holds it
    assert leases.acquire(engine, "payout-b", POOL[:1], 60) is None


def test_an_expired_lease_is_taken_over_and_its_old_holder_may_not_send(engine: Engine) -> None:
    account = leases.acquire(engine, "payout-a", POOL[:1], 60)
    assert account is not None
    expire(engine, account)
    assert leases.acquire(engine, "payout-b", POOL[:1], 60) == account
    with pytest.raises(LeaseLost):
        leases.bind(engine, account, "payout-a", "cd" * 32, int(time.time()) + 60)
    assert leases.release(engine, account, "payout-a") is False
    assert held(engine)[account] == "payout-b"


def test_accounts_out_of_rotation_are_not_leased(engine: Engine) -> None:
    leases.take_out_of_rotation(engine, POOL[0], "balance low")
    got = {leases.acquire(engine, f"payout-{i}", POOL, 60) for i in range(len(POOL))}
    assert POOL[0] not in got and None in got
    [parked] = [lease for lease in leases.leases(engine) if lease.account == POOL[0]]
    assert (parked.in_rotation, parked.note) == (False, "balance low")
    leases.put_in_rotation(engine, POOL[0])
    assert leases.acquire(engine, "payout-late", POOL, 60) == POOL[0]


def test_release_all_frees_what_a_finished_payout_held(engine: Engine) -> None:
    account = leases.acquire(engine, "payout-a", POOL, 60)
    leases.release_all(engine, "payout-a")
    assert account is not None and held(engine)[account] is None


def test_a_leased_account_cannot_be_removed(engine: Engine) -> None:
    account = leases.acquire(engine, "payout-a", POOL[:1], 60)
    assert account is not None
    with pytest.raises(LeaseLost):
        leases.remove(engine, account)
    leases.release(engine, account, "payout-a")
    leases.remove(engine, account)
    assert account not in held(engine)


def test_concurrent_acquires_never_share_an_account(engine: Engine) -> None:
    """32 threads with their own connections race for 4 accounts, over and over: at every
    moment each account has at most one holder (the DB, not the reads, settles it)."""
    holders: dict[str, str] = {}
    clashes: list[str] = []

    def work(worker: int) -> int:
        wins = 0
        for round_ in range(15):
            holder = f"w{worker}-r{round_}"
            account = leases.acquire(engine, holder, POOL, 60)
            if account is None:
                continue
            wins += 1
            if holders.setdefault(account, holder) != holder:
                clashes.append(f"{account}: {holders[account]} and {holder}")
            del holders[account]  # (the dict ops are atomic under the GIL)
            assert leases.release(engine, account, holder)
        return wins

    with ThreadPoolExecutor(max_workers=32) as pool:
        wins = sum(pool.map(work, range(32)))
    assert clashes == []
    assert wins > 0
