#!/bin/sh
# Lists the ids of the records to copy into work/ids.txt.
set -eu
# The sample API by default: this folder as a file:// URL (its path percent-encoded).
here=$(printf '%s' "$PWD" | sed 's/%/%25/g; s/ /%20/g; s/#/%23/g; s/?/%3F/g')
base="${API_BASE:-file://$here/sample-api}"
mkdir -p work
curl -fsS --max-time 10 "$base/records/index.txt" > work/ids.txt
echo "$(wc -l < work/ids.txt) records to copy from $base"
