#!/usr/bin/env bash
# Build the console's vendored browser libraries from npm into console/static/vendor (no CDN):
# npm ci from the committed lock file, then copy the distributed files. Safe to re-run.
# JsSIP's npm package ships CommonJS sources only (no dist/ since 3.11), so its browser bundle
# is built here with esbuild (a pinned devDependency), with the options of JsSIP's own
# `npm run build` (npm-scripts.mjs): one IIFE defining the global `JsSIP`.
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
"$FRONTEND/node_modules/.bin/esbuild" "$FRONTEND/node_modules/jssip/lib/JsSIP.js" \
  --bundle --minify --format=iife --global-name=JsSIP --platform=browser --target=es2015 \
  --supported:template-literal=false --log-level=warning \
  --banner:js="/* JsSIP $(node -p 'require(process.argv[1]).version' "$FRONTEND/node_modules/jssip/package.json") (MIT) https://jssip.net, see jssip.LICENSE.md */" \
  --outfile="$VENDOR/jssip.min.js"
cp "$FRONTEND/node_modules/jssip/LICENSE.md" "$VENDOR/jssip.LICENSE.md"
# The API docs (/api/docs): Swagger UI from npm too, not from a CDN.
cp "$FRONTEND/node_modules/swagger-ui-dist/swagger-ui-bundle.js" "$VENDOR/swagger-ui-bundle.js"
cp "$FRONTEND/node_modules/swagger-ui-dist/swagger-ui.css" "$VENDOR/swagger-ui.css"
cp "$FRONTEND/node_modules/swagger-ui-dist/LICENSE" "$VENDOR/swagger-ui.LICENSE"
