#!/bin/sh
# Transforms one batch: upper-cases names and adds a tax column.
set -eu
batch="$1"
mkdir -p work/transformed
awk -F, 'NF != 3 { print "{\"message\":\"malformed row " NR "\",\"severity\":\"critical\"}" > "/dev/stderr"; exit 1 }
         { printf "%s,%s,%s,%.2f\n", $1, toupper($2), $3, $3 * 0.2 }' \
  "work/batches/$batch" > "work/transformed/$batch"
