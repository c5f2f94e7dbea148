#!/bin/sh
# Fetches one record. curl's error line and exit status are classified as they are.
set -eu
base="${API_BASE:-file://$PWD/sample-api}"
mkdir -p copy
curl -fsS --max-time 8 -o "copy/$1.json" "$base/records/$1.json"
