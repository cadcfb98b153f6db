"""The Soroban host devnet runs: the Stellar Asset Contract and the built-in payout contract.

``SorobanHost.invoke`` executes one host function against a
:class:`~devnet.state.LedgerTxn`, in recording mode (simulation: authorizations are
recorded, not checked) or enforcing mode (apply: every ``require_auth`` needs a matching,
correctly signed, unexpired, unused authorization entry). Failures raise
:class:`HostError` with the host's error text, e.g. ``Error(Contract, #10)``.

Host functions: ``InvokeContract`` (a SAC or the payout contract), and
``CreateContract``/``CreateContractV2`` with an asset preimage and the Stellar Asset
executable, which deploys an asset's SAC (what stellar-sdk's
``append_create_stellar_asset_contract_from_asset_op`` builds). A contract that was never
deployed does not exist: calling it fails with ``Error(Storage, MissingValue)``. Uploading
Wasm and deploying a contract from an address are "not supported by devnet".

An address authorization is checked in soroban-env-host's order (auth.rs,
``AccountAuthorizationTracker::verify_and_consume_nonce`` after ``authenticate``): the
signatures first (any failure is ``Error(Auth, InvalidAction)``), then the signature
expiration ledger (``Error(Auth, InvalidInput)`` when it is before the ledger being applied or
later than that ledger + max entry TTL - 1), then the nonce (``Error(Auth, ExistingValue)``
when its entry is live). The consumed nonce is written as a temporary entry live until
max(signature expiration ledger, ledger + minimum temporary TTL - 1) (``Host::consume_nonce``).

Costs are a deterministic model, not Wasm metering: each call has a fixed instruction
count and each entry a fixed byte size, so simulation and apply always agree.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field

from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey
from stellar_sdk import xdr as x

from devnet.entries import (
    AccountEntry,
    ContractBalanceEntry,
    ContractInstanceEntry,
    Entry,
    EntryKey,
    NonceEntry,
    TrustlineEntry,
    account_key,
    account_strkey,
    asset_from_string,
    asset_from_xdr,
    contract_balance_key,
    contract_raw,
    contract_strkey,
    i128_scval,
    instance_key,
    nonce_key,
    sc_address_str,
    sdk_address,
    trustline_key,
    xdr_asset_problem,
)
from devnet.errors import NotSupported
from devnet.network_config import DEFAULT_MIN_TEMP_TTL, MAX_ENTRY_TTL
from devnet.state import LedgerTxn

MAX_INT64 = 2**63 - 1
MAX_I128 = 2**127 - 1
# Longest a signed authorization may stay valid, in ledgers: the network's max entry TTL
# (soroban-env-host auth.rs, verify_and_consume_nonce, against Host::max_live_until_ledger).
MAX_SIGNATURE_TTL = MAX_ENTRY_TTL

INSTRUCTIONS_PER_CALL = 400_000
INSTRUCTIONS_PER_CREATE = 600_000
INSTRUCTIONS_PER_TRANSFER = 900_000
INSTRUCTIONS_PER_SIGNATURE = 350_000

# SAC contract error codes (soroban-env-host ContractError).
SAC_ACCOUNT_MISSING = 6
SAC_NEGATIVE_AMOUNT = 8
SAC_BALANCE = 10
SAC_DEAUTHORIZED = 11
SAC_OVERFLOW = 12
SAC_TRUSTLINE_MISSING = 13
# The payout contract's own error codes.
PAYOUT_INVALID_AMOUNT = 1

SAC_SUPPORTED = {"transfer", "balance"}
SAC_KNOWN = SAC_SUPPORTED | {
    "allowance",
    "approve",
    "burn",
    "burn_from",
    "clawback",
    "decimals",
    "mint",
    "name",
    "set_admin",
    "admin",
    "set_authorized",
    "authorized",
    "symbol",
    "transfer_from",
    "trust",
}


class HostError(Exception):
    """A failed contract invocation, with the host's error text."""

    def __init__(self, error: str, detail: str) -> None:
        super().__init__(f"HostError: {error}: {detail}")
        self.error = error
        self.detail = detail


def _contract_error(code: int, detail: str) -> HostError:
    return HostError(f"Error(Contract, #{code})", detail)


