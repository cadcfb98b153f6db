"""Stellar Asset Contracts of issued assets exist only once deployed, as on a real network.

Each test talks to a real devnet process over HTTP with the unmodified stellar-sdk and
fails if its rule is removed from devnet:

- a trustline does not create the asset's SAC; calling the SAC before its deployment fails
  in simulation and at apply with ``Error(Storage, MissingValue)``;
- ``append_create_stellar_asset_contract_from_asset_op`` deploys it (no authorization, any
  deployer): the instance at ``Asset.contract_id(passphrase)`` with the SAC's storage;
- deploying it a second time (or XLM's, deployed at genesis) fails with ``ExistingValue``;
- an invalid asset code is refused at submission.

(Other host functions — uploading Wasm, deploying from an address — are refused as "not
supported by devnet": tests/test_devnet_bad_input.py.)
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from stellar_sdk import (
    Account,
    Asset,
    Keypair,
    TransactionBuilder,
    TransactionEnvelope,
    scval,
)
from stellar_sdk import xdr as x
from stellar_sdk.operation import InvokeHostFunction
from stellar_sdk.soroban_rpc import GetTransactionResponse, GetTransactionStatus, SendTransactionStatus
from stellar_sdk.soroban_server_async import SorobanServerAsync

from devnet.asset_contracts import (
    AssetContractError,
    asset_contract_deployed,
    asset_contract_key,
    deploy_asset_contract,
)
from devnet.entries import ContractInstanceEntry
from devnet.fees import MIN_PERSISTENT_TTL, NewEntryRent, events_fee, events_size, non_refundable_fee, rent_fee
from devnet.host import entry_size
from tests.devnet_harness import PASSPHRASE, DevnetAdmin, result_code, sac_transfer_envelope

XLM = 10_000_000
IHF = x.InvokeHostFunctionResultCode
SUCCESS = GetTransactionStatus.SUCCESS
FAILED = GetTransactionStatus.FAILED
NOT_FOUND = GetTransactionStatus.NOT_FOUND
# Plenty for any transaction devnet models (its minimum resource fee is far lower).
RESOURCE_FEE = 5_000_000


async def new_accounts(admin: DevnetAdmin, count: int) -> list[Keypair]:
    return list(await asyncio.gather(*(admin.new_account() for _ in range(count))))


async def applied(
    server: SorobanServerAsync, admin: DevnetAdmin, envelope: TransactionEnvelope
) -> GetTransactionResponse:
    """Send (it must be accepted) and wait, closing ledgers, until it is in a ledger."""
    sent = await server.send_transaction(envelope)
    assert sent.status == SendTransactionStatus.PENDING, sent
    for _ in range(8):
        found = await server.get_transaction(sent.hash)
        if found.status != NOT_FOUND:
            return found
        await admin.close_ledger()
    raise AssertionError(f"{sent.hash} not in a ledger after 8 ledgers")


async def succeed(
    server: SorobanServerAsync, admin: DevnetAdmin, envelope: TransactionEnvelope
) -> GetTransactionResponse:
    found = await applied(server, admin, envelope)
    assert found.status == SUCCESS, found
    return found


def tx_result(found: GetTransactionResponse) -> x.TransactionResult:
    assert found.result_xdr is not None
    return x.TransactionResult.from_xdr(found.result_xdr)


def failed_soroban_fee(envelope: TransactionEnvelope) -> int:
    """What a failed Soroban transaction is charged: the inclusion fee at the base fee (100)
    and the non-refundable part of its resource fee; the whole refundable part comes back."""
    data = envelope.transaction.soroban_data
    assert data is not None
    inclusion = envelope.transaction.fee - data.resource_fee.int64
    return min(inclusion, 100) + non_refundable_fee(data.resources)


def host_function_code(found: GetTransactionResponse) -> x.InvokeHostFunctionResultCode:
    results = tx_result(found).result.results
    assert results is not None and results[0].tr is not None
    assert results[0].tr.invoke_host_function_result is not None
    return results[0].tr.invoke_host_function_result.code


async def account_state(server: SorobanServerAsync, account_id: str) -> tuple[int, int]:
    """(balance, sequence number) from getLedgerEntries."""
    key = x.LedgerKey(
        x.LedgerEntryType.ACCOUNT, account=x.LedgerKeyAccount(Keypair.from_public_key(account_id).xdr_account_id())
    )
    (entry,) = (await server.get_ledger_entries([key])).entries or []
    account = x.LedgerEntryData.from_xdr(entry.xdr).account
    assert account is not None
    return account.balance.int64, account.seq_num.sequence_number.int64


def trustline_key(account_id: str, asset: Asset) -> x.LedgerKey:
    return x.LedgerKey(
        x.LedgerEntryType.TRUSTLINE,
        trust_line=x.LedgerKeyTrustLine(
            Keypair.from_public_key(account_id).xdr_account_id(), asset.to_trust_line_asset_xdr_object()
        ),
    )


async def trustline_balance(server: SorobanServerAsync, account_id: str, asset: Asset) -> int:
    (entry,) = (await server.get_ledger_entries([trustline_key(account_id, asset)])).entries or []
    line = x.LedgerEntryData.from_xdr(entry.xdr).trust_line
    assert line is not None
    return line.balance.int64


async def trust(server: SorobanServerAsync, admin: DevnetAdmin, holder: Keypair, asset: Asset) -> None:
    account = await server.load_account(holder.public_key)
    envelope = (
        TransactionBuilder(account, PASSPHRASE, base_fee=100).append_change_trust_op(asset).set_timeout(300).build()
    )
    envelope.sign(holder)
    await succeed(server, admin, envelope)


def soroban_data(read_only: list[x.LedgerKey], read_write: list[x.LedgerKey]) -> x.SorobanTransactionData:
    """Resources made by hand (for a transaction that cannot be simulated), with ``RESOURCE_FEE``."""
    return x.SorobanTransactionData(
        ext=x.SorobanTransactionDataExt(0),
        resources=x.SorobanResources(
            footprint=x.LedgerFootprint(read_only=read_only, read_write=read_write),
            instructions=x.Uint32(2_000_000),
            disk_read_bytes=x.Uint32(1_000),
            write_bytes=x.Uint32(1_000),
        ),
        resource_fee=x.Int64(RESOURCE_FEE),
    )


def deploy_envelope(source: Keypair, sequence: int, asset: Asset) -> TransactionEnvelope:
    """The SDK's SAC deployment, unsimulated, with the sequence number ``sequence + 1``."""
    return (
        TransactionBuilder(Account(source.public_key, sequence), PASSPHRASE, base_fee=100)
        .append_create_stellar_asset_contract_from_asset_op(asset)
        .set_timeout(300)
        .build()
    )


