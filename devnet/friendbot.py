"""Friendbot, as on stellar/quickstart: funds a new account with 10,000 XLM.

Each funding is a real CreateAccount transaction from the network root, submitted
through the same queue as every other transaction. Requests that arrive together are
batched into one transaction (up to 100 operations), so many tests can fund accounts in
the same ledger. The answer is Horizon-style JSON with that transaction's hash and XDRs.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from stellar_sdk import Account, Keypair, StrKey, TransactionBuilder

from devnet.ledger import Devnet
from devnet.ledger_clock import LedgerClock

log = logging.getLogger("devnet.friendbot")

STARTING_BALANCE = "10000"
MAX_BATCH = 100
# A batch that is neither applied nor dropped within this many ledgers has failed.
MAX_WAIT_LEDGERS = 6
# Friendbot's time bound, in seconds, on a network of the usual pace.
TIMEOUT_S = 300


class FriendbotError(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclass
class _Request:
    address: str
    answer: asyncio.Future[dict[str, Any]]


class Friendbot:
    def __init__(self, devnet: Devnet, clock: LedgerClock) -> None:
        self.devnet = devnet
        self.clock = clock
        self._waiting: list[_Request] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def timeout_s(self) -> int:
        """The transaction's time bound: 300 s, or longer on a network whose expected close
        time makes the submission bound (maxTime ≥ last close + 2 × expected close time, see
        ``Devnet.upper_bound_close_time_offset``) reach further, so that the transaction
        stays valid through the ledgers friendbot waits for."""
        expected_s = -(-self.devnet.network_config.ledger_close_ms // 1000)
        return max(TIMEOUT_S, (MAX_WAIT_LEDGERS + 2) * expected_s)

    async def fund(self, address: str) -> dict[str, Any]:
        if not StrKey.is_valid_ed25519_public_key(address):
            raise FriendbotError(400, "addr: must be a G… account ID (StrKey ed25519 public key)")
        if self.devnet.account(address) is not None or any(r.address == address for r in self._waiting):
            raise FriendbotError(400, f"account {address} already exists (createAccountAlreadyExist)")
        request = _Request(address, asyncio.get_running_loop().create_future())
        self._waiting.append(request)
        self._wake.set()
        return await request.answer

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._waiting:
                batch, self._waiting = self._waiting[:MAX_BATCH], self._waiting[MAX_BATCH:]
                try:
                    await self._fund_batch(batch)
                except Exception as exc:  # a friendbot bug must fail its callers, not hang them
                    log.exception("friendbot batch failed")
                    self._fail(batch, f"friendbot failed: {type(exc).__name__}")

    async def _fund_batch(self, batch: list[_Request]) -> None:
        root = self.devnet.root
        account = self.devnet.account(root.public_key)
        assert account is not None
        builder = TransactionBuilder(
            Account(root.public_key, account.seq_num), self.devnet.passphrase, base_fee=100
        ).set_timeout(self.timeout_s())
        for request in batch:
            builder.append_create_account_op(request.address, STARTING_BALANCE)
        envelope = builder.build()
        envelope.sign(Keypair.from_secret(root.secret))
        sent = self.devnet.submit(envelope.to_xdr())
        tx_hash = sent.hash
        if sent.status != "PENDING":
            self._fail(batch, f"friendbot transaction was not accepted: {sent.status}")
            return
        for _ in range(MAX_WAIT_LEDGERS):
            await self.clock.next_close()
            record = self.devnet.transactions.get(tx_hash)
            if record is not None:
                if not record.successful:
                    self._fail(batch, f"friendbot transaction {tx_hash} failed")
                    return
                body = {
                    "successful": True,
                    "hash": tx_hash,
                    "ledger": record.ledger,
                    "envelope_xdr": record.envelope_xdr,
                    "result_xdr": record.result_xdr,
                    "result_meta_xdr": record.result_meta_xdr,
                }
                for request in batch:
                    if not request.answer.done():
                        request.answer.set_result(body)
                return
            if tx_hash not in self.devnet.queue:
                break
        self._fail(batch, f"friendbot transaction {tx_hash} was not included")

    @staticmethod
    def _fail(batch: list[_Request], detail: str) -> None:
        log.warning(detail)
        for request in batch:
            if not request.answer.done():
                request.answer.set_exception(FriendbotError(500, detail))
