#!/bin/sh
# Takes one loaded batch back out of the warehouse on rollback, and forgets it was loaded.
set -eu
batch="$1"
rows="work/transformed/$batch"
[ -f warehouse/customers.csv ] && [ -f "$rows" ] || exit 0
key="$batch $(cksum < "$rows" | cut -d' ' -f1)"
rc=0
grep -vxF -f "$rows" warehouse/customers.csv > warehouse/customers.tmp || rc=$?
[ "$rc" -le 1 ] || { rm -f warehouse/customers.tmp; exit "$rc"; }   # 1: no row left, 2: an error
mv warehouse/customers.tmp warehouse/customers.csv
rc=0
grep -vxF "$key" warehouse/loaded.keys > warehouse/loaded.tmp || rc=$?
[ "$rc" -le 1 ] || { rm -f warehouse/loaded.tmp; exit "$rc"; }
mv warehouse/loaded.tmp warehouse/loaded.keys
