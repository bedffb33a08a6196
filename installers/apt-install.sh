#!/usr/bin/env bash
# Install Debian packages for the tests, quietly and without questions: as root, or through sudo.
#   bash installers/apt-install.sh PACKAGE...
set -euo pipefail
as_root=()
[[ $(id -u) == 0 ]] || as_root=(sudo DEBIAN_FRONTEND=noninteractive)
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update -qq
"${as_root[@]}" apt-get install -y -qq "$@" >/dev/null
