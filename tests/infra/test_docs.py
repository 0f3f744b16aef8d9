"""The docs stay usable and true: README.md fits on a screen and leads to Deploy, every relative link in README.md and
docs/*.md resolves (file and #anchor), the deploy page's tables of alert rules, role assignments and app settings
are the ones the Bicep deploys (read from infra/ as text), the CLI is written one way, and the endpoint-check
example uses no private address (the template deploys no VNet)."""

from __future__ import annotations

import ipaddress
import json
import re
from pathlib import Path

import pytest

from tests.infra.bicep_text import (
    INFRA,
    ROOT,
    bicep_files,
    literal_parameters,
    read_string,
    resources,
    string_variables,
)

DOCS = ROOT / "docs"
README = ROOT / "README.md"
DEPLOY = DOCS / "deploy.md"
FENCED = re.compile(r"^[ \t]*(```+|~~~+).*?^[ \t]*\1[ \t]*$", re.M | re.S)
LINK = re.compile(r"(?<!!)\[(?:[^\]\[]|\[[^\]]*\])*\]\(([^)\s]+)\)")


def doc_files() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md")), INFRA / "README.md"]


def prose(text: str) -> str:
    """The text without fenced code blocks (a `# comment` in a bash block is not a heading, a `[x](y)` not a link)."""
    return FENCED.sub(lambda m: "\n" * m.group(0).count("\n"), text)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped (hyphens and underscores kept), spaces to '-'."""
    text = re.sub(r"`([^`]*)`", r"\1", heading.strip().lower())
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    for heading in re.findall(r"^#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", prose(path.read_text(encoding="utf-8")), re.M):
        base = slug(heading)
        name, n = base, 0
        while name in found:
            n += 1
            name = f"{base}-{n}"
        found.add(name)
    return found


def link_problems(path: Path) -> list[str]:
    problems: list[str] = []
    for target in LINK.findall(prose(path.read_text(encoding="utf-8"))):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        resolved = (path.parent / file_part).resolve() if file_part else path
        where = f"{path.relative_to(ROOT)}: ({target})"
        if not resolved.exists():
            problems.append(
                f"{where}: no such file {resolved.relative_to(ROOT) if resolved.is_relative_to(ROOT) else resolved}"
            )
        elif anchor and (resolved.is_dir() or resolved.suffix != ".md"):
            problems.append(f"{where}: an anchor into a file that is not Markdown")
        elif anchor and anchor not in anchors(resolved):
            problems.append(f"{where}: no heading with anchor #{anchor} in {resolved.relative_to(ROOT)}")
    return problems


# -- README and links -----------------------------------------------------------------------------------------------


def test_the_readme_fits_in_200_lines() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; move detail to docs/"


def test_a_newcomer_reaches_deploy_from_the_first_screen() -> None:
    first_screen = "\n".join(README.read_text(encoding="utf-8").splitlines()[:40])
    targets = LINK.findall(prose(first_screen))
    assert any(t in ("#deploy", "docs/deploy.md") or t.startswith("docs/deploy.md#") for t in targets), targets
    assert "deploy" in anchors(README)
    assert "bash dev.sh local" in first_screen and "bash dev.sh test" in first_screen


@pytest.mark.parametrize("path", doc_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(path: Path) -> None:
    assert link_problems(path) == []


def test_every_docs_page_is_in_the_readme_index() -> None:
    readme = README.read_text(encoding="utf-8")
    missing = [p.name for p in sorted(DOCS.glob("*.md")) if f"](docs/{p.name})" not in readme]
    assert missing == [], "add these pages to the README's Documentation table"


def test_the_link_check_catches_what_it_is_for(tmp_path: Path) -> None:
    page = DOCS / "deploy.md"
    assert slug("After `azd up`: call it") == "after-azd-up-call-it"
    assert slug("Asynchronous renewals (`Prefer: respond-async`)") == "asynchronous-renewals-prefer-respond-async"
    assert {"alert-rules", "role-assignments", "app-settings"} <= anchors(page)
    bad = DOCS / "_link_probe.md"
    try:
        bad.write_text(
            "# Probe\n\n[a](deploy.md#no-such-heading) [b](missing.md) [c](#probe) [d](../infra/main.bicep)\n"
            "```bash\n# not a heading\n[e](ignored-in-code.md)\n```\n",
            encoding="utf-8",
        )
        problems = link_problems(bad)
    finally:
        bad.unlink()
    assert len(problems) == 2 and "#no-such-heading" in problems[0] and "missing.md" in problems[1], problems


def test_infra_readme_points_to_the_one_deploy_text() -> None:
    text = (INFRA / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 5 and "../docs/deploy.md" in text


# -- the CLI, written one way ---------------------------------------------------------------------------------------


def test_the_cli_is_written_one_way() -> None:
    for path in [README, *sorted(DOCS.glob("*.md"))]:
        text = path.read_text(encoding="utf-8")
        assert "python -m shared" not in text, f"{path.name}: write the CLI as `certrenew`"
        for block in re.findall(r"```bash\n(.*?)```", text, re.S):
            for line in block.splitlines():
                assert not line.lstrip().startswith(".venv/bin/certrenew"), f"{path.name}: {line}"
    readme = README.read_text(encoding="utf-8")
    assert "`.venv/bin/certrenew`" in readme, "say once where `certrenew` is installed"


# -- the endpoint-check example reaches only public addresses --------------------------------------------------------


def test_the_endpoint_check_example_uses_no_private_address() -> None:
    text = (DOCS / "endpoint-check.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```json\n(.*?)```", text, re.S)
    entries = [e for block in blocks for e in json.loads(block)]
    assert entries and all("host" in e for e in entries)
    for entry in entries:
        host = entry.get("address", entry["host"]).rsplit(":", 1)[0].strip("[]")
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            continue  # a DNS name
        assert address.is_global, f"{entry}: the template deploys no VNet, so the app cannot reach {host}"


# -- the deploy page's infra tables match the Bicep ------------------------------------------------------------------


def table(doc: str, heading: str) -> list[list[str]]:
    """The rows (cells) of the first table under `## heading`."""
    section = doc.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in row.strip("|").split(" | ")] for row in rows[2:]]


def first_code(cell: str) -> str:
    found = re.search(r"`([^`]+)`", cell)
    assert found, f"no `name` in {cell!r}"
    return found.group(1)


DURATIONS = {"PT15M": "every 15 min", "PT6H": "every 6 h", "P1D": "daily"}


def bicep_alerts() -> dict[str, tuple[str, str, str]]:
    """Alert rule name suffix -> (severity, evaluation frequency in words, the event its query counts)."""
    found: dict[str, tuple[str, str, str]] = {}
    for rule in resources(INFRA / "modules" / "alerts.bicep", "Microsoft.Insights/scheduledQueryRules"):
        name = re.search(r"^\s*name:\s*'\$\{namePrefix\}-([a-z-]+)'", rule.body, re.M)
        severity = re.search(r"^\s*severity:\s*(\d+)", rule.body, re.M)
        frequency = re.search(r"^\s*evaluationFrequency:\s*'([A-Z0-9]+)'", rule.body, re.M)
        event = re.search(r'name == "([A-Za-z]+)"', rule.body)
        assert name and severity and frequency and event, rule.symbol
        found[name.group(1)] = (severity.group(1), DURATIONS[frequency.group(1)], event.group(1))
    return found


def test_the_alert_rules_table_is_what_the_bicep_deploys() -> None:
    rows = table(DEPLOY.read_text(encoding="utf-8"), "Alert rules")
    documented = {first_code(r[0]).removeprefix("…-"): (r[1], r[2], r[3]) for r in rows}
    deployed = bicep_alerts()
    assert len(deployed) == 6 and set(documented) == set(deployed)
    for suffix, (severity, frequency, event) in deployed.items():
        assert documented[suffix][:2] == (severity, frequency), suffix
        assert f"`{event}`" in documented[suffix][2], suffix
    readme_rows = table(README.read_text(encoding="utf-8"), "Operate")
    assert {first_code(r[0]).removeprefix("…-") for r in readme_rows} == set(deployed), "README's alert table"


def _names() -> dict[str, str]:
    """Bicep expressions that name things, resolved to the docs' spelling (`<token>` for the unique string)."""
    text = (INFRA / "modules" / "resources.bicep").read_text(encoding="utf-8")
    names = {k: v.value for k, v in string_variables(text).items()}
    return {k: v.replace("${resourceToken}", "<token>") for k, v in names.items()}


