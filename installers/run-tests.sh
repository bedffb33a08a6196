#!/usr/bin/env bash
# The test command: set up (idempotent, no demo), lint, then run the whole suite.
#   bash installers/run-tests.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
bash installers/setup.sh --no-demo
bash installers/setup-blender.sh   # Blender as a Python module (bpy), in its own venv, for the Blender tests
bash installers/setup-krita.sh     # Debian's Krita 5.1 and a virtual X server, for the Krita tests (apt, as root)
bash installers/setup-words.sh     # Debian's wamerican-large word list, for the prompt-help check (apt, as root)
bash installers/setup-prometheus.sh  # Debian's Prometheus server, which the metrics test scrapes with (apt, as root)
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/python -m pytest "$@"
