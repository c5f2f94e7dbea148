#!/bin/sh
# Analyses one legacy program: counts its lines and lists its paragraphs.
set -eu
program="$1"
name=$(basename "$program" .cbl)
mkdir -p out/analysis
lines=$(wc -l < "$program" | tr -d ' ')
paragraphs=$(grep -c '^ *[A-Z0-9-]*\. *$' "$program" || true)
printf 'program %s\nlines %s\nparagraphs %s\n' "$name" "$lines" "$paragraphs" > "out/analysis/$name.txt"
echo "analysed $name: $lines lines"
