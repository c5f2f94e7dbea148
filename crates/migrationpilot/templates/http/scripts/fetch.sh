#!/bin/sh
# Fetches one record. curl's error line and exit status are classified as they are.
set -eu
# The sample API by default: this folder as a file:// URL (its path percent-encoded).
here=$(printf '%s' "$PWD" | sed 's/%/%25/g; s/ /%20/g; s/#/%23/g; s/?/%3F/g')
base="${API_BASE:-file://$here/sample-api}"
mkdir -p copy
curl -fsS --max-time 8 -o "copy/$1.json" "$base/records/$1.json"