def entry_size(entry: Entry) -> int:
    """Bytes an entry counts for in read/write resources (a fixed size per kind)."""
    if isinstance(entry, AccountEntry):
        return 92 + 40 * len(entry.signers)
    if isinstance(entry, TrustlineEntry):
        return 116
    if isinstance(entry, ContractBalanceEntry):
        return 168
    if isinstance(entry, ContractInstanceEntry):
        return 120
    return 64


@dataclass
class Invocation:
    contract: str
    function: str
    args: list[x.SCVal]

    def authorized_function(self) -> x.SorobanAuthorizedInvocation:
        return x.SorobanAuthorizedInvocation(
            function=x.SorobanAuthorizedFunction(
                x.SorobanAuthorizedFunctionType.SOROBAN_AUTHORIZED_FUNCTION_TYPE_CONTRACT_FN,
                contract_fn=x.InvokeContractArgs(
                    contract_address=sdk_address(self.contract).to_xdr_sc_address(),
                    function_name=x.SCSymbol(self.function.encode()),
                    args=self.args,
                ),
            ),
            sub_invocations=[],
        )


HFT = x.HostFunctionType
CREATE_FUNCTIONS = (HFT.HOST_FUNCTION_TYPE_CREATE_CONTRACT, HFT.HOST_FUNCTION_TYPE_CREATE_CONTRACT_V2)


def contract_id_preimage(function: x.HostFunction) -> x.ContractIDPreimage | None:
    """The contract ID preimage of a CreateContract(V2) host function, else None."""
    if function.type == HFT.HOST_FUNCTION_TYPE_CREATE_CONTRACT:
        assert function.create_contract is not None
        return function.create_contract.contract_id_preimage
    if function.type == HFT.HOST_FUNCTION_TYPE_CREATE_CONTRACT_V2:
        assert function.create_contract_v2 is not None
        return function.create_contract_v2.contract_id_preimage
    return None


def check_supported(function: x.HostFunction) -> None:
    """Raise :class:`NotSupported` for a host function devnet does not run."""
    if function.type == HFT.HOST_FUNCTION_TYPE_INVOKE_CONTRACT:
        return
    preimage = contract_id_preimage(function)
    if preimage is None:
        raise NotSupported(f"host function {function.type.name}")
    if preimage.type != x.ContractIDPreimageType.CONTRACT_ID_PREIMAGE_FROM_ASSET:
        # An address preimage deploys Wasm, which devnet cannot run.
        raise NotSupported("deploying a contract from an address (Wasm contracts)")


def asset_contract_id(network_id: bytes, asset: x.Asset) -> str:
    """sha256 of the ``ENVELOPE_TYPE_CONTRACT_ID`` preimage of an asset: the SAC's ID, the
    one ``Asset.contract_id(passphrase)`` computes (stellar-core TransactionUtils.cpp,
    getAssetContractID)."""
    preimage = x.HashIDPreimage(
        x.EnvelopeType.ENVELOPE_TYPE_CONTRACT_ID,
        contract_id=x.HashIDPreimageContractID(
            network_id=x.Hash(network_id),
            contract_id_preimage=x.ContractIDPreimage(
                x.ContractIDPreimageType.CONTRACT_ID_PREIMAGE_FROM_ASSET, from_asset=asset
            ),
        ),
    )
    return contract_strkey(hashlib.sha256(preimage.to_xdr_bytes()).digest())


def invocation_from_host_function(function: x.HostFunction) -> Invocation:
    if function.type != HFT.HOST_FUNCTION_TYPE_INVOKE_CONTRACT:
        raise NotSupported(f"host function {function.type.name}")
    assert function.invoke_contract is not None
    args = function.invoke_contract
    return Invocation(
        contract=sc_address_str(args.contract_address),
        function=args.function_name.sc_symbol.decode(errors="replace"),
        args=list(args.args),
    )


@dataclass
class HostOutcome:
    return_value: x.SCVal
    recorded_auth: list[x.SorobanAuthorizationEntry]
    instructions: int
    events: list[x.ContractEvent]
    read_only: list[EntryKey]
    read_write: list[EntryKey]
    read_bytes: int
    write_bytes: int


@dataclass
class _Run:
    ltx: LedgerTxn
    source: str
    recording: bool
    auth_entries: list[x.SorobanAuthorizationEntry]
    use_address_v2: bool
    ledger_seq: int
    network_id: bytes
    instructions: int = 0
    recorded: list[x.SorobanAuthorizationEntry] = field(default_factory=list)
    events: list[x.ContractEvent] = field(default_factory=list)
    used_entries: set[int] = field(default_factory=set)


