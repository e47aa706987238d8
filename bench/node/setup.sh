#!/usr/bin/env bash
# Install the Node fan-out client's one dependency (ws, pinned in package-lock.json) for bench/run.py.
set -euo pipefail
cd "$(dirname "$0")"
command -v npm >/dev/null || { echo "npm (Node.js) is needed: apt-get install nodejs npm" >&2; exit 1; }
npm ci --no-audit --no-fund
