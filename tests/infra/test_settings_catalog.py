"""Every setting the app reads is documented and deployed: in local.settings.sample.json, the settings table
in docs/settings.md and the Bicep app settings. The list of settings is read from the code itself."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Read by the platform, by azure-identity or only by local tools; documented apart from the app's own settings.
# PYTHON_THREADPOOL_THREAD_COUNT belongs to the Functions Python worker (the app reads it to size its connection
# pools); Flex Consumption refuses it, so the Bicep must not set it (tests/infra/test_infra.py).
NOT_APP_SETTINGS = {
    "IDENTITY_ENDPOINT",
    "IDENTITY_HEADER",
    "AZURE_AUTHORITY_HOST",
    "CERTRENEW_FUNCTION_KEY",
    "PYTHON_THREADPOOL_THREAD_COUNT",
}


def settings_read_by_the_app() -> set[str]:
    names: set[str] = set()
    for path in [*ROOT.glob("shared/**/*.py"), *ROOT.glob("renew_*/*.py")]:
        text = path.read_text(encoding="utf-8")
        names |= set(re.findall(r'r\.(?:text|url|number|flag|table_name|secret|queue_name)\(\s*"([A-Za-z_]+)"', text))
        names |= set(re.findall(r'(?:schedule|queue_name)="%([A-Z_]+)%', text))
        for group in re.findall(r"r\.text\(n\) for n in \(([^)]*)\)", text):
            names |= set(re.findall(r'"([A-Z_]+)"', group))
    return names


def test_the_catalog_is_not_empty() -> None:
    names = settings_read_by_the_app()
    assert {"AVX_API_URL", "KEY_VAULT_URL", "RCL_RENEWAL_SCHEDULE", "PENDING_RETRY_SCHEDULE"} <= names
    assert len(names) >= 30


@pytest.mark.parametrize("name", sorted(settings_read_by_the_app() - NOT_APP_SETTINGS))
def test_setting_is_in_sample_readme_and_bicep(name: str) -> None:
    sample = json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]
    readme = (ROOT / "docs" / "settings.md").read_text()
    bicep = (ROOT / "infra" / "modules" / "resources.bicep").read_text()
    if "__" not in name:  # identity-based alternatives to AzureWebJobsStorage are documented, not sampled
        assert name in sample, f"{name} missing from local.settings.sample.json"
    assert f"`{name}`" in readme, f"{name} missing from the settings table in docs/settings.md"
    if name.startswith("AzureWebJobsStorage"):
        assert "AzureWebJobsStorage__accountName" in bicep
    else:
        assert f"'{name}'" in bicep, f"{name} missing from the Bicep app settings"