class SorobanHost:
    """Runs contract invocations for one network."""

    def __init__(
        self, passphrase: str, min_temp_ttl: int = DEFAULT_MIN_TEMP_TTL, max_entry_ttl: int = MAX_SIGNATURE_TTL
    ) -> None:
        self.passphrase = passphrase
        self.network_id = hashlib.sha256(passphrase.encode()).digest()
        self.min_temp_ttl = min_temp_ttl
        self.max_entry_ttl = max_entry_ttl

    def min_live_until(self, ledger_seq: int) -> int:
        """The earliest live-until ledger of a temporary entry written at ``ledger_seq``
        (soroban-env-host ledger_info.rs, min_live_until_ledger_checked: the ledger counts)."""
        return ledger_seq + self.min_temp_ttl - 1

    def max_live_until(self, ledger_seq: int) -> int:
        """The latest live-until ledger of any entry written at ``ledger_seq``
        (soroban-env-host ledger_info.rs, max_live_until_ledger_checked)."""
        return ledger_seq + self.max_entry_ttl - 1

    def invoke(
        self,
        ltx: LedgerTxn,
        function: x.HostFunction,
        source: str,
        auth_entries: list[x.SorobanAuthorizationEntry],
        recording: bool,
        ledger_seq: int,
        use_address_v2: bool = False,
    ) -> HostOutcome:
        check_supported(function)
        run = _Run(ltx, source, recording, auth_entries, use_address_v2, ledger_seq, self.network_id)
        preimage = contract_id_preimage(function)
        if preimage is not None:
            value = self._create_asset_contract(run, function, preimage)
        else:
            value = self._call(run, invocation_from_host_function(function), caller=None)
        written = ltx.written_keys()
        read_only = sorted(ltx.read_keys - written)
        read_write = sorted(written)
        write_bytes = sum(entry_size(e) for k in read_write if (e := ltx.get(k)) is not None)
        read_bytes = write_bytes + sum(entry_size(e) for k in read_only if (e := ltx.get(k)) is not None)
        return HostOutcome(
            return_value=value,
            recorded_auth=run.recorded,
            instructions=run.instructions,
            events=run.events,
            read_only=read_only,
            read_write=read_write,
            read_bytes=read_bytes,
            write_bytes=write_bytes,
        )

    # -- deployment -----------------------------------------------------------------

    def _create_asset_contract(self, run: _Run, function: x.HostFunction, preimage: x.ContractIDPreimage) -> x.SCVal:
        """Deploy an asset's SAC, as rs-soroban-env v27.0.1 soroban-env-host/src/host/frame.rs
        ``invoke_function_and_return_val`` → lifecycle.rs ``create_contract_internal`` does it:

        - an asset preimage has no deployer, so nothing is authorized (no ``require_auth``,
          no auth entry recorded) and anyone may deploy any asset's SAC;
        - the executable must be the Stellar Asset one ("asset preimage is not allowed for
          Wasm executable", ``Error(Value, InvalidInput)``);
        - the ID is the asset's contract ID; an existing instance fails with
          ``Error(Storage, ExistingValue)`` "contract already exists" (``create_contract_with_id``);
        - ``init_asset`` validates the asset code and writes the instance storage (see
          ``devnet.entries._sac_instance_storage``); no contract event is emitted;
        - CreateContractV2's constructor arguments are not used: only Wasm executables
          get a constructor call (``create_contract_internal``);
        - the return value is the new contract's address.

        The footprint is the instance entry, read-write (read to check existence, then written).
        """
        run.instructions += INSTRUCTIONS_PER_CREATE
        executable = (
            function.create_contract.executable
            if function.create_contract is not None
            else function.create_contract_v2.executable  # type: ignore[union-attr]
        )
        if executable.type != x.ContractExecutableType.CONTRACT_EXECUTABLE_STELLAR_ASSET:
            raise HostError("Error(Value, InvalidInput)", "asset preimage is not allowed for Wasm executable")
        assert preimage.from_asset is not None
        contract_id = asset_contract_id(run.network_id, preimage.from_asset)
        if run.ltx.get(instance_key(contract_id)) is not None:
            raise HostError("Error(Storage, ExistingValue)", f"contract already exists: {contract_id}")
        problem = xdr_asset_problem(preimage.from_asset)
        if problem is not None:
            raise HostError("Error(Value, InvalidInput)", problem)
        run.ltx.put(ContractInstanceEntry(contract_id, "sac", asset_from_xdr(preimage.from_asset)))
        return x.SCVal(x.SCValType.SCV_ADDRESS, address=sdk_address(contract_id).to_xdr_sc_address())

    # -- dispatch -------------------------------------------------------------------

    def _call(self, run: _Run, inv: Invocation, caller: str | None) -> x.SCVal:
        run.instructions += INSTRUCTIONS_PER_CALL
        instance = run.ltx.get(instance_key(inv.contract))
        if not isinstance(instance, ContractInstanceEntry):
            # A contract exists only once deployed, a SAC included (rs-soroban-env
            # soroban-env-host/src/storage.rs, decorate_storage_error).
            raise HostError(
                "Error(Storage, MissingValue)",
                f"trying to get non-existing value for contract instance: {inv.contract}",
            )
        if instance.kind == "sac":
            return self._sac(run, instance, inv, caller)
        return self._payout(run, instance, inv)

    def _sac(self, run: _Run, sac: ContractInstanceEntry, inv: Invocation, caller: str | None) -> x.SCVal:
        if inv.function not in SAC_KNOWN:
            raise HostError(
                "Error(WasmVm, MissingValue)", f"the Stellar Asset Contract has no function {inv.function!r}"
            )
        if inv.function not in SAC_SUPPORTED:
            raise NotSupported(f"Stellar Asset Contract function {inv.function!r}")
        if inv.function == "balance":
            (holder,) = _args(inv, x.SCValType.SCV_ADDRESS)
            return i128_scval(self._balance(run, sac.asset, sac.contract_id, _address(holder)))
        sender_v, receiver_v, amount_v = _args(
            inv, x.SCValType.SCV_ADDRESS, x.SCValType.SCV_ADDRESS, x.SCValType.SCV_I128
        )
        sender, receiver, amount = _address(sender_v), _address(receiver_v), _i128(amount_v)
        if amount < 0:
            raise _contract_error(SAC_NEGATIVE_AMOUNT, f"negative amount is not allowed: {amount}")
        if caller != sender:
            self._require_auth(run, sender, inv)
        run.instructions += INSTRUCTIONS_PER_TRANSFER
        self._move(run, sac, sender, -amount)
        self._move(run, sac, receiver, amount)
        run.events.append(_transfer_event(sac, sender, receiver, amount))
        return x.SCVal(x.SCValType.SCV_VOID)

    def _payout(self, run: _Run, contract: ContractInstanceEntry, inv: Invocation) -> x.SCVal:
        if inv.function != "distribute_winnings":
            raise HostError("Error(WasmVm, MissingValue)", f"the payout contract has no function {inv.function!r}")
        to_v, amount_v = _args(inv, x.SCValType.SCV_ADDRESS, x.SCValType.SCV_I128)
        amount = _i128(amount_v)
        assert contract.admin is not None
        self._require_auth(run, contract.admin, inv)
        if amount <= 0:
            raise _contract_error(PAYOUT_INVALID_AMOUNT, f"amount must be positive: {amount}")
        token = asset_from_string(contract.asset).contract_id(self.passphrase)
        transfer = Invocation(
            token,
            "transfer",
            [
                x.SCVal(x.SCValType.SCV_ADDRESS, address=sdk_address(contract.contract_id).to_xdr_sc_address()),
                to_v,
                amount_v,
            ],
        )
        self._call(run, transfer, caller=contract.contract_id)
        return x.SCVal(x.SCValType.SCV_VOID)

    # -- balances -------------------------------------------------------------------

    def _balance(self, run: _Run, asset: str, token_contract: str, holder: str) -> int:
        if holder.startswith("C"):
            entry = run.ltx.get(contract_balance_key(token_contract, holder))
            return entry.amount if isinstance(entry, ContractBalanceEntry) else 0
        if asset == "native":
            account = run.ltx.get(account_key(holder))
            if not isinstance(account, AccountEntry):
                raise _contract_error(SAC_ACCOUNT_MISSING, f"account {holder} does not exist")
            return account.balance
        if asset.endswith(":" + holder):
            return MAX_INT64
        line = run.ltx.get(trustline_key(holder, asset))
        if not isinstance(line, TrustlineEntry):
            raise _contract_error(SAC_TRUSTLINE_MISSING, f"trustline entry is missing for account {holder}")
        return line.balance

    def _move(self, run: _Run, sac: ContractInstanceEntry, holder: str, delta: int) -> None:
        """Add ``delta`` (negative to debit) to a holder's balance of the SAC's asset."""
        asset = sac.asset
        if holder.startswith("C"):
            key = contract_balance_key(sac.contract_id, holder)
            entry = run.ltx.load(key)
            if entry is None:
                entry = ContractBalanceEntry(sac.contract_id, holder)
            assert isinstance(entry, ContractBalanceEntry)
            if entry.amount + delta < 0:
                raise _contract_error(SAC_BALANCE, f"balance is not sufficient to spend: {entry.amount} < {-delta}")
            if entry.amount + delta > MAX_I128:
                raise _contract_error(SAC_OVERFLOW, "balance overflow")
            entry.amount += delta
            run.ltx.put(entry)
            return
        if asset == "native":
            account = run.ltx.load(account_key(holder))
            if not isinstance(account, AccountEntry):
                raise _contract_error(SAC_ACCOUNT_MISSING, f"account {holder} does not exist")
            if delta < 0 and account.available_balance() < -delta:
                raise _contract_error(
                    SAC_BALANCE,
                    f"resulting balance is not within the allowed range: "
                    f"{account.available_balance()} spendable < {-delta}",
                )
            if account.balance + delta > MAX_INT64:
                raise _contract_error(SAC_OVERFLOW, "balance overflow")
            account.balance += delta
            run.ltx.put(account)
            return
        if asset.endswith(":" + holder):
            return  # the issuer mints on send and burns on receive
        line = run.ltx.load(trustline_key(holder, asset))
        if not isinstance(line, TrustlineEntry):
            raise _contract_error(SAC_TRUSTLINE_MISSING, f"trustline entry is missing for account {holder}")
        if not line.authorized:
            raise _contract_error(SAC_DEAUTHORIZED, f"balance of {holder} is deauthorized")
        if line.balance + delta < 0:
            raise _contract_error(SAC_BALANCE, f"balance is not sufficient to spend: {line.balance} < {-delta}")
        if line.balance + delta > line.limit:
            raise _contract_error(SAC_BALANCE, f"trustline limit {line.limit} exceeded")
        line.balance += delta
        run.ltx.put(line)

    # -- authorization --------------------------------------------------------------

    def _require_auth(self, run: _Run, address: str, inv: Invocation) -> None:
        run.instructions += INSTRUCTIONS_PER_SIGNATURE
        invocation = inv.authorized_function()
        if run.recording:
            run.recorded.append(self._record(run, address, invocation))
            return
        wanted = invocation.to_xdr_bytes()
        for index, entry in enumerate(run.auth_entries):
            if index in run.used_entries or entry.root_invocation.to_xdr_bytes() != wanted:
                continue
            creds = entry.credentials
            if creds.type == x.SorobanCredentialsType.SOROBAN_CREDENTIALS_SOURCE_ACCOUNT:
                if address != run.source:
                    continue
            elif _credential_address(creds) != address:
                continue
            run.used_entries.add(index)
            if creds.type != x.SorobanCredentialsType.SOROBAN_CREDENTIALS_SOURCE_ACCOUNT:
                self._check_address_credentials(run, entry)
            return
        raise HostError("Error(Auth, InvalidAction)", f"no authorization entry for {address} matches this call")

    def _record(
        self, run: _Run, address: str, invocation: x.SorobanAuthorizedInvocation
    ) -> x.SorobanAuthorizationEntry:
        if address == run.source:
            creds = x.SorobanCredentials(x.SorobanCredentialsType.SOROBAN_CREDENTIALS_SOURCE_ACCOUNT)
            return x.SorobanAuthorizationEntry(credentials=creds, root_invocation=invocation)
        # Verifying the signature at apply reads the account and costs a signature check.
        run.ltx.get(account_key(address))
        run.instructions += INSTRUCTIONS_PER_SIGNATURE
        nonce = secrets.randbits(63)
        address_creds = x.SorobanAddressCredentials(
            address=sdk_address(address).to_xdr_sc_address(),
            nonce=x.Int64(nonce),
            signature_expiration_ledger=x.Uint32(0),
            signature=x.SCVal(x.SCValType.SCV_VOID),
        )
        if run.use_address_v2:
            creds = x.SorobanCredentials(
                x.SorobanCredentialsType.SOROBAN_CREDENTIALS_ADDRESS_V2, address_v2=address_creds
            )
        else:
            creds = x.SorobanCredentials(x.SorobanCredentialsType.SOROBAN_CREDENTIALS_ADDRESS, address=address_creds)
        # The nonce entry is written at apply; recording it puts its key in the footprint. The
        # recording host consumes it with the longest TTL a signature could ask for
        # (auth.rs, AccountAuthorizationTracker::new_recording).
        run.ltx.put(NonceEntry(address, nonce, live_until=self.max_live_until(run.ledger_seq)))
        return x.SorobanAuthorizationEntry(credentials=creds, root_invocation=invocation)

    def _check_address_credentials(self, run: _Run, entry: x.SorobanAuthorizationEntry) -> None:
        creds = entry.credentials
        address_creds = creds.address if creds.address is not None else creds.address_v2
        if address_creds is None:
            raise NotSupported(f"authorization credentials {creds.type.name}")
        address = sc_address_str(address_creds.address)
        if address.startswith("C"):
            raise NotSupported("contract account (__check_auth) authorization")
        try:
            self._authenticate(run, entry, address_creds, address)
        except HostError as exc:
            # auth.rs, AccountAuthorizationTracker::maybe_authorize_invocation: a failed
            # authentication is reported as an auth error, the cause in its detail.
            raise HostError(
                "Error(Auth, InvalidAction)", f"failed account authentication with error {exc.error}: {exc.detail}"
            ) from exc
        # auth.rs, verify_and_consume_nonce: expired when the ledger being applied is past the
        # signature expiration ledger; too late when that is beyond the max live-until ledger.
        expiration = address_creds.signature_expiration_ledger.uint32
        if run.ledger_seq > expiration:
            raise HostError(
                "Error(Auth, InvalidInput)",
                f"signature has expired: {address} signed until ledger {expiration}, ledger is {run.ledger_seq}",
            )
        max_live_until = self.max_live_until(run.ledger_seq)
        if expiration > max_live_until:
            raise HostError(
                "Error(Auth, InvalidInput)",
                f"signature expiration is too late: ledger {expiration} is beyond {max_live_until}",
            )
        nonce = address_creds.nonce.int64
        # A nonce entry past its TTL reads as absent (LedgerTxn.get), as for the real host.
        if run.ltx.get(nonce_key(address, nonce)) is not None:
            raise HostError("Error(Auth, ExistingValue)", f"nonce already exists for address {address}: {nonce}")
        # Host::consume_nonce: live until the signature expires, and at least the minimum temporary TTL.
        run.ltx.put(NonceEntry(address, nonce, live_until=max(expiration, self.min_live_until(run.ledger_seq))))

    def _authenticate(
        self, run: _Run, entry: x.SorobanAuthorizationEntry, address_creds: x.SorobanAddressCredentials, address: str
    ) -> None:
        account = run.ltx.get(account_key(address))
        if not isinstance(account, AccountEntry):
            raise HostError("Error(Storage, MissingValue)", f"account {address} does not exist")
        payload = hashlib.sha256(_auth_preimage(entry, address_creds, run.network_id).to_xdr_bytes()).digest()
        weight = _signature_weight(account, address_creds.signature, payload)
        if weight < max(account.thresholds[2], 1):
            raise HostError("Error(Auth, InvalidAction)", f"signatures of {address} do not meet its medium threshold")
        run.instructions += INSTRUCTIONS_PER_SIGNATURE


