"""Rules for infra/ that make the first `azd up` succeed, checked on the Bicep text (Bicep cannot be compiled here)."""

from __future__ import annotations

import json
import re

import pytest

from tests.infra.bicep_text import INFRA, ROOT, bicep_files, resources

# "Flex Consumption plan deprecations" (learn.microsoft.com/azure/azure-functions/functions-app-settings
# #flex-consumption-plan-deprecations): app settings and site properties that Flex Consumption does not support or
# that moved to functionAppConfig. Newer regions reject the whole site create when one is set.
FLEX_DEPRECATED_APP_SETTINGS = (
    "DOCKER_REGISTRY_SERVER_PASSWORD",
    "DOCKER_REGISTRY_SERVER_URL",
    "DOCKER_REGISTRY_SERVER_USERNAME",
    "ENABLE_ORYX_BUILD",
    "FUNCTION_APP_EDIT_MODE",
    "FUNCTIONS_EXTENSION_VERSION",
    "FUNCTIONS_MAX_HTTP_CONCURRENCY",
    "FUNCTIONS_WORKER_PROCESS_COUNT",
    "FUNCTIONS_WORKER_RUNTIME",
    "FUNCTIONS_WORKER_RUNTIME_VERSION",
    "FUNCTIONS_WORKER_SHARED_MEMORY_DATA_TRANSFER_ENABLED",
    "MACHINEKEY_DecryptionKey",
    "PYTHON_THREADPOOL_THREAD_COUNT",
    "SCALE_CONTROLLER_LOGGING_ENABLED",
    "SCM_DO_BUILD_DURING_DEPLOYMENT",
    "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING",
    "WEBSITE_CONTENTOVERVNET",
    "WEBSITE_CONTENTSHARE",
    "WEBSITE_DNS_SERVER",
    "WEBSITE_MAX_DYNAMIC_APPLICATION_SCALE_OUT",
    "WEBSITE_NODE_DEFAULT_VERSION",
    "WEBSITE_RUN_FROM_PACKAGE",
    "WEBSITE_SKIP_CONTENTSHARE_VALIDATION",
    "WEBSITE_VNET_ROUTE_ALL",
)
FLEX_DEPRECATED_SITE_PROPERTIES = (
    "containerSize",
    "ftpsState",
    "functionAppScaleLimit",
    "functionsRuntimeScaleMonitoringEnabled",
    "isXenon",
    "javaVersion",
    "linuxFxVersion",
    "netFrameworkVersion",
    "powerShellVersion",
    "preWarmedInstanceCount",
    "use32BitWorkerProcess",
    "vnetRouteAllEnabled",
    "windowsFxVersion",
)


def sites() -> list:
    return [r for path in bicep_files() for r in resources(path, "Microsoft.Web/sites")]


def code_of(body: str) -> str:
    """The body without // comments (the checkov skips explain ftpsState in words)."""
    return "\n".join(line.split("//")[0] for line in body.splitlines())


def test_there_is_a_function_app_on_flex_consumption() -> None:
    assert sites(), "no Microsoft.Web/sites resource in infra/"
    plans = [r for path in bicep_files() for r in resources(path, "Microsoft.Web/serverfarms")]
    assert plans and all("'FlexConsumption'" in p.body for p in plans)


@pytest.mark.parametrize("name", FLEX_DEPRECATED_APP_SETTINGS)
def test_no_flex_deprecated_app_setting_anywhere_in_infra(name: str) -> None:
    for path in bicep_files():
        text = code_of(path.read_text(encoding="utf-8"))
        assert f"'{name}'" not in text and not re.search(rf"\b{name}\s*:", text), f"{name} in {path.name}"


@pytest.mark.parametrize("prop", FLEX_DEPRECATED_SITE_PROPERTIES)
def test_no_flex_deprecated_site_property(prop: str) -> None:
    for site in sites():
        assert not re.search(rf"\b{prop}\s*:", code_of(site.body), re.I), f"{prop} set on {site.symbol}"


def test_the_ftps_checkov_check_is_skipped_with_its_reason() -> None:
    for site in sites():
        skip = re.search(r"checkov:skip=CKV_AZURE_78:\s*(.+)", site.body)
        assert skip and "Flex Consumption" in skip.group(1), "CKV_AZURE_78 needs an explained skip"


