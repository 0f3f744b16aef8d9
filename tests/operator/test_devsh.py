"""`bash dev.sh`: a usage text naming every command, progress lines during first-run setup, a warning when the
Python in use is not 3.11. Run against a copy of dev.sh with a stand-in python and npm (nothing is installed)."""

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
"""
FAKE_NPM = """#!/usr/bin/env bash
echo "npm $*" >> "$(dirname "$0")/../calls.log"
"""


def executable(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def dev_sh(tmp_path: Path, *args: str, python_version: str = "3.11") -> subprocess.CompletedProcess[str]:
    for name in ("dev.sh", "requirements.lock", "requirements-dev.lock", "pyproject.toml", "package-lock.json"):
        (tmp_path / name).write_bytes((REPO_ROOT / name).read_bytes())
    executable(tmp_path / "bin" / "python3.11", FAKE_PYTHON.format(version=python_version))
    executable(tmp_path / "bin" / "npm", FAKE_NPM)
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}"}
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


def test_a_python_other_than_3_11_is_named(tmp_path: Path) -> None:
    result = dev_sh(tmp_path, "setup", python_version="3.12")
    assert result.returncode == 0, result.stderr
    assert "is Python 3.12, not 3.11" in result.stderr and "PYTHON=python3.11 bash dev.sh setup" in result.stderr
