"""Ledger entries as devnet keeps them, and their XDR forms.

devnet holds state as small Python dataclasses (cheap to copy while a transaction is
applied) keyed by a hashable :data:`EntryKey`. Each entry converts to the XDR
``LedgerEntry`` that a real network would return from ``getLedgerEntries`` or put into
transaction meta, and every XDR ``LedgerKey`` that devnet understands converts back to an
:data:`EntryKey`. Keys of any other kind are "not supported by devnet".

Temporary entries (devnet's only kind: consumed authorization nonces) carry their TTL as
``live_until``, the last ledger in which they are live, and it is persisted with them in the
state file's JSON. An entry past its TTL is absent for every reader although it may still
be held until it is evicted (:class:`devnet.state.LedgerState`).
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from functools import lru_cache

from stellar_sdk import Address, Asset, Keypair, StrKey
from stellar_sdk import xdr as x

from devnet.errors import NotSupported

# Base reserve and thresholds as on stellar/quickstart (protocol defaults).
BASE_RESERVE = 5_000_000
TRUSTLINE_AUTHORIZED_FLAG = 1
MAX_INT64 = 2**63 - 1

# An EntryKey is a tuple whose first item names the entry kind.
EntryKey = tuple[str, ...]


def account_key(account_id: str) -> EntryKey:
    return ("account", account_id)


def trustline_key(account_id: str, asset: str) -> EntryKey:
    return ("trustline", account_id, asset)


def contract_balance_key(token_contract: str, holder: str) -> EntryKey:
    return ("balance", token_contract, holder)


def instance_key(contract_id: str) -> EntryKey:
    return ("instance", contract_id)


def nonce_key(address: str, nonce: int) -> EntryKey:
    return ("nonce", address, str(nonce))


# The kinds of entry whose key is CONTRACT_DATA with TEMPORARY durability.
TEMPORARY_KINDS = frozenset({"nonce"})


def is_temporary(key: EntryKey) -> bool:
    return key[0] in TEMPORARY_KINDS


# StrKey encoding and decoding (base32 + CRC16 in pure Python) dominated the cost of
# applying a transaction; devnet sees the same few account and contract IDs over and over,
# so the conversions are memoized. The results are immutable (str, bytes) or never
# mutated (Address, Keypair) and every caller builds fresh XDR objects from them; an
# invalid input is not cached, so it raises exactly as the uncached call does.
_STRKEY_CACHE = 1 << 16


@lru_cache(maxsize=_STRKEY_CACHE)
def _encode_account(raw: bytes) -> str:
    return StrKey.encode_ed25519_public_key(raw)


def account_strkey(raw: bytes) -> str:
    """``StrKey.encode_ed25519_public_key``, memoized."""
    return _encode_account(bytes(raw))


@lru_cache(maxsize=_STRKEY_CACHE)
def account_raw(account_id: str) -> bytes:
    """``StrKey.decode_ed25519_public_key``, memoized."""
    return StrKey.decode_ed25519_public_key(account_id)


@lru_cache(maxsize=_STRKEY_CACHE)
def _encode_contract(raw: bytes) -> str:
    return StrKey.encode_contract(raw)


def contract_strkey(raw: bytes) -> str:
    """``StrKey.encode_contract``, memoized."""
    return _encode_contract(bytes(raw))


@lru_cache(maxsize=_STRKEY_CACHE)
def contract_raw(contract_id: str) -> bytes:
    """``StrKey.decode_contract``, memoized."""
    return StrKey.decode_contract(contract_id)


@lru_cache(maxsize=_STRKEY_CACHE)
def sdk_address(address: str) -> Address:
    """``Address(address)``, memoized (callers only read it, e.g. ``.to_xdr_sc_address()``)."""
    return Address(address)


@lru_cache(maxsize=_STRKEY_CACHE)
def _keypair(account_id: str) -> Keypair:
    return Keypair.from_public_key(account_id)


def asset_string(asset: Asset) -> str:
    """``native`` or ``CODE:ISSUER`` — the form SAC events and devnet keys use."""
    return "native" if asset.is_native() else f"{asset.code}:{asset.issuer}"


def asset_from_string(text: str) -> Asset:
    if text == "native":
        return Asset.native()
    code, issuer = text.split(":", 1)
    return Asset(code, issuer)


def asset_code_problem(code: bytes, alphanum12: bool) -> str | None:
    """Why an XDR asset code is not valid, or None when it is.

    stellar-core src/util/types.cpp, isAssetValid (which the host's SAC
    ``validate_asset`` reimplements): ASCII letters and digits, NUL padding only at the
    end, 1-4 characters for CreditAlphanum4 and 5-12 for CreditAlphanum12.
    """
    body = code.rstrip(b"\0")
    if b"\0" in body:
        return "asset code can't have 0 character in the middle"
    if not all(c < 0x80 and chr(c).isalnum() for c in body):
        return "asset code has invalid character"
    if not body:
        return "asset code doesn't have non-0 characters"
    if alphanum12 and len(body) <= 4:
        return "asset codes with 4 characters or less should have `CreditAlphanum4` type"
    return None


def asset_from_xdr(asset: x.Asset) -> str:
    """``native`` or ``CODE:ISSUER`` for an XDR Asset whose code :func:`asset_code_problem` accepts."""
    if asset.type == x.AssetType.ASSET_TYPE_NATIVE:
        return "native"
    if asset.type == x.AssetType.ASSET_TYPE_CREDIT_ALPHANUM4:
        assert asset.alpha_num4 is not None
        code, issuer = asset.alpha_num4.asset_code.asset_code4, asset.alpha_num4.issuer
    else:
        assert asset.alpha_num12 is not None
        code, issuer = asset.alpha_num12.asset_code.asset_code12, asset.alpha_num12.issuer
    name = code.rstrip(b"\0").decode()
    return f"{name}:{_account_id_str(issuer)}"


def xdr_asset_problem(asset: x.Asset) -> str | None:
    """Why an XDR Asset is not a valid asset (see :func:`asset_code_problem`), or None."""
    if asset.type == x.AssetType.ASSET_TYPE_CREDIT_ALPHANUM4:
        assert asset.alpha_num4 is not None
        return asset_code_problem(asset.alpha_num4.asset_code.asset_code4, alphanum12=False)
    if asset.type == x.AssetType.ASSET_TYPE_CREDIT_ALPHANUM12:
        assert asset.alpha_num12 is not None
        return asset_code_problem(asset.alpha_num12.asset_code.asset_code12, alphanum12=True)
    return None if asset.type == x.AssetType.ASSET_TYPE_NATIVE else f"asset type {asset.type.name}"


def _account_id_xdr(account_id: str) -> x.AccountID:
    return _keypair(account_id).xdr_account_id()


def _account_id_str(account_id: x.AccountID) -> str:
    assert account_id.account_id.ed25519 is not None
    return account_strkey(account_id.account_id.ed25519.uint256)


def sc_address_str(address: x.SCAddress) -> str:
    if address.type == x.SCAddressType.SC_ADDRESS_TYPE_ACCOUNT:
        assert address.account_id is not None
        return _account_id_str(address.account_id)
    if address.type == x.SCAddressType.SC_ADDRESS_TYPE_CONTRACT:
        assert address.contract_id is not None
        return contract_strkey(address.contract_id.contract_id.hash)
    raise NotSupported(f"SCAddress type {address.type.name}")


def _trustline_asset_xdr(asset: str) -> x.TrustLineAsset:
    return asset_from_string(asset).to_trust_line_asset_xdr_object()


def _trustline_asset_str(asset: x.TrustLineAsset) -> str:
    if asset.type == x.AssetType.ASSET_TYPE_CREDIT_ALPHANUM4:
        assert asset.alpha_num4 is not None
        code = asset.alpha_num4.asset_code.asset_code4.rstrip(b"\0").decode()
        return f"{code}:{_account_id_str(asset.alpha_num4.issuer)}"
    if asset.type == x.AssetType.ASSET_TYPE_CREDIT_ALPHANUM12:
        assert asset.alpha_num12 is not None
        code = asset.alpha_num12.asset_code.asset_code12.rstrip(b"\0").decode()
        return f"{code}:{_account_id_str(asset.alpha_num12.issuer)}"
    raise NotSupported(f"trustline asset type {asset.type.name}")


def _balance_scval_key(holder: str) -> x.SCVal:
    return x.SCVal(
        x.SCValType.SCV_VEC,
        vec=x.SCVec(
            [
                x.SCVal(x.SCValType.SCV_SYMBOL, sym=x.SCSymbol(b"Balance")),
                x.SCVal(x.SCValType.SCV_ADDRESS, address=sdk_address(holder).to_xdr_sc_address()),
            ]
        ),
    )


def _contract_data_key(contract: str, key: x.SCVal, durability: x.ContractDataDurability) -> x.LedgerKey:
    return x.LedgerKey(
        x.LedgerEntryType.CONTRACT_DATA,
        contract_data=x.LedgerKeyContractData(
            contract=sdk_address(contract).to_xdr_sc_address(), key=key, durability=durability
        ),
    )


def key_to_xdr(key: EntryKey) -> x.LedgerKey:
    kind = key[0]
    if kind == "account":
        return x.LedgerKey(x.LedgerEntryType.ACCOUNT, account=x.LedgerKeyAccount(_account_id_xdr(key[1])))
    if kind == "trustline":
        return x.LedgerKey(
            x.LedgerEntryType.TRUSTLINE,
            trust_line=x.LedgerKeyTrustLine(_account_id_xdr(key[1]), _trustline_asset_xdr(key[2])),
        )
    if kind == "balance":
        return _contract_data_key(key[1], _balance_scval_key(key[2]), x.ContractDataDurability.PERSISTENT)
    if kind == "instance":
        return _contract_data_key(
            key[1],
            x.SCVal(x.SCValType.SCV_LEDGER_KEY_CONTRACT_INSTANCE),
            x.ContractDataDurability.PERSISTENT,
        )
    if kind == "nonce":
        return _contract_data_key(
            key[1],
            x.SCVal(
                x.SCValType.SCV_LEDGER_KEY_NONCE,
                nonce_key=x.SCNonceKey(x.Int64(int(key[2]))),
            ),
            x.ContractDataDurability.TEMPORARY,
        )
    raise AssertionError(f"unknown entry kind {kind}")


def ttl_key_xdr(key: EntryKey) -> x.LedgerKey:
    """The TTL entry's key of a Soroban entry: sha256 of the entry key's XDR
    (stellar-core src/ledger/LedgerTypeUtils.cpp, getTTLKey)."""
    return x.LedgerKey(
        x.LedgerEntryType.TTL,
        ttl=x.LedgerKeyTtl(key_hash=x.Hash(hashlib.sha256(key_to_xdr(key).to_xdr_bytes()).digest())),
    )


def key_from_xdr(key: x.LedgerKey) -> EntryKey:
    """The devnet key of an XDR ledger key; :class:`NotSupported` for other kinds."""
    if key.type == x.LedgerEntryType.ACCOUNT:
        assert key.account is not None
        return account_key(_account_id_str(key.account.account_id))
    if key.type == x.LedgerEntryType.TRUSTLINE:
        assert key.trust_line is not None
        return trustline_key(_account_id_str(key.trust_line.account_id), _trustline_asset_str(key.trust_line.asset))
    if key.type == x.LedgerEntryType.CONTRACT_DATA:
        assert key.contract_data is not None
        data = key.contract_data
        contract = sc_address_str(data.contract)
        scv = data.key
        persistent = data.durability == x.ContractDataDurability.PERSISTENT
        if scv.type == x.SCValType.SCV_LEDGER_KEY_CONTRACT_INSTANCE and persistent:
            return instance_key(contract)
        if scv.type == x.SCValType.SCV_LEDGER_KEY_NONCE and not persistent:
            assert scv.nonce_key is not None
            return nonce_key(contract, scv.nonce_key.nonce.int64)
        if (
            persistent
            and scv.type == x.SCValType.SCV_VEC
            and scv.vec is not None
            and len(scv.vec.sc_vec) == 2
            and scv.vec.sc_vec[0].type == x.SCValType.SCV_SYMBOL
            and scv.vec.sc_vec[0].sym is not None
            and scv.vec.sc_vec[0].sym.sc_symbol == b"Balance"
            and scv.vec.sc_vec[1].type == x.SCValType.SCV_ADDRESS
            and scv.vec.sc_vec[1].address is not None
        ):
            return contract_balance_key(contract, sc_address_str(scv.vec.sc_vec[1].address))
        raise NotSupported("contract data key other than an instance, a SAC balance or a nonce")
    raise NotSupported(f"ledger entry type {key.type.name}")


@dataclass
class AccountEntry:
    account_id: str
    balance: int
    seq_num: int
    num_sub_entries: int = 0
    # [master weight, low, medium, high], as the XDR Thresholds bytes.
    thresholds: tuple[int, int, int, int] = (1, 0, 0, 0)
    signers: dict[str, int] = field(default_factory=dict)
    last_modified: int = 0

    def key(self) -> EntryKey:
        return account_key(self.account_id)

    def min_balance(self) -> int:
        return (2 + self.num_sub_entries) * BASE_RESERVE

    def available_balance(self) -> int:
        return self.balance - self.min_balance()

    def signer_weights(self) -> dict[str, int]:
        """Every key that may sign for the account with its weight (master included)."""
        weights = {k: w for k, w in self.signers.items() if w > 0}
        if self.thresholds[0] > 0:
            weights[self.account_id] = self.thresholds[0]
        return weights

    def to_xdr(self) -> x.LedgerEntry:
        signers = [
            x.Signer(
                key=x.SignerKey(
                    x.SignerKeyType.SIGNER_KEY_TYPE_ED25519,
                    ed25519=x.Uint256(account_raw(k)),
                ),
                weight=x.Uint32(w),
            )
            for k, w in sorted(self.signers.items())
        ]
        entry = x.AccountEntry(
            account_id=_account_id_xdr(self.account_id),
            balance=x.Int64(self.balance),
            seq_num=x.SequenceNumber(x.Int64(self.seq_num)),
            num_sub_entries=x.Uint32(self.num_sub_entries),
            inflation_dest=None,
            flags=x.Uint32(0),
            home_domain=x.String32(b""),
            thresholds=x.Thresholds(bytes(self.thresholds)),
            signers=signers,
            ext=x.AccountEntryExt(0),
        )
        return _ledger_entry(self.last_modified, x.LedgerEntryData(x.LedgerEntryType.ACCOUNT, account=entry))


@dataclass
class TrustlineEntry:
    account_id: str
    asset: str
    balance: int = 0
    limit: int = MAX_INT64
    authorized: bool = True
    last_modified: int = 0

    def key(self) -> EntryKey:
        return trustline_key(self.account_id, self.asset)

    def to_xdr(self) -> x.LedgerEntry:
        entry = x.TrustLineEntry(
            account_id=_account_id_xdr(self.account_id),
            asset=_trustline_asset_xdr(self.asset),
            balance=x.Int64(self.balance),
            limit=x.Int64(self.limit),
            flags=x.Uint32(TRUSTLINE_AUTHORIZED_FLAG if self.authorized else 0),
            ext=x.TrustLineEntryExt(0),
        )
        return _ledger_entry(self.last_modified, x.LedgerEntryData(x.LedgerEntryType.TRUSTLINE, trust_line=entry))


def _map_entry(name: str, value: x.SCVal) -> x.SCMapEntry:
    return x.SCMapEntry(key=x.SCVal(x.SCValType.SCV_SYMBOL, sym=x.SCSymbol(name.encode())), val=value)


def i128_scval(value: int) -> x.SCVal:
    return x.SCVal(
        x.SCValType.SCV_I128,
        i128=x.Int128Parts(hi=x.Int64(value >> 64), lo=x.Uint64(value & 0xFFFFFFFFFFFFFFFF)),
    )


def _contract_data_entry(last_modified: int, ledger_key: x.LedgerKey, value: x.SCVal) -> x.LedgerEntry:
    assert ledger_key.contract_data is not None
    data = x.ContractDataEntry(
        ext=x.ExtensionPoint(0),
        contract=ledger_key.contract_data.contract,
        key=ledger_key.contract_data.key,
        durability=ledger_key.contract_data.durability,
        val=value,
    )
    return _ledger_entry(last_modified, x.LedgerEntryData(x.LedgerEntryType.CONTRACT_DATA, contract_data=data))


@dataclass
class ContractBalanceEntry:
    """A Stellar Asset Contract balance held by a contract address (``C…``)."""

    token_contract: str
    holder: str
    amount: int = 0
    authorized: bool = True
    clawback: bool = False
    last_modified: int = 0

    def key(self) -> EntryKey:
        return contract_balance_key(self.token_contract, self.holder)

    def to_xdr(self) -> x.LedgerEntry:
        value = x.SCVal(
            x.SCValType.SCV_MAP,
            map=x.SCMap(
                [
                    _map_entry("amount", i128_scval(self.amount)),
                    _map_entry("authorized", x.SCVal(x.SCValType.SCV_BOOL, b=self.authorized)),
                    _map_entry("clawback", x.SCVal(x.SCValType.SCV_BOOL, b=self.clawback)),
                ]
            ),
        )
        return _contract_data_entry(self.last_modified, key_to_xdr(self.key()), value)


# The payout contract is built into devnet rather than compiled to Wasm; its instance
# names this fixed hash as its code so that clients see an ordinary Wasm contract.
PAYOUT_CONTRACT_WASM_HASH = bytes.fromhex("5d1a7c3f4e2b9a8d6c0e1f2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e")


def _symbol(name: str) -> x.SCVal:
    return x.SCVal(x.SCValType.SCV_SYMBOL, sym=x.SCSymbol(name.encode()))


def _string(value: bytes) -> x.SCVal:
    return x.SCVal(x.SCValType.SCV_STRING, str=x.SCString(value))


def _sac_instance_storage(asset: str) -> x.SCMap:
    """The instance storage a SAC's ``init_asset`` writes (rs-soroban-env v27.0.1,
    soroban-env-host/src/builtin_contracts/stellar_asset_contract/contract.rs init_asset,
    metadata.rs set_metadata, storage_types.rs InstanceDataKey):

    - ``METADATA`` → ``{decimal: 7, name: "native" | "CODE:ISSUER", symbol: "native" | "CODE"}``;
    - ``[Admin]`` → the issuer's address (issued assets only: the native SAC has no admin);
    - ``[AssetInfo]`` → ``[Native]``, or ``[AlphaNum4 | AlphaNum12, {asset_code, issuer}]``
      with the code as its XDR bytes (NUL padding included) and the issuer's raw key.

    Keys in the host's map order (symbols before vectors, then by content).
    """
    if asset == "native":
        name = symbol = b"native"
        admin = None
        info = x.SCVal(x.SCValType.SCV_VEC, vec=x.SCVec([_symbol("Native")]))
    else:
        code, issuer = asset.split(":", 1)
        name, symbol = asset.encode(), code.encode()
        admin = x.SCVal(x.SCValType.SCV_ADDRESS, address=sdk_address(issuer).to_xdr_sc_address())
        width = 4 if len(code) <= 4 else 12
        details = x.SCVal(
            x.SCValType.SCV_MAP,
            map=x.SCMap(
                [
                    _map_entry("asset_code", _string(code.encode().ljust(width, b"\0"))),
                    _map_entry("issuer", x.SCVal(x.SCValType.SCV_BYTES, bytes=x.SCBytes(account_raw(issuer)))),
                ]
            ),
        )
        info = x.SCVal(
            x.SCValType.SCV_VEC, vec=x.SCVec([_symbol("AlphaNum4" if width == 4 else "AlphaNum12"), details])
        )
    metadata = x.SCVal(
        x.SCValType.SCV_MAP,
        map=x.SCMap(
            [
                _map_entry("decimal", x.SCVal(x.SCValType.SCV_U32, u32=x.Uint32(7))),
                _map_entry("name", _string(name)),
                _map_entry("symbol", _string(symbol)),
            ]
        ),
    )
    entries = [x.SCMapEntry(key=_symbol("METADATA"), val=metadata)]
    if admin is not None:
        entries.append(x.SCMapEntry(key=x.SCVal(x.SCValType.SCV_VEC, vec=x.SCVec([_symbol("Admin")])), val=admin))
    entries.append(x.SCMapEntry(key=x.SCVal(x.SCValType.SCV_VEC, vec=x.SCVec([_symbol("AssetInfo")])), val=info))
    return x.SCMap(entries)


@dataclass
class ContractInstanceEntry:
    """A contract instance: a SAC (``asset`` set) or the built-in payout contract."""

    contract_id: str
    kind: str  # "sac" | "payout"
    asset: str  # the SAC's asset, or the token the payout contract pays in
    admin: str | None = None
    last_modified: int = 0

    def key(self) -> EntryKey:
        return instance_key(self.contract_id)

    def to_xdr(self) -> x.LedgerEntry:
        if self.kind == "sac":
            executable = x.ContractExecutable(x.ContractExecutableType.CONTRACT_EXECUTABLE_STELLAR_ASSET)
            storage: x.SCMap | None = _sac_instance_storage(self.asset)
        else:
            executable = x.ContractExecutable(
                x.ContractExecutableType.CONTRACT_EXECUTABLE_WASM,
                wasm_hash=x.Hash(PAYOUT_CONTRACT_WASM_HASH),
            )
            assert self.admin is not None
            storage = x.SCMap(
                [
                    _map_entry(
                        "admin", x.SCVal(x.SCValType.SCV_ADDRESS, address=sdk_address(self.admin).to_xdr_sc_address())
                    ),
                    _map_entry("token", x.SCVal(x.SCValType.SCV_STRING, str=x.SCString(self.asset.encode()))),
                ]
            )
        value = x.SCVal(
            x.SCValType.SCV_CONTRACT_INSTANCE,
            instance=x.SCContractInstance(executable=executable, storage=storage),
        )
        return _contract_data_entry(self.last_modified, key_to_xdr(self.key()), value)


@dataclass
class NonceEntry:
    """A consumed Soroban authorization nonce: a TEMPORARY contract data entry, live up to and
    including ledger ``live_until`` (its TTL entry's liveUntilLedgerSeq)."""

    address: str
    nonce: int
    live_until: int
    last_modified: int = 0

    def key(self) -> EntryKey:
        return nonce_key(self.address, self.nonce)

    def to_xdr(self) -> x.LedgerEntry:
        return _contract_data_entry(self.last_modified, key_to_xdr(self.key()), x.SCVal(x.SCValType.SCV_VOID))


Entry = AccountEntry | TrustlineEntry | ContractBalanceEntry | ContractInstanceEntry | NonceEntry


def copy_entry(entry: Entry) -> Entry:
    if isinstance(entry, AccountEntry):
        return dataclasses.replace(entry, signers=dict(entry.signers))
    return dataclasses.replace(entry)


def _ledger_entry(last_modified: int, data: x.LedgerEntryData) -> x.LedgerEntry:
    return x.LedgerEntry(last_modified_ledger_seq=x.Uint32(last_modified), data=data, ext=x.LedgerEntryExt(0))


def entry_to_json(entry: Entry) -> dict[str, object]:
    body = dataclasses.asdict(entry)
    body["type"] = type(entry).__name__
    return body


_ENTRY_TYPES: dict[str, type] = {
    cls.__name__: cls for cls in (AccountEntry, TrustlineEntry, ContractBalanceEntry, ContractInstanceEntry, NonceEntry)
}


def entry_from_json(body: dict[str, object]) -> Entry:
    fields = dict(body)
    cls = _ENTRY_TYPES[str(fields.pop("type"))]
    if cls is AccountEntry:
        fields["thresholds"] = tuple(fields["thresholds"])  # type: ignore[arg-type]
    entry: Entry = cls(**fields)
    return entry
