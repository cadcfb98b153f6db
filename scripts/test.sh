#!/usr/bin/env bash
# Set up, then run the checks: ruff, mypy --strict on the typed packages, and pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/mypy --strict devnet payouts workflows activities
exec .venv/bin/python -m pytest "$@"
