"""Temporal workflows (``PayoutWorkflow``): deterministic orchestration only, no I/O."""