async def instance_entry(server: SorobanServerAsync, asset: Asset) -> Any:
    """The asset's SAC instance entry from getLedgerEntries, or None."""
    entries = (await server.get_ledger_entries([asset_contract_key(asset, PASSPHRASE)])).entries
    return entries[0] if entries else None


def storage_of(entry: Any) -> dict[bytes, x.SCVal]:
    """The instance storage by key: symbols by name, ``[Symbol]`` vectors by that name."""
    data = x.LedgerEntryData.from_xdr(entry.xdr).contract_data
    assert data is not None and data.val.instance is not None
    instance = data.val.instance
    assert instance.executable.type == x.ContractExecutableType.CONTRACT_EXECUTABLE_STELLAR_ASSET
    assert instance.storage is not None
    found: dict[bytes, x.SCVal] = {}
    for item in instance.storage.sc_map:
        key = item.key
        if key.type == x.SCValType.SCV_SYMBOL and key.sym is not None:
            found[key.sym.sc_symbol] = item.val
        elif key.type == x.SCValType.SCV_VEC and key.vec is not None and key.vec.sc_vec[0].sym is not None:
            found[key.vec.sc_vec[0].sym.sc_symbol] = item.val
    return found


def map_fields(value: x.SCVal) -> dict[bytes, x.SCVal]:
    assert value.map is not None
    return {e.key.sym.sc_symbol: e.val for e in value.map.sc_map if e.key.sym is not None}


