#!/bin/sh
# Compensation: removes what a stage produced for one program.
set -eu
stage=$1 program=$2
name=$(basename "$program" .cbl)
case "$stage" in
    analysis) rm -f "out/analysis/$name.txt" ;;
    generation) rm -f "out/src/$(echo "$name" | tr 'A-Z' 'a-z').rs" ;;
    *) echo "undo.sh: unknown stage $stage" >&2; exit 2 ;;
esac