def _credential_address(creds: x.SorobanCredentials) -> str | None:
    inner = creds.address if creds.address is not None else creds.address_v2
    return sc_address_str(inner.address) if inner is not None else None


def _auth_preimage(
    entry: x.SorobanAuthorizationEntry, creds: x.SorobanAddressCredentials, network_id: bytes
) -> x.HashIDPreimage:
    if entry.credentials.type == x.SorobanCredentialsType.SOROBAN_CREDENTIALS_ADDRESS:
        return x.HashIDPreimage(
            x.EnvelopeType.ENVELOPE_TYPE_SOROBAN_AUTHORIZATION,
            soroban_authorization=x.HashIDPreimageSorobanAuthorization(
                network_id=x.Hash(network_id),
                nonce=creds.nonce,
                signature_expiration_ledger=creds.signature_expiration_ledger,
                invocation=entry.root_invocation,
            ),
        )
    return x.HashIDPreimage(
        x.EnvelopeType.ENVELOPE_TYPE_SOROBAN_AUTHORIZATION_WITH_ADDRESS,
        soroban_authorization_with_address=x.HashIDPreimageSorobanAuthorizationWithAddress(
            network_id=x.Hash(network_id),
            nonce=creds.nonce,
            signature_expiration_ledger=creds.signature_expiration_ledger,
            address=creds.address,
            invocation=entry.root_invocation,
        ),
    )