# -- undeployed: a trustline is not a deployment --------------------------------------------


async def test_an_issued_asset_sac_does_not_exist_until_deployed(
    server: SorobanServerAsync, admin: DevnetAdmin
) -> None:
    issuer, holder, deployer = await new_accounts(admin, 3)
    usdc = Asset("USDC", issuer.public_key)
    await trust(server, admin, holder, usdc)
    assert await instance_entry(server, usdc) is None, "a trustline must not create the asset's SAC"

    # Simulation: the SAC's instance is missing.
    issuer_account = await server.load_account(issuer.public_key)
    args = [scval.to_address(issuer.public_key), scval.to_address(holder.public_key), scval.to_int128(5 * XLM)]
    tx = (
        TransactionBuilder(issuer_account, PASSPHRASE, base_fee=100)
        .append_invoke_contract_function_op(usdc.contract_id(PASSPHRASE), "transfer", args)
        .set_timeout(300)
        .build()
    )
    simulated = await server.simulate_transaction(tx)
    assert simulated.error is not None and "Error(Storage, MissingValue)" in simulated.error, simulated

    # Apply, with a footprint made by hand (the instance read-only, the trustline read-write):
    # the host traps, the fee is charged (its refundable part refunded), nothing moves.
    tx.transaction.soroban_data = soroban_data(
        [asset_contract_key(usdc, PASSPHRASE)], [trustline_key(holder.public_key, usdc)]
    )
    tx.transaction.fee += RESOURCE_FEE
    tx.sign(issuer)
    balance, seq = await account_state(server, issuer.public_key)
    found = await applied(server, admin, tx)
    assert found.status == FAILED
    assert host_function_code(found) == IHF.INVOKE_HOST_FUNCTION_TRAPPED
    assert tx_result(found).fee_charged.int64 == failed_soroban_fee(tx)
    assert await account_state(server, issuer.public_key) == (balance - failed_soroban_fee(tx), seq + 1)
    assert await trustline_balance(server, holder.public_key, usdc) == 0

    # Once somebody (not the issuer) deploys it, the same payment goes through.
    await deploy_asset_contract(server, deployer, usdc, PASSPHRASE)
    await succeed(server, admin, await sac_transfer_envelope(server, issuer, holder.public_key, 5 * XLM, usdc))
    assert await trustline_balance(server, holder.public_key, usdc) == 5 * XLM


# -- deployment ----------------------------------------------------------------------------


