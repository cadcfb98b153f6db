"""The seed's four monitoring queries, verbatim, for operators and dashboards.

They run on PostgreSQL against the ``transactions`` table (one row per envelope); the
tests run them word for word and check their answers against the ledger.
"""

from __future__ import annotations

PENDING_QUERY = "-- Pending transactions\nSELECT COUNT(*) FROM transactions \nWHERE status IN ('queued', 'submitted');"
FAILED_QUERY = (
    "-- Failed transactions\nSELECT * FROM transactions \nWHERE status = 'failed' \nORDER BY updated_at DESC LIMIT 10;"
)
SUCCESS_RATE_QUERY = (
    "-- Success rate (last 24h)\n"
    "SELECT \n"
    "  COUNT(*) FILTER (WHERE status = 'confirmed') * 100.0 / COUNT(*) as success_rate\n"
    "FROM transactions \n"
    "WHERE created_at > NOW() - INTERVAL '24 hours';"
)
CONFIRMATION_TIME_QUERY = (
    "-- Average confirmation time\n"
    "SELECT AVG(EXTRACT(EPOCH FROM (confirmed_at - created_at))) as avg_seconds\n"
    "FROM transactions \n"
    "WHERE status = 'confirmed';"
)
MONITORING_QUERIES = [PENDING_QUERY, FAILED_QUERY, SUCCESS_RATE_QUERY, CONFIRMATION_TIME_QUERY]
