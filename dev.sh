#!/usr/bin/env bash
# One entry point for developers and CI. Installs what it needs on first use (a fresh machine needs only
# Python 3.13 or 3.11, Node 20 and npm); `bash dev.sh` alone prints the commands.
set -euo pipefail
cd "$(dirname "$0")"

usage() {
  cat <<'EOF'
usage: bash dev.sh [--python 3.13|3.11] COMMAND [ARGS...]

  setup                 create .venv (Python 3.13, what Azure runs; else 3.11), install the hash-pinned packages,
                        the console command .venv/bin/certrenew and Azurite (npm); every other command runs it first
                        (about a minute the first time). --python X.Y: that Python, in .venv-X.Y unless .venv is it
  local                 run a night, the morning check and a webhook renewal end to end on the built-in local
                        stack and print a report; everything it started is stopped at the end
  local --serve [--port N]
                        the same, then keep the stack up and serve the app's HTTP functions (default port 7071)
                        with ready-to-paste curl commands; Ctrl+C stops everything
  test [PYTEST ARGS]    run the test suite (what CI runs): about 3 minutes on 2 cores with two workers; with a
                        test path (tests/...) only those tests, in one process
  test --quick [ARGS]   the inner-loop subset, about 1.5 minutes: everything but the tests marked slow (the local
                        stack end to end, load, faults, and single tests over 2 s); CI runs them all
  lint                  ruff check and format check
  lock                  compile requirements.in and requirements-dev.in (the pinned direct dependencies) into
                        requirements.txt (what Azure's remote build installs) and requirements-dev.lock: every
                        transitive package pinned with its hashes, one lock for Python 3.11 and 3.13
  bench [ARGS]          the benchmark (figures, not pass/fail)
  chaos [N] [STEPS]     the fault campaign over N seeds (default 10) of STEPS steps each (default 40), printing each
                        seed's faults and invariants (CI runs a short fixed seed set in the test suite)
  help                  this text

The operator CLI: .venv/bin/certrenew --help (or .venv/bin/python -m shared --help).
EOF
}

python_version() {
  "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || echo "none"
}

# The interpreter of Python $1: pythonX.Y on PATH when it runs, else pyenv's (CI machines and these have it there).
find_python() {
  local candidate
  for candidate in "python$1" "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$1".*/bin/"python$1"; do
    if [ "$(python_version "$candidate")" = "$1" ]; then
      command -v "$candidate"
      return 0
    fi
  done
  return 1
}

SUPPORTED="3.13 3.11" # what the suite runs on (.ci/run runs both); Azure runs the first (infra/, azure.yaml)
VENV=.venv
if [ "${1:-}" = "--python" ]; then
  wanted=${2:-}
  case " $SUPPORTED " in
    *" $wanted "*) ;;
    *) echo "dev.sh: --python takes one of: $SUPPORTED" >&2; exit 2 ;;
  esac
  shift 2
  PYTHON=${PYTHON:-$(find_python "$wanted" || true)}
  if [ -z "$PYTHON" ]; then
    echo "dev.sh: Python $wanted is not installed (neither python$wanted nor pyenv's)" >&2
    exit 2
  fi
  # .venv when it already is that Python, else a venv of its own beside it.
  if [ "$(python_version .venv/bin/python)" != "$wanted" ]; then VENV=.venv-$wanted; fi
fi
PYTHON=${PYTHON:-$(find_python 3.13 || find_python 3.11 || command -v python3.11 || echo python3)}

warn_unless_supported() {
  local version
  version=$(python_version "$1")
  case " $SUPPORTED " in
    *" $version "*) ;;
    *)
      echo "dev.sh: warning: $1 is Python $version, not 3.13 or 3.11 (what the app runs on in Azure and is tested on); things may differ." >&2
      echo "dev.sh:          install Python 3.13, then: rm -rf .venv && PYTHON=python3.13 bash dev.sh setup" >&2
      ;;
  esac
}