@pytest.mark.parametrize("code", ["USDC", "EURCOIN"])
async def test_deploying_an_asset_contract_with_the_sdk(
    server: SorobanServerAsync, admin: DevnetAdmin, code: str
) -> None:
    issuer, deployer = await new_accounts(admin, 2)
    asset = Asset(code, issuer.public_key)
    contract_id = asset.contract_id(PASSPHRASE)
    tx = deploy_envelope(deployer, (await server.load_account(deployer.public_key)).sequence, asset)

    simulated = await server.simulate_transaction(tx)
    assert simulated.error is None, simulated.error
    assert simulated.results is not None
    (result,) = simulated.results
    assert result.auth == [], "deploying an asset's SAC needs no authorization"
    returned = x.SCVal.from_xdr(result.xdr)
    assert returned.address is not None
    assert scval.from_address(returned).address == contract_id
    assert simulated.transaction_data is not None
    footprint = x.SorobanTransactionData.from_xdr(simulated.transaction_data).resources.footprint
    assert footprint.read_only == []
    assert [k.to_xdr() for k in footprint.read_write] == [asset_contract_key(asset, PASSPHRASE).to_xdr()]

    prepared = await server.prepare_transaction(tx, simulated)
    prepared.sign(deployer)
    found = await succeed(server, admin, prepared)
    assert found.result_meta_xdr is not None
    meta = x.TransactionMeta.from_xdr(found.result_meta_xdr)
    assert meta.v4 is not None and meta.v4.soroban_meta is not None
    assert meta.v4.soroban_meta.return_value == returned
    (operation,) = meta.v4.operations
    created = [
        c.created
        for c in operation.changes.ledger_entry_changes
        if c.type == x.LedgerEntryChangeType.LEDGER_ENTRY_CREATED and c.created is not None
    ]
    assert [c.data.contract_data is not None for c in created] == [True]
    assert operation.events == [], "creating a SAC emits no contract event"

    entry = await instance_entry(server, asset)
    assert entry is not None and entry.last_modified_ledger == found.ledger
    storage = storage_of(entry)
    assert scval.from_address(storage[b"Admin"]).address == issuer.public_key
    metadata = map_fields(storage[b"METADATA"])
    assert (
        metadata[b"name"].str is not None and metadata[b"name"].str.sc_string == f"{code}:{issuer.public_key}".encode()
    )
    assert metadata[b"symbol"].str is not None and metadata[b"symbol"].str.sc_string == code.encode()
    assert metadata[b"decimal"].u32 is not None and metadata[b"decimal"].u32.uint32 == 7
    info = storage[b"AssetInfo"].vec
    assert info is not None and info.sc_vec[0].sym is not None
    assert info.sc_vec[0].sym.sc_symbol == (b"AlphaNum4" if len(code) <= 4 else b"AlphaNum12")
    details = map_fields(info.sc_vec[1])
    assert details[b"asset_code"].str is not None
    assert details[b"asset_code"].str.sc_string == code.encode().ljust(4 if len(code) <= 4 else 12, b"\0")
    assert details[b"issuer"].bytes is not None and details[b"issuer"].bytes.sc_bytes == issuer.raw_public_key()
    assert await asset_contract_deployed(server, asset, PASSPHRASE)


async def test_deploying_an_asset_contract_twice_fails(server: SorobanServerAsync, admin: DevnetAdmin) -> None:
    issuer, deployer = await new_accounts(admin, 2)
    usdc = Asset("USDC", issuer.public_key)
    seq = (await server.load_account(deployer.public_key)).sequence
    # Both prepared while the SAC does not exist yet; the second is applied after the first.
    first = await server.prepare_transaction(deploy_envelope(deployer, seq, usdc))
    second = await server.prepare_transaction(deploy_envelope(deployer, seq + 1, usdc))
    first.sign(deployer)
    second.sign(deployer)
    await succeed(server, admin, first)
    deployed = await instance_entry(server, usdc)

    simulated = await server.simulate_transaction(deploy_envelope(deployer, seq + 2, usdc))
    assert simulated.error is not None and "Error(Storage, ExistingValue)" in simulated.error, simulated
    with pytest.raises(AssetContractError, match="ExistingValue"):
        await deploy_asset_contract(server, deployer, usdc, PASSPHRASE)

    balance, _ = await account_state(server, deployer.public_key)
    found = await applied(server, admin, second)
    assert found.status == FAILED
    assert host_function_code(found) == IHF.INVOKE_HOST_FUNCTION_TRAPPED
    assert tx_result(found).fee_charged.int64 == failed_soroban_fee(second)
    assert await account_state(server, deployer.public_key) == (balance - failed_soroban_fee(second), seq + 2)
    assert (await instance_entry(server, usdc)).last_modified_ledger == deployed.last_modified_ledger

    # XLM's SAC exists from genesis: deploying it is the same error.
    native = await server.simulate_transaction(deploy_envelope(deployer, seq + 2, Asset.native()))
    assert native.error is not None and "Error(Storage, ExistingValue)" in native.error, native


