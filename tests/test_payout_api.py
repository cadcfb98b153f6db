"""The HTTP API over real HTTP: uvicorn serving :func:`api.app.create_app` in this
process, the real Temporal dev server, a worker, devnet; then a schemathesis run (its CLI,
a separate process) against the OpenAPI document the server serves."""

from __future__ import annotations

import asyncio
import json
import secrets
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import uvicorn
from stellar_sdk import Keypair
from stellar_sdk.soroban_server_async import SorobanServerAsync
from temporalio.client import Client

from api.app import MAX_BODY_BYTES, create_app, load_api_settings
from payouts.cli import sign_envelope
from payouts.config import ConfigError, PayoutSettings
from tests.devnet_harness import PASSPHRASE, DevnetAdmin, DevnetProcess, free_port
from tests.payout_checks import latest_ledger, successful_transfers, wait_for
from tests.payout_harness import payout_settings, running_worker

API_KEY = secrets.token_urlsafe(32)
OTHER_KEY = secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Api:
    url: str
    http: aiohttp.ClientSession

    async def call(self, method: str, path: str, key: str | None = API_KEY, **kwargs: Any) -> tuple[int, Any]:
        headers = dict(kwargs.pop("headers", {}))
        if key is not None:
            headers["X-API-Key"] = key
        async with self.http.request(method, f"{self.url}{path}", headers=headers, **kwargs) as response:
            body = await response.read()
            return response.status, json.loads(body) if body else None


@asynccontextmanager
async def serving(client: Client, task_queue: str) -> AsyncIterator[Api]:
    """The API on a free port of 127.0.0.1, for ``task_queue``."""
    settings = load_api_settings(PAYOUTS_API_KEYS=f"{API_KEY}, {OTHER_KEY}", TEMPORAL_TASK_QUEUE=task_queue)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings, client), host="127.0.0.1", port=port,
                                           log_level="warning"))  # fmt: skip
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    try:
        async with aiohttp.ClientSession() as http:
            yield Api(f"http://127.0.0.1:{port}", http)
    finally:
        server.should_exit = True
        await task


async def workflows_on(client: Client, task_queue: str) -> list[str]:
    return [run.id async for run in client.list_workflows(f"TaskQueue = '{task_queue}'")]


def create_body(destination: str, amount: str = "7", key: str | None = None) -> dict[str, str]:
    return {"payoutId": "api-1", "destinationAccount": destination, "amount": amount, "asset": "XLM",
            "idempotencyKey": key or f"api-{uuid.uuid4().hex[:12]}"}  # fmt: skip


async def test_every_api_call_needs_a_valid_key_before_anything_is_read(temporal_client: Client) -> None:
    task_queue = f"api-{uuid.uuid4().hex[:8]}"
    async with serving(temporal_client, task_queue) as api:
        assert await api.call("GET", "/healthz", key=None) == (200, {"status": "ok"})
        status, body = await api.call("GET", "/api/payouts", key=None)
        assert status == 401 and "X-API-Key" in body["error"]
        status, body = await api.call("GET", "/api/payouts", key=secrets.token_urlsafe(32))
        assert status == 401 and body["error"] == "authentication: the API key is not valid"
        status, _ = await api.call("GET", "/api/payouts", key=None, headers={"Authorization": f"Bearer {OTHER_KEY}"})
        assert status == 200
        status, _ = await api.call("GET", "/api/payouts", key=None, headers={"Authorization": f"Basic {API_KEY}"})
        assert status == 401
        status, _ = await api.call("GET", "/api/payouts", key="é" * 40)  # not ASCII: still just refused
        assert status == 401
        # A caller without a key learns nothing about the body it sent, nor about routes.
        status, body = await api.call("POST", "/api/payouts/create", key=None, data=b"{")
        assert status == 401
        assert (await api.call("GET", "/api/nowhere", key=None))[0] == 401
        assert (await api.call("GET", "/api/nowhere"))[0] == 404
    assert await workflows_on(temporal_client, task_queue) == []
    for keys in ("short", "", f"{API_KEY},tiny"):
        with pytest.raises(ConfigError) as refused:
            load_api_settings(PAYOUTS_API_KEYS=keys)
        assert "PAYOUTS_API_KEYS" in str(refused.value) and (not keys or keys.split(",")[-1] not in str(refused.value))


