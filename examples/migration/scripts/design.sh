#!/bin/sh
# design: one module per program, one function per paragraph, from the analyses.
set -eu
. "$(dirname "$0")/chaos.sh"
chaos design
[ -d out/analysis ] || { echo '{"code":"NO_ANALYSIS","severity":"critical","message":"out/analysis is missing: analysis did not run"}' >&2; exit 1; }
{
    echo "# Target design"
    for analysis in out/analysis/*.txt; do
        name=$(basename "$analysis" .txt)
        echo "module $(echo "$name" | tr 'A-Z' 'a-z'): $(grep -c '^paragraph:' "$analysis") function(s)"
    done
} > out/design.md
