#!/bin/sh
# analysis: inventory one COBOL program (its paragraphs, files and data items).
set -eu
. "$(dirname "$0")/chaos.sh"
program=$1
chaos "$program"
name=$(basename "$program" .cbl)
mkdir -p out/analysis
{
    echo "program: $name"
    echo "lines: $(wc -l < "$program")"
    echo "files: $(grep -c 'SELECT ' "$program" || true)"
    echo "data-items: $(grep -cE '^ +01 ' "$program" || true)"
    # Paragraphs: names alone on a line in the PROCEDURE DIVISION, ending in a period.
    awk '/PROCEDURE DIVISION/ { p = 1; next } p && /^       [A-Z0-9-]+\.$/ { gsub(/[ .]/, ""); print "paragraph: " $0 }' "$program"
} > "out/analysis/$name.txt"
