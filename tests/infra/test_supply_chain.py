"""The hashed locks stay in step with the pinned requirements, and every GitHub Action is pinned by commit SHA."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==(\S+)", re.M)


def _pins(text: str) -> dict[str, str]:
    return {name.lower().replace("_", "-"): version for name, version in PIN.findall(text)}


@pytest.mark.parametrize(
    ("source", "lock"), [("requirements.txt", "requirements.lock"), ("requirements-dev.txt", "requirements-dev.lock")]
)
def test_every_pin_is_in_the_lock_and_every_lock_entry_has_hashes(source: str, lock: str) -> None:
    text = (ROOT / lock).read_text()
    locked = _pins(text)
    direct = _pins((ROOT / source).read_text())
    if source == "requirements-dev.txt":
        direct |= _pins((ROOT / "requirements.txt").read_text())
    for name, version in direct.items():
        assert locked.get(name) == version, f"{name}=={version} is not what {lock} holds; re-run pip-compile"
    for entry in re.split(r"\n(?=[A-Za-z0-9])", text):  # one entry per package: its pin and its --hash lines
        if PIN.match(entry):
            assert "--hash=sha256:" in entry, f"{entry.split()[0]} has no hash in {lock}"
    assert len(locked) > len(direct), f"{lock} should hold the transitive dependencies too"


def test_runtime_lock_agrees_with_the_dev_lock() -> None:
    runtime = _pins((ROOT / "requirements.lock").read_text())
    dev = _pins((ROOT / "requirements-dev.lock").read_text())
    assert {name: dev.get(name) for name in runtime} == runtime


def test_installs_use_the_locks_with_hashes() -> None:
    assert "--require-hashes -r requirements-dev.lock" in (ROOT / "dev.sh").read_text()
    audit = (ROOT / ".ci" / "audit").read_text()
    assert "--requirement requirements.lock --require-hashes" in audit


def test_github_actions_are_pinned_by_commit_sha() -> None:
    for workflow in (ROOT / ".github").rglob("*.yml"):
        for action in re.findall(r"uses:\s*(\S+)", workflow.read_text()):
            assert re.fullmatch(r"[\w.-]+/[\w.-]+(?:/[\w./-]+)?@[0-9a-f]{40}", action), f"{workflow.name}: {action}"
