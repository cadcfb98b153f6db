"""``python -m api`` (or ``payouts-api``): serve the HTTP API with uvicorn.

Configuration from the environment: ``PAYOUTS_API_KEYS`` (required), ``PAYOUTS_API_HOST``
(default 127.0.0.1; 0.0.0.0 in a container), ``PAYOUTS_API_PORT`` (8000),
``PAYOUTS_LOG_FORMAT`` (text or json) and the Temporal
variables (``TEMPORAL_ADDRESS``, ``TEMPORAL_NAMESPACE``, ``TEMPORAL_TASK_QUEUE``).
"""

from __future__ import annotations

import sys

import uvicorn

from api.app import create_app, load_api_settings
from payouts.config import ConfigError
from payouts.logs import configure_logging


def main() -> None:
    try:
        settings = load_api_settings()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    configure_logging(settings.PAYOUTS_LOG_FORMAT)
    uvicorn.run(create_app(settings), host=settings.PAYOUTS_API_HOST, port=settings.PAYOUTS_API_PORT, log_config=None)


if __name__ == "__main__":
    main()
