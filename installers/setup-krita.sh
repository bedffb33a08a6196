#!/usr/bin/env bash
# Krita for the plugin tests: Debian's Krita 5.1.5 (system Python 3.11) and a virtual X server.
# Idempotent: installs only when kritarunner or xvfb-run is missing.
set -euo pipefail
if command -v kritarunner >/dev/null && command -v xvfb-run >/dev/null && command -v xauth >/dev/null; then
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends krita xvfb xauth >/dev/null
command -v kritarunner >/dev/null || { echo "setup-krita: kritarunner is still missing after installing krita" >&2; exit 1; }
