"""Temporary entries and signed authorizations expire as on the real network, and the network
configuration that says when is readable as CONFIG_SETTING ledger entries.

The devnet here runs with ``--min-temp-ttl 20`` and a one-hour ledger clock, so the tests
close every ledger themselves (``close-ledger``/``close-ledgers``) and know exactly in which
ledger a transaction is applied and at which latest ledger a read happens. Nothing is
assumed about time: the clock's first close is an hour away.

Rules (sources in devnet/host.py, devnet/state.py, devnet/rpc.py):
- a consumed nonce is a TEMPORARY entry live until max(signature expiration ledger,
  apply ledger + min temporary TTL - 1) (soroban-env-host ``Host::consume_nonce``);
- getLedgerEntries shows it while the latest ledger <= its live-until ledger and omits it
  from the next ledger on (stellar-core ``QueryServer::getLedgerEntry``, ``isLive``);
- applying at the first ledger past its TTL sees it as absent, so the nonce can be signed
  again (stellar-core ``InvokeHostFunctionOpFrame`` processRead); its ledger's close meta
  lists it as evicted;
- a signature is refused when the ledger being applied is past its expiration ledger, or
  when the expiration ledger is beyond that ledger + max entry TTL - 1 (auth.rs,
  ``verify_and_consume_nonce``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from stellar_sdk import Asset, Keypair, SorobanServerAsync, TransactionBuilder, TransactionEnvelope, scval
from stellar_sdk import xdr as x
from stellar_sdk.auth import authorize_entry
from stellar_sdk.soroban_rpc import AuthMode, GetTransactionResponse, GetTransactionStatus, SendTransactionStatus

from tests.devnet_harness import PASSPHRASE, DevnetAdmin, DevnetProcess, run_devnet

XLM = 10_000_000
NATIVE_SAC = Asset.native().contract_id(PASSPHRASE)
MIN_TEMP_TTL = 20
CLOCK_MS = 3_600_000  # the tests close every ledger themselves
# A time bound past the submission bound of a network expecting hour-long ledgers
# (maxTime ≥ last close + 2 × the expected close time), or every transaction is txTOO_LATE.
TIMEOUT_S = 3 * CLOCK_MS // 1000
PROTOCOL_MIN_TEMP_TTL = 16  # stellar-core MinimumSorobanNetworkConfig::MINIMUM_TEMP_ENTRY_LIFETIME
TESTNET_MAX_ENTRY_TTL = 3_110_400  # stellar-core soroban-settings/testnet_settings_upgrade.json
SUCCESS = GetTransactionStatus.SUCCESS
FAILED = GetTransactionStatus.FAILED
IHF = x.InvokeHostFunctionResultCode


@pytest.fixture(scope="module")
def manual_devnet() -> Iterator[DevnetProcess]:
    with run_devnet(CLOCK_MS, "--min-temp-ttl", str(MIN_TEMP_TTL)) as process:
        yield process


@pytest.fixture(scope="module")
async def manual(manual_devnet: DevnetProcess) -> AsyncIterator[tuple[DevnetAdmin, SorobanServerAsync]]:
    async with aiohttp.ClientSession() as session, SorobanServerAsync(manual_devnet.url) as server:
        yield DevnetAdmin(manual_devnet.url, session), server


# -- helpers ---------------------------------------------------------------------------


async def fund(admin: DevnetAdmin, count: int) -> list[Keypair]:
    """Friendbot-funded accounts on a devnet whose ledgers the test closes: close a ledger
    whenever friendbot's transaction is queued, until every account exists."""
    tasks = [asyncio.create_task(admin.new_account()) for _ in range(count)]
    for _ in range(500):
        if all(t.done() for t in tasks):
            break
        if (await admin.admin("GET", "stats"))["queue"]:
            await admin.close_ledger()
        else:
            await asyncio.sleep(0.01)
    return [await t for t in tasks]


async def latest(server: SorobanServerAsync) -> int:
    return (await server.get_latest_ledger()).sequence


