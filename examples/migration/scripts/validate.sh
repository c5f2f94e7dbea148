#!/bin/sh
# validation: the generated module has one function per paragraph of the program.
# `--slow` is the failover path: it re-derives the paragraphs from the source itself.
set -eu
. "$(dirname "$0")/chaos.sh"
slow=no
if [ "$1" = --slow ]; then slow=yes; shift; fi
program=$1
[ "$slow" = yes ] || chaos "$program"
name=$(basename "$program" .cbl)
module=out/src/$(echo "$name" | tr 'A-Z' 'a-z').rs
[ -f "$module" ] || { echo "{\"code\":\"MISSING_OUTPUT\",\"severity\":\"critical\",\"message\":\"$module was not generated\"}" >&2; exit 1; }
if [ "$slow" = yes ]; then
    expected=$(awk '/PROCEDURE DIVISION/ { p = 1; next } p && /^       [A-Z0-9-]+\.$/' "$program" | wc -l)
else
    expected=$(grep -c '^paragraph:' "out/analysis/$name.txt")
fi
actual=$(grep -c '^pub fn ' "$module" || true)
[ "$expected" -eq "$actual" ] || { echo "{\"code\":\"MISMATCH\",\"severity\":\"critical\",\"message\":\"$name: $actual function(s) for $expected paragraph(s)\"}" >&2; exit 1; }
