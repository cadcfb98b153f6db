"""The starter CLI: ``pay``, ``status``, ``submit-signed`` and ``sign``.

``sign`` plays the external HSM/KMS for demos: it signs an unsigned payout envelope with
a secret read from a file (never from the command line, where it would land in shell
history and process listings) and prints the signed XDR.

Exit codes: 0 done, 1 the payout failed or a signature was rejected, 2 bad input or
configuration (the message names the field and the rule).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
from pathlib import Path

from pydantic import ValidationError
from stellar_sdk import Keypair, StrKey, TransactionEnvelope
from temporalio.client import Client, WorkflowFailureError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError

from payouts.client import PayoutClient, SignatureRejected
from payouts.config import ConfigError, load_temporal_settings
from payouts.envelopes import EnvelopeError, parse_envelope
from payouts.errors import IdempotencyConflict
from payouts.models import PayoutRequest, is_valid_idempotency_key


class UsageError(ValueError):
    """Bad input: exit code 2."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="starter", description="Start and follow payouts.")
    commands = parser.add_subparsers(dest="command", required=True)

    pay = commands.add_parser("pay", help="start a payout (idempotent under --key)")
    pay.add_argument("--payout-id", required=True)
    pay.add_argument("--destination", required=True, help="G… account or C… contract")
    pay.add_argument("--amount", required=True, help='decimal string, e.g. "100.5"')
    pay.add_argument("--asset", default="XLM", help="XLM, USDC or CODE:ISSUER")
    pay.add_argument("--key", required=True, help="idempotency key = workflow ID")
    pay.add_argument("--wait", action="store_true", help="wait for the outcome")

    status = commands.add_parser("status", help="show a payout's status")
    status.add_argument("key")

    submit = commands.add_parser("submit-signed", help="hand an externally signed envelope to a payout")
    submit.add_argument("key")
    submit.add_argument("--xdr", help="signed envelope (base64); or --xdr-file")
    submit.add_argument("--xdr-file", type=Path)
    submit.add_argument("--no-wait", action="store_true", help="send as a signal, without waiting for the verdict")

    sign = commands.add_parser("sign", help="sign an unsigned envelope with a secret from a file (demo HSM)")
    sign.add_argument("--secret-file", type=Path, required=True)
    sign.add_argument("--xdr", required=True, help="unsigned envelope (base64), e.g. from `status`")
    sign.add_argument("--network-passphrase", required=True)
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
    if (args.xdr is None) == (args.xdr_file is None):
        raise UsageError("give exactly one of --xdr and --xdr-file")
    text: str = args.xdr if args.xdr is not None else args.xdr_file.read_text()
    return text.strip()


def sign_envelope(secret_file: Path, unsigned_xdr: str, network_passphrase: str) -> str:
    try:
        secret = secret_file.read_text().strip()
    except OSError as exc:
        raise UsageError(f"--secret-file: cannot read {secret_file}: {exc.strerror}") from None
    if not StrKey.is_valid_ed25519_secret_seed(secret):
        raise UsageError(f"--secret-file: {secret_file} does not hold an S… secret seed")
    try:
        envelope = parse_envelope(unsigned_xdr, network_passphrase)
    except EnvelopeError as exc:
        raise UsageError(f"--xdr: {exc}") from None
    assert isinstance(envelope, TransactionEnvelope)
    envelope.sign(Keypair.from_secret(secret))
    return envelope.to_xdr()


async def _run(args: argparse.Namespace) -> int:
    if args.command == "sign":
        print(sign_envelope(args.secret_file, args.xdr, args.network_passphrase))
        return 0
    settings = load_temporal_settings()
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
    client = await Client.connect(
        settings.TEMPORAL_ADDRESS, namespace=settings.TEMPORAL_NAMESPACE, data_converter=pydantic_data_converter
    )
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
    signed = _read_xdr(args)
    if args.no_wait:
        await payouts.submit_signed_xdr(args.key, signed)
        print("signature sent; its verdict shows in `status`", file=sys.stderr)
        return 0
    try:
        await payouts.submit_signature(args.key, signed)
    except SignatureRejected as exc:
        print(f"rejected: {exc}", file=sys.stderr)
        return 1
    print("signature accepted", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        code = asyncio.run(_run(args))
    except (UsageError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = 2
    except IdempotencyConflict as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = 2
    except RPCError as exc:
        print(f"error: Temporal answered {exc.status.name}: {exc.message}", file=sys.stderr)
        code = 1
    sys.exit(code)
