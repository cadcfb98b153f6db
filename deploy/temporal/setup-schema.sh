#!/bin/sh
# Creates or upgrades the Temporal server's schemas (persistence and visibility) on
# PostgreSQL with temporal-sql-tool, the supported way (the auto-setup image is deprecated).
# Safe to run on every `docker-compose up`: update-schema applies only missing versions;
# setup-schema runs only on a database that has no schema yet.
set -eu
schemas=/etc/temporal/schema/postgresql/v12
for db in temporal temporal_visibility; do
  dir=temporal
  [ "$db" = temporal_visibility ] && dir=visibility
  tool="temporal-sql-tool --plugin postgres12 --ep ${POSTGRES_SEEDS} -p ${DB_PORT} -u ${POSTGRES_USER} --pw ${POSTGRES_PWD} --db $db"
  if ! $tool update-schema -d "$schemas/$dir/versioned"; then
    echo "no schema in $db yet: setting it up"
    $tool setup-schema -v 0.0
    $tool update-schema -d "$schemas/$dir/versioned"
  fi
done
echo "Temporal schemas are current"