def _signature_weight(account: AccountEntry, signature: x.SCVal, payload: bytes) -> int:
    """Weight of a classic account's Soroban signature vector: ``Vec<{public_key, signature}>``,
    strictly ascending by public key, every key a signer, every signature valid."""
    bad = HostError("Error(Auth, InvalidInput)", "malformed account signature")
    if signature.type != x.SCValType.SCV_VEC or signature.vec is None:
        raise bad
    weights = account.signer_weights()
    total = 0
    previous = b""
    for item in signature.vec.sc_vec:
        if item.type != x.SCValType.SCV_MAP or item.map is None:
            raise bad
        fields = {
            e.key.sym.sc_symbol: e.val
            for e in item.map.sc_map
            if e.key.type == x.SCValType.SCV_SYMBOL and e.key.sym is not None
        }
        public_key_v, signature_v = fields.get(b"public_key"), fields.get(b"signature")
        if (
            public_key_v is None
            or public_key_v.bytes is None
            or signature_v is None
            or signature_v.bytes is None
            or len(public_key_v.bytes.sc_bytes) != 32
        ):
            raise bad
        public_key = public_key_v.bytes.sc_bytes
        if public_key <= previous:
            raise HostError("Error(Auth, InvalidInput)", "signatures must be sorted by public key without duplicates")
        previous = public_key
        signer = account_strkey(public_key)
        if signer not in weights:
            raise HostError("Error(Auth, InvalidAction)", f"{signer} is not a signer of {account.account_id}")
        try:
            VerifyKey(public_key).verify(payload, signature_v.bytes.sc_bytes)
        except (BadSignatureError, ValueError) as exc:
            raise HostError("Error(Crypto, InvalidInput)", f"invalid signature by {signer}") from exc
        total += weights[signer]
    return total