async def apply_next(
    admin: DevnetAdmin, server: SorobanServerAsync, envelope: TransactionEnvelope
) -> GetTransactionResponse:
    """Send, close one ledger, and return the transaction, applied in exactly that ledger."""
    sent = await server.send_transaction(envelope)
    assert sent.status == SendTransactionStatus.PENDING, sent
    ledger = await admin.close_ledger()
    found = await server.get_transaction(sent.hash)
    assert found.status in (SUCCESS, FAILED), found
    assert found.ledger == ledger, (found.ledger, ledger)
    return found


def host_function_code(found: GetTransactionResponse) -> x.InvokeHostFunctionResultCode:
    assert found.result_xdr is not None
    results = x.TransactionResult.from_xdr(found.result_xdr).result.results
    assert results is not None and results[0].tr is not None
    result = results[0].tr.invoke_host_function_result
    assert result is not None
    return result.code


def transfer_args(sender: Keypair, receiver: Keypair, amount: int = XLM) -> list[x.SCVal]:
    return [scval.to_address(sender.public_key), scval.to_address(receiver.public_key), scval.to_int128(amount)]


async def transfer(
    server: SorobanServerAsync, relayer: Keypair, sender: Keypair, receiver: Keypair
) -> TransactionEnvelope:
    """A simulated SAC transfer of 1 XLM from ``sender`` sent by ``relayer``: ``sender``
    authorizes it with an address credential (unsigned yet)."""
    account = await server.load_account(relayer.public_key)
    tx = (
        TransactionBuilder(account, PASSPHRASE, base_fee=100)
        .append_invoke_contract_function_op(NATIVE_SAC, "transfer", transfer_args(sender, receiver))
        .set_timeout(TIMEOUT_S)
        .build()
    )
    return await server.prepare_transaction(tx)


async def balance(server: SorobanServerAsync, keypair: Keypair) -> int:
    key = x.LedgerKey(x.LedgerEntryType.ACCOUNT, account=x.LedgerKeyAccount(keypair.xdr_account_id()))
    (entry,) = (await server.get_ledger_entries([key])).entries or []
    account = x.LedgerEntryData.from_xdr(entry.xdr).account
    assert account is not None
    return account.balance.int64


def address_entry(envelope: TransactionEnvelope) -> x.SorobanAuthorizationEntry:
    (entry,) = envelope.transaction.operations[0].auth  # type: ignore[attr-defined]
    assert isinstance(entry, x.SorobanAuthorizationEntry)
    assert entry.credentials.type in (
        x.SorobanCredentialsType.SOROBAN_CREDENTIALS_ADDRESS,
        x.SorobanCredentialsType.SOROBAN_CREDENTIALS_ADDRESS_V2,
    )
    return entry


def credentials(entry: x.SorobanAuthorizationEntry) -> x.SorobanAddressCredentials:
    creds = entry.credentials.address or entry.credentials.address_v2
    assert creds is not None
    return creds


def sign(
    envelope: TransactionEnvelope, relayer: Keypair, signer: Keypair, valid_until: int
) -> x.SorobanAuthorizationEntry:
    signed = authorize_entry(address_entry(envelope), signer, valid_until, PASSPHRASE)
    envelope.transaction.operations[0].auth = [signed]  # type: ignore[attr-defined]
    envelope.signatures = []
    envelope.sign(relayer)
    return signed


def nonce_key(address: str, nonce: int) -> x.LedgerKey:
    sc_address = scval.to_address(address).address
    assert sc_address is not None
    return x.LedgerKey(
        x.LedgerEntryType.CONTRACT_DATA,
        contract_data=x.LedgerKeyContractData(
            contract=sc_address,
            key=x.SCVal(x.SCValType.SCV_LEDGER_KEY_NONCE, nonce_key=x.SCNonceKey(x.Int64(nonce))),
            durability=x.ContractDataDurability.TEMPORARY,
        ),
    )


