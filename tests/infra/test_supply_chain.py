"""Deploy what was tested: requirements.txt (what the Functions remote build installs) is the full hashed lock of
requirements.in, requirements-dev.lock that of requirements-dev.in, both from `bash dev.sh lock`; they fail here when
they drift apart. Every GitHub Action is pinned by commit SHA."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# `name==version` and its environment marker, if any (`azure-functions==2.3.0 ; python_version >= "3.13"`).
PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([^\s;\\]+)[ \t]*(?:;([^\\#\n]*))?", re.M)


def _marker(text: str | None) -> str:
    """A marker in one spelling: uv writes python_full_version and single quotes where requirements.in has
    python_version and double quotes."""
    words = (text or "").replace('"', "'").replace("python_full_version", "python_version")
    return " ".join(words.split())


def _pins(text: str) -> dict[tuple[str, str], str]:
    """{(name, marker): version} of every pinned line (comments and -r lines are not pins)."""
    return {(name.lower().replace("_", "-"), _marker(marker)): version for name, version, marker in PIN.findall(text)}


def _direct(source: str) -> dict[tuple[str, str], str]:
    text = (ROOT / source).read_text()
    pins = _pins(text)
    for included in re.findall(r"^-r\s+(\S+)", text, re.M):
        pins |= _direct(included)
    return pins


@pytest.mark.parametrize(
    ("source", "lock"), [("requirements.in", "requirements.txt"), ("requirements-dev.in", "requirements-dev.lock")]
)
def test_every_direct_pin_is_locked_and_every_locked_package_is_hashed(source: str, lock: str) -> None:
    text = (ROOT / lock).read_text()
    locked = _pins(text)
    direct = _direct(source)
    assert direct, f"{source} pins nothing"
    for (name, marker), version in direct.items():
        assert locked.get((name, marker)) == version, (
            f"{name}=={version}{' ; ' + marker if marker else ''} ({source}) is not what {lock} holds: "
            "run `bash dev.sh lock`"
        )
    entries = [e for e in re.split(r"\n(?=[A-Za-z0-9])", text) if PIN.match(e)]  # a pin and its --hash lines
    assert len(entries) == len(locked)
    for entry in entries:
        assert "--hash=sha256:" in entry, f"{entry.split()[0]} has no hash in {lock}: run `bash dev.sh lock`"
    assert not [line for line in text.splitlines() if re.match(r"^[A-Za-z0-9]", line) and "==" not in line], (
        f"{lock} has an unpinned requirement"
    )
    assert len(locked) > len(direct), f"{lock} should hold the transitive dependencies too"
    assert "bash dev.sh lock" in text.split("\n\n")[0], f"{lock} should say the one command that writes it"


def test_the_deployed_file_is_the_lock_and_nothing_else_is_installed_at_deploy() -> None:
    """Remote build (Oryx) runs `pip install -r requirements.txt` at the app root; any --hash line turns on pip's
    hash-checking mode for the whole file, so every package Azure installs is the one CI installed."""
    deployed = (ROOT / "requirements.txt").read_text()
    assert "--hash=sha256:" in deployed and not re.search(r"^-[rce]\s", deployed, re.M)
    ignored = (ROOT / ".funcignore").read_text().split()
    assert "requirements.txt" not in ignored and "requirements.in" in ignored and "requirements-dev.lock" in ignored
    assert not (ROOT / "requirements.lock").exists() and not (ROOT / "requirements-dev.txt").exists()


def test_runtime_lock_agrees_with_the_dev_lock() -> None:
    runtime = _pins((ROOT / "requirements.txt").read_text())
    dev = _pins((ROOT / "requirements-dev.lock").read_text())
    assert {key: dev.get(key) for key in runtime} == runtime


def test_one_lock_serves_both_pythons() -> None:
    """Python 3.13 (Azure) needs azure-functions 2.x; 1.26 is the last for 3.11: each has its own marked pin."""
    locked = _pins((ROOT / "requirements.txt").read_text())
    functions = {marker: version for (name, marker), version in locked.items() if name == "azure-functions"}
    assert set(functions) == {"python_version < '3.13'", "python_version >= '3.13'"}, functions
    assert functions["python_version >= '3.13'"].startswith("2.")


def test_installs_use_the_locks_with_hashes() -> None:
    devsh = (ROOT / "dev.sh").read_text()
    assert "--require-hashes -r requirements-dev.lock" in devsh
    assert "requirements.in --output-file requirements.txt" in devsh and "lock) lock ;;" in devsh
    audit = (ROOT / ".ci" / "audit").read_text()
    assert "--requirement requirements.txt --require-hashes" in audit
    assert "--requirement requirements-dev.lock --require-hashes" in audit


def test_github_actions_are_pinned_by_commit_sha() -> None:
    for workflow in (ROOT / ".github").rglob("*.yml"):
        for action in re.findall(r"uses:\s*(\S+)", workflow.read_text()):
            assert re.fullmatch(r"[\w.-]+/[\w.-]+(?:/[\w./-]+)?@[0-9a-f]{40}", action), f"{workflow.name}: {action}"
