"""``python -m api`` (or ``payouts-api``): serve the HTTP API with uvicorn.

Configuration from the environment: ``PAYOUTS_API_KEYS`` (required), ``PAYOUTS_API_HOST``
(default 127.0.0.1; 0.0.0.0 in a container), ``PAYOUTS_API_PORT`` (8000) and the Temporal
variables (``TEMPORAL_ADDRESS``, ``TEMPORAL_NAMESPACE``, ``TEMPORAL_TASK_QUEUE``).
"""

from __future__ import annotations

import sys

import uvicorn

from api.app import create_app, load_api_settings
from payouts.config import ConfigError


def main() -> None:
    try:
        settings = load_api_settings()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    uvicorn.run(create_app(settings), host=settings.PAYOUTS_API_HOST, port=settings.PAYOUTS_API_PORT)


if __name__ == "__main__":
    main()
