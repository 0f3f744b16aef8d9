#!/usr/bin/env bash
# One entry point for developers and CI. Installs what it needs on first use (a fresh machine needs only
# Python 3.11, Node 20 and npm); `bash dev.sh` alone prints the commands.
set -euo pipefail
cd "$(dirname "$0")"

usage() {
  cat <<'EOF'
usage: bash dev.sh COMMAND [ARGS...]

  setup                 create .venv (Python 3.11), install the pinned packages, the console command
                        .venv/bin/certrenew and Azurite (npm); every other command runs it first
  local                 run a night, the morning check and a webhook renewal end to end on the built-in local
                        stack and print a report; everything it started is stopped at the end
  local --serve [--port N]
                        the same, then keep the stack up and serve the app's HTTP functions (default port 7071)
                        with ready-to-paste curl commands; Ctrl+C stops everything
  test [PYTEST ARGS]    run the test suite (what CI runs)
  lint                  ruff check and format check
  bench [ARGS]          the benchmark (figures, not pass/fail)
  chaos [N] [STEPS]     the fault campaign over N seeds (default 10) of STEPS steps each (default 40), printing each
                        seed's faults and invariants (CI runs a short fixed seed set in the test suite)
  help                  this text

The operator CLI: .venv/bin/certrenew --help (or .venv/bin/python -m shared --help).
EOF
}

# Python 3.11 is what Azure runs; prefer it when it is installed under that name.
PYTHON=${PYTHON:-$(command -v python3.11 || echo python3)}

python_version() {
  "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || echo "none"
}

warn_unless_311() {
  local version
  version=$(python_version "$1")
  if [ "$version" != "3.11" ]; then
    echo "dev.sh: warning: $1 is Python $version, not 3.11 (what the app runs on in Azure); things may differ." >&2
    echo "dev.sh:          install Python 3.11, then: rm -rf .venv && PYTHON=python3.11 bash dev.sh setup" >&2
  fi
}

setup() {
  if [ ! -x .venv/bin/python ]; then
    warn_unless_311 "$PYTHON"
    echo "setup: creating .venv with $PYTHON ..."
    "$PYTHON" -m venv .venv
  else
    warn_unless_311 .venv/bin/python
  fi
  local stamp=.venv/.installed
  # The hashed lock of every transitive dependency (pip-compile --generate-hashes of requirements-dev.txt, which
  # includes requirements.txt): nothing is installed that is not pinned, and nothing whose hash does not match.
  if [ ! -f "$stamp" ] || [ requirements-dev.lock -nt "$stamp" ] || [ requirements.lock -nt "$stamp" ] \
    || [ pyproject.toml -nt "$stamp" ]; then
    echo "setup: installing the hash-pinned Python packages (the first time takes about a minute) ..."
    .venv/bin/python -m pip install --quiet --disable-pip-version-check --require-hashes -r requirements-dev.lock
    echo "setup: installing the console command .venv/bin/certrenew ..."
    # Editable and without dependencies (the lock pins them): the command runs this checkout's code.
    .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps --ignore-requires-python -e .
    touch "$stamp"
  fi
  if [ ! -x node_modules/.bin/azurite-table ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    echo "setup: installing Azurite (npm ci) ..."
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
  chaos) setup; CHAOS_SEEDS=${1:-10} CHAOS_STEPS=${2:-40} exec .venv/bin/python -m pytest tests/chaos -q -s \
      --show-capture=no -o log_cli=false "${@:3}" ;;
  setup) setup; echo "setup: done (.venv, .venv/bin/certrenew, Azurite)." ;;
  help | -h | --help) usage ;;
  *) echo "dev.sh: unknown command '$cmd'" >&2; usage >&2; exit 2 ;;
esac
