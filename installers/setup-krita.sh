#!/usr/bin/env bash
# Krita for the plugin tests: Debian's Krita 5.1.5 (system Python 3.11) and a virtual X server.
# Idempotent: installs only when something is missing. With Debian's recommends: Krita's Python
# scripting needs PyQt5 and sip, which Debian lists as recommends only.
set -euo pipefail
if command -v kritarunner >/dev/null && command -v xvfb-run >/dev/null && command -v xauth >/dev/null \
    && /usr/bin/python3 -c "import PyQt5.QtCore, PyQt5.QtTest, sip" 2>/dev/null; then
    exit 0
fi
bash "$(dirname "$0")/apt-install.sh" krita python3-pyqt5 python3-sip xvfb xauth
command -v kritarunner >/dev/null || { echo "setup-krita: kritarunner is still missing after installing krita" >&2; exit 1; }