setup() {
  if [ ! -x "$VENV/bin/python" ]; then
    warn_unless_supported "$PYTHON"
    echo "setup: creating $VENV with $PYTHON ..."
    "$PYTHON" -m venv "$VENV"
  else
    warn_unless_supported "$VENV/bin/python"
  fi
  local stamp=$VENV/.installed
  # The hashed lock of every transitive dependency (`bash dev.sh lock`: requirements-dev.in, which includes
  # requirements.in): nothing is installed that is not pinned, and nothing whose hash does not match.
  if [ ! -f "$stamp" ] || [ requirements-dev.lock -nt "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "setup: installing the hash-pinned Python packages (the first time takes about a minute) ..."
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --require-hashes -r requirements-dev.lock
    echo "setup: installing the console command $VENV/bin/certrenew ..."
    # Editable and without dependencies (the lock pins them): the command runs this checkout's code.
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps -e .
    touch "$stamp"
  fi
  if [ ! -x node_modules/.bin/azurite-table ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    echo "setup: installing Azurite (npm ci) ..."
    npm ci --no-audit --no-fund --loglevel=error
  fi
}

UV_VERSION=0.13.8
# `uv pip compile --universal`: one lock whose markers pick what each Python needs (azure-functions 1.x on 3.11,
# 2.x on 3.13), the sha256 of every file of each pinned release. The runtime lock constrains the dev lock, so
# both pin the same versions. Only this command reaches the package index for resolution.
lock() {
  if [ ! -x .venv-lock/bin/uv ]; then
    echo "lock: installing uv $UV_VERSION into .venv-lock ..."
    "$PYTHON" -m venv .venv-lock
    .venv-lock/bin/python -m pip install --quiet --disable-pip-version-check "uv==$UV_VERSION"
  fi
  local compile=(.venv-lock/bin/uv pip compile --quiet --universal --python-version 3.11 --generate-hashes
    --custom-compile-command "bash dev.sh lock")
  "${compile[@]}" requirements.in --output-file requirements.txt
  "${compile[@]}" requirements-dev.in --constraint requirements.txt --output-file requirements-dev.lock
  echo "lock: wrote requirements.txt (deployed) and requirements-dev.lock; bash dev.sh test tests/infra checks them."
}

# The whole suite (no test path given) runs on two pytest-xdist workers, one test file each at a time: it mostly
# waits on stand-ins and subprocesses, so two overlap on 2 cores (measured: 3 min against 5 in one process). A test
# path, -n or -p runs exactly as given, in one process unless -n says otherwise.
XDIST=(-n 2 --dist loadfile)
test_cmd() {
  local arg workers=("${XDIST[@]}")
  if [ "${1:-}" = "--quick" ]; then
    shift
    echo "test --quick: the inner-loop subset (no test marked slow), about 1.5 minutes; CI runs everything." >&2
    exec "$VENV/bin/python" -m pytest -m "not slow" "${XDIST[@]}" "$@"
  fi
  for arg in "$@"; do
    case "$arg" in
      tests* | *.py | *::* | -n | -n* | -p) workers=() ;;
    esac
  done
  if [ ${#workers[@]} -gt 0 ]; then
    echo "test: Python $(python_version "$VENV/bin/python") in $VENV; the whole suite takes about 3 minutes on 2 cores" \
      "with two workers (bash dev.sh test --quick: about 1.5 minutes)." >&2
  else
    echo "test: Python $(python_version "$VENV/bin/python") in $VENV, the tests given." >&2
  fi
  exec "$VENV/bin/python" -m pytest "${workers[@]}" "$@"
}

cmd=${1:-help}
shift || true
case "$cmd" in
  local) setup; exec "$VENV/bin/python" -m tests.standins.localrun "$@" ;;
  test) setup; test_cmd "$@" ;;
  lint) setup; "$VENV/bin/ruff" check . && "$VENV/bin/ruff" format --check . ;;
  bench) setup; exec "$VENV/bin/python" -m bench "$@" ;;
  lock) lock ;;
  chaos) setup; CHAOS_SEEDS=${1:-10} CHAOS_STEPS=${2:-40} exec "$VENV/bin/python" -m pytest tests/chaos -q -s \
      --show-capture=no -o log_cli=false "${@:3}" ;;
  setup) setup; echo "setup: done ($VENV, $VENV/bin/certrenew, Azurite)." ;;
  help | -h | --help) usage ;;
  *) echo "dev.sh: unknown command '$cmd'" >&2; usage >&2; exit 2 ;;
esac
