#!/usr/bin/env bash
# Build the console's vendored browser libraries from npm into console/static/vendor (no CDN):
# npm ci from the committed lock file, then copy the distributed files. Safe to re-run.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
FRONTEND="$ROOT/console/frontend"
VENDOR="$ROOT/console/static/vendor"

if ! command -v npm >/dev/null 2>&1; then
  echo "npm is needed to build the console's browser libraries (apt-get install npm)" >&2
  exit 1
fi
echo "==> building console browser libraries (npm ci in console/frontend)"
(cd "$FRONTEND" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error >/dev/null)
mkdir -p "$VENDOR"
cp "$FRONTEND/node_modules/uplot/dist/uPlot.iife.min.js" "$VENDOR/uPlot.iife.min.js"
cp "$FRONTEND/node_modules/uplot/dist/uPlot.min.css" "$VENDOR/uPlot.min.css"
cp "$FRONTEND/node_modules/uplot/LICENSE" "$VENDOR/uPlot.LICENSE"
