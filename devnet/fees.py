"""devnet's Soroban resource fee: a fixed, documented function of the declared resources.

Real networks price resources from network settings; devnet uses fixed rates of the same
order as testnet's, so the fee a simulation returns is exactly what the declared
resources cost and a transaction that declares less than it uses fails at apply.
"""

from __future__ import annotations

from stellar_sdk import xdr as x

FEE_PER_10K_INSTRUCTIONS = 25
FEE_PER_READ_ENTRY = 6_250
FEE_PER_WRITE_ENTRY = 10_000
FEE_PER_READ_BYTE = 2
FEE_PER_WRITE_BYTE = 12


def resource_fee(resources: x.SorobanResources) -> int:
    footprint = resources.footprint
    read_entries = len(footprint.read_only) + len(footprint.read_write)
    return (
        -(-resources.instructions.uint32 * FEE_PER_10K_INSTRUCTIONS // 10_000)
        + FEE_PER_READ_ENTRY * read_entries
        + FEE_PER_WRITE_ENTRY * len(footprint.read_write)
        + FEE_PER_READ_BYTE * resources.disk_read_bytes.uint32
        + FEE_PER_WRITE_BYTE * resources.write_bytes.uint32
    )
