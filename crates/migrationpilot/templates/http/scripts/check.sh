#!/bin/sh
# Checks that every listed record was copied and is not empty.
set -eu
missing=0
while read -r id || [ -n "$id" ]; do
  [ -s "copy/$id.json" ] || { echo "record $id was not copied" >&2; missing=1; }
done < work/ids.txt
[ "$missing" = 0 ] && echo "every listed record copied"
exit "$missing"
