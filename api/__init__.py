"""The engine's HTTP API (:mod:`api.app`), for platforms that start payouts over HTTP."""
