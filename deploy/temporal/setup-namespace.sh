#!/bin/sh
# Creates the payouts' namespace (retention PAYOUTS_NAMESPACE_RETENTION, default 30 days:
# long enough to look a payout up in the Web UI well after it settled; the app DB keeps
# the durable record beyond that) and registers the search attributes the workflows set
# (PayoutStatus, PayoutAsset). Safe to run again.
set -eu
ns="${TEMPORAL_NAMESPACE:-default}"
until temporal operator cluster health --address "$TEMPORAL_ADDRESS" >/dev/null 2>&1; do
  echo "waiting for the Temporal server at $TEMPORAL_ADDRESS"
  sleep 2
done
if ! temporal operator namespace describe --namespace "$ns" --address "$TEMPORAL_ADDRESS" >/dev/null 2>&1; then
  temporal operator namespace create --namespace "$ns" --retention "${PAYOUTS_NAMESPACE_RETENTION:-720h}" \
    --address "$TEMPORAL_ADDRESS"
fi
for attribute in PayoutStatus PayoutAsset; do
  if ! temporal operator search-attribute list --namespace "$ns" --address "$TEMPORAL_ADDRESS" | grep -q "$attribute"; then
    temporal operator search-attribute create --namespace "$ns" --name "$attribute" --type Keyword \
      --address "$TEMPORAL_ADDRESS"
  fi
done
echo "namespace $ns is ready"
