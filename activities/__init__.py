"""Temporal activities: every side effect (chain RPC, signing, DB, leasing)."""
