"""One Python story: Azure runs 3.13 (the Bicep's Flex Consumption runtime), `bash dev.sh` prefers it, CI tests 3.13
and 3.11, and the package metadata admits both."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_azure_runs_the_first_python_dev_sh_supports_and_ci_tests_both() -> None:
    bicep = (ROOT / "infra" / "modules" / "resources.bicep").read_text()
    runtime = re.search(r"runtime:\s*\{\s*name:\s*'python'\s*version:\s*'([\d.]+)'", bicep)
    assert runtime, "the function app's runtime block is not found in resources.bicep"
    supported = re.search(r'^SUPPORTED="([\d. ]+)"', (ROOT / "dev.sh").read_text(), re.M)
    assert supported, "dev.sh has no SUPPORTED list"
    versions = supported.group(1).split()
    assert versions[0] == runtime.group(1) == "3.13" and "3.11" in versions
    ci = (ROOT / ".ci" / "run").read_text()
    assert "bash dev.sh --python 3.13 test\n" in ci  # Azure's Python: every test
    assert "bash dev.sh --python 3.11 test --quick\n" in ci  # the documented split: all but the tests marked slow
    workflow = (ROOT / ".github" / "workflows" / "ci.yml").read_text()
    assert all(version in workflow for version in versions)
    requires = re.search(r'requires-python = "([^"]+)"', (ROOT / "pyproject.toml").read_text())
    assert requires and requires.group(1) == ">=3.11,<3.14"
