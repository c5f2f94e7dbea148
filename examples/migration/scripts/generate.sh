#!/bin/sh
# generation: a Rust skeleton for one program, a function per paragraph.
set -eu
. "$(dirname "$0")/chaos.sh"
program=$1
chaos "$program"
name=$(basename "$program" .cbl)
module=$(echo "$name" | tr 'A-Z' 'a-z')
mkdir -p out/src
{
    echo "//! Generated from $program."
    grep '^paragraph:' "out/analysis/$name.txt" | while read -r _ paragraph; do
        echo "pub fn $(echo "$paragraph" | tr 'A-Z-' 'a-z_')() {}"
    done
} > "out/src/$module.rs"
