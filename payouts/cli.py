"""The starter CLI: ``pay``, ``batch``, ``status``, ``list``, ``submit-signed``, ``sign``,
``resolve`` and ``channels``.

``resolve KEY --paid-by HASH | --not-paid`` answers for a PARKED payout (README, "Parked
payouts"): an operator who found, in a full history, that it was paid by that transaction,
or that what was parked never applied.

``batch FILE`` pays a whole file (:mod:`payouts.batch`): every row is checked first, then
the payouts start and a progress line follows them; it ends with a summary table.
``list`` finds payouts through Temporal visibility (the ``PayoutStatus`` and
``PayoutAsset`` search attributes).

``sign`` plays the external HSM/KMS for demos: it signs an unsigned payout envelope, or
(with channel accounts) the payout account's authorization entry, with a secret read from
a file (never from the command line, where it would land in shell history and process
listings) and prints the signed XDR.

``channels ensure|list|merge`` manage the pool of channel accounts (:mod:`payouts.pool`):
they read their configuration from the environment like the worker, and talk to the
Stellar RPC and the app DB only (not to Temporal).

Exit codes: 0 done (``batch``: every payout CONFIRMED), 1 the payout failed (``batch``:
any payout not confirmed — failed, awaiting a signature, built only, still in flight at
``--timeout``, or a conflicting key), a signature was rejected, the chain or the
lease table refused a pool operation, or a service (Temporal at ``TEMPORAL_ADDRESS``, the
Stellar RPC, the DB) could not be reached or failed, 2 bad input or configuration (the
message names the flag or variable and the rule; nothing was sent).

Every input is checked before a connection is opened (a signed XDR too: its size, that it
is a transaction envelope or authorization entry, in canonical base64). Nothing printed
for bad input shows a secret seed (promise 6): anything shaped like one is replaced.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import re
import sys
from pathlib import Path
from typing import NoReturn

from pydantic import ValidationError
from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from sqlalchemy.exc import SQLAlchemyError
from stellar_sdk import Keypair, StrKey, TransactionEnvelope
from stellar_sdk import xdr as stellar_xdr
from stellar_sdk.auth import authorize_entry
from stellar_sdk.soroban_server_async import SorobanServerAsync
from temporalio.client import Client, WorkflowFailureError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError

from payouts import batch, db
from payouts.amounts import hide_secret_seeds
from payouts.assets import AssetError, validate_asset
from payouts.client import MAX_LIST_LIMIT, PayoutClient, PayoutSummary, ResolutionRejected, SignatureRejected
from payouts.config import ConfigError, load_settings, load_temporal_settings
from payouts.envelopes import (
    MAX_SIGNED_XDR_CHARS,
    EnvelopeError,
    check_signed_xdr_form,
    decode_xdr,
    parse_envelope,
)
from payouts.errors import IdempotencyConflict
from payouts.models import PayoutRequest, PayoutState, is_valid_idempotency_key
from payouts.pool import (
    DEFAULT_BALANCE,
    RPC_ERRORS,
    ChannelPool,
    ChannelStatus,
    EnsureReport,
    MergeResult,
    PoolError,
    PoolInputError,
    channel_count,
    check_secrets,
    format_xlm,
    parse_balance,
)

_TX_HASH = re.compile(r"[0-9a-f]{64}")


class UsageError(ValueError):
    """Bad input: exit code 2."""


class Unreachable(RuntimeError):
    """A service the command needs could not be reached: exit code 1."""


class _Parser(argparse.ArgumentParser):
    """argparse quotes stray arguments in its errors; a seed pasted there stays hidden."""

    def error(self, message: str) -> NoReturn:
        super().error(hide_secret_seeds(message))


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="starter", description="Start and follow payouts.")
    commands = parser.add_subparsers(dest="command", required=True)

    pay = commands.add_parser("pay", help="start a payout (idempotent under --key)")
    pay.add_argument("--payout-id", required=True)
    pay.add_argument("--destination", required=True, help="G… account or C… contract")
    pay.add_argument("--amount", required=True, help='decimal string, e.g. "100.5"')
    pay.add_argument("--asset", default="XLM", help="XLM, USDC or CODE:ISSUER")
    pay.add_argument("--key", required=True, help="idempotency key = workflow ID")
    pay.add_argument("--wait", action="store_true", help="wait for the outcome")

    pay_file = commands.add_parser("batch", help="pay every row of a CSV or JSON-lines file (idempotent per row)")
    pay_file.add_argument("file", type=Path, help="fields: payout_id, destination, amount, asset, idempotency_key")
    pay_file.add_argument("--wait-for-signatures", action="store_true",
                          help="keep waiting for payouts awaiting an external signature")  # fmt: skip
    pay_file.add_argument("--timeout", type=float, help="stop following after this many seconds")
    pay_file.add_argument("--json", action="store_true", help="print the summary as JSON")

    status = commands.add_parser("status", help="show a payout's status")
    status.add_argument("key")

    listing = commands.add_parser("list", help="find payouts by PayoutStatus and PayoutAsset (newest first)")
    listing.add_argument("--status", action="append", choices=[s.value for s in PayoutState], default=[],
                         help="repeat for several; default: any")  # fmt: skip
    listing.add_argument("--asset", help="XLM, USDC or CODE:ISSUER")
    listing.add_argument("--limit", type=int, default=100, help=f"at most this many (1..{MAX_LIST_LIMIT})")
    listing.add_argument("--json", action="store_true", help="print JSON")

    submit = commands.add_parser("submit-signed", help="hand an externally signed envelope to a payout")
    submit.add_argument("key")
    submit.add_argument("--xdr", help="signed envelope (base64); or --xdr-file")
    submit.add_argument("--xdr-file", type=Path)
    submit.add_argument("--no-wait", action="store_true", help="send as a signal, without waiting for the verdict")

    resolve = commands.add_parser("resolve", help="answer for a PARKED payout, from a full ledger history")
    resolve.add_argument("key")
    verdict = resolve.add_mutually_exclusive_group(required=True)
    verdict.add_argument("--paid-by", metavar="TX_HASH", help="it was paid by this transaction (64 hex digits)")
    verdict.add_argument("--not-paid", action="store_true", help="what was parked never applied: go on")

    sign = commands.add_parser("sign", help="sign an unsigned envelope with a secret from a file (demo HSM)")
    sign.add_argument("--secret-file", type=Path, required=True)
    sign.add_argument("--xdr", required=True, help="unsigned envelope (base64), e.g. from `status`")
    sign.add_argument("--network-passphrase", required=True)

    channels = commands.add_parser("channels", help="manage the pool of channel accounts")
    pool = channels.add_subparsers(dest="pool_command", required=True)
    ensure = pool.add_parser("ensure", help="create missing channels, top up low ones, put them in rotation")
    ensure.add_argument("--count", type=int, help="channels 0..N-1 (default: PAYOUTS_CHANNEL_COUNT)")
    ensure.add_argument(
        "--balance", default=DEFAULT_BALANCE, help=f"target XLM per channel (default {DEFAULT_BALANCE})"
    )
    pool_list = pool.add_parser("list", help="each channel's balance and lease")
    pool_list.add_argument("--count", type=int, help="channels 0..N-1 (default: PAYOUTS_CHANNEL_COUNT)")
    merge = pool.add_parser("merge", help="merge channels back into the payout account")
    merge.add_argument("--count", type=int, help="channels 0..N-1 (default: PAYOUTS_CHANNEL_COUNT)")
    for command in (ensure, pool_list, merge):
        command.add_argument("--json", action="store_true", help="print JSON")
    return parser


_FLAGS = {"idempotency_key": "--key"}


def _flag_error(loc: tuple[int | str, ...], message: str) -> str:
    field = str(loc[0]) if loc else "request"
    flag = _FLAGS.get(field, "--" + field.replace("_", "-"))
    return f"{flag}: {message.removeprefix('Value error, ')}"


def _print(body: object) -> None:
    if dataclasses.is_dataclass(body) and not isinstance(body, type):
        body = dataclasses.asdict(body)
    print(json.dumps(body, indent=2, default=str))


def _read_xdr(args: argparse.Namespace) -> str:
    """The signed XDR of ``submit-signed``, checked as far as it can be without the payout."""
    if (args.xdr is None) == (args.xdr_file is None):
        raise UsageError("--xdr: give exactly one of --xdr and --xdr-file")
    if args.xdr is not None:
        flag, text = "--xdr", str(args.xdr)
    else:
        flag, path = "--xdr-file", args.xdr_file
        # Read a bounded amount: the file could be anything (/dev/zero included).
        limit = 2 * MAX_SIGNED_XDR_CHARS
        try:
            with path.open("rb") as file:
                data = file.read(limit + 1)
        except OSError as exc:
            raise UsageError(f"--xdr-file: cannot read {path}: {exc.strerror}") from None
        if len(data) > limit:
            raise UsageError(f"--xdr-file: {path} is larger than {limit} bytes; a signed XDR is a few thousand")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise UsageError(f"--xdr-file: {path} is not UTF-8 text (base64 XDR)") from None
    text = text.strip()
    try:
        check_signed_xdr_form(text)
    except EnvelopeError as exc:
        raise UsageError(f"{flag}: {exc}") from None
    return text


def sign_envelope(secret_file: Path, unsigned_xdr: str, network_passphrase: str) -> str:
    try:
        secret = secret_file.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise UsageError(f"--secret-file: cannot read {secret_file}: {exc.strerror}") from None
    except UnicodeDecodeError:
        # Never the decoder's message: it quotes the file's bytes.
        raise UsageError(
            f"--secret-file: {secret_file} is not UTF-8 text, so it does not hold an S… secret seed"
        ) from None
    if not StrKey.is_valid_ed25519_secret_seed(secret):
        raise UsageError(f"--secret-file: {secret_file} does not hold an S… secret seed")
    signer = Keypair.from_secret(secret)
    try:
        envelope = parse_envelope(unsigned_xdr, network_passphrase)
    except EnvelopeError as exc:
        entry = _authorization_entry(unsigned_xdr)
        if entry is None:
            raise UsageError(f"--xdr: {exc}; nor is it a SorobanAuthorizationEntry") from None
        # Channels: the payout account signs the authorization entry (status'
        # authorization_xdr), at the expiration ledger already set in it.
        creds = entry.credentials.address or entry.credentials.address_v2
        assert creds is not None
        valid_until = creds.signature_expiration_ledger.uint32
        return authorize_entry(entry, signer, valid_until, network_passphrase).to_xdr()
    assert isinstance(envelope, TransactionEnvelope)
    envelope.sign(signer)
    return envelope.to_xdr()


def _authorization_entry(entry_xdr: str) -> stellar_xdr.SorobanAuthorizationEntry | None:
    """The entry, if ``entry_xdr`` is an unsigned authorization entry with address credentials."""
    entry = decode_xdr(stellar_xdr.SorobanAuthorizationEntry, entry_xdr)
    if entry is None:
        return None
    if entry.credentials.address is None and entry.credentials.address_v2 is None:
        return None
    return entry


def _print_ensure(report: EnsureReport, as_json: bool) -> None:
    if as_json:
        _print(report)
        return
    for funding in report.funded:
        where = f"channel {funding.channel.index} {funding.channel.account}"
        if funding.before is None:
            print(f"created {where} with {format_xlm(funding.amount)} XLM")
        else:
            total = funding.before + funding.amount
            print(f"topped up {where} from {format_xlm(funding.before)} to {format_xlm(total)} XLM")
    for channel, balance in report.unchanged:
        print(f"channel {channel.index} {channel.account} holds {format_xlm(balance)} XLM: unchanged")
    for sent in report.transactions:
        ops = f"{sent.operations} operation(s)"
        print(f"transaction {sent.tx_hash}: {ops}, ledger {sent.ledger}, fee {sent.fee_charged} stroops")
    if not report.transactions:
        print("nothing to send")
    print(f"in rotation: {len(report.in_rotation)} channel(s)")
    for channel in report.below_minimum:
        print(f"channel {channel.index} {channel.account} is short of PAYOUTS_CHANNEL_MIN_BALANCE_STROOPS: parked")


def _status_json(s: ChannelStatus) -> dict[str, object]:
    return {
        "index": s.channel.index,
        "account": s.channel.account,
        "balance": None if s.balance is None else format_xlm(s.balance),
        "balance_stroops": s.balance,
        "registered": s.registered,
        "in_rotation": s.in_rotation,
        "note": s.note,
        "holder": s.holder,
        "lease_expires_at": None if s.expires_at is None else s.expires_at.isoformat(),
    }


def _print_list(states: list[ChannelStatus], as_json: bool) -> None:
    if as_json:
        _print([_status_json(s) for s in states])
        return
    rows = [("#", "account", "balance (XLM)", "rotation", "holder", "lease expires")]
    for s in states:
        if not s.registered:
            rotation = "not registered"
        else:
            rotation = "in rotation" if s.in_rotation else f"out: {s.note or 'no note'}"
        expires = "" if s.expires_at is None else s.expires_at.isoformat(timespec="seconds")
        balance = "missing" if s.balance is None else format_xlm(s.balance)
        rows.append((str(s.channel.index), s.channel.account, balance, rotation, s.holder or "", expires))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    right = (0, 2)  # numbers
    for row in rows:
        cells = [cell.rjust(widths[i]) if i in right else cell.ljust(widths[i]) for i, cell in enumerate(row)]
        print("  ".join(cells).rstrip())


def _print_merge(results: list[MergeResult], as_json: bool) -> None:
    if as_json:
        _print([dataclasses.asdict(result) for result in results])
        return
    for result in results:
        where = f"channel {result.channel.index} {result.channel.account}"
        if result.outcome == "merged":
            assert result.transaction is not None and result.amount is not None
            sent, moved = result.transaction, format_xlm(result.amount)
            fee = f"fee {sent.fee_charged} stroops"
            print(f"merged {where}: {moved} XLM to the payout account (transaction {sent.tx_hash}, {fee})")
        elif result.outcome == "missing":
            print(f"missing {where}: {result.reason}")
        else:
            print(f"{result.outcome} {where}: {result.reason}", file=sys.stderr)


async def _channels(args: argparse.Namespace) -> int:
    """``channels ensure|list|merge``: every input is checked before the DB or the chain is
    touched, so bad input sends nothing."""
    settings = load_settings()
    command = args.pool_command
    count = channel_count(args.count, settings, merge=command == "merge")
    target = parse_balance(args.balance, settings) if command == "ensure" else 0
    check_secrets(settings, funding=command == "ensure")
    await asyncio.to_thread(db.upgrade_database, settings.DATABASE_URL)
    engine = db.make_engine(settings.DATABASE_URL)
    try:
        async with SorobanServerAsync(settings.SOROBAN_RPC_URL) as rpc:
            pool = ChannelPool(settings, rpc, engine)
            if command == "ensure":
                _print_ensure(await pool.ensure(count, target), args.json)
                return 0
            if command == "list":
                _print_list(await pool.states(count), args.json)
                return 0
            results = await pool.merge(count)
            _print_merge(results, args.json)
            return 1 if any(r.outcome in ("refused", "failed") for r in results) else 0
    finally:
        engine.dispose()


async def _connect(address: str, namespace: str) -> Client:
    try:
        return await Client.connect(address, namespace=namespace, data_converter=pydantic_data_converter)
    except ValueError as exc:  # the address does not parse: nothing was sent
        raise UsageError(f"TEMPORAL_ADDRESS={address!r} is not a host:port address ({exc})") from None
    except RuntimeError as exc:  # the SDK's "Failed client connect: <transport error>"
        reason = str(exc).removeprefix("Failed client connect: ")
        raise Unreachable(f"cannot connect to Temporal at TEMPORAL_ADDRESS={address!r}: {reason}") from None


def _print_payouts(found: list[PayoutSummary], as_json: bool) -> None:
    if as_json:
        _print([dataclasses.asdict(p) for p in found])
        return
    table = Table("idempotency key", "PayoutStatus", "asset", "run", "started", "closed", box=None)
    for p in found:
        closed = "" if p.closed_at is None else p.closed_at.isoformat(timespec="seconds")
        table.add_row(p.idempotency_key, p.state or "", p.asset or "", p.execution_status,
                      p.started_at.isoformat(timespec="seconds"), closed)  # fmt: skip
    Console(width=200).print(table)
    print(f"{len(found)} payout(s)", file=sys.stderr)


async def _batch(args: argparse.Namespace, payouts: PayoutClient, rows: list[batch.BatchRow]) -> int:
    outcomes = await batch.start(payouts, rows)
    console = Console(stderr=True)
    if console.is_terminal:
        with Progress(*Progress.get_default_columns(), console=console, transient=True) as bar:
            task = bar.add_task("starting", total=len(outcomes))

            def show(progress: batch.BatchProgress) -> None:
                settled = progress.confirmed + progress.failed + progress.other
                bar.update(task, completed=settled, description=str(progress))

            await batch.follow(payouts, outcomes, on_progress=show, wait_for_signatures=args.wait_for_signatures,
                               timeout=args.timeout)  # fmt: skip
    else:
        # Logs and pipes get a line when the counts change, not a redrawn bar.
        last: list[batch.BatchProgress] = []

        def log(progress: batch.BatchProgress) -> None:
            if not last or last[-1] != progress:
                print(f"progress: {progress}", file=sys.stderr, flush=True)
                last[:] = [progress]

        await batch.follow(payouts, outcomes, on_progress=log, wait_for_signatures=args.wait_for_signatures,
                           timeout=args.timeout)  # fmt: skip
    if args.json:
        _print([dataclasses.asdict(o) for o in sorted(outcomes, key=lambda o: o.line)])
    else:
        Console(width=max(200, Console().width)).print(batch.summary_table(outcomes))
    return 0 if all(o.state == PayoutState.CONFIRMED for o in outcomes) else 1


async def _run(args: argparse.Namespace) -> int:
    if args.command == "channels":
        return await _channels(args)
    if args.command == "sign":
        print(sign_envelope(args.secret_file, args.xdr, args.network_passphrase))
        return 0
    settings = load_temporal_settings()
    if args.command == "batch":
        if args.timeout is not None and not args.timeout > 0:
            raise UsageError("--timeout: must be a number of seconds > 0")
        try:
            rows = batch.read_batch_file(args.file)
        except batch.BatchFileError as exc:
            raise UsageError(str(exc)) from None
        client = await _connect(settings.TEMPORAL_ADDRESS, settings.TEMPORAL_NAMESPACE)
        return await _batch(args, PayoutClient(client, settings.TEMPORAL_TASK_QUEUE), rows)
    if args.command == "list":
        if not 1 <= args.limit <= MAX_LIST_LIMIT:
            raise UsageError(f"--limit: must be 1..{MAX_LIST_LIMIT}")
        if args.asset is not None:
            try:
                validate_asset(args.asset)
            except AssetError as exc:
                raise UsageError(f"--asset: {exc}") from None
        client = await _connect(settings.TEMPORAL_ADDRESS, settings.TEMPORAL_NAMESPACE)
        states = [PayoutState(s) for s in args.status]
        found = await PayoutClient(client, settings.TEMPORAL_TASK_QUEUE).list_payouts(
            states=states, asset=args.asset, limit=args.limit
        )
        _print_payouts(found, args.json)
        return 0
    if args.command == "pay":
        try:
            request = PayoutRequest(
                payout_id=args.payout_id,
                destination=args.destination,
                amount=args.amount,
                asset=args.asset,
                idempotency_key=args.key,
            )
        except ValidationError as exc:
            raise UsageError("; ".join(_flag_error(e["loc"], e["msg"]) for e in exc.errors())) from None
    elif not is_valid_idempotency_key(args.key):
        raise UsageError("key: must be 1-128 characters of A-Z a-z 0-9 : _ -")
    signed = _read_xdr(args) if args.command == "submit-signed" else ""
    if args.command == "resolve" and args.paid_by is not None and not _TX_HASH.fullmatch(args.paid_by):
        raise UsageError("--paid-by: must be a transaction hash, 64 lowercase hex digits")
    client = await _connect(settings.TEMPORAL_ADDRESS, settings.TEMPORAL_NAMESPACE)
    payouts = PayoutClient(client, settings.TEMPORAL_TASK_QUEUE)
    if args.command == "pay":
        handle = await payouts.pay(request)
        print(f"payout {request.idempotency_key} started (run {handle.result_run_id})", file=sys.stderr)
        if not args.wait:
            _print((await payouts.status(request.idempotency_key)).model_dump())
            return 0
        try:
            _print(await handle.result())
        except WorkflowFailureError:
            _print((await payouts.status(request.idempotency_key)).model_dump())
            return 1
        return 0
    if args.command == "status":
        _print((await payouts.status(args.key)).model_dump())
        return 0
    if args.command == "resolve":
        try:
            await payouts.resolve_parked(args.key, paid_tx_hash=args.paid_by)
        except ResolutionRejected as exc:
            _error(f"answer refused: {exc}")
            return 1
        print("answer recorded; the payout's outcome shows in `status`", file=sys.stderr)
        return 0
    if args.no_wait:
        await payouts.submit_signed_xdr(args.key, signed)
        print("signature sent; its verdict shows in `status`", file=sys.stderr)
        return 0
    try:
        await payouts.submit_signature(args.key, signed)
    except SignatureRejected as exc:
        _error(exc)  # "signature rejected: <reason>"
        return 1
    print("signature accepted", file=sys.stderr)
    return 0


def _error(message: object) -> None:
    print(f"error: {hide_secret_seeds(str(message))}", file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        code = asyncio.run(_run(args))
    except (UsageError, ConfigError, PoolInputError) as exc:
        _error(exc)
        code = 2
    except (PoolError, Unreachable) as exc:
        _error(exc)
        code = 1
    except RPC_ERRORS as exc:
        # Named by type only: the RPC URL may carry an API key.
        _error(f"the Stellar RPC (SOROBAN_RPC_URL) failed: {type(exc).__name__}")
        code = 1
    except SQLAlchemyError as exc:
        _error(f"the database (DATABASE_URL) failed: {type(exc).__name__}")
        code = 1
    except IdempotencyConflict as exc:
        _error(exc)
        code = 2
    except RPCError as exc:
        _error(f"Temporal answered {exc.status.name}: {exc.message}")
        code = 1
    sys.exit(code)


def console() -> None:
    """Entry point of ``starter.py`` and ``payouts-starter``: :func:`main`, then leave
    without interpreter finalization. The Temporal client's core threads can still call
    into Python while the interpreter finalizes and abort it (``PyGILState_Release``,
    exit 134) after the command's work and output are complete; the exit code must say
    how the command went, not how the runtime tore down."""
    try:
        main()
        code = 0
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