async def nonce_entry(server: SorobanServerAsync, key: x.LedgerKey) -> tuple[int | None, int, int]:
    """(liveUntilLedgerSeq or None when getLedgerEntries omits it, lastModifiedLedgerSeq or 0,
    the latest ledger of the answer)."""
    found = await server.get_ledger_entries([key])
    if not found.entries:
        return None, 0, found.latest_ledger
    (entry,) = found.entries
    data = x.LedgerEntryData.from_xdr(entry.xdr).contract_data
    assert data is not None and data.durability == x.ContractDataDurability.TEMPORARY
    assert data.key.type == x.SCValType.SCV_LEDGER_KEY_NONCE
    assert entry.live_until_ledger is not None
    return entry.live_until_ledger, entry.last_modified_ledger, found.latest_ledger


def config_key(setting: x.ConfigSettingID) -> x.LedgerKey:
    return x.LedgerKey(x.LedgerEntryType.CONFIG_SETTING, config_setting=x.LedgerKeyConfigSetting(setting))


async def state_archival(server: SorobanServerAsync) -> x.StateArchivalSettings:
    key = config_key(x.ConfigSettingID.CONFIG_SETTING_STATE_ARCHIVAL)
    (entry,) = (await server.get_ledger_entries([key])).entries or []
    setting = x.LedgerEntryData.from_xdr(entry.xdr).config_setting
    assert setting is not None and setting.state_archival_settings is not None
    return setting.state_archival_settings


async def evicted_in_latest_ledger(server: SorobanServerAsync) -> list[x.LedgerKey]:
    meta = x.LedgerCloseMeta.from_xdr((await server.get_latest_ledger()).metadata_xdr)
    assert meta.v2 is not None
    return list(meta.v2.evicted_keys)


async def expect_nonce_until(
    admin: DevnetAdmin, server: SorobanServerAsync, key: x.LedgerKey, live_until: int, applied: int
) -> None:
    """The nonce shows ``live_until`` up to and including latest ledger ``live_until`` and is
    omitted (and evicted) from ledger ``live_until + 1`` on."""
    assert await nonce_entry(server, key) == (live_until, applied, applied)
    if live_until - 1 > applied:
        assert await admin.close_ledgers(live_until - 1 - applied) == live_until - 1
    assert await nonce_entry(server, key) == (live_until, applied, live_until - 1)
    assert await admin.close_ledger() == live_until
    assert await nonce_entry(server, key) == (live_until, applied, live_until)
    assert key not in await evicted_in_latest_ledger(server)
    assert await admin.close_ledger() == live_until + 1
    assert await nonce_entry(server, key) == (None, 0, live_until + 1)
    evicted = await evicted_in_latest_ledger(server)
    assert key in evicted and any(k.type == x.LedgerEntryType.TTL for k in evicted), evicted


# -- temporary entries --------------------------------------------------------------------


async def test_nonce_lives_for_the_minimum_temporary_ttl_then_disappears(
    manual: tuple[DevnetAdmin, SorobanServerAsync],
) -> None:
    admin, server = manual
    relayer, alice, bob = await fund(admin, 3)
    envelope = await transfer(server, relayer, alice, bob)
    # Expiring before the minimum TTL runs out: the minimum TTL decides.
    signed = sign(envelope, relayer, alice, await latest(server) + 3)
    found = await apply_next(admin, server, envelope)
    assert found.status == SUCCESS, found
    applied = found.ledger
    assert applied is not None
    key = nonce_key(alice.public_key, credentials(signed).nonce.int64)
    await expect_nonce_until(admin, server, key, applied + MIN_TEMP_TTL - 1, applied)


async def test_nonce_lives_until_a_later_signature_expiration(manual: tuple[DevnetAdmin, SorobanServerAsync]) -> None:
    admin, server = manual
    relayer, alice, bob = await fund(admin, 3)
    envelope = await transfer(server, relayer, alice, bob)
    expiration = await latest(server) + MIN_TEMP_TTL + 30
    signed = sign(envelope, relayer, alice, expiration)
    found = await apply_next(admin, server, envelope)
    assert found.status == SUCCESS, found
    assert found.ledger is not None
    key = nonce_key(alice.public_key, credentials(signed).nonce.int64)
    await expect_nonce_until(admin, server, key, expiration, found.ledger)


