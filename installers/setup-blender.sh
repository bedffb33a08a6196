#!/usr/bin/env bash
# Create ./.venv-blender with the bpy module (Blender as a Python module) for the Blender tests.
# Idempotent: does nothing when bpy already imports. bpy pins numpy<2, hence its own venv.
#   bash installers/setup-blender.sh
set -euo pipefail
cd "$(dirname "$0")/.."

version=${ARTFORGE_BPY_VERSION:-5.0.1}
venv=.venv-blender
if [[ -x $venv/bin/python ]] && $venv/bin/python -c "import bpy, sys; sys.exit(bpy.app.version_string.split()[0] != '$version')" 2>/dev/null; then
  exit 0
fi
python=${PYTHON:-$(command -v python3.11 || command -v python3)}
"$python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || { echo "bpy $version needs Python 3.11; set PYTHON=" >&2; exit 1; }
[[ -x $venv/bin/python ]] || "$python" -m venv "$venv"
echo "installing bpy==$version into $venv (about 370 MB)" >&2
$venv/bin/python -m pip install --quiet --disable-pip-version-check "bpy==$version"
