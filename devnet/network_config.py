"""The network configuration devnet runs with, readable as ``CONFIG_SETTING`` ledger entries.

A real network keeps its Soroban settings in ``CONFIG_SETTING`` ledger entries that any
client reads with ``getLedgerEntries``. devnet serves the two it models:

- ``CONFIG_SETTING_STATE_ARCHIVAL``: ``min_temporary_ttl`` is devnet's ``--min-temp-ttl``
  (default 16, the protocol minimum; testnet runs 720), ``max_entry_ttl`` is 3,110,400 (the
  limit devnet applies to signature expiration ledgers), ``min_persistent_ttl`` 2,073,600
  (pubnet's; the TTL devnet charges rent for on every new persistent entry, see
  :mod:`devnet.fees`), the rent rate denominators the ones devnet's rent uses (1,215 and
  2,430), every other field at testnet's value.
- ``CONFIG_SETTING_SCP_TIMING`` (exists from protocol 23): ``ledger_target_close_time_milliseconds``
  is devnet's ``--ledger-close-ms``, the timeouts at stellar-core's initial values.

Any other setting that exists at devnet's protocol version is refused as "not supported by
devnet" (a real network always has it, so answering "no such entry" would be a lie); a
setting introduced by a later protocol is absent, as on a real network of that version.

Sources: stellar-core ``soroban-settings/testnet_settings_upgrade.json`` (testnet's
``state_archival`` and ``scp_timing`` values); ``src/ledger/NetworkConfig.h``
(``MinimumSorobanNetworkConfig``, ``InitialSorobanNetworkConfig``); ``src/ledger/NetworkConfig.cpp``
(``createLedgerEntriesForV20``, ``createAndUpdateLedgerEntriesForV23``, ``createLedgerEntriesForV26``:
which protocol creates which setting; ``isValidConfigSettingEntry``: the bounds).
"""

from __future__ import annotations

from dataclasses import dataclass

from stellar_sdk import xdr as x

CS = x.ConfigSettingID

# stellar-core NetworkConfig.h, MinimumSorobanNetworkConfig::MINIMUM_TEMP_ENTRY_LIFETIME: no
# network may configure a shorter minimum TTL for temporary entries (isValidConfigSettingEntry).
PROTOCOL_MIN_TEMP_TTL = 16
DEFAULT_MIN_TEMP_TTL = PROTOCOL_MIN_TEMP_TTL
# testnet_settings_upgrade.json, state_archival.max_entry_ttl.
MAX_ENTRY_TTL = 3_110_400
# The TTL of every new persistent entry: pubnet's min_persistent_ttl (stellar-core
# soroban-settings/pubnet_phase1.json; testnet runs 120,960). devnet charges rent for it
# (devnet.fees) and reports persistent entries live for that long (devnet.rpc), so the
# CONFIG_SETTING entry says the same.
MIN_PERSISTENT_TTL = 2_073_600
# The rent rate denominators, the same on testnet (testnet_settings_upgrade.json) and pubnet.
PERSISTENT_RENT_RATE_DENOMINATOR = 1_215
TEMP_RENT_RATE_DENOMINATOR = 2_430
# The rest of testnet's state_archival settings (testnet_settings_upgrade.json).
TESTNET_MAX_ENTRIES_TO_ARCHIVE = 1_000
TESTNET_STATE_SIZE_WINDOW_SAMPLE_SIZE = 30
TESTNET_STATE_SIZE_WINDOW_SAMPLE_PERIOD = 64
TESTNET_EVICTION_SCAN_SIZE = 500_000
TESTNET_STARTING_EVICTION_SCAN_LEVEL = 7
# stellar-core NetworkConfig.h, InitialSorobanNetworkConfig (SCP timing settings); testnet has the same.
DEFAULT_LEDGER_CLOSE_MS = 5_000
SCP_TIMEOUT_MS = 1_000
# Ledger entries and XDR fields that hold these values are uint32.
MAX_UINT32 = 2**32 - 1

# The first protocol at which stellar-core creates each setting's ledger entry (NetworkConfig.cpp);
# None for the *_DELTA IDs, which only ever appear in upgrades, never as ledger entries.
CONFIG_SETTING_SINCE: dict[x.ConfigSettingID, int | None] = {
    CS.CONFIG_SETTING_CONTRACT_MAX_SIZE_BYTES: 20,
    CS.CONFIG_SETTING_CONTRACT_COMPUTE_V0: 20,
    CS.CONFIG_SETTING_CONTRACT_LEDGER_COST_V0: 20,
    CS.CONFIG_SETTING_CONTRACT_HISTORICAL_DATA_V0: 20,
    CS.CONFIG_SETTING_CONTRACT_EVENTS_V0: 20,
    CS.CONFIG_SETTING_CONTRACT_BANDWIDTH_V0: 20,
    CS.CONFIG_SETTING_CONTRACT_COST_PARAMS_CPU_INSTRUCTIONS: 20,
    CS.CONFIG_SETTING_CONTRACT_COST_PARAMS_MEMORY_BYTES: 20,
    CS.CONFIG_SETTING_CONTRACT_DATA_KEY_SIZE_BYTES: 20,
    CS.CONFIG_SETTING_CONTRACT_DATA_ENTRY_SIZE_BYTES: 20,
    CS.CONFIG_SETTING_STATE_ARCHIVAL: 20,
    CS.CONFIG_SETTING_CONTRACT_EXECUTION_LANES: 20,
    CS.CONFIG_SETTING_LIVE_SOROBAN_STATE_SIZE_WINDOW: 20,
    CS.CONFIG_SETTING_EVICTION_ITERATOR: 20,
    CS.CONFIG_SETTING_CONTRACT_PARALLEL_COMPUTE_V0: 23,
    CS.CONFIG_SETTING_CONTRACT_LEDGER_COST_EXT_V0: 23,
    CS.CONFIG_SETTING_SCP_TIMING: 23,
    CS.CONFIG_SETTING_FROZEN_LEDGER_KEYS: 26,
    CS.CONFIG_SETTING_FROZEN_LEDGER_KEYS_DELTA: None,
    CS.CONFIG_SETTING_FREEZE_BYPASS_TXS: 26,
    CS.CONFIG_SETTING_FREEZE_BYPASS_TXS_DELTA: None,
}
SERVED = (CS.CONFIG_SETTING_STATE_ARCHIVAL, CS.CONFIG_SETTING_SCP_TIMING)
# The settings' entries exist from genesis, as on a standalone stellar-core
# (SorobanNetworkConfig::initializeGenesisLedgerForTesting).
CONFIG_LAST_MODIFIED = 1


