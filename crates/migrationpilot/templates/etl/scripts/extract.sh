#!/bin/sh
# Extracts the source in batches of 5 rows: work/batches/batch-NN, listed in work/batches.txt.
set -eu
rm -rf work/batches
mkdir -p work/batches
awk 'BEGIN { for (n = 1; n <= 23; n++) printf "%d,customer-%d,%d\n", n, n, n * 17 % 100 }' \
  > work/source.csv
awk '{ f = sprintf("work/batches/batch-%02d", int((NR - 1) / 5)); print > f }' work/source.csv
(cd work/batches && ls) > work/batches.txt
echo "extracted $(wc -l < work/source.csv | tr -d ' ') rows in $(wc -l < work/batches.txt | tr -d ' ') batches"
