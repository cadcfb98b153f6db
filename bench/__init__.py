"""Benchmarks (run as modules, e.g. ``python -m bench.devnet_throughput``); not tests."""
