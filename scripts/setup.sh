#!/usr/bin/env bash
# Shared install steps for run.sh and test.sh: Debian packages (only those missing) and the venv.
# Usage: source scripts/setup.sh; install_debian PKG...; install_python [extras]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PYTHON="${PYTHON:-python3}"

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

install_debian() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "==> installing Debian packages: ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

install_python() {
  local extras="${1:-}"
  if [ ! -x "$VENV/bin/python" ]; then
    echo "==> creating $VENV"
    "$PYTHON" -m venv "$VENV"
  fi
  echo "==> installing Guichet${extras:+ [$extras]} into $VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
  "$VENV/bin/python" -m pip install -q -e "$ROOT${extras:+[$extras]}"
}

install_frontend() {
  # The console's browser libraries come from npm (console/frontend), copied into static/vendor.
  command -v npm >/dev/null 2>&1 || install_debian nodejs npm
  bash "$ROOT/scripts/build_static.sh"
}