async def test_nonce_can_be_signed_again_from_the_first_ledger_past_its_ttl(
    manual: tuple[DevnetAdmin, SorobanServerAsync],
) -> None:
    """While the nonce entry is live, a new signature over the same nonce is refused
    (Error(Auth, ExistingValue)); applied in the first ledger past its TTL, the entry is
    absent to the host and the same nonce is consumed again."""
    admin, server = manual
    relayer, alice, bob = await fund(admin, 3)
    first = await transfer(server, relayer, alice, bob)
    signed = sign(first, relayer, alice, await latest(server) + 1)
    found = await apply_next(admin, server, first)
    assert found.status == SUCCESS and found.ledger is not None, found
    live_until = found.ledger + MIN_TEMP_TTL - 1
    key = nonce_key(alice.public_key, credentials(signed).nonce.int64)
    soroban_data = first.transaction.soroban_data
    assert soroban_data is not None

    async def reuse() -> GetTransactionResponse:
        again = (
            TransactionBuilder(await server.load_account(relayer.public_key), PASSPHRASE, base_fee=100)
            .append_invoke_contract_function_op(NATIVE_SAC, "transfer", transfer_args(alice, bob))
            .set_soroban_data(soroban_data)  # its footprint holds the nonce's key
            .set_timeout(TIMEOUT_S)
            .build()
        )
        resigned = authorize_entry(signed, alice, await latest(server) + 1, PASSPHRASE)
        again.transaction.operations[0].auth = [resigned]  # type: ignore[attr-defined]
        again.sign(relayer)
        return await apply_next(admin, server, again)

    # Applied in ledger live_until: the nonce entry is live, the nonce is used.
    assert await admin.close_ledgers(live_until - 1 - found.ledger) == live_until - 1
    refused = await reuse()
    assert refused.status == FAILED and refused.ledger == live_until, refused
    assert host_function_code(refused) == IHF.INVOKE_HOST_FUNCTION_TRAPPED
    # Applied in ledger live_until + 1: the entry is past its TTL, the nonce is free again.
    reused = await reuse()
    assert reused.status == SUCCESS and reused.ledger == live_until + 1, reused
    assert (await nonce_entry(server, key))[:2] == (live_until + 1 + MIN_TEMP_TTL - 1, live_until + 1)


# -- signature expiration -----------------------------------------------------------------


async def test_signature_expiration_ledger_bounds(manual: tuple[DevnetAdmin, SorobanServerAsync]) -> None:
    """Valid from the ledger applied up to its expiration ledger, which may be at most that
    ledger + max entry TTL - 1; both sides refused as the host refuses them (TRAPPED at apply,
    Error(Auth, InvalidInput) in an enforcing simulation)."""
    admin, server = manual
    relayer, alice, bob = await fund(admin, 3)
    max_entry_ttl = (await state_archival(server)).max_entry_ttl.uint32
    before = await balance(server, alice)

    async def attempt(expiration_from_apply_ledger: int) -> GetTransactionResponse:
        envelope = await transfer(server, relayer, alice, bob)
        apply_ledger = await latest(server) + 1
        sign(envelope, relayer, alice, apply_ledger + expiration_from_apply_ledger)
        simulated = await server.simulate_transaction(envelope, auth_mode=AuthMode.ENFORCE)
        found = await apply_next(admin, server, envelope)
        assert found.ledger == apply_ledger
        if found.status == FAILED:
            assert simulated.error is not None and "Error(Auth, InvalidInput)" in simulated.error, simulated
            assert host_function_code(found) == IHF.INVOKE_HOST_FUNCTION_TRAPPED
        else:
            assert simulated.error is None, simulated.error
        return found

    assert (await attempt(-1)).status == FAILED  # expired one ledger before it is applied
    assert (await attempt(0)).status == SUCCESS  # expires in the very ledger it is applied in
    assert (await attempt(max_entry_ttl - 1)).status == SUCCESS  # as late as allowed
    assert (await attempt(max_entry_ttl)).status == FAILED  # one ledger too late
    # Two transfers of 1 XLM went through (the relayer paid the fees, not alice).
    assert before - await balance(server, alice) == 2 * XLM


# -- the network configuration ------------------------------------------------------------


