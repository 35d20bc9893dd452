#!/usr/bin/env bash
# Install and start Guichet on its embedded default: SQLite, the sample flow `commune`,
# FastAGI on 127.0.0.1:4573 and the console on http://127.0.0.1:8000.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
cd "$ROOT"

install_debian espeak-ng ffmpeg
install_python

echo "==> synthesising prompt audio (only changed prompts)"
"$VENV/bin/guichet" audio build
echo "==> checking flows"
"$VENV/bin/guichet" flow check flows/commune.yaml
echo "==> loading the demo citizen directory"
"$VENV/bin/guichet" citizens import crm_bridge/demo_citizens.csv
echo "==> starting Guichet (Ctrl-C to stop)"
exec "$VENV/bin/guichet" serve
