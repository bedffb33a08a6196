#!/usr/bin/env bash
# A real English word list for the prompt-help check (tests/test_prompt_help.py): Debian's
# wamerican-large, /usr/share/dict/american-english-large (170k words with their plurals and verb
# forms, 1.7 MB). Plain wamerican lacks real words such as "seamlessly" and "closeup"; the huge
# one accepts more made-up strings. Idempotent.
set -euo pipefail
[[ -f /usr/share/dict/american-english-large ]] && exit 0
bash "$(dirname "$0")/apt-install.sh" wamerican-large
[[ -f /usr/share/dict/american-english-large ]] || { echo "setup-words: wamerican-large did not install /usr/share/dict/american-english-large" >&2; exit 1; }
