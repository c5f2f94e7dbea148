#!/bin/sh
# Extracts the source in batches of 5 rows: work/batches/N.csv, listed in work/batches.txt.
set -eu
mkdir -p work/batches
: > work/batches.txt
i=0
seq 1 23 | while read -r n; do echo "$n,customer-$n,$((n * 17 % 100))"; done > work/source.csv
split -l 5 -d work/source.csv work/batches/batch-
for batch in work/batches/batch-*; do
  echo "$(basename "$batch")" >> work/batches.txt
  i=$((i + 1))
done
echo "extracted $(wc -l < work/source.csv) rows in $(wc -l < work/batches.txt) batches"
