#!/bin/sh
# Lists the ids of the records to copy into work/ids.txt.
set -eu
base="${API_BASE:-file://$PWD/sample-api}"
mkdir -p work
curl -fsS --max-time 10 "$base/records/index.txt" > work/ids.txt
echo "$(wc -l < work/ids.txt) records to copy from $base"