async def test_deployment_pays_the_new_instance_rent_and_gets_the_rest_back(
    server: SorobanServerAsync, admin: DevnetAdmin
) -> None:
    """Deploying creates a persistent entry, the SAC's instance: its rent for the network's
    min_persistent_ttl comes out of the refundable fee with the returned address, simulation
    asks 15 % more refundable fee than that, and the unused part is refunded."""
    issuer, deployer = await new_accounts(admin, 2)
    usdc = Asset("USDC", issuer.public_key)
    seq = (await server.load_account(deployer.public_key)).sequence
    simulated = await server.simulate_transaction(deploy_envelope(deployer, seq, usdc))
    assert simulated.error is None and simulated.min_resource_fee is not None, simulated.error
    prepared = await server.prepare_transaction(deploy_envelope(deployer, seq, usdc), simulated)
    prepared.sign(deployer)
    balance, _ = await account_state(server, deployer.public_key)
    found = await succeed(server, admin, prepared)

    instance = ContractInstanceEntry(usdc.contract_id(PASSPHRASE), "sac", f"USDC:{issuer.public_key}")
    rent = rent_fee([NewEntryRent(True, entry_size(instance), MIN_PERSISTENT_TTL)])
    assert found.result_meta_xdr is not None
    meta = x.TransactionMeta.from_xdr(found.result_meta_xdr)
    assert meta.v4 is not None and meta.v4.soroban_meta is not None and meta.v4.soroban_meta.ext.v1 is not None
    fees = meta.v4.soroban_meta.ext.v1
    consumed = rent + events_fee(events_size([], meta.v4.soroban_meta.return_value))  # no event, an address
    data = prepared.transaction.soroban_data
    assert data is not None
    non_refundable = non_refundable_fee(data.resources)
    assert fees.rent_fee_charged.int64 == rent > 0
    assert fees.total_refundable_resource_fee_charged.int64 == consumed
    assert fees.total_non_refundable_resource_fee_charged.int64 == non_refundable
    assert simulated.min_resource_fee == non_refundable + consumed * 115 // 100
    assert tx_result(found).fee_charged.int64 == 100 + non_refundable + consumed < prepared.transaction.fee
    assert await account_state(server, deployer.public_key) == (balance - 100 - non_refundable - consumed, seq + 1)


async def test_an_invalid_asset_code_is_refused_at_submission(server: SorobanServerAsync, admin: DevnetAdmin) -> None:
    """stellar-core's isAssetValid: txFAILED before the transaction enters the queue."""
    issuer, deployer = await new_accounts(admin, 2)
    bad_asset = x.Asset(
        x.AssetType.ASSET_TYPE_CREDIT_ALPHANUM4,
        alpha_num4=x.AlphaNum4(x.AssetCode4(b"U$D\0"), issuer.xdr_account_id()),
    )
    function = x.HostFunction(
        x.HostFunctionType.HOST_FUNCTION_TYPE_CREATE_CONTRACT,
        create_contract=x.CreateContractArgs(
            contract_id_preimage=x.ContractIDPreimage(
                x.ContractIDPreimageType.CONTRACT_ID_PREIMAGE_FROM_ASSET, from_asset=bad_asset
            ),
            executable=x.ContractExecutable(x.ContractExecutableType.CONTRACT_EXECUTABLE_STELLAR_ASSET),
        ),
    )
    balance, seq = await account_state(server, deployer.public_key)
    tx = (
        TransactionBuilder(Account(deployer.public_key, seq), PASSPHRASE, base_fee=100)
        .append_operation(InvokeHostFunction(host_function=function, auth=[]))
        .set_soroban_data(soroban_data([], []))
        .set_timeout(300)
        .build()
    )
    tx.transaction.fee += RESOURCE_FEE
    simulated = await server.simulate_transaction(tx)
    assert simulated.error is not None and "Error(Value, InvalidInput)" in simulated.error, simulated
    tx.sign(deployer)
    sent = await server.send_transaction(tx)
    assert sent.status == SendTransactionStatus.ERROR, sent
    assert sent.error_result_xdr is not None and result_code(sent.error_result_xdr) == "txFAILED"
    assert await account_state(server, deployer.public_key) == (balance, seq)
