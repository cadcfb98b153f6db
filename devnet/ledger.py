"""The devnet network: ledger state, the transaction queue, ledger close and history.

``Devnet`` is synchronous and single-threaded; the HTTP server calls it from one event
loop. It follows stellar-core where the payout engine can tell the difference:

- submission (``submit``, stellar-core TransactionQueue ``tryAdd``/``canAdd``): banned hash →
  TRY_AGAIN_LATER; same hash queued → DUPLICATE; a Soroban transaction without Soroban data
  or a negative inclusion fee → ERROR txMALFORMED; another transaction of the source account
  queued → TRY_AGAIN_LATER (ERROR txBAD_SEQ if its sequence number is below the queued
  one's); then the queue's room (``devnet.surge``): a transaction that does not fit must
  out-bid the cheapest queued ones, which are evicted and banned, or it is refused and
  banned — ERROR txINSUFFICIENT_FEE whose ``feeCharged`` is the least fee that would have
  been accepted, or TRY_AGAIN_LATER when no fee would do; then ``checkValid``: XDR the
  network's protocol cannot parse (ADDRESS_V2 credentials at protocol 26, see below) → ERROR
  txMALFORMED with no fee; sequence, signatures and thresholds, time and ledger bounds, fees
  (a declared resource fee below the non-refundable fee of the declared resources →
  txSOROBAN_INVALID), an AccountMerge into its own source → txFAILED with
  ACCOUNT_MERGE_MALFORMED, a CreateContract from an invalid asset code → txFAILED → ERROR +
  result with ``feeCharged`` = resource fee + base fee × operations;
- time bounds at submission are checked against the last closed ledger: txTOO_EARLY when
  minTime > its close time; txTOO_LATE when maxTime < its close time + the upper-bound
  close-time offset = 2 × the expected ledger close time in whole seconds (``--ledger-close-ms``,
  the network's CONFIG_SETTING_SCP_TIMING ``ledger_target_close_time_milliseconds``)
  + how far the wall clock is past that close time (stellar-core TransactionUtils.cpp
  ``getUpperBoundCloseTimeOffset``, ``EXPECTED_CLOSE_TIME_MULT`` = 2);
- ledger close: the queued transactions that fit go in; when more are queued than fit, the
  highest fee rates go first and the phase (classic, then Soroban) is surge priced: its base
  fee is the lowest included bid per operation, and each transaction is charged
  min(inclusion fee, base fee × operations); otherwise the base fee is 100 (``devnet.surge``).
  Included transactions are applied in arrival order; one that is no longer valid is dropped
  and banned for 10 ledgers instead. After the close (stellar-core HerderImpl
  ``updateTransactionQueue``) a transaction left in the queue for 4 ledgers is dropped and its
  hash banned for 10, and the rest are checked again against the new ledger with the
  upper-bound close-time offset: the invalid ones (e.g. a maxTime about to pass) are dropped
  and banned;
- apply: fee and sequence number are consumed first and stay consumed when an operation
  fails; a Soroban transaction then gets back the refundable part of its resource fee that it
  did not consume (``devnet.fees``: the events and return value it emitted, the rent of the
  entries it created — contract balances and deployed SAC instances for the network's
  ``min_persistent_ttl``, consumed nonces up to their live-until ledger; all of it when it
  failed), credited after the whole ledger is applied (from protocol 23 on), so
  ``feeCharged`` = inclusion fee charged + non-refundable fee + refundable fee consumed, and
  the meta's SorobanTransactionMetaExtV1 says which (the refund's own ledger entry change
  belongs to the ledger close meta's ``postTxApplyFeeProcessing``, which devnet does not
  report); an operation whose source account an earlier operation merged away fails with
  opNO_ACCOUNT; applied hashes are banned for 10 ledgers (re-sending → TRY_AGAIN_LATER, then
  txBAD_SEQ from ``checkValid``), never DUPLICATE;
- getFeeStats: the inclusion fees charged over the last ledgers (``devnet.fee_stats``).

Options (``Devnet(...)`` and ``python -m devnet`` flags; each defaults to the real network's
value and is validated, a bad one refused with its name and rule): ``protocol_version`` (27, or
26), ``ledger_close_ms`` (5000) and ``min_temp_ttl`` (16) of the network configuration,
``retention_ledgers`` (120,960), ``max_tx_set_size`` (1000 classic operations per ledger), and
:class:`QueueSettings` — the Soroban ledger limits (mainnet's), the queue size multipliers (2)
and getFeeStats' windows (10 and 50 ledgers).

State and history:

- temporary entries (consumed authorization nonces) live until their live-until ledger and
  are absent to every reader after it (``min_temp_ttl``, default 16, the protocol minimum;
  see :mod:`devnet.state` and :mod:`devnet.host`); each ledger close evicts the ones that
  expired, and lists them (with their TTL keys) in the ledger's close meta ``evictedKeys``;
- history is kept for ``retention_ledgers`` ledgers (default 120,960, stellar-rpc's
  HISTORY_RETENTION_WINDOW): ledgers older than the latest - window + 1 and their
  transactions are forgotten (stellar-rpc cmd/stellar-rpc/internal/db: trimLedgers,
  trimTransactions);
- the network configuration (``network_config``) is readable as CONFIG_SETTING entries.

The state file (``--state-file``) is one JSON document, rewritten atomically when a ledger
with transactions closes, after admin changes and on shutdown: the protocol version (a file
of another protocol is refused at start), the entries (deployed SAC instances included, a
temporary entry with its ``live_until``), the retained transactions (their results and meta
carry the fees charged and refunded), and the retained ledgers in a compact form — the first
ledger's hashes, every close time as a difference from the previous one, and the transaction
hashes of the ledgers that have any; the other ledger hashes are recomputed on load (and
checked against the latest one's), so a long window of empty ledgers costs a few bytes each.
At start, getFeeStats' windows are refilled from the retained ledgers and transactions, as
stellar-rpc refills them from its database; the queue, bans and the fee_surge fault's
outside traffic are not kept (a restarted stellar-core starts with an empty queue too).

Stellar Asset Contracts: an issued asset's SAC exists only once somebody deploys it
(the ``CreateContract`` host function with the asset's preimage, see ``devnet.host``);
a trustline does not create it, and calling it before fails with
``Error(Storage, MissingValue)``. XLM's SAC exists from genesis: on a real network it too
exists only because somebody deployed it, which was done long ago on pubnet and testnet
(the networks the payout engine meets; stellar/quickstart issue #555: "On pubnet,
testnet, and futurenet the native asset contract is created"), while a stellar/quickstart
local network starts without it (that issue is still open); devnet stands in for the former.

Protocol version: devnet reports protocol 27 (getNetwork, getVersionInfo,
getLatestLedger, ledger headers and close meta; the CONFIG_SETTING entries that exist at it)
by default, or 26 with ``--protocol-version 26``.
27 is the protocol of the networks the payout engine meets (stellar/quickstart's
images.json: ``latest``, "compatible with mainnet", and ``testing``, "with mainnet and
testnet", both default to 27; only ``future``/``nightly-next`` run 28) and the first one
with ``SOROBAN_CREDENTIALS_ADDRESS_V2`` (stellar-protocol core/cap-0071-02.md, "Protocol
Upgrade Transition"; stellar-core src/util/ProtocolVersion.h, FIRST_PROTOCOL_CAP71), the
credentials stellar-sdk 16's ``simulate_transaction``/``prepare_transaction`` ask for
by default (``use_upgraded_auth=True``). It is also one of the two protocols the RPC
version devnet reports (27.1.x) serves: its preflight has a host for 27 and one for 26
(stellar-rpc v27.1.1, cmd/stellar-rpc/lib/preflight/src/lib.rs) and refuses any other
("unsupported protocol version"). Keeping 23 and refusing ADDRESS_V2 would be coherent
too, but would model a network the engine no longer meets, behind an RPC that cannot
serve it. The rule, by protocol:

- 27: simulation records ADDRESS_V2 when asked (``useUpgradedAuth``), legacy ADDRESS
  otherwise; both are accepted and verified at apply.
- 26: ``useUpgradedAuth`` is ignored and ADDRESS is recorded (the 26 host predates
  ADDRESS_V2: stellar-rpc v27.1.1 lib.rs, ``prev::make_recording_auth_mode``); a
  transaction carrying ADDRESS_V2 credentials is txMALFORMED at submission, because
  the protocol's XDR cannot parse it (stellar-core
  src/transactions/TransactionFrame.cpp checkValidImpl → TransactionUtils.cpp
  validateXDRForProtocol → src/rust/src/soroban_proto_any.rs can_parse_transaction);
  simulating it fails.

CAP-71's other credentials, ADDRESS_WITH_DELEGATES (delegated authentication for custom
accounts), are not modelled: refused as "not supported by devnet" at either protocol.

Deliberate simplifications (documented in README.md): the fee model of ``devnet.fees``
(fixed rates, no bandwidth or history fee); the surge pricing simplifications of
``devnet.surge``; costs modelled, not metered (``devnet.host``); XLM's SAC deployed at
genesis; persistent entries never archived.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stellar_sdk import Asset, Keypair, StrKey
from stellar_sdk import xdr as x

from devnet.entries import (
    AccountEntry,
    ContractBalanceEntry,
    ContractInstanceEntry,
    EntryKey,
    NonceEntry,
    account_key,
    entry_from_json,
    entry_to_json,
    instance_key,
    key_from_xdr,
    key_to_xdr,
    ttl_key_xdr,
)
from devnet.errors import NotSupported
from devnet.faults import Faults
from devnet.fee_stats import DEFAULT_CLASSIC_WINDOW, DEFAULT_SOROBAN_WINDOW, MAX_WINDOW, FeeWindow
from devnet.fees import (
    MIN_PERSISTENT_TTL,
    NewEntryRent,
    events_fee,
    events_size,
    non_refundable_fee,
    rent_fee,
    simulated_refundable_fee,
)
from devnet.host import HostError, SorobanHost, check_supported, entry_size
from devnet.meta import SorobanFees, transaction_meta
from devnet.network_config import DEFAULT_LEDGER_CLOSE_MS, DEFAULT_MIN_TEMP_TTL, MAX_UINT32, NetworkConfig
from devnet.operations import account_merge, change_trust, create_account, is_success, payment
from devnet.state import LedgerChange, LedgerState, LedgerTxn
from devnet.surge import (
    DEFAULT_QUEUE_MULTIPLIER,
    Bid,
    LedgerPhase,
    Phase,
    QueueRoom,
    SorobanLedgerLimits,
    bid_of,
    build_phase,
    ledger_limits,
    phase_of,
    scale,
)
from devnet.transactions import (
    BASE_FEE,
    FIRST_PROTOCOL_ADDRESS_V2,
    TC,
    ParsedTransaction,
    check_valid,
    muxed_account_id,
    parse_envelope,
)

log = logging.getLogger("devnet")

STANDALONE_PASSPHRASE = "Standalone Network ; February 2017"
# The protocol devnet reports by default, the protocols it models, and the first protocol
# with ADDRESS_V2 credentials (see the module docstring).
PROTOCOL_VERSION = 27
SUPPORTED_PROTOCOLS = (26, 27)
TOTAL_COINS = 100_000_000_000 * 10_000_000
QUEUE_LEDGERS = 4
BAN_LEDGERS = 10
# stellar-rpc cmd/stellar-rpc/internal/config/options.go: history-retention-window defaults to
# SevenDayOfLedgers = 7 × 17,280.
DEFAULT_RETENTION_LEDGERS = 120_960
# The admin endpoint closes at most this many ledgers in one request.
MAX_CLOSE_LEDGERS = 200_000
DEFAULT_MAX_TX_SET_SIZE = 1_000
# stellar-core TransactionUtils.h: the upper-bound close-time offset counts this many
# expected ledger close times.
EXPECTED_CLOSE_TIME_MULT = 2
# stellar-core TransactionFrame.cpp: the largest declared Soroban resource fee (2^50).
MAX_RESOURCE_FEE = 1 << 50


@dataclass
class TransactionRecord:
    """An applied transaction as getTransaction/getTransactions report it."""

    hash: str
    ledger: int
    application_order: int
    created_at: int
    envelope_xdr: str
    successful: bool
    # Kept encoded: XDR object trees for every retained transaction would weigh on the
    # garbage collector and stall ledger closes.
    result_xdr: str
    result_meta_xdr: str


def ledger_hash(previous_hash: bytes, sequence: int, tx_hashes: list[str]) -> bytes:
    """devnet's ledger hash: chained over the previous hash and the ledger's transactions."""
    return hashlib.sha256(previous_hash + sequence.to_bytes(4, "big") + "".join(tx_hashes).encode()).digest()


@dataclass(slots=True)
class LedgerRecord:
    sequence: int
    close_time: int
    hash: bytes
    previous_hash: bytes
    tx_hashes: list[str] = field(default_factory=list)
    # Temporary entries evicted at this ledger's close (kept in memory only: the close meta
    # of a ledger closed before a restart lists none).
    evicted: tuple[EntryKey, ...] = ()

    def header(self, protocol_version: int, max_tx_set_size: int) -> x.LedgerHeader:
        return x.LedgerHeader(
            ledger_version=x.Uint32(protocol_version),
            previous_ledger_hash=x.Hash(self.previous_hash),
            scp_value=x.StellarValue(
                tx_set_hash=x.Hash(hashlib.sha256("".join(self.tx_hashes).encode()).digest()),
                close_time=x.TimePoint(x.Uint64(self.close_time)),
                upgrades=[],
                ext=x.StellarValueExt(x.StellarValueType.STELLAR_VALUE_BASIC),
            ),
            tx_set_result_hash=x.Hash(bytes(32)),
            bucket_list_hash=x.Hash(bytes(32)),
            ledger_seq=x.Uint32(self.sequence),
            total_coins=x.Int64(TOTAL_COINS),
            fee_pool=x.Int64(0),
            inflation_seq=x.Uint32(0),
            id_pool=x.Uint64(0),
            base_fee=x.Uint32(BASE_FEE),
            base_reserve=x.Uint32(5_000_000),
            max_tx_set_size=x.Uint32(max_tx_set_size),
            skip_list=[x.Hash(bytes(32))] * 4,
            ext=x.LedgerHeaderExt(0),
        )

    def header_entry(self, protocol_version: int, max_tx_set_size: int) -> x.LedgerHeaderHistoryEntry:
        return x.LedgerHeaderHistoryEntry(
            hash=x.Hash(self.hash),
            header=self.header(protocol_version, max_tx_set_size),
            ext=x.LedgerHeaderHistoryEntryExt(0),
        )

    def close_meta(self, protocol_version: int, max_tx_set_size: int) -> x.LedgerCloseMeta:
        """The ledger's close meta, without the per-transaction processing."""
        return x.LedgerCloseMeta(
            2,
            v2=x.LedgerCloseMetaV2(
                ext=x.LedgerCloseMetaExt(0),
                ledger_header=self.header_entry(protocol_version, max_tx_set_size),
                tx_set=x.GeneralizedTransactionSet(
                    1,
                    v1_tx_set=x.TransactionSetV1(previous_ledger_hash=x.Hash(self.previous_hash), phases=[]),
                ),
                tx_processing=[],
                upgrades_processing=[],
                scp_info=[],
                total_byte_size_of_live_soroban_state=x.Uint64(0),
                # stellar-core LedgerCloseMetaFrame::populateEvictedEntries: a temporary
                # entry's key and its TTL entry's key.
                evicted_keys=[k for key in self.evicted for k in (key_to_xdr(key), ttl_key_xdr(key))],
            ),
        )


