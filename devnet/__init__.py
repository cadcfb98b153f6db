"""devnet: a local Stellar RPC (JSON-RPC over HTTP) that applies the network's rules.

Start it with ``python -m devnet`` (or the ``devnet`` console script). See
``devnet/server.py`` for the HTTP surface and ``devnet/ledger.py`` for the rules.
"""
