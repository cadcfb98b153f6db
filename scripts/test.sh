#!/usr/bin/env bash
# Set up, then run the checks: ruff, mypy --strict on the typed packages, and pytest.
# The deployment and Web UI tests need Debian's docker-compose and chromium: installed
# here when missing (as root, with apt-get), as on CI.
set -euo pipefail
cd "$(dirname "$0")/.."
packages=()
command -v docker-compose >/dev/null || packages+=(docker-compose)
command -v chromium >/dev/null || packages+=(chromium)
if [ ${#packages[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing Debian packages: ${packages[*]} (run as root, or: sudo apt-get install ${packages[*]})" >&2
    exit 1
  fi
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y "${packages[@]}"
fi
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/mypy --strict devnet payouts workflows activities api
exec .venv/bin/python -m pytest "$@"