async def test_bad_requests_name_the_field_and_start_nothing(temporal_client: Client) -> None:
    task_queue = f"api-{uuid.uuid4().hex[:8]}"
    account, seed = Keypair.random().public_key, Keypair.random().secret
    cases: list[tuple[str, str, dict[str, Any], int, str]] = [
        ("POST", "/api/payouts/create", {"json": create_body(account, amount="-1")}, 422, "amount"),
        ("POST", "/api/payouts/create", {"json": create_body(account, amount="1.00000001")}, 422, "amount"),
        ("POST", "/api/payouts/create", {"json": {**create_body(account), "amount": 5}}, 422, "amount"),
        ("POST", "/api/payouts/create", {"json": create_body(seed)}, 422, "destinationAccount"),
        ("POST", "/api/payouts/create", {"json": create_body("M" + account[1:])}, 422, "destinationAccount"),
        ("POST", "/api/payouts/create", {"json": {**create_body(account), "asset": "XLM:x"}}, 422, "asset"),
        ("POST", "/api/payouts/create", {"json": {**create_body(account), "memo": "x"}}, 422, "memo"),
        ("POST", "/api/payouts/create", {"json": create_body(account, key="bad key!")}, 422, "idempotencyKey"),
        ("POST", "/api/payouts/create", {"json": {"payoutId": "p"}}, 422, "destinationAccount"),
        ("POST", "/api/payouts/create", {"data": b"{", "headers": {"Content-Type": "application/json"}}, 422, "body"),
        (
            "POST",
            "/api/payouts/create",
            {"data": b"$\xff", "headers": {"Content-Type": "application/json"}},
            400,
            "body",
        ),
        ("POST", "/api/payouts/create?waitSeconds=31", {"json": create_body(account)}, 422, "waitSeconds"),
        ("GET", "/api/payouts/bad%20key", {}, 422, "key"),
        ("GET", "/api/payouts?status=PAID", {}, 422, "status.0"),
        ("GET", "/api/payouts?asset=USD:nobody", {}, 422, "asset"),
        ("GET", "/api/payouts?limit=0", {}, 422, "limit"),
        ("POST", "/api/payouts/some-key/submit-signed", {"json": {"signedXdr": ""}}, 422, "signedXdr"),
        ("POST", "/api/payouts/some-key/submit-signed", {"json": {"signed_xdr": "AAAA"}}, 422, "signedXdr"),
    ]
    async with serving(temporal_client, task_queue) as api:
        for method, path, kwargs, expected, field in cases:
            status, body = await api.call(method, path, **kwargs)
            assert status == expected, (path, kwargs, body)
            assert field in [e["field"] for e in body["errors"]], (path, kwargs, body)
            assert body["error"].startswith(f"{body['errors'][0]['field']}: "), body
            assert seed not in json.dumps(body), body
        # Over the size limit: refused as declared, and as streamed without a length.
        big = b'{"signedXdr": "' + b"A" * MAX_BODY_BYTES + b'"}'
        status, body = await api.call("POST", "/api/payouts/k/submit-signed", data=big)
        assert status == 413 and "larger than" in body["error"]

        async def chunks() -> AsyncIterator[bytes]:
            for start in range(0, len(big), 65_536):
                yield big[start : start + 65_536]

        status, body = await api.call("POST", "/api/payouts/k/submit-signed", data=chunks())
        assert status == 413, body
        assert (await api.call("GET", "/api/payouts/no-such-payout"))[0] == 404
    assert await workflows_on(temporal_client, task_queue) == []


async def test_create_is_idempotent_follows_to_confirmed_and_refuses_a_conflict(
    temporal_client: Client, devnet: DevnetProcess, admin: DevnetAdmin, server: SorobanServerAsync, tmp_path: Path
) -> None:
    source, winner = await admin.new_account(), await admin.new_account()
    settings = payout_settings(devnet.url, source, f"sqlite:///{tmp_path / 'payouts.db'}")
    body = create_body(winner.public_key, amount="7.25")
    start = await latest_ledger(server)
    async with running_worker(temporal_client, settings), serving(temporal_client, settings.TEMPORAL_TASK_QUEUE) as api:
        status, created = await api.call("POST", "/api/payouts/create?waitSeconds=30", json=body)
        assert status == 200 and created["idempotencyKey"] == body["idempotencyKey"], created
        assert created["state"] in ("SUBMITTED", "CONFIRMED"), created

        async def confirmed() -> dict[str, Any] | None:
            status, current = await api.call("GET", f"/api/payouts/{body['idempotencyKey']}")
            assert status == 200, current
            return current if current["state"] == "CONFIRMED" else None

        done = await wait_for(confirmed, "the payout confirmed", timeout=60)
        status, again = await api.call("POST", "/api/payouts/create", json=body)
        assert status == 200 and again["txHash"] == done["txHash"] and again["state"] == "CONFIRMED"
        status, conflict = await api.call("POST", "/api/payouts/create", json={**body, "amount": "7.26"})
        assert status == 409 and conflict["errors"] == [{"field": "idempotencyKey", "message": "names another payout"}]
        status, listed = await api.call("GET", "/api/payouts?status=CONFIRMED&asset=XLM&limit=50")
        assert status == 200 and all(p["state"] == "CONFIRMED" for p in listed)
    [paid] = await successful_transfers(server, start, winner.public_key)
    assert paid.tx_hash == done["txHash"] and paid.stroops == 72_500_000 and done["feeCharged"] > 0


