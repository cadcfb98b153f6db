"""Batch payouts from a file (``starter.py batch FILE``): read, validate, start, follow.

The file is CSV with a header row, or JSON lines (one object per line; blank lines are
skipped). Either way a row has the fields of :class:`~payouts.models.PayoutRequest`:
``payout_id``, ``destination``, ``amount``, ``asset`` (optional, default ``XLM``) and
``idempotency_key``. The key is required, not derived from ``payout_id``: a payroll
that reuses payout IDs next month must not have its new payouts taken for last
month's (they would be reported as done and never paid).

Every row is checked before anything starts: a file with a bad row starts nothing, and
the error lists every bad row by line number (a key used twice in the file is a bad row
too). Then each row becomes a payout through :class:`~payouts.client.PayoutClient`, so
re-running the same file pays nothing twice: payouts that finished are reported again,
running ones are followed, and only payouts that failed (and so provably paid nothing)
run again.

:func:`follow` reports progress until every payout has settled, or is waiting for a
signature only an outside signer can give (unless asked to wait for those too).
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError
from rich.console import JustifyMethod
from rich.table import Table
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError
from temporalio.service import RPCError

from payouts.amounts import hide_secret_seeds
from payouts.client import PayoutClient
from payouts.errors import IdempotencyConflict
from payouts.messages import PayoutOutcome
from payouts.models import PayoutRequest, PayoutState
from workflows.payout import PAYOUT_STATUS

MAX_FILE_BYTES = 64 * 1024 * 1024
MAX_ROWS = 100_000
COLUMNS = ("payout_id", "destination", "amount", "asset", "idempotency_key")
REQUIRED_COLUMNS = ("payout_id", "destination", "amount", "idempotency_key")
REQUESTS_AT_ONCE = 32  # starts and status reads in flight together

# What a row can end as in the summary, besides the payout states.
IN_FLIGHT = "IN_FLIGHT"
CONFLICT = "CONFLICT"  # the key already holds another payout: nothing started for this row


@dataclass(frozen=True)
class BatchRow:
    line: int
    request: PayoutRequest


@dataclass(frozen=True)
class RowProblem:
    line: int  # 0: the file as a whole
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}" if self.line else self.message


class BatchFileError(ValueError):
    """The file cannot be paid as it is; :attr:`problems` lists every bad row."""

    def __init__(self, path: Path, problems: list[RowProblem]) -> None:
        self.problems = problems
        shown = "\n".join(f"  {p}" for p in problems[:200])
        more = f"\n  … and {len(problems) - 200} more" if len(problems) > 200 else ""
        super().__init__(f"{path}: {len(problems)} problem(s), nothing was started:\n{shown}{more}")


def read_batch_file(path: Path) -> list[BatchRow]:
    """The rows of ``path``, every one valid, or :class:`BatchFileError` naming each bad one."""
    try:
        with path.open("rb") as file:
            data = file.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise BatchFileError(path, [RowProblem(0, f"cannot read the file: {exc.strerror}")]) from None
    if len(data) > MAX_FILE_BYTES:
        raise BatchFileError(path, [RowProblem(0, f"larger than {MAX_FILE_BYTES} bytes; split it")])
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BatchFileError(path, [RowProblem(0, f"not UTF-8 text (byte {exc.start})")]) from None
    is_json = path.suffix.lower() in (".jsonl", ".ndjson", ".json") or text.lstrip().startswith("{")
    raw, problems = _json_lines(text) if is_json else _csv_rows(text)
    if not problems and not raw:
        problems.append(RowProblem(0, "no rows: the file holds no payouts"))
    if len(raw) > MAX_ROWS:
        problems.append(RowProblem(0, f"{len(raw)} rows; at most {MAX_ROWS} per file"))
    rows: list[BatchRow] = []
    first_line: dict[str, int] = {}
    for line, fields in raw:
        try:
            request = PayoutRequest.model_validate(fields)
        except ValidationError as exc:
            problems.append(RowProblem(line, "; ".join(_field_error(e["loc"], e["msg"]) for e in exc.errors())))
            continue
        key = request.idempotency_key
        if key in first_line:
            problems.append(RowProblem(line, f"idempotency_key: {key!r} is already used on line {first_line[key]}"))
            continue
        first_line[key] = line
        rows.append(BatchRow(line, request))
    if problems:
        raise BatchFileError(path, sorted(problems, key=lambda p: p.line))
    return rows


def _field_error(loc: tuple[int | str, ...], message: str) -> str:
    field = str(loc[0]) if loc else "row"
    return f"{field}: {hide_secret_seeds(message.removeprefix('Value error, '))}"


def _csv_rows(text: str) -> tuple[list[tuple[int, dict[str, object]]], list[RowProblem]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
    except csv.Error as exc:
        return [], [RowProblem(1, f"not CSV: {exc}")]
    if header is None:
        return [], []
    header = [name.strip() for name in header]
    problems = [RowProblem(1, f"unknown column {name!r}; columns are {', '.join(COLUMNS)}")
                for name in header if name not in COLUMNS]  # fmt: skip
    problems += [RowProblem(1, f"column {name!r} is missing") for name in REQUIRED_COLUMNS if name not in header]
    problems += [RowProblem(1, f"column {name!r} appears twice") for name in set(header) if header.count(name) > 1]
    if problems:
        return [], problems
    rows: list[tuple[int, dict[str, object]]] = []
    try:
        for cells in reader:
            line = reader.line_num
            if not any(cell.strip() for cell in cells):
                continue
            if len(cells) != len(header):
                problems.append(RowProblem(line, f"{len(cells)} cells; the header has {len(header)}"))
                continue
            # Values are taken as written: " 10" is not an amount, and a stray space in a key
            # would make it another key.
            rows.append(
                (line, {name: cell for name, cell in zip(header, cells, strict=True) if name != "asset" or cell})
            )
    except csv.Error as exc:
        problems.append(RowProblem(reader.line_num, f"not CSV: {exc}"))
    return rows, problems


def _json_lines(text: str) -> tuple[list[tuple[int, dict[str, object]]], list[RowProblem]]:
    rows: list[tuple[int, dict[str, object]]] = []
    problems: list[RowProblem] = []
    for line, content in enumerate(text.splitlines(), start=1):
        if not content.strip():
            continue
        try:
            value = json.loads(content)
        except json.JSONDecodeError as exc:
            problems.append(RowProblem(line, f"not JSON: {exc.msg} at column {exc.colno}"))
            continue
        if not isinstance(value, dict):
            problems.append(RowProblem(line, f"a row must be a JSON object, not {type(value).__name__}"))
            continue
        unknown = sorted(name for name in value if name not in COLUMNS)
        if unknown:
            problems.append(RowProblem(line, f"unknown field(s) {', '.join(map(repr, unknown))}"))
            continue
        rows.append((line, value))
    return rows, problems


@dataclass
class RowOutcome:
    """Where one row's payout is: a :class:`~payouts.models.PayoutState` value,
    :data:`IN_FLIGHT`, :data:`CONFLICT`, or the name of a run closed by other means
    (``TERMINATED``, ``CANCELED``, ``TIMED_OUT``: an operator's doing, to be looked at)."""

    line: int
    idempotency_key: str
    payout_id: str
    amount: str
    asset: str
    state: str = IN_FLIGHT
    tx_hash: str | None = None
    ledger: int | None = None
    fee_charged: int | None = None
    error: str | None = None

    @property
    def settled(self) -> bool:
        return self.state not in (IN_FLIGHT, PayoutState.AWAITING_SIGNATURE)


@dataclass(frozen=True)
class BatchProgress:
    confirmed: int
    failed: int
    awaiting_signature: int
    in_flight: int
    other: int  # built (build-only mode), conflicts, runs closed by an operator

    @classmethod
    def of(cls, outcomes: Sequence[RowOutcome]) -> BatchProgress:
        states = Counter(o.state for o in outcomes)
        known = (PayoutState.CONFIRMED, PayoutState.FAILED, PayoutState.AWAITING_SIGNATURE, IN_FLIGHT)
        return cls(
            confirmed=states[PayoutState.CONFIRMED],
            failed=states[PayoutState.FAILED],
            awaiting_signature=states[PayoutState.AWAITING_SIGNATURE],
            in_flight=states[IN_FLIGHT],
            other=sum(n for state, n in states.items() if state not in known),
        )

    def __str__(self) -> str:
        text = (f"confirmed {self.confirmed} · failed {self.failed} · "
                f"awaiting signature {self.awaiting_signature} · in flight {self.in_flight}")  # fmt: skip
        return text + (f" · other {self.other}" if self.other else "")


async def start(payouts: PayoutClient, rows: Sequence[BatchRow]) -> list[RowOutcome]:
    """Start (or find again) the payout of every row; a key that holds another payout is
    a :data:`CONFLICT` row, the others are in flight."""
    limit = asyncio.Semaphore(REQUESTS_AT_ONCE)

    async def one(row: BatchRow) -> RowOutcome:
        r = row.request
        outcome = RowOutcome(row.line, r.idempotency_key, r.payout_id, r.amount, r.asset)
        async with limit:
            try:
                await payouts.pay(r)
            except IdempotencyConflict as exc:
                outcome.state, outcome.error = CONFLICT, str(exc)
        return outcome

    return list(await asyncio.gather(*(one(row) for row in rows)))


async def follow(
    payouts: PayoutClient,
    outcomes: list[RowOutcome],
    *,
    on_progress: Callable[[BatchProgress], None],
    wait_for_signatures: bool = False,
    timeout: float | None = None,
    poll_seconds: float = 1.0,
) -> None:
    """Refresh ``outcomes`` until every payout settled (or only waits for a signature,
    unless ``wait_for_signatures``), or ``timeout`` seconds passed."""
    deadline = None if timeout is None else time.monotonic() + timeout
    limit = asyncio.Semaphore(REQUESTS_AT_ONCE)

    async def refresh(outcome: RowOutcome) -> None:
        async with limit:
            try:
                await _refresh(payouts, outcome)
            except RPCError:
                pass  # Temporal is restarting or busy: the row keeps its last known state

    while True:
        await asyncio.gather(*(refresh(o) for o in outcomes if not o.settled))
        on_progress(BatchProgress.of(outcomes))
        waiting = [o for o in outcomes if not o.settled]
        if all(o.state == PayoutState.AWAITING_SIGNATURE and not wait_for_signatures for o in waiting):
            return
        if deadline is not None and time.monotonic() >= deadline:
            return
        await asyncio.sleep(poll_seconds)


async def _refresh(payouts: PayoutClient, outcome: RowOutcome) -> None:
    handle = payouts.handle(outcome.idempotency_key)
    description = await handle.describe()
    if description.status == WorkflowExecutionStatus.RUNNING:
        state = description.typed_search_attributes.get(PAYOUT_STATUS)
        outcome.state = PayoutState.AWAITING_SIGNATURE if state == PayoutState.AWAITING_SIGNATURE else IN_FLIGHT
    elif description.status == WorkflowExecutionStatus.COMPLETED:
        result: PayoutOutcome = await handle.result()
        outcome.state, outcome.tx_hash = str(result.state), result.tx_hash
        outcome.ledger, outcome.fee_charged, outcome.error = result.ledger, result.fee_charged, result.error
    elif description.status == WorkflowExecutionStatus.FAILED:
        try:
            await handle.result()
        except WorkflowFailureError as exc:
            cause = exc.cause
            outcome.error = str(getattr(cause, "message", cause))
        outcome.state = PayoutState.FAILED
    elif description.status is not None:
        outcome.state = description.status.name
        outcome.error = f"the run was {description.status.name.lower().replace('_', ' ')} (by an operator?)"


def summary_table(outcomes: Sequence[RowOutcome]) -> Table:
    """One line per row, in file order, then the totals in the caption."""
    table = Table(title="batch summary", caption=str(BatchProgress.of(outcomes)))
    columns: list[tuple[str, JustifyMethod]] = [
        ("line", "right"),
        ("idempotency key", "left"),
        ("payout", "left"),
        ("amount", "right"),
        ("asset", "left"),
        ("state", "left"),
        ("tx hash", "left"),
        ("fee (stroops)", "right"),
        ("reason", "left"),
    ]
    for name, justify in columns:
        table.add_column(name, justify=justify)
    for o in sorted(outcomes, key=lambda o: o.line):
        fee = "" if o.fee_charged is None else str(o.fee_charged)
        table.add_row(str(o.line), o.idempotency_key, o.payout_id, o.amount, o.asset, o.state,
                      o.tx_hash or "", fee, o.error or "")  # fmt: skip
    return table
