"""`bash dev.sh`: a usage text naming every command, progress lines during first-run setup, a warning when the
Python in use is neither 3.13 nor 3.11, `--python X.Y` for the other one, the suite's expected duration. Run against a
copy of dev.sh with a stand-in python and npm (nothing is installed)."""

from __future__ import annotations

import os
import re
import stat
import subprocess
from pathlib import Path

from tests.standins.stack import REPO_ROOT

FAKE_PYTHON = """#!/usr/bin/env bash
if [ "$1" = "-c" ]; then echo "{version}"; exit 0; fi
echo "python $*" >> "$(dirname "$0")/../../calls.log"
if [ "$1" = "-m" ] && [ "$2" = "venv" ]; then mkdir -p "$3/bin" && cp "$0" "$3/bin/python"; fi
exit 0
"""
FAKE_NPM = """#!/usr/bin/env bash
echo "npm $*" >> "$(dirname "$0")/../calls.log"
"""


def executable(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def dev_sh(
    tmp_path: Path, *args: str, python_version: str = "3.11", pyenv: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """dev.sh with a stand-in python3.11 on PATH (answering `python_version`) and, in a stand-in pyenv root,
    the interpreters `pyenv` names ({"3.13": "3.13"}: versions/3.13.0/bin/python3.13 answering 3.13)."""
    tmp_path.mkdir(exist_ok=True)
    for name in ("dev.sh", "requirements.txt", "requirements-dev.lock", "pyproject.toml", "package-lock.json"):
        (tmp_path / name).write_bytes((REPO_ROOT / name).read_bytes())
    executable(tmp_path / "bin" / "python3.11", FAKE_PYTHON.format(version=python_version))
    for version, answers in (pyenv or {}).items():
        executable(
            tmp_path / "pyenv" / "versions" / f"{version}.0" / "bin" / f"python{version}",
            FAKE_PYTHON.format(version=answers),
        )
    executable(tmp_path / "bin" / "npm", FAKE_NPM)
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}", "PYENV_ROOT": str(tmp_path / "pyenv")}
    env.pop("PYTHON", None)
    return subprocess.run(
        ["bash", str(tmp_path / "dev.sh"), *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )


def test_usage_lists_every_command_and_no_source_lines(tmp_path: Path) -> None:
    script = (REPO_ROOT / "dev.sh").read_text()
    commands = set(re.findall(r"^  ([a-z]+)\)", script, re.MULTILINE)) | {"help"}
    assert {"setup", "local", "test", "lint", "bench"} <= commands
    for args in ((), ("help",)):
        result = dev_sh(tmp_path, *args)
        assert result.returncode == 0, result.stderr
        listed = set(re.findall(r"^  ([a-z]+)\b", result.stdout, re.MULTILINE))
        assert commands <= listed, result.stdout
        assert "--serve" in result.stdout and "set -euo" not in result.stdout and "cd " not in result.stdout
    unknown = dev_sh(tmp_path, "frobnicate")
    assert unknown.returncode == 2 and "unknown command 'frobnicate'" in unknown.stderr and "setup" in unknown.stderr


def test_first_setup_says_what_it_does_and_installs_the_console_command(tmp_path: Path) -> None:
    result = dev_sh(tmp_path, "setup")
    assert result.returncode == 0, result.stderr
    progress = [line for line in result.stdout.splitlines() if line.startswith("setup: ")]
    assert [p.split(" ...")[0] for p in progress] == [
        f"setup: creating .venv with {tmp_path / 'bin' / 'python3.11'}",
        "setup: installing the hash-pinned Python packages (the first time takes about a minute)",
        "setup: installing the console command .venv/bin/certrenew",
        "setup: installing Azurite (npm ci)",
        "setup: done (.venv, .venv/bin/certrenew, Azurite).",
    ]
    calls = (tmp_path / "calls.log").read_text()
    assert (
        "--require-hashes -r requirements-dev.lock" in calls
        and "--no-deps" in calls
        and "-e ." in calls
        and "npm ci" in calls
    )
    assert "warning" not in result.stderr


def test_a_python_other_than_3_13_or_3_11_is_named(tmp_path: Path) -> None:
    result = dev_sh(tmp_path, "setup", python_version="3.12")
    assert result.returncode == 0, result.stderr
    assert (
        "is Python 3.12, not 3.13 or 3.11" in result.stderr and "PYTHON=python3.13 bash dev.sh setup" in result.stderr
    )


def test_setup_prefers_python_3_13_found_through_pyenv(tmp_path: Path) -> None:
    """Azure runs 3.13: a new .venv is made with it when it is installed (CI machines have it through pyenv)."""
    result = dev_sh(tmp_path, "setup", pyenv={"3.13": "3.13"})
    assert result.returncode == 0, result.stderr
    interpreter = tmp_path / "pyenv" / "versions" / "3.13.0" / "bin" / "python3.13"
    assert f"setup: creating .venv with {interpreter} ..." in result.stdout and "warning" not in result.stderr


def test_python_option_runs_the_other_version_in_its_own_venv(tmp_path: Path) -> None:
    dev_sh(tmp_path, "setup", pyenv={"3.13": "3.13"})  # .venv is 3.13
    result = dev_sh(tmp_path, "--python", "3.11", "test", "-q", pyenv={"3.13": "3.13"})
    assert result.returncode == 0, result.stderr
    assert f"setup: creating .venv-3.11 with {tmp_path / 'bin' / 'python3.11'} ..." in result.stdout
    assert "test: Python 3.11 in .venv-3.11" in result.stderr
    again = dev_sh(tmp_path, "--python", "3.13", "test", pyenv={"3.13": "3.13"})  # .venv already is 3.13
    assert again.returncode == 0 and "creating" not in again.stdout, again.stdout + again.stderr
    wrong = dev_sh(tmp_path, "--python", "3.12", "test")
    assert wrong.returncode == 2 and "--python takes one of: 3.13 3.11" in wrong.stderr
    missing = dev_sh(tmp_path / "fresh", "--python", "3.13", "test")
    assert missing.returncode == 2 and "Python 3.13 is not installed" in missing.stderr


def test_test_says_how_long_it_takes_and_quick_leaves_the_slow_tests_out(tmp_path: Path) -> None:
    full = dev_sh(tmp_path, "test", "-q")
    assert full.returncode == 0, full.stderr
    assert re.search(r"the whole suite takes about \d+ minutes", full.stderr) and "--quick" in full.stderr
    assert "python -m pytest -n 2 --dist loadfile -q" in (tmp_path / "calls.log").read_text()  # what CI runs
    some = dev_sh(tmp_path, "test", "tests/operator/test_devsh.py", "-q")
    assert some.returncode == 0 and "the tests given" in some.stderr
    assert "python -m pytest tests/operator/test_devsh.py -q" in (tmp_path / "calls.log").read_text()
    quick = dev_sh(tmp_path, "test", "--quick", "-x")
    assert quick.returncode == 0, quick.stderr
    assert "python -m pytest -m not slow -n 2 --dist loadfile -x" in (tmp_path / "calls.log").read_text()
    assert re.search(r"about [\d.]+ minutes?", quick.stderr)
