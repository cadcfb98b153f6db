"""A misbehaving external signer (the HSM/KMS side of external-signing mode).

It finds payouts awaiting a signature through Temporal visibility (the ``PayoutStatus``
search attribute), reads what to sign from the ``status`` query, and answers as its plan
for the payout says, drawn from the run's seed:

- ``prompt``: the right signature at once;
- ``late``: the right signature after a while, sometimes after the envelope's window
  closed (the payout must then ask again for a new envelope);
- ``twice``: the right signature through both the signal and the update;
- ``wrong``: one or two wrong answers (another key, another network, garbage, a
  signature over something else), then the right one;
- ``never``: no answer at all; the payout must stay live, waiting, and pay nothing.
  Only for channel payouts: without channels a waiting payout holds the payout account.

A request is answered once per run: a run that follows an operator's reset or a
terminate-and-start-again may ask for the very same entry again (the key's recorded
authorization), and a real HSM signs it again.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import random
import time
from collections import Counter
from dataclasses import dataclass, field

from stellar_sdk import Keypair, Network, TransactionEnvelope
from stellar_sdk import xdr as x
from stellar_sdk.auth import authorize_entry
from temporalio.client import Client, WorkflowQueryFailedError, WorkflowUpdateRPCTimeoutOrCancelledError
from temporalio.service import RPCError

from bench.chaos.cluster import PASSPHRASE, ModeAccounts
from payouts.client import PayoutClient, SignatureRejected
from payouts.models import PayoutState, PayoutStatus

log = logging.getLogger("chaos.signer")

PLANS = ("prompt", "late", "twice", "wrong", "never")
RECHECK_SECONDS = 5.0
STATUS_QUERIES_AT_ONCE = 16  # a status query is a round trip through a worker


def sign_request(status: PayoutStatus, signer: Keypair, passphrase: str = PASSPHRASE) -> str:
    """The signed envelope, or (channels) the signed authorization entry, ``status`` asks for."""
    if status.authorization_xdr is not None:
        entry = x.SorobanAuthorizationEntry.from_xdr(status.authorization_xdr)
        creds = entry.credentials.address or entry.credentials.address_v2
        assert creds is not None
        return authorize_entry(entry, signer, creds.signature_expiration_ledger.uint32, passphrase).to_xdr()
    assert status.unsigned_xdr is not None
    envelope = TransactionEnvelope.from_xdr(status.unsigned_xdr, passphrase)
    envelope.sign(signer)
    return envelope.to_xdr()


def wrong_answer(status: PayoutStatus, signer: Keypair, rng: random.Random) -> str:
    kind = rng.choice(["other key", "other network", "garbage", "unsigned", "truncated"])
    if kind == "other key":
        return sign_request(status, Keypair.random())
    if kind == "other network":
        return sign_request(status, signer, Network.TESTNET_NETWORK_PASSPHRASE)
    if kind == "garbage":
        return base64.b64encode(rng.randbytes(rng.randint(1, 300))).decode()
    if kind == "unsigned":
        return status.authorization_xdr or status.unsigned_xdr or ""
    right = sign_request(status, signer)
    return right[: len(right) // 2]


@dataclass
class SignerStats:
    answers: Counter[str] = field(default_factory=Counter)
    rejected: int = 0  # wrong answers the engine refused through the update (as it must)
    accepted_wrong: list[str] = field(default_factory=list)  # wrong answers it accepted: violations


class ExternalSigner:
    def __init__(self, client: Client, modes: list[ModeAccounts], seed: int) -> None:
        self.modes = {m.task_queue: m for m in modes if m.mode.external}
        self.payouts = {queue: PayoutClient(client, queue) for queue in self.modes}
        self.client = client
        self.seed = seed
        self.plans: dict[str, str] = {}
        self.stats = SignerStats()
        self._handled: set[tuple[str, str, str]] = set()  # (key, run, what was asked)
        self._asked_at: dict[str, float] = {}  # key → when its status was last read
        self._tasks: set[asyncio.Task[None]] = set()
        self._queries = asyncio.Semaphore(STATUS_QUERIES_AT_ONCE)

    def plan_for(self, key: str, mode: ModeAccounts) -> str:
        if key not in self.plans:
            rng = random.Random(f"{self.seed}:plan:{key}")
            weights = [0.35, 0.2, 0.15, 0.2, 0.1 if mode.channels else 0.0]
            self.plans[key] = rng.choices(PLANS, weights)[0]
        return self.plans[key]

    async def run(self, stop: asyncio.Event) -> None:
        queues = " OR ".join(f"TaskQueue = '{q}'" for q in self.modes)
        query = f"ExecutionStatus = 'Running' AND PayoutStatus = 'AWAITING_SIGNATURE' AND ({queues})"
        while not stop.is_set():
            try:
                waiting = [(f.id, f.run_id, f.task_queue) async for f in self.client.list_workflows(query)]
            except RPCError as exc:
                log.debug("visibility: %s", exc)  # the Temporal server may be restarting
                waiting = []
            # Side by side: read one after another, hundreds of waiting payouts made the
            # signer, not the engine, the bottleneck of a long run.
            await asyncio.gather(
                *(self._consider(key, run, queue) for key, run, queue in waiting if queue in self.modes)
            )
            try:
                await asyncio.wait_for(stop.wait(), 0.5)
            except TimeoutError:
                pass
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _consider(self, key: str, run: str, queue: str) -> None:
        # A status query is a round trip through a worker: with hundreds of payouts
        # waiting, asking each on every poll loaded the Temporal server more than the
        # payouts did. A payout asks again only after a window closes (tens of seconds).
        now = time.monotonic()
        if self.plan_for(key, self.modes[queue]) == "never":
            if key not in self._asked_at:
                self.stats.answers["never"] += 1
                self._asked_at[key] = now
            return
        if now - self._asked_at.get(key, -RECHECK_SECONDS) < RECHECK_SECONDS:
            return
        self._asked_at[key] = now
        try:
            async with self._queries:
                status = await self.payouts[queue].status(key)
        except (RPCError, WorkflowQueryFailedError):  # the audit's replay reports a run that cannot replay
            return
        asked = status.authorization_xdr or status.unsigned_xdr
        if status.state != PayoutState.AWAITING_SIGNATURE or asked is None or (key, run, asked) in self._handled:
            return
        self._handled.add((key, run, asked))
        task = asyncio.create_task(self._answer(key, self.modes[queue], status))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, key: str, mode: ModeAccounts, status: PayoutStatus) -> None:
        plan = self.plan_for(key, mode)
        rng = random.Random(f"{self.seed}:{key}:{status.authorization_xdr or status.unsigned_xdr}")
        self.stats.answers[plan] += 1
        payouts = self.payouts[mode.task_queue]
        signer = mode.payer
        if plan == "late":
            # Mostly within the window; one time in five after it closed.
            await asyncio.sleep(rng.uniform(2, 10) if rng.random() < 0.8 else rng.uniform(30, 45))
        if plan == "wrong":
            for _ in range(rng.randint(1, 2)):
                await self._send_wrong(payouts, key, wrong_answer(status, signer, rng), rng)
        right = sign_request(status, signer)
        await self._send(payouts, key, right, via_update=rng.random() < 0.5)
        if plan == "twice":
            await asyncio.sleep(rng.uniform(0, 1))
            await self._send(payouts, key, right, via_update=rng.random() < 0.5)

    async def _send(self, payouts: PayoutClient, key: str, signed: str, *, via_update: bool) -> None:
        for _ in range(20):  # the Temporal server may be down for a moment
            try:
                if via_update:
                    await payouts.submit_signature(key, signed)
                else:
                    await payouts.submit_signed_xdr(key, signed)
                return
            except SignatureRejected as exc:
                # The right signature refused: too late (a new envelope is asked for) or
                # sent twice; the payout's next request gets its own answer.
                log.debug("%s: %s", key, exc)
                return
            except (RPCError, WorkflowUpdateRPCTimeoutOrCancelledError) as exc:
                log.debug("%s: %s", key, exc)
                await asyncio.sleep(1)

    async def _send_wrong(self, payouts: PayoutClient, key: str, signed: str, rng: random.Random) -> None:
        for _ in range(20):
            try:
                if rng.random() < 0.5:
                    await payouts.submit_signed_xdr(key, signed)
                    return
                await payouts.submit_signature(key, signed)
            except SignatureRejected:
                self.stats.rejected += 1
                return
            except (RPCError, WorkflowUpdateRPCTimeoutOrCancelledError):
                await asyncio.sleep(1)
                continue
            self.stats.accepted_wrong.append(key)
            return