class ConfigSettingNotSupported(Exception):
    """A setting that exists on a real network of devnet's protocol but that devnet does not model."""


@dataclass(frozen=True)
class NetworkConfig:
    """The settings devnet's rules follow, as options with the real network's defaults."""

    protocol_version: int
    min_temp_ttl: int = DEFAULT_MIN_TEMP_TTL
    ledger_close_ms: int = DEFAULT_LEDGER_CLOSE_MS
    max_entry_ttl: int = MAX_ENTRY_TTL

    def __post_init__(self) -> None:
        # stellar-core isValidConfigSettingEntry: min_temporary_ttl >= the protocol minimum
        # and < max_entry_ttl.
        if not PROTOCOL_MIN_TEMP_TTL <= self.min_temp_ttl < self.max_entry_ttl:
            raise ValueError(
                f"min_temp_ttl: must be an integer from {PROTOCOL_MIN_TEMP_TTL} (the protocol minimum) "
                f"to {self.max_entry_ttl - 1} (below the max entry TTL), got {self.min_temp_ttl}"
            )
        if not 1 <= self.ledger_close_ms <= MAX_UINT32:
            raise ValueError(f"ledger_close_ms: must be an integer from 1 to {MAX_UINT32}, got {self.ledger_close_ms}")

    def state_archival(self) -> x.StateArchivalSettings:
        return x.StateArchivalSettings(
            max_entry_ttl=x.Uint32(self.max_entry_ttl),
            min_temporary_ttl=x.Uint32(self.min_temp_ttl),
            min_persistent_ttl=x.Uint32(MIN_PERSISTENT_TTL),
            persistent_rent_rate_denominator=x.Int64(PERSISTENT_RENT_RATE_DENOMINATOR),
            temp_rent_rate_denominator=x.Int64(TEMP_RENT_RATE_DENOMINATOR),
            max_entries_to_archive=x.Uint32(TESTNET_MAX_ENTRIES_TO_ARCHIVE),
            live_soroban_state_size_window_sample_size=x.Uint32(TESTNET_STATE_SIZE_WINDOW_SAMPLE_SIZE),
            live_soroban_state_size_window_sample_period=x.Uint32(TESTNET_STATE_SIZE_WINDOW_SAMPLE_PERIOD),
            eviction_scan_size=x.Uint32(TESTNET_EVICTION_SCAN_SIZE),
            starting_eviction_scan_level=x.Uint32(TESTNET_STARTING_EVICTION_SCAN_LEVEL),
        )

    def scp_timing(self) -> x.ConfigSettingSCPTiming:
        return x.ConfigSettingSCPTiming(
            ledger_target_close_time_milliseconds=x.Uint32(self.ledger_close_ms),
            nomination_timeout_initial_milliseconds=x.Uint32(SCP_TIMEOUT_MS),
            nomination_timeout_increment_milliseconds=x.Uint32(SCP_TIMEOUT_MS),
            ballot_timeout_initial_milliseconds=x.Uint32(SCP_TIMEOUT_MS),
            ballot_timeout_increment_milliseconds=x.Uint32(SCP_TIMEOUT_MS),
        )

    def exists(self, setting: x.ConfigSettingID) -> bool:
        """Whether a real network at devnet's protocol version has this setting's ledger entry."""
        since = CONFIG_SETTING_SINCE.get(setting)
        return since is not None and self.protocol_version >= since

    def entry(self, setting: x.ConfigSettingID) -> x.LedgerEntry | None:
        """The setting's ledger entry; None where the network has none; ConfigSettingNotSupported
        for a setting that exists but that devnet does not model."""
        if not self.exists(setting):
            return None
        if setting == CS.CONFIG_SETTING_STATE_ARCHIVAL:
            body = x.ConfigSettingEntry(setting, state_archival_settings=self.state_archival())
        elif setting == CS.CONFIG_SETTING_SCP_TIMING:
            body = x.ConfigSettingEntry(setting, contract_scp_timing=self.scp_timing())
        else:
            served = " and ".join(s.name for s in SERVED)
            raise ConfigSettingNotSupported(f"{setting.name} is not supported by devnet (it serves {served})")
        return x.LedgerEntry(
            last_modified_ledger_seq=x.Uint32(CONFIG_LAST_MODIFIED),
            data=x.LedgerEntryData(x.LedgerEntryType.CONFIG_SETTING, config_setting=body),
            ext=x.LedgerEntryExt(0),
        )