def _resource_name(path: Path, symbol: str) -> str:
    text = path.read_text(encoding="utf-8")
    body = next(r.body for r in resources(path) if r.symbol == symbol)
    raw = re.search(r"^  name:\s*(.+)$", body, re.M)
    assert raw, symbol
    expression = raw.group(1).strip()
    known = {**_names(), **literal_parameters(text), "keyVaultName": _names()["keyVaultName"]}
    if expression.startswith("'"):
        value = read_string(expression, 0).value
        for key, replacement in known.items():
            value = value.replace("${" + key + "}", replacement)
        return value
    return known[expression]


def bicep_role_assignments() -> set[tuple[str, str, str]]:
    """(principal's name, role, scope's name) of every role assignment in infra/."""
    found: set[tuple[str, str, str]] = set()
    for path in bicep_files():
        for assignment in resources(path, "Microsoft.Authorization/roleAssignments"):
            if path.name == "consumer-reader.bicep":
                found.add(consumer_reader_assignment(assignment.body))
                continue
            principal = re.search(r"principalId:\s*(\w+)\.", assignment.body)
            role = re.search(r"roleDefinitions',\s*role(\w+)\)", assignment.body)
            scope = re.search(r"^\s*scope:\s*(\w+)\s*$", assignment.body, re.M)
            assert principal and role and scope, f"{path.name}: {assignment.symbol}"
            words = re.sub(r"(?<!^)(?=[A-Z])", " ", role.group(1))
            found.add((_resource_name(path, principal.group(1)), words, _resource_name(path, scope.group(1))))
    return found