@dataclass
class SendResult:
    status: str  # PENDING | DUPLICATE | TRY_AGAIN_LATER | ERROR
    hash: str
    error: x.TransactionResult | None = None


@dataclass
class _Queued:
    ptx: ParsedTransaction
    received_ledger: int
    min_resource_fee: int | None
    phase: Phase
    bid: Bid


@dataclass(frozen=True)
class QueueSettings:
    """The transaction queue, surge pricing and fee statistics settings; each default is
    the real network's (see ``devnet.surge`` and ``devnet.fee_stats``). The expected ledger
    close time of the submission bound is the network's (``NetworkConfig.ledger_close_ms``)."""

    soroban_limits: SorobanLedgerLimits = field(default_factory=SorobanLedgerLimits)
    queue_multiplier: int = DEFAULT_QUEUE_MULTIPLIER
    soroban_queue_multiplier: int = DEFAULT_QUEUE_MULTIPLIER
    classic_fee_window: int = DEFAULT_CLASSIC_WINDOW
    soroban_fee_window: int = DEFAULT_SOROBAN_WINDOW

    def __post_init__(self) -> None:
        if self.soroban_limits.tx_count < 1:
            raise ValueError(f"soroban_limits.tx_count: must be at least 1, got {self.soroban_limits.tx_count}")
        for name in ("queue_multiplier", "soroban_queue_multiplier"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be at least 1, got {getattr(self, name)}")
        # stellar-rpc config: the fee stats windows are 1 to MaxFeeStatsRetentionWindow ledgers.
        for name in ("classic_fee_window", "soroban_fee_window"):
            if not 1 <= getattr(self, name) <= MAX_WINDOW:
                raise ValueError(f"{name}: must be an integer from 1 to {MAX_WINDOW}, got {getattr(self, name)}")


@dataclass
class _RefundableFee:
    """A Soroban transaction's refundable fee budget and what it consumed (stellar-core
    MutableTransactionResult.cpp ``RefundableFeeTracker``)."""

    budget: int
    rent: int = 0
    consumed: int = 0

    def consume(self, events_bytes: int, rent: int) -> bool:
        """``consumeRefundableSorobanResources``: rent first, then rent + events fee."""
        self.rent += rent
        if self.rent > self.budget:
            return False
        self.consumed = self.rent + events_fee(events_bytes)
        return self.consumed <= self.budget

    def reset(self) -> None:
        """A failed transaction consumes nothing refundable (``resetConsumedFee``)."""
        self.rent = self.consumed = 0


@dataclass(frozen=True)
class _Applied:
    """What applying a transaction charged: ``fee_charged`` after the refund, which is
    credited once the whole ledger is applied."""

    source: str
    phase: Phase
    ops: int
    fee_charged: int
    resource_fee_charged: int
    refund: int


def _result(
    fee_charged: int, code: x.TransactionResultCode, results: list[x.OperationResult] | None = None
) -> x.TransactionResult:
    return x.TransactionResult(
        fee_charged=x.Int64(fee_charged),
        result=x.TransactionResultResult(code, results=results if results is not None else None),
        ext=x.TransactionResultExt(0),
    )


class Devnet:
    """A single-node Stellar network in memory."""

    def __init__(
        self,
        passphrase: str = STANDALONE_PASSPHRASE,
        retention_ledgers: int = DEFAULT_RETENTION_LEDGERS,
        max_tx_set_size: int = DEFAULT_MAX_TX_SET_SIZE,
        state_file: Path | None = None,
        min_temp_ttl: int = DEFAULT_MIN_TEMP_TTL,
        ledger_close_ms: int = DEFAULT_LEDGER_CLOSE_MS,
        protocol_version: int = PROTOCOL_VERSION,
        queue_settings: QueueSettings | None = None,
    ) -> None:
        # stellar-rpc validates history-retention-window as positive; it is a uint32.
        if not 1 <= retention_ledgers <= MAX_UINT32:
            raise ValueError(f"retention_ledgers: must be an integer from 1 to {MAX_UINT32}, got {retention_ledgers}")
        # The ledger header's maxTxSetSize is a uint32, and a ledger must take something.
        if not 1 <= max_tx_set_size <= MAX_UINT32:
            raise ValueError(f"max_tx_set_size: must be an integer from 1 to {MAX_UINT32}, got {max_tx_set_size}")
        if protocol_version not in SUPPORTED_PROTOCOLS:
            raise ValueError(
                f"protocol_version: devnet models protocols {' and '.join(map(str, SUPPORTED_PROTOCOLS))} "
                f"(those its reported RPC version serves), not {protocol_version}"
            )
        self.protocol_version = protocol_version
        self.passphrase = passphrase
        self.network_id = hashlib.sha256(passphrase.encode()).digest()
        self.retention_ledgers = retention_ledgers
        self.max_tx_set_size = max_tx_set_size
        self.state_file = state_file
        self.network_config = NetworkConfig(protocol_version, min_temp_ttl, ledger_close_ms)
        self.host = SorobanHost(passphrase, min_temp_ttl, self.network_config.max_entry_ttl)
        settings = queue_settings or QueueSettings()
        self.queue_settings = settings
        self.ledger_limits = {phase: ledger_limits(phase, max_tx_set_size, settings.soroban_limits) for phase in Phase}
        multipliers = {Phase.CLASSIC: settings.queue_multiplier, Phase.SOROBAN: settings.soroban_queue_multiplier}
        self.rooms = {phase: QueueRoom(scale(self.ledger_limits[phase], multipliers[phase])) for phase in Phase}
        self.fee_windows = {
            Phase.CLASSIC: FeeWindow(settings.classic_fee_window),
            Phase.SOROBAN: FeeWindow(settings.soroban_fee_window),
        }
        self._arrivals = 0
        self.faults = Faults()
        self.state = LedgerState()
        self.queue: OrderedDict[str, _Queued] = OrderedDict()
        self.queued_accounts: dict[str, str] = {}
        self.bans: dict[str, int] = {}
        self.send_answers: dict[str, Counter[str]] = {}
        self.transactions: dict[str, TransactionRecord] = {}
        self.ledgers: OrderedDict[int, LedgerRecord] = OrderedDict()
        # The network root holds every lumen at genesis, as on a standalone stellar-core.
        self.root = Keypair.from_raw_ed25519_seed(self.network_id)
        if state_file is not None and state_file.exists():
            self._load(state_file)
            self._rebuild_fee_windows()
        else:
            self._genesis()

    # -- genesis and persistence ---------------------------------------------------

    def _genesis(self) -> None:
        genesis = LedgerRecord(1, int(time.time()), hashlib.sha256(b"genesis" + self.network_id).digest(), bytes(32))
        self.ledgers[1] = genesis
        self.state.entries[account_key(self.root.public_key)] = AccountEntry(
            self.root.public_key, balance=TOTAL_COINS, seq_num=0, last_modified=1
        )
        # XLM's SAC, deployed at genesis: pubnet and testnet have had it for long (see the
        # module docstring). Issued assets' SACs are deployed by transactions only.
        native_sac = Asset.native().contract_id(self.passphrase)
        self.state.entries[instance_key(native_sac)] = ContractInstanceEntry(
            native_sac, "sac", "native", last_modified=1
        )

    def deploy_payout_contract(self, admin: str, asset: Asset) -> str:
        """Deploy the built-in payout contract for ``admin`` paying in ``asset``.

        Its ID is derived as a real deployment from ``admin`` with salt
        sha256("devnet payout contract") would be, so it is known in advance and stable.
        Deploying again for the same admin returns the same contract.

        The asset's SAC is neither required nor deployed: a real contract's deployment
        only records the token's address (nothing calls the token, so the SAC's instance
        is not even in the deployment's footprint). Paying in an asset whose SAC was not
        deployed fails later, at the transfer, with ``Error(Storage, MissingValue)``, as
        on a real network.
        """
        if not isinstance(self.state.get(account_key(admin)), AccountEntry):
            raise ValueError(f"admin: account {admin} does not exist")
        salt = hashlib.sha256(b"devnet payout contract").digest()
        preimage = x.HashIDPreimage(
            x.EnvelopeType.ENVELOPE_TYPE_CONTRACT_ID,
            contract_id=x.HashIDPreimageContractID(
                network_id=x.Hash(self.network_id),
                contract_id_preimage=x.ContractIDPreimage(
                    x.ContractIDPreimageType.CONTRACT_ID_PREIMAGE_FROM_ADDRESS,
                    from_address=x.ContractIDPreimageFromAddress(
                        address=x.SCAddress(
                            x.SCAddressType.SC_ADDRESS_TYPE_ACCOUNT,
                            account_id=Keypair.from_public_key(admin).xdr_account_id(),
                        ),
                        salt=x.Uint256(salt),
                    ),
                ),
            ),
        )
        contract_id = StrKey.encode_contract(hashlib.sha256(preimage.to_xdr_bytes()).digest())
        name = "native" if asset.is_native() else f"{asset.code}:{asset.issuer}"
        existing = self.state.get(instance_key(contract_id))
        if isinstance(existing, ContractInstanceEntry) and existing.asset != name:
            raise ValueError(f"asset: the payout contract of {admin} already pays in {existing.asset}")
        self.state.entries[instance_key(contract_id)] = ContractInstanceEntry(
            contract_id, "payout", name, admin=admin, last_modified=self.latest.sequence
        )
        self.save()
        return contract_id

    def save(self) -> None:
        """Write the state file (atomically), if one is configured."""
        if self.state_file is None:
            return
        body = {
            "passphrase": self.passphrase,
            "protocol_version": self.protocol_version,
            "history": self._history_json(),
            "entries": [entry_to_json(e) for e in self.state.entries.values()],
            "transactions": [
                {
                    "hash": t.hash,
                    "ledger": t.ledger,
                    "application_order": t.application_order,
                    "created_at": t.created_at,
                    "envelope_xdr": t.envelope_xdr,
                    "successful": t.successful,
                    "result_xdr": t.result_xdr,
                    "meta_xdr": t.result_meta_xdr,
                }
                for t in self.transactions.values()
            ],
        }
        tmp = self.state_file.with_name(self.state_file.name + ".tmp")
        tmp.write_text(json.dumps(body))
        os.replace(tmp, self.state_file)

    def _history_json(self) -> dict[str, Any]:
        """The retained ledgers, compactly: a window of ~120k mostly empty ledgers costs a few
        bytes per ledger, so rewriting the state file stays cheap."""
        records = list(self.ledgers.values())
        first, latest = records[0], records[-1]
        close_times = [first.close_time] + [b.close_time - a.close_time for a, b in itertools.pairwise(records)]
        return {
            "first_sequence": first.sequence,
            "first_hash": first.hash.hex(),
            "first_previous_hash": first.previous_hash.hex(),
            "latest_hash": latest.hash.hex(),
            "close_times": close_times,
            "tx_hashes": {str(r.sequence): r.tx_hashes for r in records if r.tx_hashes},
        }

    def _load_history(self, history: dict[str, Any], path: Path) -> None:
        sequence = int(history["first_sequence"])
        tx_hashes: dict[str, list[str]] = history["tx_hashes"]
        previous_hash = bytes.fromhex(history["first_previous_hash"])
        current_hash = bytes.fromhex(history["first_hash"])
        if not history["close_times"]:
            raise ValueError(f"state file {path}: the ledger history is empty")
        close_time = 0
        for index, delta in enumerate(history["close_times"]):
            close_time = delta if index == 0 else close_time + delta
            hashes = list(tx_hashes.get(str(sequence), []))
            if index > 0:
                current_hash = ledger_hash(previous_hash, sequence, hashes)
            self.ledgers[sequence] = LedgerRecord(sequence, close_time, current_hash, previous_hash, hashes)
            previous_hash = current_hash
            sequence += 1
        if self.latest.hash.hex() != history["latest_hash"]:
            raise ValueError(f"state file {path}: the ledger history does not chain up to the latest ledger's hash")

    def _load(self, path: Path) -> None:
        body = json.loads(path.read_text())
        if body["passphrase"] != self.passphrase:
            raise ValueError(f"state file {path} belongs to network {body['passphrase']!r}")
        # devnet models no protocol upgrade: every retained ledger header reports the one
        # protocol the network runs, so a file of another protocol cannot be continued. A file
        # written before the protocol was recorded has none to compare.
        file_protocol = body.get("protocol_version")
        if file_protocol is not None and file_protocol != self.protocol_version:
            raise ValueError(
                f"protocol_version: state file {path} was written at protocol {file_protocol}, "
                f"not {self.protocol_version}"
            )
        if "history" in body:
            self._load_history(body["history"], path)
        else:  # the earlier format: one object per retained ledger
            for r in body["ledgers"]:
                self.ledgers[r["sequence"]] = LedgerRecord(
                    r["sequence"],
                    r["close_time"],
                    bytes.fromhex(r["hash"]),
                    bytes.fromhex(r["previous_hash"]),
                    r["tx_hashes"],
                )
        for e in body["entries"]:
            self.state.put(entry_from_json(e))
        for t in body["transactions"]:
            self.transactions[t["hash"]] = TransactionRecord(
                t["hash"],
                t["ledger"],
                t["application_order"],
                t["created_at"],
                t["envelope_xdr"],
                t["successful"],
                t["result_xdr"],
                t["meta_xdr"],
            )
        # A window narrower than the file's (a restart with a smaller --retention-ledgers)
        # forgets the older history now; temporary entries that expired while devnet was
        # down go at the next close.
        self._trim_history()
        log.info("loaded %d entries at ledger %d from %s", len(self.state.entries), self.latest.sequence, path)

    # -- reads ---------------------------------------------------------------------

    @property
    def latest(self) -> LedgerRecord:
        return next(reversed(self.ledgers.values()))

    @property
    def oldest(self) -> LedgerRecord:
        return next(iter(self.ledgers.values()))

    def account(self, account_id: str) -> AccountEntry | None:
        entry = self.state.get(account_key(account_id))
        return entry if isinstance(entry, AccountEntry) else None

    def fee_stats(self) -> dict[str, Any]:
        """getFeeStats' result: the inclusion fee distributions of the recent ledgers."""
        return {
            "sorobanInclusionFee": self.fee_windows[Phase.SOROBAN].distribution(),
            "inclusionFee": self.fee_windows[Phase.CLASSIC].distribution(),
            "latestLedger": self.latest.sequence,
        }

    # -- submission ----------------------------------------------------------------

    def submit(self, envelope_xdr: str) -> SendResult:
        """sendTransaction. Raises MalformedEnvelope / NotSupported for unusable input.

        Every answer is counted per source account (``send_answers``), so tests can check
        what a client was told without trusting the client's own account of it."""
        ptx = parse_envelope(envelope_xdr, self.network_id)
        result = self._submit(ptx)
        answer = result.status
        if result.error is not None:
            answer += " " + result.error.result.code.name
        self.send_answers.setdefault(ptx.source, Counter())[answer] += 1
        return result

    def upper_bound_close_time_offset(self, last_close_time: int, now: int) -> int:
        """Seconds after ``last_close_time`` that the next ledger may close (stellar-core
        TransactionUtils.cpp ``getUpperBoundCloseTimeOffset``): the expected close time in
        whole seconds (``duration_cast<seconds>`` truncates) × 2, plus how far the wall clock
        already is past ``last_close_time``."""
        expected = self.network_config.ledger_close_ms // 1000
        return expected * EXPECTED_CLOSE_TIME_MULT + max(0, now - last_close_time)

    def _submit(self, ptx: ParsedTransaction) -> SendResult:
        tx_hash = ptx.hash_hex
        if self.faults.take("try_again_later", "sendTransaction") is not None:
            return SendResult("TRY_AGAIN_LATER", tx_hash)
        phase = phase_of(ptx)
        # TransactionFrame ``XDRProvidesValidFee``, checked before anything else (tryAdd).
        if phase is Phase.SOROBAN and (ptx.soroban is None or not 0 <= ptx.resource_fee <= MAX_RESOURCE_FEE):
            return SendResult("ERROR", tx_hash, _result(0, TC.txMALFORMED))
        if self.bans.get(tx_hash, 0) > self.latest.sequence:
            return SendResult("TRY_AGAIN_LATER", tx_hash)
        if tx_hash in self.queue:
            return SendResult("DUPLICATE", tx_hash)
        if ptx.inclusion_fee < 0:
            return SendResult("ERROR", tx_hash, _result(0, TC.txMALFORMED))
        queued_hash = self.queued_accounts.get(ptx.source)
        if queued_hash is not None:
            # Older than the queued transaction of the account: invalid (stellar-core
            # TransactionQueue::canAdd); anything else waits for the queued one.
            if ptx.seq_num < self.queue[queued_hash].ptx.seq_num:
                return SendResult("ERROR", tx_hash, _result(0, TC.txBAD_SEQ))
            return SendResult("TRY_AGAIN_LATER", tx_hash)
        # The queue's room comes before checkValid, and a refused transaction is banned
        # (TransactionQueue::canAdd: ``ban({tx})`` when ``canAddTx`` fails).
        bid = bid_of(ptx, self._arrivals)
        room = self.rooms[phase]
        admission = room.admit(bid, (q.bid for q in self.queue.values() if q.phase is phase))
        lcl = self.latest
        if not admission.admitted:
            self.bans[tx_hash] = lcl.sequence + BAN_LEDGERS
            if admission.needed_inclusion_fee:
                needed = admission.needed_inclusion_fee + ptx.resource_fee
                return SendResult("ERROR", tx_hash, _result(needed, TC.txINSUFFICIENT_FEE))
            return SendResult("TRY_AGAIN_LATER", tx_hash)
        if ptx.first_protocol > self.protocol_version:
            # XDR this protocol cannot parse (ADDRESS_V2 before 27): txMALFORMED with no fee, the
            # first check of checkValid (TransactionFrame ``checkValidImpl``: validateXDRForProtocol
            # → ``createTxError``), after the queue's room. The protocol is fixed while devnet
            # runs, so the check at ledger close would give the same answer.
            return SendResult("ERROR", tx_hash, _result(0, TC.txMALFORMED))
        # checkValid against the last closed ledger (its close time, the next sequence number
        # for ledger bounds), with the upper-bound close-time offset for maxTime.
        min_fee = non_refundable_fee(ptx.soroban.resources) if ptx.soroban is not None else None
        offset = self.upper_bound_close_time_offset(lcl.close_time, int(time.time()))
        invalid = check_valid(ptx, self.state, lcl.sequence + 1, lcl.close_time, min_fee, offset)
        if invalid is not None:
            # checkValid's result carries the fee at the ledger's base fee (TransactionFrame
            # ``checkValidImpl``: getFee(header, baseFee, applying=false)).
            charged = ptx.resource_fee + BASE_FEE * max(1, len(ptx.tx.operations))
            return SendResult("ERROR", tx_hash, _result(charged, invalid.code, invalid.op_results))
        for evicted in admission.evict:
            self._dequeue(evicted.tx_hash)
            self.bans[evicted.tx_hash] = lcl.sequence + BAN_LEDGERS
        room.evicted_now(admission.evict)
        self._arrivals += 1
        self.queue[tx_hash] = _Queued(ptx, lcl.sequence, min_fee, phase, bid)
        self.queued_accounts[ptx.source] = tx_hash
        room.added(bid)
        return SendResult("PENDING", tx_hash)

    def consume_sequence(self, account_id: str) -> int:
        """Use an account's next sequence number from outside, as another client's
        transaction would. Returns the new sequence number."""
        account = self.state.get(account_key(account_id))
        if not isinstance(account, AccountEntry):
            raise ValueError(f"account: {account_id} does not exist")
        account.seq_num += 1
        account.last_modified = self.latest.sequence
        return account.seq_num

    # -- ledger close --------------------------------------------------------------

    def close_ledger(self, now: float | None = None) -> LedgerRecord | None:
        """Close the next ledger (None while a ledger stall is injected)."""
        if self.faults.ledger_stall:
            return None
        wall_clock = int(now if now is not None else time.time())
        previous = self.latest
        seq = previous.sequence + 1
        close_time = max(previous.close_time, wall_clock)
        record = LedgerRecord(seq, close_time, b"", previous.hash)
        applied: list[_Applied] = []
        outside: dict[Phase, int] = {}
        # An empty queue without outside traffic makes an empty ledger: /admin/close-ledgers
        # closes up to 200,000 of those in one request, so they skip building the phases.
        if self.queue or self.faults.surge_fee is not None:
            for phase in (Phase.CLASSIC, Phase.SOROBAN):  # stellar-core applies the classic phase first
                built = self._build_phase(phase, seq, close_time)
                outside[phase] = built.outside_count
                for bid in built.included:
                    queued = self.queue.get(bid.tx_hash)
                    if queued is None:
                        continue
                    self._dequeue(bid.tx_hash)
                    self.bans[bid.tx_hash] = seq + BAN_LEDGERS
                    # An earlier transaction of this ledger may have made it invalid.
                    if check_valid(queued.ptx, self.state, seq, close_time, queued.min_resource_fee) is not None:
                        continue
                    applied.append(self._apply(queued.ptx, record, built.base_fee, phase))
        if applied:
            self._credit_refunds(applied, seq)
        self._ingest_fees(applied, outside)
        # The queue after the close (HerderImpl::updateTransactionQueue): age, then validity
        # for the next ledger, with the upper-bound close-time offset.
        for tx_hash, queued in list(self.queue.items()):
            if seq - queued.received_ledger >= QUEUE_LEDGERS:
                self._ban_queued(tx_hash, seq)
        for room in self.rooms.values():
            room.ledger_closed()
        if self.queue:
            offset = self.upper_bound_close_time_offset(close_time, wall_clock)
            for tx_hash, queued in list(self.queue.items()):
                invalid = check_valid(queued.ptx, self.state, seq + 1, close_time, queued.min_resource_fee, offset)
                if invalid is not None:
                    self._ban_queued(tx_hash, seq)
        if self.bans:
            self.bans = {h: until for h, until in self.bans.items() if until > seq}
        record.hash = ledger_hash(previous.hash, seq, record.tx_hashes)
        record.evicted = tuple(self.state.evict(seq))
        self.ledgers[seq] = record
        self._trim_history()
        if record.tx_hashes:
            self.save()
        return record

    def close_ledgers(self, count: int, now: float | None = None) -> int:
        """Close ``count`` ledgers, one after the other through :meth:`close_ledger` (fewer
        while a ledger stall is injected), and save the state; the latest ledger's sequence."""
        if not 1 <= count <= MAX_CLOSE_LEDGERS:
            raise ValueError(f"count: must be an integer from 1 to {MAX_CLOSE_LEDGERS}, got {count}")
        for _ in range(count):
            if self.close_ledger(now) is None:
                break
        self.save()
        return self.latest.sequence

    def _build_phase(self, phase: Phase, seq: int, close_time: int) -> LedgerPhase:
        """The phase's transactions for ledger ``seq`` (``devnet.surge.build_phase``).

        When everything queued fits, validity is left to the check before each apply. When it
        does not, the invalid ones must not take room: they are dropped and banned first, as
        stellar-core trims invalid transactions before surge pricing (TxSetUtils)."""
        queued = [q for q in self.queue.values() if q.phase is phase]
        limit = self.ledger_limits[phase]
        outside_bid = self.faults.surge_fee
        built = build_phase([q.bid for q in queued], limit, BASE_FEE, outside_bid)
        if len(built.included) == len(queued):
            return built
        valid = []
        for q in queued:
            if check_valid(q.ptx, self.state, seq, close_time, q.min_resource_fee) is None:
                valid.append(q.bid)
            else:
                self._ban_queued(q.ptx.hash_hex, seq)
        return build_phase(valid, limit, BASE_FEE, outside_bid)

    def _ban_queued(self, tx_hash: str, seq: int) -> None:
        self._dequeue(tx_hash)
        self.bans[tx_hash] = seq + BAN_LEDGERS

    def _dequeue(self, tx_hash: str) -> None:
        queued = self.queue.pop(tx_hash)
        if self.queued_accounts.get(queued.ptx.source) == tx_hash:
            del self.queued_accounts[queued.ptx.source]
        self.rooms[queued.phase].removed(queued.bid)

    def _credit_refunds(self, applied: list[_Applied], seq: int) -> None:
        """Soroban refunds, after every transaction of the ledger (protocol 23: fee events of
        stage AFTER_ALL_TXS, TransactionFrame ``processRefund``); none to a merged account."""
        ltx = LedgerTxn(self.state, seq)
        for charged in applied:
            if charged.refund <= 0:
                continue
            account = ltx.load(account_key(charged.source))
            if isinstance(account, AccountEntry):
                account.balance += charged.refund
                ltx.put(account)
        ltx.commit()

    def _ingest_fees(self, applied: list[_Applied], outside: dict[Phase, int]) -> None:
        """The ledger's charged inclusion fees into getFeeStats' windows; the fee_surge
        fault's outside traffic counts too (each paying the surge fee)."""
        if not applied and not outside:
            for window in self.fee_windows.values():
                window.append_ledger(())
            return
        samples: dict[Phase, list[tuple[int, int]]] = {phase: [] for phase in Phase}
        for charged in applied:
            samples[charged.phase].append((fee_sample(charged), 1))
        surge = self.faults.surge_fee
        for phase, window in self.fee_windows.items():
            if surge is not None and outside.get(phase):
                samples[phase].append((surge, outside[phase]))
            window.append_ledger(samples[phase])

    def _rebuild_fee_windows(self) -> None:
        """The windows from the retained history, as stellar-rpc refills them at start."""
        for sequence in list(self.ledgers)[-max(w.retention for w in self.fee_windows.values()) :]:
            applied = []
            for tx_hash in self.ledgers[sequence].tx_hashes:
                record = self.transactions.get(tx_hash)
                if record is not None:
                    applied.append(applied_from_record(record))
            self._ingest_fees(applied, {})

    def _trim_history(self) -> None:
        """Keep the latest ``retention_ledgers`` ledgers: as stellar-rpc's trimLedgers and
        trimTransactions (cmd/stellar-rpc/internal/db/ledger.go, transaction.go) delete every
        ledger and transaction below latest + 1 - window, so getTransaction answers NOT_FOUND
        for those transactions and oldestLedger moves up."""
        while len(self.ledgers) > self.retention_ledgers:
            _, old = self.ledgers.popitem(last=False)
            for tx_hash in old.tx_hashes:
                self.transactions.pop(tx_hash, None)

    def _apply(self, ptx: ParsedTransaction, record: LedgerRecord, base_fee: int, phase: Phase) -> _Applied:
        seq = record.sequence
        ops = ptx.tx.operations
        # TransactionFrame ``getFee(applying=true)``: the declared resource fee plus the
        # inclusion fee at the phase's base fee, charged before the operations run.
        fee_charged = min(ptx.inclusion_fee, base_fee * max(1, len(ops))) + ptx.resource_fee
        fee_ltx = LedgerTxn(self.state, seq)
        source = fee_ltx.load(account_key(ptx.source))
        assert isinstance(source, AccountEntry)
        source.balance -= fee_charged
        source.seq_num = ptx.seq_num
        fee_ltx.put(source)
        before = fee_ltx.changes()
        fee_ltx.commit()

        refundable: _RefundableFee | None = None
        non_refundable = 0
        if ptx.soroban is not None:
            non_refundable = non_refundable_fee(ptx.soroban.resources)
            refundable = _RefundableFee(budget=ptx.resource_fee - non_refundable)
        op_ltx = LedgerTxn(self.state, seq)
        results: list[x.OperationResult] = []
        op_meta: list[tuple[list[LedgerChange], list[x.ContractEvent]]] = []
        return_value: x.SCVal | None = None
        for op, op_source in zip(ops, ptx.op_sources(), strict=True):
            sub = LedgerTxn(op_ltx, seq)
            result, events, value = self._apply_operation(sub, op, op_source, ptx, refundable)
            results.append(result)
            if is_success(result):
                op_meta.append((sub.changes(), events))
                sub.commit()
                return_value = value if value is not None else return_value
        successful = all(is_success(r) for r in results)
        if successful:
            op_ltx.commit()
        else:
            op_meta = []
        soroban_fees: SorobanFees | None = None
        refund = 0
        if refundable is not None:
            if not successful:
                refundable.reset()
            refund = refundable.budget - refundable.consumed
            fee_charged -= refund
            soroban_fees = SorobanFees(non_refundable, refundable.consumed, refundable.rent)
        order = len(record.tx_hashes) + 1
        record.tx_hashes.append(ptx.hash_hex)
        self.transactions[ptx.hash_hex] = TransactionRecord(
            hash=ptx.hash_hex,
            ledger=seq,
            application_order=order,
            created_at=record.close_time,
            envelope_xdr=ptx.envelope_xdr,
            successful=successful,
            # Kept encoded, like records loaded from the state file: the XDR object trees
            # are ~160 objects per transaction that the garbage collector would otherwise
            # rescan for as long as the transaction is retained.
            result_xdr=_result(fee_charged, TC.txSUCCESS if successful else TC.txFAILED, results).to_xdr(),
            result_meta_xdr=transaction_meta(
                before, op_meta, return_value if successful else None, soroban_fees
            ).to_xdr(),
        )
        resource_charged = fee_charged - min(ptx.inclusion_fee, base_fee * max(1, len(ops)))
        return _Applied(ptx.source, phase, max(1, len(ops)), fee_charged, resource_charged, refund)

    def _apply_operation(
        self,
        ltx: LedgerTxn,
        op: x.Operation,
        source: str,
        ptx: ParsedTransaction,
        refundable: _RefundableFee | None,
    ) -> tuple[x.OperationResult, list[x.ContractEvent], x.SCVal | None]:
        body = op.body
        # An earlier operation of the transaction may have merged the source account away:
        # stellar-core's checkValid at apply fails the operation with opNO_ACCOUNT.
        if not isinstance(ltx.get(account_key(source)), AccountEntry):
            return x.OperationResult(x.OperationResultCode.opNO_ACCOUNT), [], None
        if body.type == x.OperationType.CREATE_ACCOUNT:
            assert body.create_account_op is not None
            return create_account(ltx, source, body.create_account_op), [], None
        if body.type == x.OperationType.PAYMENT:
            assert body.payment_op is not None
            return payment(ltx, source, body.payment_op), [], None
        if body.type == x.OperationType.CHANGE_TRUST:
            assert body.change_trust_op is not None
            return change_trust(ltx, source, body.change_trust_op), [], None
        if body.type == x.OperationType.ACCOUNT_MERGE:
            assert body.destination is not None
            return account_merge(ltx, source, body.destination), [], None
        assert body.invoke_host_function_op is not None and ptx.soroban is not None and refundable is not None
        return self._invoke(ltx, body.invoke_host_function_op, source, ptx.soroban, refundable)

    def _invoke(
        self,
        ltx: LedgerTxn,
        op: x.InvokeHostFunctionOp,
        source: str,
        data: x.SorobanTransactionData,
        refundable: _RefundableFee,
    ) -> tuple[x.OperationResult, list[x.ContractEvent], x.SCVal | None]:
        IHF = x.InvokeHostFunctionResultCode

        def result(code: x.InvokeHostFunctionResultCode, success: bytes | None = None) -> x.OperationResult:
            return x.OperationResult(
                x.OperationResultCode.opINNER,
                tr=x.OperationResultTr(
                    x.OperationType.INVOKE_HOST_FUNCTION,
                    invoke_host_function_result=x.InvokeHostFunctionResult(
                        code, success=x.Hash(success) if success is not None else None
                    ),
                ),
            )

        host_ltx = LedgerTxn(ltx, ltx.ledger_seq)
        try:
            outcome = self.host.invoke(host_ltx, op.host_function, source, list(op.auth), False, ltx.ledger_seq)
        except (HostError, NotSupported) as exc:
            log.info("invocation trapped: %s", exc)
            return result(IHF.INVOKE_HOST_FUNCTION_TRAPPED), [], None
        resources = data.resources
        try:
            read_only = {key_from_xdr(k) for k in resources.footprint.read_only}
            read_write = {key_from_xdr(k) for k in resources.footprint.read_write}
        except NotSupported:
            return result(IHF.INVOKE_HOST_FUNCTION_RESOURCE_LIMIT_EXCEEDED), [], None
        if (
            not set(outcome.read_write) <= read_write
            or not set(outcome.read_only) <= read_only | read_write
            or outcome.instructions > resources.instructions.uint32
            or outcome.read_bytes > resources.disk_read_bytes.uint32
            or outcome.write_bytes > resources.write_bytes.uint32
        ):
            return result(IHF.INVOKE_HOST_FUNCTION_RESOURCE_LIMIT_EXCEEDED), [], None
        success = x.InvokeHostFunctionSuccessPreImage(
            return_value=outcome.return_value, events=outcome.events
        ).to_xdr_bytes()
        # InvokeHostFunctionOpFrame ``consumeRefundableResources``: the events and return
        # value emitted, and the rent of the entries created, out of the refundable budget.
        # The success preimage is exactly those bytes plus the events array's 4-byte length.
        emitted = len(success) - 4
        if not refundable.consume(emitted, rent_fee(created_entries_rent(host_ltx, ltx.ledger_seq))):
            return result(IHF.INVOKE_HOST_FUNCTION_INSUFFICIENT_REFUNDABLE_FEE), [], None
        host_ltx.commit()
        return (
            result(IHF.INVOKE_HOST_FUNCTION_SUCCESS, hashlib.sha256(success).digest()),
            outcome.events,
            outcome.return_value,
        )

    # -- simulation ----------------------------------------------------------------

    def simulate(self, envelope_xdr: str, auth_mode: str | None, use_address_v2: bool) -> dict[str, Any]:
        """simulateTransaction's result; host failures go in ``error`` as on a real RPC."""
        ptx = parse_envelope(envelope_xdr, self.network_id)
        latest = self.latest.sequence
        ops = ptx.tx.operations
        if len(ops) != 1 or ops[0].body.type != x.OperationType.INVOKE_HOST_FUNCTION:
            return {
                "latestLedger": latest,
                "error": "simulation needs a transaction with exactly one InvokeHostFunction operation",
            }
        op = ops[0].body.invoke_host_function_op
        assert op is not None
        source = ptx.op_sources()[0]
        recording = auth_mode in ("record", "record_allow_nonroot") or (auth_mode is None and not op.auth)
        if ptx.first_protocol > self.protocol_version:
            # The protocol's host cannot read the transaction (see the module docstring).
            return {
                "latestLedger": latest,
                "error": f"transaction XDR needs protocol {ptx.first_protocol}; "
                f"the network is at protocol {self.protocol_version}",
            }
        # Only a protocol-27 host can record ADDRESS_V2; stellar-rpc's protocol-26 preflight
        # ignores useUpgradedAuth (stellar-rpc v27.1.1 preflight lib.rs, prev::make_recording_auth_mode).
        use_address_v2 = use_address_v2 and self.protocol_version >= FIRST_PROTOCOL_ADDRESS_V2
        ltx = LedgerTxn(self.state, latest + 1)
        try:
            check_supported(op.host_function)
            outcome = self.host.invoke(
                ltx, op.host_function, source, list(op.auth), recording, latest + 1, use_address_v2
            )
        except HostError as exc:
            return {"latestLedger": latest, "error": str(exc)}
        resources = x.SorobanResources(
            footprint=x.LedgerFootprint(
                read_only=[key_to_xdr(k) for k in outcome.read_only],
                read_write=[key_to_xdr(k) for k in outcome.read_write],
            ),
            instructions=x.Uint32(outcome.instructions),
            disk_read_bytes=x.Uint32(outcome.read_bytes),
            write_bytes=x.Uint32(outcome.write_bytes),
        )
        # stellar-rpc preflight: non-refundable fee of the resources, plus the refundable fee
        # the invocation consumed (events and return value, rent) with soroban-simulation's
        # 15 % adjustment (``compute_resource_fee``, ``default_adjustment``).
        consumed = events_fee(events_size(outcome.events, outcome.return_value)) + rent_fee(
            created_entries_rent(ltx, latest + 1)
        )
        fee = non_refundable_fee(resources) + simulated_refundable_fee(consumed)
        data = x.SorobanTransactionData(
            ext=x.SorobanTransactionDataExt(0), resources=resources, resource_fee=x.Int64(fee)
        )
        auth = outcome.recorded_auth if recording else list(op.auth)
        return {
            "latestLedger": latest,
            "minResourceFee": str(fee),
            "transactionData": data.to_xdr(),
            "results": [{"auth": [a.to_xdr() for a in auth], "xdr": outcome.return_value.to_xdr()}],
            "events": [],
        }


def created_entries_rent(ltx: LedgerTxn, ledger_seq: int) -> list[NewEntryRent]:
    """The Soroban entries ``ltx`` created, with the ledgers of rent each is paid for: a new
    entry's rent runs from the current ledger to its live-until ledger (soroban-env-host
    ``extension_ledgers``); a new persistent entry — a contract balance, or the instance a
    CreateContract deploys (soroban-env-host data_helper.rs ``store_contract_instance`` writes a
    new instance live until ``get_min_live_until_ledger(Persistent)``) — lives
    ``MIN_PERSISTENT_TTL`` ledgers."""
    created = []
    for change in ltx.changes():
        entry = change.after
        if change.before is not None or entry is None:
            continue
        if isinstance(entry, (ContractBalanceEntry, ContractInstanceEntry)):
            created.append(NewEntryRent(True, entry_size(entry), MIN_PERSISTENT_TTL))
        elif isinstance(entry, NonceEntry):
            created.append(NewEntryRent(False, entry_size(entry), max(0, entry.live_until - (ledger_seq - 1))))
    return created


def fee_sample(charged: _Applied) -> int:
    """The fee stellar-rpc's fee window takes from a transaction (feewindow.go ``IngestFees``):
    a Soroban one's charged inclusion fee, a classic one's fee charged per operation."""
    if charged.phase is Phase.SOROBAN:
        return charged.fee_charged - charged.resource_fee_charged
    return charged.fee_charged // charged.ops


def applied_from_record(record: TransactionRecord) -> _Applied:
    """What a retained transaction was charged, read back from its envelope, result and meta."""
    envelope = x.TransactionEnvelope.from_xdr(record.envelope_xdr)
    assert envelope.v1 is not None
    ops = envelope.v1.tx.operations
    fee_charged = x.TransactionResult.from_xdr(record.result_xdr).fee_charged.int64
    phase = Phase.SOROBAN if ops and ops[0].body.type == x.OperationType.INVOKE_HOST_FUNCTION else Phase.CLASSIC
    resource_charged = 0
    if phase is Phase.SOROBAN:
        meta = x.TransactionMeta.from_xdr(record.result_meta_xdr)
        soroban_meta = meta.v4.soroban_meta if meta.v4 is not None else None
        if soroban_meta is not None and soroban_meta.ext.v1 is not None:
            fees = soroban_meta.ext.v1
            resource_charged = (
                fees.total_non_refundable_resource_fee_charged.int64 + fees.total_refundable_resource_fee_charged.int64
            )
    source = muxed_account_id(envelope.v1.tx.source_account)
    return _Applied(source, phase, max(1, len(ops)), fee_charged, resource_charged, 0)