async def test_external_signing_over_http_rejects_bad_signatures_and_pays_once(
    temporal_client: Client, devnet: DevnetProcess, admin: DevnetAdmin, server: SorobanServerAsync, tmp_path: Path
) -> None:
    """The seed's flow: create (→ unsigned XDR), sign outside, submit-signed."""
    source, winner = await admin.new_account(), await admin.new_account()
    settings = payout_settings(devnet.url, source, f"sqlite:///{tmp_path / 'payouts.db'}",
                               PAYOUTS_SIGN_WITH_HOT_KEY=False, PAYOUT_HOT_SIGNER_SECRET=None)  # fmt: skip
    body = create_body(winner.public_key, amount="3")
    key = body["idempotencyKey"]
    secret_file = tmp_path / "signer"
    secret_file.write_text(source.secret)
    start = await latest_ledger(server)
    async with running_worker(temporal_client, settings), serving(temporal_client, settings.TEMPORAL_TASK_QUEUE) as api:
        status, created = await api.call("POST", "/api/payouts/create?waitSeconds=30", json=body)
        assert status == 200 and created["state"] == "AWAITING_SIGNATURE" and created["unsignedXdr"], created
        unsigned = created["unsignedXdr"]
        other_key = tmp_path / "other"
        other_key.write_text(Keypair.random().secret)
        for wrong in (unsigned, sign_envelope(other_key, unsigned, PASSPHRASE), "AAAA"):
            status, refused = await api.call("POST", f"/api/payouts/{key}/submit-signed", json={"signedXdr": wrong})
            assert status == 422 and refused["errors"][0]["field"] == "signedXdr", refused
        status, accepted = await api.call(
            "POST",
            f"/api/payouts/{key}/submit-signed",
            json={"signedXdr": sign_envelope(secret_file, unsigned, PASSPHRASE)},
        )
        assert status == 200 and accepted["accepted"] is True, accepted

        async def confirmed() -> dict[str, Any] | None:
            current = (await api.call("GET", f"/api/payouts/{key}"))[1]
            return current if current["state"] == "CONFIRMED" else None

        done = await wait_for(confirmed, "the payout confirmed", timeout=60)
    [paid] = await successful_transfers(server, start, winner.public_key)
    assert paid.tx_hash == done["txHash"]
    assert source.secret not in json.dumps([created, accepted, done])


async def test_schemathesis_finds_nothing_wrong_with_the_served_openapi(
    temporal_client: Client, devnet: DevnetProcess, admin: DevnetAdmin, tmp_path: Path
) -> None:
    """Every operation of /openapi.json, generated inputs (valid and invalid), every check
    schemathesis has (server errors, response schemas, auth ignored, …), against a
    build-only worker (a generated valid payout is built, never paid). Except
    ``positive_data_acceptance``: no JSON Schema can say that a StrKey's checksum must
    hold or that an amount must be above zero, so schema-valid bodies may rightly get 422."""
    source = await admin.new_account()
    settings: PayoutSettings = payout_settings(devnet.url, source, f"sqlite:///{tmp_path / 'payouts.db'}",
                                               PAYOUTS_LIVE_EXECUTION=False, PAYOUTS_SIGN_WITH_HOT_KEY=False,
                                               PAYOUT_HOT_SIGNER_SECRET=None)  # fmt: skip
    async with running_worker(temporal_client, settings), serving(temporal_client, settings.TEMPORAL_TASK_QUEUE) as api:
        process = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).with_name("schemathesis")), "run", f"{api.url}/openapi.json",
            "--header", f"X-API-Key: {API_KEY}", "--checks", "all", "--exclude-checks", "positive_data_acceptance",
            "--max-examples", "40", "--seed", "20261129", "--request-timeout", "30", "--no-color",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=tmp_path,
        )  # fmt: skip
        output, _ = await process.communicate()
    report = output.decode(errors="replace")
    assert process.returncode == 0, report
    assert "passed" in report and "POST /api/payouts/create" in report, report


async def test_the_documented_command_serves_the_api(temporal_client: Client, tmp_path: Path) -> None:
    """``payouts-api`` as its own process, configured from the environment; without
    ``PAYOUTS_API_KEYS`` it refuses to start, naming the variable."""
    port = free_port()
    env = {
        "PATH": str(Path(sys.executable).parent),
        "TEMPORAL_ADDRESS": temporal_client.service_client.config.target_host,
        "PAYOUTS_API_PORT": str(port),
        "PAYOUTS_LOG_FORMAT": "json",
    }
    command = str(Path(sys.executable).with_name("payouts-api"))
    refused = await asyncio.create_subprocess_exec(command, env=env, stderr=asyncio.subprocess.PIPE)
    _, stderr = await refused.communicate()
    assert refused.returncode == 2 and b"PAYOUTS_API_KEYS: missing" in stderr, stderr
    quiet = asyncio.subprocess.DEVNULL
    process = await asyncio.create_subprocess_exec(
        command, env={**env, "PAYOUTS_API_KEYS": API_KEY}, stdout=quiet, stderr=quiet
    )
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(f"http://127.0.0.1:{port}", http)

            async def up() -> bool | None:
                try:
                    return (await api.call("GET", "/healthz"))[0] == 200 or None
                except aiohttp.ClientConnectionError:
                    return None

            assert await wait_for(up, "the API process", timeout=30)
            status, document = await api.call("GET", "/openapi.json", key=None)
            assert status == 200 and "/api/payouts/{key}/submit-signed" in document["paths"]
            assert (await api.call("GET", "/api/payouts?limit=1"))[0] == 200
    finally:
        process.terminate()
        await process.wait()
