#!/bin/sh
# Loads one transformed batch into the warehouse once, keyed on the idempotency key.
set -eu
batch="$1"
key="${MIGRATIONPILOT_IDEMPOTENCY_KEY:-$batch}"
mkdir -p warehouse
touch warehouse/loaded.keys
if grep -qxF "$key" warehouse/loaded.keys; then
  echo "$batch already loaded"
  exit 0
fi
cat "work/transformed/$batch" >> warehouse/customers.csv
echo "$key" >> warehouse/loaded.keys
echo "loaded $batch"
