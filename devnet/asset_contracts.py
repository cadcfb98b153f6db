"""Deploying an asset's Stellar Asset Contract over RPC, as any client does on a real network.

An issued asset's SAC exists only once somebody deploys it; until then a payment in the
asset through Soroban fails (``Error(Storage, MissingValue)``). :func:`deploy_asset_contract`
deploys it with the unmodified stellar-sdk — ``append_create_stellar_asset_contract_from_asset_op``,
simulation, signature, ``sendTransaction``, ``getTransaction`` — so tests and demos that use
an issued asset go through exactly what they would on testnet or pubnet. It works against
any Stellar RPC, devnet included; it is not an admin shortcut.
"""

from __future__ import annotations

import asyncio

from stellar_sdk import Address, Asset, Keypair, TransactionBuilder
from stellar_sdk import xdr as x
from stellar_sdk.soroban_rpc import GetTransactionStatus, SendTransactionStatus
from stellar_sdk.soroban_server_async import SorobanServerAsync

# getTransaction polls before giving up: enough for a few ledgers at pubnet's 5 s pace.
POLL_ATTEMPTS = 60
POLL_INTERVAL_S = 0.5


class AssetContractError(RuntimeError):
    """The deployment was refused or failed (its reason is in the message)."""


def asset_contract_key(asset: Asset, passphrase: str) -> x.LedgerKey:
    """The ledger key of the asset's SAC instance (present once deployed)."""
    return x.LedgerKey(
        x.LedgerEntryType.CONTRACT_DATA,
        contract_data=x.LedgerKeyContractData(
            contract=Address(asset.contract_id(passphrase)).to_xdr_sc_address(),
            key=x.SCVal(x.SCValType.SCV_LEDGER_KEY_CONTRACT_INSTANCE),
            durability=x.ContractDataDurability.PERSISTENT,
        ),
    )


async def asset_contract_deployed(server: SorobanServerAsync, asset: Asset, passphrase: str) -> bool:
    """Whether the asset's SAC instance exists (getLedgerEntries)."""
    return bool((await server.get_ledger_entries([asset_contract_key(asset, passphrase)])).entries)


async def deploy_asset_contract(
    server: SorobanServerAsync, source: Keypair, asset: Asset, passphrase: str, *, base_fee: int = 100
) -> str:
    """Deploy ``asset``'s SAC with ``source`` paying the fee; return its contract ID.

    Anyone may deploy any asset's SAC: the host function needs no authorization. Raises
    :class:`AssetContractError` when simulation refuses it (e.g. ``Error(Storage,
    ExistingValue)``: it is already deployed), when the transaction is not accepted, or
    when it does not succeed within ``POLL_ATTEMPTS`` polls.
    """
    account = await server.load_account(source.public_key)
    tx = (
        TransactionBuilder(account, passphrase, base_fee=base_fee)
        .append_create_stellar_asset_contract_from_asset_op(asset)
        .set_timeout(300)
        .build()
    )
    simulated = await server.simulate_transaction(tx)
    if simulated.error is not None:
        raise AssetContractError(f"deploying the SAC of {_name(asset)}: simulation failed: {simulated.error}")
    prepared = await server.prepare_transaction(tx, simulated)
    prepared.sign(source)
    sent = await server.send_transaction(prepared)
    if sent.status != SendTransactionStatus.PENDING:
        raise AssetContractError(
            f"deploying the SAC of {_name(asset)}: sendTransaction {sent.status.value} {sent.error_result_xdr or ''}"
        )
    for _ in range(POLL_ATTEMPTS):
        found = await server.get_transaction(sent.hash)
        if found.status == GetTransactionStatus.SUCCESS:
            return asset.contract_id(passphrase)
        if found.status == GetTransactionStatus.FAILED:
            raise AssetContractError(f"deploying the SAC of {_name(asset)}: transaction {sent.hash} failed")
        await asyncio.sleep(POLL_INTERVAL_S)
    raise AssetContractError(f"deploying the SAC of {_name(asset)}: {sent.hash} not in a ledger after polling")


def _name(asset: Asset) -> str:
    return "XLM" if asset.is_native() else f"{asset.code}:{asset.issuer}"