def test_location_is_limited_to_flex_consumption_regions_in_one_place() -> None:
    main = (INFRA / "main.bicep").read_text(encoding="utf-8")
    declaration = re.search(
        r"@allowed\(\[(?P<regions>[^\]]*)\]\)\s*@metadata\(\{\s*azd:\s*\{\s*type:\s*'location'", main
    )
    assert declaration, "param location has no @allowed list of Flex Consumption regions"
    regions = re.findall(r"'([a-z0-9]+)'", declaration["regions"])
    assert len(regions) >= 20 and len(set(regions)) == len(regions)
    assert {"westeurope", "northeurope", "eastus", "swedencentral"} <= set(regions)
    # One place: no other file repeats the list (docs point to main.bicep instead).
    for path in [*bicep_files(), *ROOT.glob("*.md"), *INFRA.glob("*.md")]:
        if path.name != "main.bicep":
            text = path.read_text(encoding="utf-8")
            assert sum(f"'{r}'" in text or f"`{r}`" in text for r in regions) < 5, f"region list repeated in {path}"


def test_every_log_alert_rule_skips_azure_query_validation() -> None:
    rules = [r for path in bicep_files() for r in resources(path, "Microsoft.Insights/scheduledQueryRules")]
    assert len(rules) >= 2
    for rule in rules:
        assert rule.api_version >= "2023-12-01", f"{rule.symbol}: skipQueryValidation needs API 2023-12-01 or later"
        assert re.search(r"^\s*skipQueryValidation:\s*true\b", rule.body, re.M), f"{rule.symbol} validates on deploy"


def test_a_soft_deleted_vault_can_be_recovered_on_reprovisioning() -> None:
    main = (INFRA / "main.bicep").read_text(encoding="utf-8")
    allowed = (
        r"@allowed\(\[\s*'default'\s*'recover'\s*\]\)(?:(?!\nparam ).)*\nparam keyVaultCreateMode string = 'default'"
    )
    assert re.search(allowed, main, re.S), "keyVaultCreateMode: default or recover, defaulting to default"
    assert "keyVaultCreateMode: keyVaultCreateMode" in main
    parameters = json.loads((INFRA / "main.parameters.json").read_text(encoding="utf-8"))["parameters"]
    assert parameters["keyVaultCreateMode"]["value"] == "${KEY_VAULT_CREATE_MODE=default}"
    vaults = [r for path in bicep_files() for r in resources(path, "Microsoft.KeyVault/vaults")]
    created = [v for v in vaults if "enablePurgeProtection" in v.body]
    assert created and all(re.search(r"^\s*createMode:\s*keyVaultCreateMode\b", v.body, re.M) for v in created)
    readme = (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
    assert "azd env set KEY_VAULT_CREATE_MODE recover" in readme
    assert "azd env set KEY_VAULT_CREATE_MODE default" in readme


def test_avx_ca_bundle_is_described_as_a_path() -> None:
    main = (INFRA / "main.bicep").read_text(encoding="utf-8")
    description = re.search(r"@description\('((?:[^'\\]|\\.)*)'\)\s*param avxCaBundle\b", main)
    assert description and "path" in description.group(1) and "(or path)" not in description.group(1)


def test_the_worker_does_not_configure_a_second_azure_monitor_pipeline() -> None:
    # With PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY=true the Python worker calls configure_azure_monitor() itself:
    # a second exporter without the app's redaction processor (the app then only warns and backs off).
    for path in bicep_files():
        assert "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY" not in code_of(path.read_text(encoding="utf-8"))
    host = json.loads((ROOT / "host.json").read_text(encoding="utf-8"))
    assert host["telemetryMode"] == "OpenTelemetry"


def test_no_bicep_lambda_that_checkov_cannot_parse() -> None:
    """checkov's Bicep parser (pycep) cannot read lambdas (map/filter with `=>`): a file it cannot parse is a file it
    does not scan, and .ci/checkov fails on the parsing error. Loops (`[for x in y: ...]`) parse."""
    offenders = []
    for path in sorted((ROOT / "infra").rglob("*.bicep")):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            code = line.split("//", 1)[0]
            if "=>" in code:
                offenders.append(f"{path.relative_to(ROOT)}:{number}")
    assert not offenders, f"lambdas in Bicep (use a for-expression): {offenders}"
