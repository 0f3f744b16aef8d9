"""The deploy docs (README.md's Deploy section, docs/deploy.md) name only outputs, azd environment variables, app
settings and Key Vault secrets that exist in infra/ and the code, and list all of the outputs and secrets."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.infra.bicep_text import INFRA, ROOT, bicep_files
from tests.infra.test_settings_catalog import settings_read_by_the_app

# Set by azd itself or by the platform; documented, not declared in infra/.
AZD_VARIABLES = {"AZURE_ENV_NAME", "AZURE_LOCATION", "AZURE_SUBSCRIPTION_ID"}
PLATFORM_SETTINGS = {"IDENTITY_ENDPOINT", "IDENTITY_HEADER", "WEBSITE_SITE_NAME", "WEBSITE_TIME_ZONE"}
# Settings the docs name because the template deliberately leaves them out (Flex Consumption, telemetry).
NAMED_AS_NOT_SET = {
    "FUNCTIONS_WORKER_RUNTIME",
    "FUNCTIONS_EXTENSION_VERSION",
    "WEBSITE_RUN_FROM_PACKAGE",
    "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY",
    "PYTHON_THREADPOOL_THREAD_COUNT",
}


def outputs() -> set[str]:
    return set(re.findall(r"^output\s+(\w+)\s", (INFRA / "main.bicep").read_text(encoding="utf-8"), re.M))


def azd_variables() -> set[str]:
    text = (INFRA / "main.parameters.json").read_text(encoding="utf-8")
    return set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)(?:=[^}]*)?\}", text)) | AZD_VARIABLES


def bicep_app_settings() -> set[str]:
    text = (INFRA / "modules" / "resources.bicep").read_text(encoding="utf-8")
    return set(re.findall(r"^\s*name:\s*'([A-Za-z_][A-Za-z0-9_]*)'\s*$", text, re.M))


def secret_names() -> set[str]:
    found: set[str] = set()
    for path in bicep_files():
        found |= set(
            re.findall(r"^var\s+secretName\w*\s*=\s*'([A-Za-z0-9-]+)'", path.read_text(encoding="utf-8"), re.M)
        )
    return found


def code_literals() -> set[str]:
    """Upper-case string literals in the app's code: error codes, event names' constants, setting names."""
    found: set[str] = set()
    for path in [*ROOT.glob("shared/**/*.py"), *ROOT.glob("renew_*/*.py")]:
        found |= set(re.findall(r"[\"']([A-Z][A-Z0-9_]{3,})[\"']", path.read_text(encoding="utf-8")))
    return found


def known_names() -> set[str]:
    return (
        outputs()
        | azd_variables()
        | bicep_app_settings()
        | settings_read_by_the_app()
        | PLATFORM_SETTINGS
        | NAMED_AS_NOT_SET
        | code_literals()
    )


def deploy_docs() -> dict[str, str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start = readme.index("\n## Deploy\n")
    end = readme.find("\n## ", start + 1)
    return {
        "README.md#deploy": readme[start : end if end > 0 else len(readme)],
        "docs/deploy.md": (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8"),
    }


def problems(doc: str) -> list[str]:
    """What in one deploy document names something that does not exist."""
    found: list[str] = []
    out, variables, known, secrets = outputs(), azd_variables(), known_names(), secret_names()
    for name in re.findall(r"azd env get-value\s+\"?\$?\{?([A-Za-z_<>]+)", doc):
        if name not in out and not name.startswith("<"):
            found.append(f"`azd env get-value {name}`: {name} is not an output of infra/main.bicep")
    for name in re.findall(r"\boutputs?\s+`([A-Z_][A-Z0-9_]*)`", doc):
        if name not in out:
            found.append(f"output `{name}`: infra/main.bicep has no such output (outputs: {', '.join(sorted(out))})")
    for name in re.findall(r"azd env set\s+([A-Z_][A-Z0-9_]*)", doc):
        if name not in variables:
            found.append(f"`azd env set {name}`: infra/main.parameters.json maps no parameter from {name}")
    for name in re.findall(r"`([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+|[A-Za-z]+(?:__[A-Za-z]+)+)`", doc):
        if name not in known:
            found.append(f"`{name}`: not an output, azd variable, app setting or code name")
    for name in re.findall(r"`([A-Z]+(?:-[A-Z]+)+)`", doc):
        if name not in secrets:
            found.append(f"`{name}`: no Key Vault secret of that name in infra/")
    return found


@pytest.mark.parametrize("name", sorted(deploy_docs()))
def test_deploy_doc_names_only_what_exists(name: str) -> None:
    assert problems(deploy_docs()[name]) == []


def test_deploy_doc_lists_every_key_vault_secret() -> None:
    doc = deploy_docs()["docs/deploy.md"]
    missing = sorted(s for s in secret_names() if f"`{s}`" not in doc)
    assert len(secret_names()) >= 5 and missing == []


def test_deploy_doc_lists_every_output() -> None:
    doc = deploy_docs()["docs/deploy.md"]
    table = doc[doc.index("## Outputs") :]
    listed = set(re.findall(r"^\| `([A-Z_][A-Z0-9_]*)` \|", table, re.M))
    assert listed == outputs()


@pytest.mark.parametrize(
    ("name", "heading"), [("README.md#deploy", "**Call it**"), ("docs/deploy.md", "## After `azd up`: call it")]
)
def test_deploy_docs_say_how_to_call_the_app_after_azd_up(name: str, heading: str) -> None:
    doc = deploy_docs()[name]
    section = doc[doc.index(heading) :]
    assert "azd env get-value AZURE_FUNCTION_APP_URL" in section
    assert "az functionapp function keys list" in section and "--function-name renew_http" in section
    assert "/api/certificates/renew?code=" in section
    for link in ("install-azd", "install-azure-cli"):
        assert link in doc, f"prerequisite link {link} missing"
    assert "ALERT_EMAIL_ADDRESS" in doc and "Owner" in doc


def test_deploy_doc_covers_prerequisites_and_the_core_tools_path() -> None:
    doc = deploy_docs()["docs/deploy.md"]
    for link in ("install-azd", "install-azure-cli", "functions-run-local"):
        assert link in doc, f"prerequisite link {link} missing"
    assert "Flex Consumption" in doc and "azurite" in doc.lower() and "func start" in doc


@pytest.mark.parametrize("name", sorted(deploy_docs()))
def test_deploy_docs_ask_for_both_sign_ins_and_minimum_versions(name: str) -> None:
    # `az functionapp ...` needs the Azure CLI's own sign-in: `azd auth login` alone is not enough (issue 27).
    doc = deploy_docs()[name]
    assert "azd auth login" in doc and "az login" in doc
    assert re.search(r"\b1\.\d+\.\d+\s+or\s+later", doc), "name the minimum azd version"
    assert re.search(r"\b4\.0\.\d{4}\s+or\s+later", doc), "name the minimum Core Tools version"


@pytest.mark.parametrize("name", sorted(deploy_docs()))
def test_deploy_docs_put_the_one_time_setup_before_the_code_is_deployed(name: str) -> None:
    # The first night needs the RCL registration and the AVX account: both come before `azd deploy` (issue 27).
    doc = deploy_docs()[name]
    register = doc.index("Register a Client Id")
    assert register < doc.index("azd deploy") and doc.index("AppViewX") < doc.index("azd deploy")
    assert "AZURE_MANAGED_IDENTITY_CLIENT_ID" in doc[register - 600 : register + 900]
    # The identity RCL's Key Vault token comes from is the one to grant on other vaults.
    grant = re.search(r"grant\s+\*\*that\*\* identity Key Vault Certificates Officer", doc)
    assert grant and "RCL_KEY_VAULT_CLIENT_ID" in doc[max(0, grant.start() - 400) : grant.start()]


def test_the_check_catches_the_mistakes_it_is_for() -> None:
    # Each line is a mistake the deploy docs once made (issue 15) or could make.
    assert problems("register the client id (output `AZURE_CLIENT_ID` of `azd up`)")
    assert problems("the secrets (`AVX-PASSWORD`, `NOTIFY-WEBHOOK`)")
    assert problems("azd env set AVX_PASWORD x")
    assert problems("azd env get-value FUNCTION_APP_URL")
    assert problems("set `AVX_CA_BUNDEL`")
    assert not problems("azd env get-value AZURE_FUNCTION_APP_URL; output `AZURE_MANAGED_IDENTITY_CLIENT_ID`")


def test_names_are_read_from_infra(tmp_path: Path) -> None:
    assert "AZURE_MANAGED_IDENTITY_CLIENT_ID" in outputs() and "AZURE_CLIENT_ID" not in outputs()
    assert {"AVX_PASSWORD", "ALERT_EMAIL_ADDRESS", "KEY_VAULT_CREATE_MODE"} <= azd_variables()
    assert "NOTIFY-WEBHOOK-URL" in secret_names()
    assert json.loads((INFRA / "main.parameters.json").read_text(encoding="utf-8"))["parameters"]
