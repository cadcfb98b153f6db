#!/usr/bin/env bash
# The main job: set up, then run the demo on the local network (devnet).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m payouts.demo "$@"
