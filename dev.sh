#!/usr/bin/env bash
# One entry point for developers and CI. Installs what it needs on first use (a fresh machine needs only
# Python 3.11, Node 20 and npm), then:
#   bash dev.sh local   run the nightly RCL renewal, its follow-up check and a webhook renewal end to end
#                       against the built-in local stack, and print a report
#   bash dev.sh test    run the test suite (the command CI runs)
#   bash dev.sh lint    ruff check and format check
#   bash dev.sh bench   the benchmark (figures, not pass/fail)
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3}

setup() {
  if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
  fi
  local stamp=.venv/.installed
  # The hashed lock of every transitive dependency (pip-compile --generate-hashes of requirements-dev.txt, which
  # includes requirements.txt): nothing is installed that is not pinned, and nothing whose hash does not match.
  if [ ! -f "$stamp" ] || [ requirements-dev.lock -nt "$stamp" ] || [ requirements.lock -nt "$stamp" ]; then
    .venv/bin/python -m pip install --quiet --disable-pip-version-check --require-hashes -r requirements-dev.lock
    touch "$stamp"
  fi
  if [ ! -x node_modules/.bin/azurite-table ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    npm ci --no-audit --no-fund --loglevel=error
  fi
}

cmd=${1:-help}
shift || true
case "$cmd" in
  local) setup; exec .venv/bin/python -m tests.standins.localrun "$@" ;;
  test) setup; exec .venv/bin/python -m pytest "$@" ;;
  lint) setup; .venv/bin/ruff check . && .venv/bin/ruff format --check . ;;
  bench) setup; exec .venv/bin/python -m bench "$@" ;;
  setup) setup ;;
  *) sed -n '2,10p' "$0"; exit 2 ;;
esac
