#!/usr/bin/env bash
# A real Prometheus server for the metrics test (tests/test_metrics.py): Debian's `prometheus`
# package (2.42, about 19 MB), which scrapes the server's /metrics and answers PromQL.
# Only the binary is used; the test runs it on its own port and folder. Idempotent.
set -euo pipefail
[[ -x /usr/bin/prometheus ]] && exit 0
bash "$(dirname "$0")/apt-install.sh" prometheus
[[ -x /usr/bin/prometheus ]] || { echo "setup-prometheus: the prometheus package did not install /usr/bin/prometheus" >&2; exit 1; }
