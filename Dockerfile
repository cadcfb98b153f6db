# The engine's image: worker (default command), HTTP API (payouts-api), starter CLI
# (payouts-starter) and devnet, the local Stellar RPC. Everything comes from PyPI.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml ./
COPY activities activities
COPY api api
COPY devnet devnet
COPY payouts payouts
COPY workflows workflows
RUN pip install . && useradd --create-home --uid 10001 payouts
USER payouts

# 8000: HTTP API (or devnet); 9464: the worker's Prometheus metrics (PAYOUTS_METRICS_ADDRESS).
EXPOSE 8000 9464
CMD ["payouts-worker"]
