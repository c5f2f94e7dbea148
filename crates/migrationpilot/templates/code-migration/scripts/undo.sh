#!/bin/sh
# Undoes one item's output on rollback: `undo.sh analysis|rust ITEM`.
set -eu
name=$(basename "$2" .cbl)
case "$1" in
  analysis) rm -f "out/analysis/$name.txt" ;;
  rust) rm -f "out/rust/$(echo "$name" | tr 'A-Z-' 'a-z_').rs" ;;
  *) echo "undo.sh: no output kind \`$1\`" >&2; exit 2 ;;
esac