async def test_state_archival_and_scp_timing_config_settings(manual: tuple[DevnetAdmin, SorobanServerAsync]) -> None:
    _, server = manual
    keys = [
        config_key(x.ConfigSettingID.CONFIG_SETTING_STATE_ARCHIVAL),
        config_key(x.ConfigSettingID.CONFIG_SETTING_SCP_TIMING),
    ]
    found = await server.get_ledger_entries(keys)
    archival_entry, timing_entry = found.entries or []
    assert archival_entry.live_until_ledger is None and timing_entry.live_until_ledger is None
    archival = x.LedgerEntryData.from_xdr(archival_entry.xdr).config_setting
    timing = x.LedgerEntryData.from_xdr(timing_entry.xdr).config_setting
    assert archival is not None and archival.state_archival_settings is not None
    assert timing is not None and timing.contract_scp_timing is not None
    settings = archival.state_archival_settings
    assert settings.min_temporary_ttl.uint32 == MIN_TEMP_TTL
    assert settings.max_entry_ttl.uint32 == TESTNET_MAX_ENTRY_TTL
    assert settings.min_persistent_ttl.uint32 < settings.max_entry_ttl.uint32
    assert timing.contract_scp_timing.ledger_target_close_time_milliseconds.uint32 == CLOCK_MS


async def test_config_settings_follow_the_protocol(manual: tuple[DevnetAdmin, SorobanServerAsync]) -> None:
    """A setting devnet does not model is refused as "not supported by devnet"; one that only
    a later protocol creates is absent, as on a real network of devnet's protocol."""
    admin, server = manual
    status, body = await admin.rpc(
        "getLedgerEntries", {"keys": [config_key(x.ConfigSettingID.CONFIG_SETTING_CONTRACT_COMPUTE_V0).to_xdr()]}
    )
    assert status == 200 and body["error"]["code"] == -32602, body
    assert "keys[0]" in body["error"]["message"] and "not supported by devnet" in body["error"]["message"]
    protocol = (await server.get_network()).protocol_version
    frozen = config_key(x.ConfigSettingID.CONFIG_SETTING_FROZEN_LEDGER_KEYS).to_xdr()
    _, body = await admin.rpc("getLedgerEntries", {"keys": [frozen]})
    if protocol < 26:  # stellar-core NetworkConfig.cpp, createLedgerEntriesForV26
        assert body["result"]["entries"] == [], body
    else:
        assert "not supported by devnet" in body["error"]["message"], body


@pytest.mark.parametrize(
    ("value", "rule"),
    [(str(PROTOCOL_MIN_TEMP_TTL - 1), "protocol minimum"), (str(TESTNET_MAX_ENTRY_TTL), "max entry TTL")],
)
def test_min_temp_ttl_out_of_range_is_refused(value: str, rule: str) -> None:
    with pytest.raises(RuntimeError, match=f"--min-temp-ttl.*{rule}"), run_devnet(CLOCK_MS, "--min-temp-ttl", value):
        pass


# -- persistence --------------------------------------------------------------------------


async def test_nonce_ttl_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "devnet.json"
    with run_devnet(CLOCK_MS, "--min-temp-ttl", str(MIN_TEMP_TTL), state_file=path) as first:
        async with aiohttp.ClientSession() as session, SorobanServerAsync(first.url) as server:
            admin = DevnetAdmin(first.url, session)
            relayer, alice, bob = await fund(admin, 3)
            envelope = await transfer(server, relayer, alice, bob)
            expiration = await latest(server) + MIN_TEMP_TTL + 5
            signed = sign(envelope, relayer, alice, expiration)
            found = await apply_next(admin, server, envelope)
            assert found.status == SUCCESS and found.ledger is not None, found
            key = nonce_key(alice.public_key, credentials(signed).nonce.int64)
            before = await nonce_entry(server, key)
            assert before[:2] == (expiration, found.ledger)
    with run_devnet(CLOCK_MS, "--min-temp-ttl", str(MIN_TEMP_TTL), state_file=path) as second:
        async with aiohttp.ClientSession() as session, SorobanServerAsync(second.url) as server:
            admin = DevnetAdmin(second.url, session)
            assert await nonce_entry(server, key) == before
            await expect_nonce_until(admin, server, key, expiration, found.ledger)