def consumer_reader_assignment(body: str) -> tuple[str, str, str]:
    """Reader at subscription scope (targetScope), deployed by main.bicep once per CONSUMER_SUBSCRIPTIONS entry for the
    app's identity: the principal and the scope come from main.bicep, not from the module."""
    main = (INFRA / "main.bicep").read_text(encoding="utf-8")
    module = main[main.index("module consumerReaders") :]
    assert "for id in consumerSubscriptionIds" in module and "scope: subscription(id)" in module
    assert "principalId: resources.outputs.identityPrincipalId" in module
    role = re.search(r"roleDefinitions',\s*role(\w+)\)", body)
    assert role and "targetScope = 'subscription'" in (INFRA / "modules" / "consumer-reader.bicep").read_text()
    return ("id-certrenew-<token>", role.group(1), "CONSUMER_SUBSCRIPTIONS")


def test_the_role_assignments_table_is_what_the_bicep_deploys() -> None:
    rows = table(DEPLOY.read_text(encoding="utf-8"), "Role assignments")
    documented = {(first_code(r[0]), r[1], first_code(r[2])) for r in rows}
    deployed = bicep_role_assignments()
    assert ("id-certrenew-rclkv-<token>", "Key Vault Certificates Officer", "kv-cr-<token>") in deployed
    assert len(deployed) >= 7 and documented == deployed


def bicep_app_settings() -> dict[str, str]:
    """App setting -> its value expression, in the order of resources.bicep's appSettings."""
    text = (INFRA / "modules" / "resources.bicep").read_text(encoding="utf-8")
    block = text[text.index("appSettings: [") : text.index("functionAppConfig:")]
    return dict(re.findall(r"name:\s*'([A-Za-z_]+)'\s*\n\s*value:\s*(.+)", block))


def azd_mapped() -> dict[str, str]:
    """Bicep parameter -> the azd environment variable main.parameters.json takes it from."""
    parameters = json.loads((INFRA / "main.parameters.json").read_text(encoding="utf-8"))["parameters"]
    return {p: m.group(1) for p, v in parameters.items() if (m := re.match(r"\$\{([A-Z_][A-Z0-9_]*)", str(v["value"])))}


def test_the_app_settings_table_is_what_the_bicep_deploys() -> None:
    rows = {first_code(r[0]): r for r in table(DEPLOY.read_text(encoding="utf-8"), "App settings")}
    deployed = bicep_app_settings()
    assert len(deployed) >= 40 and set(rows) == set(deployed)
    defaults = {
        **literal_parameters((INFRA / "main.bicep").read_text(encoding="utf-8")),
        **literal_parameters((INFRA / "modules" / "resources.bicep").read_text(encoding="utf-8")),
    }
    mapped = azd_mapped()
    for name, expression in deployed.items():
        _, value, how = rows[name]
        if expression.startswith("'"):
            literal: str | None = read_string(expression, 0).value
        else:
            literal = defaults.get(expression) if re.fullmatch(r"\w+", expression) else None
        if literal:
            assert f"`{literal}`" in value, f"{name}: the Bicep deploys {literal!r}, the table says {value!r}"
        elif literal == "":
            assert value.startswith("empty"), f"{name}: the Bicep deploys it empty, the table says {value!r}"
        parameter = expression if re.fullmatch(r"\w+", expression) else None
        secret = re.match(r"empty\((\w+)\)\s*\?\s*''", expression)
        parameter = parameter or (secret.group(1) if secret else None)
        if parameter in mapped:
            assert f"azd env set {mapped[parameter]}" in how, f"{name}: set with `azd env set {mapped[parameter]}`"
        else:
            assert "azd env set" not in how, f"{name}: main.parameters.json maps no azd variable to it"


def test_every_deployed_app_setting_is_in_the_settings_page() -> None:
    page = (DOCS / "settings.md").read_text(encoding="utf-8")
    assert [n for n in bicep_app_settings() if f"`{n}`" not in page] == []


def test_rcl_api_url_can_be_set_with_azd() -> None:
    assert azd_mapped()["rclApiUrl"] == "RCL_API_URL"
