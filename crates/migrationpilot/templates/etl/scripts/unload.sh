#!/bin/sh
# Takes one batch back out of the warehouse on rollback.
set -eu
batch="$1"
[ -f warehouse/customers.csv ] || exit 0
grep -vxF -f "work/transformed/$batch" warehouse/customers.csv > warehouse/customers.tmp || true
mv warehouse/customers.tmp warehouse/customers.csv
# Loadable again: its key goes too.
grep -v "/load/$batch\$" warehouse/loaded.keys > warehouse/loaded.tmp || true
mv warehouse/loaded.tmp warehouse/loaded.keys
