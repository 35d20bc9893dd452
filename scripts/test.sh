#!/usr/bin/env bash
# Install everything the tests need (Debian and Python packages) and run the whole suite:
# lint, types, then pytest against real peers (espeak-ng, ffmpeg, PostgreSQL...).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
cd "$ROOT"

install_debian espeak-ng ffmpeg postgresql redis-server chromium sip-tester kamailio kamailio-websocket-modules
install_python test
install_frontend

echo "==> ruff"
"$VENV/bin/ruff" check .
echo "==> mypy"
"$VENV/bin/mypy" .
echo "==> pytest"
exec "$VENV/bin/pytest" "$@"
