#!/usr/bin/env bash
# Install and start Guichet on its embedded default: SQLite, the sample flow `commune`,
# FastAGI on 127.0.0.1:4573 and the console on http://127.0.0.1:8000.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
cd "$ROOT"

install_debian espeak-ng ffmpeg
install_python
install_frontend

echo "==> synthesising prompt audio (only changed prompts)"
"$VENV/bin/guichet" audio build
echo "==> checking flows"
"$VENV/bin/guichet" flow check flows/commune.yaml
if [ -z "${GUICHET_AMI_HOST:-}" ]; then
  echo "==> demo data: users (passwords printed on the first run), citizens, articles, queues"
  "$VENV/bin/guichet" demo seed
fi
echo "==> starting Guichet (Ctrl-C to stop); without GUICHET_AMI_HOST a DEMO PBX places calls"
exec "$VENV/bin/guichet" serve
