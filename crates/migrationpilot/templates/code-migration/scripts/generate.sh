#!/bin/sh
# Generates a Rust skeleton for one analysed program.
set -eu
name=$(basename "$1" .cbl)
analysis="out/analysis/$name.txt"
if [ ! -f "$analysis" ]; then
  # Critical: the rollback-critical strategy undoes the run's work instead of retrying.
  echo "{\"message\":\"no analysis for $name\",\"severity\":\"critical\"}" >&2
  exit 1
fi
mkdir -p out/rust
module=$(echo "$name" | tr 'A-Z-' 'a-z_')
{
  echo "//! Migrated from $name.cbl ($(grep '^lines' "$analysis" | cut -d' ' -f2) lines)."
  echo "pub fn run() {"
  echo "    todo!(\"port $name\")"
  echo "}"
} > "out/rust/$module.rs"
echo "generated out/rust/$module.rs"