def _args(inv: Invocation, *types: x.SCValType) -> list[x.SCVal]:
    if len(inv.args) != len(types):
        raise HostError(
            "Error(WasmVm, InvalidAction)",
            f"{inv.function} takes {len(types)} arguments, got {len(inv.args)}",
        )
    for index, (value, wanted) in enumerate(zip(inv.args, types, strict=True)):
        if value.type != wanted:
            raise HostError(
                "Error(Value, UnexpectedType)",
                f"{inv.function} argument {index} must be {wanted.name}, got {value.type.name}",
            )
    return inv.args


def _address(value: x.SCVal) -> str:
    assert value.address is not None
    try:
        return sc_address_str(value.address)
    except NotSupported as exc:
        raise HostError("Error(Value, UnexpectedType)", str(exc)) from exc


def _i128(value: x.SCVal) -> int:
    assert value.i128 is not None
    return (value.i128.hi.int64 << 64) | value.i128.lo.uint64


def _transfer_event(sac: ContractInstanceEntry, sender: str, receiver: str, amount: int) -> x.ContractEvent:
    topics = [
        x.SCVal(x.SCValType.SCV_SYMBOL, sym=x.SCSymbol(b"transfer")),
        x.SCVal(x.SCValType.SCV_ADDRESS, address=sdk_address(sender).to_xdr_sc_address()),
        x.SCVal(x.SCValType.SCV_ADDRESS, address=sdk_address(receiver).to_xdr_sc_address()),
        x.SCVal(x.SCValType.SCV_STRING, str=x.SCString(sac.asset.encode())),
    ]
    return x.ContractEvent(
        ext=x.ExtensionPoint(0),
        contract_id=x.ContractID(x.Hash(contract_raw(sac.contract_id))),
        type=x.ContractEventType.CONTRACT,
        body=x.ContractEventBody(0, v0=x.ContractEventV0(topics=topics, data=i128_scval(amount))),
    )
