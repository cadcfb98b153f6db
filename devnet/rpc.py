"""JSON-RPC 2.0 methods of devnet, with request and response shapes as in the
Stellar RPC OpenRPC specification (shared/reference/stellar-rpc.openrpc.json).

Every parameter is validated before anything happens; a bad one gets -32602 with the
parameter's name and the rule it broke, and changes nothing.

As stellar-rpc (cmd/stellar-rpc/internal/methods):

- getLedgerEntries reads the state at the latest closed ledger and omits a temporary entry
  whose live-until ledger is before it (stellar-core QueryServer::getLedgerEntry via
  stellar-rpc's ledgerentries getter, which asks for its latest ledger); a Soroban entry's
  ``liveUntilLedgerSeq`` is its TTL. CONFIG_SETTING keys are answered from
  :mod:`devnet.network_config`; TTL keys are refused (get_ledger_entries.go).
- history is what the retention window keeps: getTransaction answers NOT_FOUND for a
  transaction trimmed away; getTransactions refuses a ``startLedger`` outside
  [oldestLedger, latestLedger] with -32600 and a cursor into a trimmed ledger with -32602
  (get_transactions.go, and go-stellar-sdk protocols/rpc GetTransactionsRequest.IsValid).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from stellar_sdk import xdr as x

from devnet.entries import ContractBalanceEntry, ContractInstanceEntry, NonceEntry, key_from_xdr
from devnet.errors import NotSupported
from devnet.ledger import Devnet, TransactionRecord
from devnet.network_config import MIN_PERSISTENT_TTL, ConfigSettingNotSupported
from devnet.transactions import MalformedEnvelope

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603

VERSION = "27.1.1-devnet"
MAX_LEDGER_KEYS = 200
MAX_PAGE = 200
DEFAULT_PAGE = 10
# Persistent contract entries live far beyond any test; devnet reports a fixed TTL, the
# network's min_persistent_ttl (the TTL its rent is charged for).
PERSISTENT_TTL_LEDGERS = MIN_PERSISTENT_TTL


class RpcError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class _Params(BaseModel):
    # strict: "1" is not an integer and "true" not a boolean, as for the real RPC's JSON decoding
    model_config = ConfigDict(extra="forbid", populate_by_name=True, strict=True)


class _NoParams(_Params):
    pass


# "json" is a valid value on a real RPC; devnet answers it with a "not supported" error.
XdrFormat = Literal["base64", "json"]


class _LedgerEntriesParams(_Params):
    keys: list[str] = Field(min_length=1, max_length=MAX_LEDGER_KEYS)
    xdr_format: XdrFormat | None = Field(default=None, alias="xdrFormat")


class _TransactionParams(_Params):
    hash: str = Field(pattern=r"^[a-f\d]{64}$")
    xdr_format: XdrFormat | None = Field(default=None, alias="xdrFormat")


class _Pagination(_Params):
    cursor: str | None = Field(default=None, pattern=r"^\d{1,20}$")
    limit: int | None = Field(default=None, ge=1, le=MAX_PAGE)


class _TransactionsParams(_Params):
    start_ledger: int | None = Field(default=None, ge=1, alias="startLedger")
    pagination: _Pagination | None = None
    xdr_format: XdrFormat | None = Field(default=None, alias="xdrFormat")


class _SendParams(_Params):
    transaction: str = Field(min_length=1)


class _ResourceConfig(_Params):
    instruction_leeway: int | None = Field(default=None, ge=0, alias="instructionLeeway")


class _SimulateParams(_Params):
    transaction: str = Field(min_length=1)
    resource_config: _ResourceConfig | None = Field(default=None, alias="resourceConfig")
    xdr_format: XdrFormat | None = Field(default=None, alias="xdrFormat")
    auth_mode: Literal["enforce", "record", "record_allow_nonroot"] | None = Field(default=None, alias="authMode")
    use_upgraded_auth: bool = Field(default=False, alias="useUpgradedAuth")


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "params"
        parts.append(f"{where}: {item['msg']}")
    return "invalid params: " + "; ".join(parts)


class RpcMethods:
    """The methods, bound to one :class:`Devnet`."""

    def __init__(self, devnet: Devnet, friendbot_url: str) -> None:
        self.devnet = devnet
        self.friendbot_url = friendbot_url
        self._methods: dict[str, tuple[type[_Params], Callable[[Any], dict[str, Any]]]] = {
            "getHealth": (_NoParams, self.get_health),
            "getNetwork": (_NoParams, self.get_network),
            "getVersionInfo": (_NoParams, self.get_version_info),
            "getLatestLedger": (_NoParams, self.get_latest_ledger),
            "getFeeStats": (_NoParams, self.get_fee_stats),
            "getLedgerEntries": (_LedgerEntriesParams, self.get_ledger_entries),
            "getTransaction": (_TransactionParams, self.get_transaction),
            "getTransactions": (_TransactionsParams, self.get_transactions),
            "sendTransaction": (_SendParams, self.send_transaction),
            "simulateTransaction": (_SimulateParams, self.simulate_transaction),
        }

    def call(self, method: str, params: Any) -> dict[str, Any]:
        if method in ("getEvents", "getLedgers"):
            raise RpcError(METHOD_NOT_FOUND, f"method {method} is not supported by devnet")
        if method not in self._methods:
            raise RpcError(METHOD_NOT_FOUND, f"method not found: {method}")
        model, handler = self._methods[method]
        if params is None:
            params = {}
        if not isinstance(params, dict):
            raise RpcError(INVALID_PARAMS, "invalid params: params must be an object of named parameters")
        try:
            parsed = model.model_validate(params)
        except ValidationError as exc:
            raise RpcError(INVALID_PARAMS, _describe(exc)) from None
        if getattr(parsed, "xdr_format", None) == "json":
            raise RpcError(INVALID_PARAMS, "invalid params: xdrFormat: json is not supported by devnet (use base64)")
        try:
            return handler(parsed)
        except MalformedEnvelope as exc:
            raise RpcError(INVALID_PARAMS, f"invalid params: {exc}") from None
        except NotSupported as exc:
            raise RpcError(INVALID_PARAMS, f"invalid params: {exc}") from None

    # -- the methods -----------------------------------------------------------------

    def _window(self) -> dict[str, Any]:
        latest, oldest = self.devnet.latest, self.devnet.oldest
        return {
            "latestLedger": latest.sequence,
            "latestLedgerCloseTime": str(latest.close_time),
            "oldestLedger": oldest.sequence,
            "oldestLedgerCloseTime": str(oldest.close_time),
        }

    def get_health(self, _: _NoParams) -> dict[str, Any]:
        return {"status": "healthy", **self._window(), "ledgerRetentionWindow": self.devnet.retention_ledgers}

    def get_network(self, _: _NoParams) -> dict[str, Any]:
        return {
            "friendbotUrl": self.friendbot_url,
            "passphrase": self.devnet.passphrase,
            "protocolVersion": self.devnet.protocol_version,
        }

    def get_version_info(self, _: _NoParams) -> dict[str, Any]:
        return {
            "version": VERSION,
            "commitHash": "0" * 40,
            "buildTimestamp": "2026-11-24T00:00:00",
            "captiveCoreVersion": "devnet (a protocol-faithful stand-in for stellar-core)",
            "protocolVersion": self.devnet.protocol_version,
        }

    def get_latest_ledger(self, _: _NoParams) -> dict[str, Any]:
        latest = self.devnet.latest
        return {
            "id": latest.hash.hex(),
            "protocolVersion": self.devnet.protocol_version,
            "sequence": latest.sequence,
            "closeTime": str(latest.close_time),
            "headerXdr": latest.header_entry(self.devnet.protocol_version, self.devnet.max_tx_set_size).to_xdr(),
            "metadataXdr": latest.close_meta(self.devnet.protocol_version, self.devnet.max_tx_set_size).to_xdr(),
        }

    def get_fee_stats(self, _: _NoParams) -> dict[str, Any]:
        # The inclusion fees charged over the recent ledgers, as stellar-rpc computes them
        # (devnet/fee_stats.py).
        return self.devnet.fee_stats()

    def get_ledger_entries(self, params: _LedgerEntriesParams) -> dict[str, Any]:
        keys: list[x.LedgerKey] = []
        for index, key_b64 in enumerate(params.keys):
            try:
                key = x.LedgerKey.from_xdr(key_b64)
            except Exception:  # xdrlib3 raises assorted errors on bad input
                raise RpcError(INVALID_PARAMS, f"invalid params: keys[{index}]: not a base64 LedgerKey XDR") from None
            if key.type == x.LedgerEntryType.TTL:
                # stellar-rpc get_ledger_entries.go: ErrLedgerTTLEntriesCannotBeQueriedDirectly
                raise RpcError(
                    INVALID_PARAMS, f"invalid params: keys[{index}]: ledger ttl entries cannot be queried directly"
                )
            keys.append(key)
        latest = self.devnet.latest.sequence
        found = []
        for index, (key_b64, key) in enumerate(zip(params.keys, keys, strict=True)):
            if key.type == x.LedgerEntryType.CONFIG_SETTING:
                assert key.config_setting is not None
                try:
                    config = self.devnet.network_config.entry(key.config_setting.config_setting_id)
                except ConfigSettingNotSupported as exc:
                    raise RpcError(INVALID_PARAMS, f"invalid params: keys[{index}]: {exc}") from None
                if config is not None:
                    found.append(
                        {
                            "key": key_b64,
                            "xdr": config.data.to_xdr(),
                            "lastModifiedLedgerSeq": config.last_modified_ledger_seq.uint32,
                        }
                    )
                continue
            try:
                devnet_key = key_from_xdr(key)
            except NotSupported:
                continue  # devnet holds no entries of that kind
            # stellar-core QueryServer::getLedgerEntry: a temporary entry whose TTL is not live
            # at the snapshot's ledger (stellar-rpc asks for its latest) is "not-found".
            entry = self.devnet.state.get_live(devnet_key, latest)
            if entry is None:
                continue
            item: dict[str, Any] = {
                "key": key_b64,
                "xdr": entry.to_xdr().data.to_xdr(),
                "lastModifiedLedgerSeq": entry.last_modified,
            }
            if isinstance(entry, NonceEntry):
                item["liveUntilLedgerSeq"] = entry.live_until
            elif isinstance(entry, (ContractBalanceEntry, ContractInstanceEntry)):
                item["liveUntilLedgerSeq"] = entry.last_modified + PERSISTENT_TTL_LEDGERS
            found.append(item)
        return {"entries": found, "latestLedger": latest}

    def _transaction_body(self, record: TransactionRecord) -> dict[str, Any]:
        return {
            "status": "SUCCESS" if record.successful else "FAILED",
            "txHash": record.hash,
            "applicationOrder": record.application_order,
            "feeBump": False,
            "envelopeXdr": record.envelope_xdr,
            "resultXdr": record.result_xdr,
            "resultMetaXdr": record.result_meta_xdr,
            "ledger": record.ledger,
        }

    def get_transaction(self, params: _TransactionParams) -> dict[str, Any]:
        window = self._window()
        record = self.devnet.transactions.get(params.hash)
        if record is None:
            return {"status": "NOT_FOUND", "txHash": params.hash, **window}
        return {**self._transaction_body(record), **window, "createdAt": str(record.created_at)}

    def get_transactions(self, params: _TransactionsParams) -> dict[str, Any]:
        devnet = self.devnet
        latest, oldest = devnet.latest, devnet.oldest
        pagination = params.pagination or _Pagination()
        limit = pagination.limit or DEFAULT_PAGE
        # go-stellar-sdk protocols/rpc GetTransactionsRequest.IsValid, answered with -32600
        # (jrpc2.InvalidRequest) by stellar-rpc's getTransactionsByLedgerSequence.
        if pagination.cursor is not None:
            if params.start_ledger is not None:
                raise RpcError(INVALID_REQUEST, "startLedger and cursor cannot both be set")
            toid = int(pagination.cursor)
            start_ledger, after_order = toid >> 32, (toid >> 12) & 0xFFFFF
            if start_ledger < oldest.sequence:
                # stellar-rpc fetchLedgerData: the cursor's ledger was trimmed away.
                raise RpcError(INVALID_PARAMS, f"database does not contain metadata for ledger: {start_ledger}")
        elif params.start_ledger is not None:
            start_ledger, after_order = params.start_ledger, 0
            if not oldest.sequence <= start_ledger <= latest.sequence:
                raise RpcError(
                    INVALID_REQUEST,
                    f"start ledger ({start_ledger}) must be between the oldest ledger: {oldest.sequence} "
                    f"and the latest ledger: {latest.sequence} for this rpc instance",
                )
        else:
            raise RpcError(INVALID_PARAMS, "invalid params: startLedger or pagination.cursor is required")
        page: list[dict[str, Any]] = []
        # The cursor is a TOID: ledger << 32 | application order << 12. A short page ends
        # past the latest ledger's last transaction, so the next call continues from there.
        cursor = (latest.sequence << 32) | (0xFFFFF << 12)
        for sequence in range(start_ledger, latest.sequence + 1):
            for order, tx_hash in enumerate(devnet.ledgers[sequence].tx_hashes, start=1):
                if sequence == start_ledger and order <= after_order:
                    continue
                record = devnet.transactions[tx_hash]
                page.append({**self._transaction_body(record), "createdAt": record.created_at})
                if len(page) == limit:
                    cursor = (sequence << 32) | (order << 12)
                    break
            if len(page) == limit:
                break
        return {
            "transactions": page,
            "latestLedger": latest.sequence,
            "latestLedgerCloseTimestamp": latest.close_time,
            "oldestLedger": oldest.sequence,
            "oldestLedgerCloseTimestamp": oldest.close_time,
            "cursor": str(cursor),
        }

    def send_transaction(self, params: _SendParams) -> dict[str, Any]:
        outcome = self.devnet.submit(params.transaction)
        latest = self.devnet.latest
        body: dict[str, Any] = {
            "status": outcome.status,
            "hash": outcome.hash,
            "latestLedger": latest.sequence,
            "latestLedgerCloseTime": latest.close_time,
        }
        if outcome.error is not None:
            body["errorResultXdr"] = outcome.error.to_xdr()
        return body

    def simulate_transaction(self, params: _SimulateParams) -> dict[str, Any]:
        return self.devnet.simulate(params.transaction, params.auth_mode, params.use_upgraded_auth)
