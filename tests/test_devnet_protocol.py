"""devnet's protocol version is coherent with the authorization credentials it accepts.

``SOROBAN_CREDENTIALS_ADDRESS_V2`` (CAP-71) exists from protocol 27: a network that reports
27 (devnet's default) records it in simulation when asked (``useUpgradedAuth``, the
stellar-sdk default) and applies it; a network at 26 ignores ``useUpgradedAuth`` in
simulation and refuses a transaction carrying it (txMALFORMED at submission). Each test
runs a real devnet process over HTTP with the unmodified stellar-sdk and fails if the rule
is removed.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import aiohttp
import pytest
from stellar_sdk import Asset, Keypair, TransactionBuilder, TransactionEnvelope, scval
from stellar_sdk import xdr as x
from stellar_sdk.auth import authorize_entry
from stellar_sdk.soroban_rpc import AuthMode, GetTransactionStatus, SendTransactionStatus
from stellar_sdk.soroban_server_async import SorobanServerAsync

from tests.devnet_harness import PASSPHRASE, DevnetAdmin, DevnetProcess, result_code, run_devnet

XLM = 10_000_000
NATIVE_SAC = Asset.native().contract_id(PASSPHRASE)
CT = x.SorobanCredentialsType


@dataclass
class Network:
    server: SorobanServerAsync
    admin: DevnetAdmin


@pytest.fixture(scope="module")
def protocol_26_devnet() -> Iterator[DevnetProcess]:
    with run_devnet(200, "--protocol-version", "26") as process:
        yield process


@pytest.fixture
async def protocol_26(protocol_26_devnet: DevnetProcess) -> AsyncIterator[Network]:
    async with aiohttp.ClientSession() as session, SorobanServerAsync(protocol_26_devnet.url) as server:
        yield Network(server, DevnetAdmin(protocol_26_devnet.url, session))


async def reported_protocols(server: SorobanServerAsync) -> list[int]:
    """The protocol version in getNetwork, getVersionInfo, getLatestLedger, its ledger header
    and the header in its close meta."""
    latest = await server.get_latest_ledger()
    header = x.LedgerHeaderHistoryEntry.from_xdr(latest.header_xdr).header
    meta = x.LedgerCloseMeta.from_xdr(latest.metadata_xdr)
    assert meta.v2 is not None
    return [
        (await server.get_network()).protocol_version,
        (await server.get_version_info()).protocol_version,
        latest.protocol_version,
        header.ledger_version.uint32,
        meta.v2.ledger_header.header.ledger_version.uint32,
    ]


async def transfer(
    network: Network, relayer: Keypair, sender: Keypair, receiver: Keypair, *, use_upgraded_auth: bool
) -> TransactionEnvelope:
    """A prepared XLM SAC transfer from ``sender``, submitted by ``relayer`` (so ``sender``
    authorizes it with an address-credential entry)."""
    account = await network.server.load_account(relayer.public_key)
    args = [scval.to_address(sender.public_key), scval.to_address(receiver.public_key), scval.to_int128(XLM)]
    tx = (
        TransactionBuilder(account, PASSPHRASE, base_fee=100)
        .append_invoke_contract_function_op(NATIVE_SAC, "transfer", args)
        .set_timeout(300)
        .build()
    )
    return await network.server.prepare_transaction(tx, use_upgraded_auth=use_upgraded_auth)


def credentials_type(envelope: TransactionEnvelope) -> x.SorobanCredentialsType:
    (entry,) = envelope.transaction.operations[0].auth  # type: ignore[attr-defined]
    assert isinstance(entry, x.SorobanAuthorizationEntry)
    return entry.credentials.type


def sign_entry(
    envelope: TransactionEnvelope, signer: Keypair, valid_until: int, as_type: x.SorobanCredentialsType
) -> None:
    """Sign the invocation's one address entry with ``signer``, first rewrapping its
    credentials as ``as_type`` (ADDRESS or ADDRESS_V2; the SDK signs each its own way)."""
    op = envelope.transaction.operations[0]
    (entry,) = op.auth  # type: ignore[attr-defined]
    creds = entry.credentials.address or entry.credentials.address_v2
    if as_type == CT.SOROBAN_CREDENTIALS_ADDRESS:
        rewrapped = x.SorobanCredentials(as_type, address=creds)
    else:
        rewrapped = x.SorobanCredentials(as_type, address_v2=creds)
    unsigned = x.SorobanAuthorizationEntry(credentials=rewrapped, root_invocation=entry.root_invocation)
    op.auth = [authorize_entry(unsigned, signer, valid_until, PASSPHRASE)]  # type: ignore[attr-defined]


async def balance_and_sequence(server: SorobanServerAsync, account_id: str) -> tuple[int, int]:
    account = await server.load_account(account_id)
    key = x.LedgerKey(
        x.LedgerEntryType.ACCOUNT, account=x.LedgerKeyAccount(Keypair.from_public_key(account_id).xdr_account_id())
    )
    (entry,) = (await server.get_ledger_entries([key])).entries or []
    data = x.LedgerEntryData.from_xdr(entry.xdr).account
    assert data is not None
    return data.balance.int64, account.sequence


async def applied_status(network: Network, envelope: TransactionEnvelope) -> GetTransactionStatus:
    sent = await network.server.send_transaction(envelope)
    assert sent.status == SendTransactionStatus.PENDING, sent
    for _ in range(8):
        found = await network.server.get_transaction(sent.hash)
        if found.status != GetTransactionStatus.NOT_FOUND:
            return found.status
        await network.admin.close_ledger()
    raise AssertionError(f"{sent.hash} not in a ledger after 8 ledgers")


async def test_devnet_reports_protocol_27_and_accepts_address_v2(
    server: SorobanServerAsync, admin: DevnetAdmin
) -> None:
    assert await reported_protocols(server) == [27] * 5
    network = Network(server, admin)
    relayer, alice, bob = await asyncio.gather(*(admin.new_account() for _ in range(3)))
    valid_until = (await server.get_latest_ledger()).sequence + 100

    upgraded = await transfer(network, relayer, alice, bob, use_upgraded_auth=True)
    assert credentials_type(upgraded) == CT.SOROBAN_CREDENTIALS_ADDRESS_V2
    sign_entry(upgraded, alice, valid_until, CT.SOROBAN_CREDENTIALS_ADDRESS_V2)
    upgraded.sign(relayer)
    assert await applied_status(network, upgraded) == GetTransactionStatus.SUCCESS

    legacy = await transfer(network, relayer, alice, bob, use_upgraded_auth=False)
    assert credentials_type(legacy) == CT.SOROBAN_CREDENTIALS_ADDRESS
    sign_entry(legacy, alice, valid_until, CT.SOROBAN_CREDENTIALS_ADDRESS)
    legacy.sign(relayer)
    assert await applied_status(network, legacy) == GetTransactionStatus.SUCCESS


async def test_protocol_26_ignores_upgraded_auth_and_refuses_address_v2(protocol_26: Network) -> None:
    server, admin = protocol_26.server, protocol_26.admin
    assert await reported_protocols(server) == [26] * 5
    relayer, alice, bob = await asyncio.gather(*(admin.new_account() for _ in range(3)))
    valid_until = (await server.get_latest_ledger()).sequence + 100

    # Asked for ADDRESS_V2 (the SDK's default), simulation records ADDRESS.
    envelope = await transfer(protocol_26, relayer, alice, bob, use_upgraded_auth=True)
    assert credentials_type(envelope) == CT.SOROBAN_CREDENTIALS_ADDRESS

    # The same payment authorized with ADDRESS_V2 credentials: simulation fails, and the
    # transaction is malformed at submission; nothing is consumed.
    sign_entry(envelope, alice, valid_until, CT.SOROBAN_CREDENTIALS_ADDRESS_V2)
    simulated = await server.simulate_transaction(envelope, auth_mode=AuthMode.ENFORCE)
    assert simulated.error is not None, simulated
    envelope.sign(relayer)
    relayer_before = await balance_and_sequence(server, relayer.public_key)
    alice_before = await balance_and_sequence(server, alice.public_key)
    sent = await server.send_transaction(envelope)
    assert sent.status == SendTransactionStatus.ERROR, sent
    assert sent.error_result_xdr is not None and result_code(sent.error_result_xdr) == "txMALFORMED"
    assert await balance_and_sequence(server, relayer.public_key) == relayer_before
    assert await balance_and_sequence(server, alice.public_key) == alice_before

    # With ADDRESS credentials it goes through.
    sign_entry(envelope, alice, valid_until, CT.SOROBAN_CREDENTIALS_ADDRESS)
    envelope.signatures = []
    envelope.sign(relayer)
    assert await applied_status(protocol_26, envelope) == GetTransactionStatus.SUCCESS
    assert (await balance_and_sequence(server, alice.public_key))[0] == alice_before[0] - XLM


@pytest.mark.parametrize("version", ["23", "28", "x"])
def test_protocol_version_flag_accepts_only_modelled_protocols(version: str) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "devnet", "--port", "1", "--protocol-version", version],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2, run
    assert "--protocol-version" in run.stderr, run.stderr
    if version.isdigit():
        assert "must be 26 or 27" in run.stderr, run.stderr
