#!/bin/sh
# Checks that every legacy program has its skeleton.
set -eu
missing=0
for program in legacy/*.cbl; do
  module=$(basename "$program" .cbl | tr 'A-Z-' 'a-z_')
  [ -f "out/rust/$module.rs" ] || { echo "missing out/rust/$module.rs" >&2; missing=1; }
done
[ "$missing" = 0 ] && echo "every program has its skeleton"
exit "$missing"
