"""Every KQL query the project ships is checked offline with Microsoft's Kusto language service (tools/kql-check.js,
`@kusto/language-service-next` from package.json) against the Application Insights table schemas: unknown tables and
columns and syntax errors fail here instead of in Azure (the alert rules skip Azure's own validation on their first
deployment, see infra/modules/alerts.bicep).

The queries are found, not listed: ```kusto / ```kql blocks in every Markdown file, every `query:` property in
infra/**/*.bicep (Bicep escapes and ''' strings resolved), every .kql file and every "query" in a JSON file under
infra/ (workbooks)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess  # nosec B404: runs node on a file of this repository
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.infra.bicep_text import (
    INFRA,
    ROOT,
    BicepTextError,
    bicep_files,
    literal_parameters,
    property_values,
    read_string,
    string_variables,
)

CHECKER = ROOT / "tools" / "kql-check.js"
# Also .venv-3.11, .venv-3.13 (`dev.sh --python`) and .venv-lock (`dev.sh lock`).
SKIPPED_DIRS = {
    ".git",
    ".venv",
    ".venv-checkov",
    ".venv-tools",
    ".venv-3.11",
    ".venv-3.13",
    ".venv-lock",
    "node_modules",
}
SKIPPED_DIRS |= {".localstack", ".pytest_cache"}
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>```+|~~~+)[ \t]*(?:kusto|kql)\b[^\n]*\n(?P<body>.*?)^[ \t]*(?P=fence)[ \t]*$",
                   re.M | re.S | re.I)  # fmt: skip
# Workbook parameters ({TimeRange}, {Name:label}) are substituted by the workbook before the query runs.
WORKBOOK_TIME_RANGE = re.compile(r"\{TimeRange(?::[^}]*)?\}")
WORKBOOK_PARAMETER = re.compile(r"\{[A-Za-z_][A-Za-z0-9_]*(?::[^}]*)?\}")


@dataclass(frozen=True)
class Query:
    id: str  # file:line, and what it is
    text: str


def _line(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def markdown_files() -> list[Path]:
    return sorted(
        p for p in ROOT.rglob("*.md") if not SKIPPED_DIRS.intersection(p.relative_to(ROOT).parts)
    )  # fmt: skip


def markdown_queries() -> list[Query]:
    found: list[Query] = []
    for path in markdown_files():
        text = path.read_text(encoding="utf-8")
        for match in FENCE.finditer(text):
            found.append(Query(f"{path.relative_to(ROOT)}:{_line(text, match.start())} (kusto block)", match["body"]))
    return found


def _resolve_interpolations(value: str, expressions: tuple[str, ...], known: dict[str, str], where: str) -> str:
    for expression in expressions:
        if expression not in known:
            raise BicepTextError(
                f"{where}: the query interpolates ${{{expression}}}, which the offline check cannot resolve; use a "
                "param or var with a literal default, or write the value into the query"
            )
        value = value.replace("${" + expression + "}", known[expression])
    return value


def bicep_queries() -> list[Query]:
    """Every `query:` property of every Bicep file, literal or through a string var."""
    found: list[Query] = []
    for path in bicep_files():
        text = path.read_text(encoding="utf-8")
        rel = path.relative_to(ROOT)
        known = literal_parameters(text)
        variables = string_variables(text)
        known.update({name: v.value for name, v in variables.items() if not v.interpolations})
        literal_count = 0
        references: list[tuple[int, str]] = []
        for offset, raw in property_values(text, "query"):
            where = f"{rel}:{_line(text, offset)}"
            if raw.startswith("'"):
                literal = read_string(text, offset)
                value = _resolve_interpolations(literal.value, literal.interpolations, known, where)
                found.append(Query(f"{where} (query)", value))
                literal_count += 1
            else:
                references.append((offset, raw.split("//")[0].strip()))
        for offset, expression in references:
            where = f"{rel}:{_line(text, offset)}"
            if expression in variables:
                variable = variables[expression]
                value = _resolve_interpolations(variable.value, variable.interpolations, known, where)
                found.append(Query(f"{where} (query: var {expression})", value))
            elif "." in expression and literal_count:
                continue  # e.g. `rule.query` in a loop: the literal `query:` values of the array are checked above
            else:
                raise BicepTextError(f"{where}: cannot find the KQL behind `query: {expression}` to check it offline")
        for match in re.finditer(r"loadTextContent\(\s*'([^']+\.kql)'", text):
            kql = (path.parent / match.group(1)).resolve()
            found.append(Query(f"{kql.relative_to(ROOT)} (loadTextContent)", kql.read_text(encoding="utf-8")))
    return found


def _json_queries(node: object, where: str) -> list[Query]:
    found: list[Query] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "query" and isinstance(value, str):
                text = WORKBOOK_PARAMETER.sub('"workbook-parameter"', WORKBOOK_TIME_RANGE.sub("> ago(1d)", value))
                found.append(Query(f"{where} (json query)", text))
            elif key == "serializedData" and isinstance(value, str):
                found += _json_queries(json.loads(value), where + " serializedData")
            else:
                found += _json_queries(value, where)
    elif isinstance(node, list):
        for item in node:
            found += _json_queries(item, where)
    return found


def infra_file_queries() -> list[Query]:
    found: list[Query] = []
    for path in sorted(INFRA.rglob("*.kql")):
        if not any(q.id.startswith(str(path.relative_to(ROOT))) for q in found):
            found.append(Query(f"{path.relative_to(ROOT)} (.kql file)", path.read_text(encoding="utf-8")))
    for path in sorted([*INFRA.rglob("*.json"), *ROOT.rglob("*.workbook")]):
        if SKIPPED_DIRS.intersection(path.relative_to(ROOT).parts):
            continue
        found += _json_queries(json.loads(path.read_text(encoding="utf-8")), str(path.relative_to(ROOT)))
    return found


def shipped_queries() -> list[Query]:
    queries = markdown_queries() + bicep_queries() + infra_file_queries()
    unique: dict[str, Query] = {}
    for query in queries:  # a .kql file loaded by Bicep is found twice
        unique.setdefault(query.text.strip(), query)
    return list(unique.values())


def run_checker(queries: list[Query]) -> dict[str, list[dict[str, object]]]:
    node = shutil.which("node")
    assert node, "node is needed for the offline KQL check (Node 20, see docs/development.md)"
    assert (ROOT / "node_modules" / "@kusto" / "language-service-next").is_dir(), (
        "@kusto/language-service-next is not installed: run `npm ci` (bash dev.sh setup)"
    )
    payload = json.dumps([{"id": q.id, "query": q.text} for q in queries])
    done = subprocess.run(  # nosec B603: fixed program and script
        [node, str(CHECKER)], input=payload, capture_output=True, text=True, timeout=120, cwd=ROOT, check=False
    )
    assert done.returncode == 0, done.stderr
    return {item["id"]: item["diagnostics"] for item in json.loads(done.stdout)}


def describe(query: Query, diagnostics: list[dict[str, object]]) -> str:
    lines = [f"{query.id}:"]
    for d in diagnostics:
        start = int(d["start"])  # type: ignore[call-overload]
        line = query.text.count("\n", 0, start) + 1
        excerpt = query.text[start : start + max(int(d["length"]), 1)]  # type: ignore[call-overload]
        lines.append(f"  {d['severity']} {d['code']} (query line {line}, {excerpt!r}): {d['message']}")
    return "\n".join(lines)


# Queries the checker must refuse (and one it must accept): proof that the check can fail.
PROBES = [
    Query("probe: column", 'customEvents | where name == "CertificateRenewalFailed" | project nmae'),
    Query("probe: table", "customEvent | take 1"),
    Query("probe: syntax", "customEvents | wher name == 1"),
    Query("probe: workspace column", "AppEvents | project customDimensions"),
]
GOOD_PROBE = Query("probe: good", "AppEvents | project Name, Properties, Measurements, OperationId")


@pytest.fixture(scope="module")
def checked() -> tuple[list[Query], dict[str, list[dict[str, object]]]]:
    """One node run for the module: loading the language service takes seconds."""
    queries = shipped_queries()
    return queries, run_checker([*queries, *PROBES, GOOD_PROBE])


def test_every_shipped_query_is_valid_kql_against_the_application_insights_schema(
    checked: tuple[list[Query], dict[str, list[dict[str, object]]]],
) -> None:
    queries, results = checked
    failures = [describe(q, results[q.id]) for q in queries if results[q.id]]
    assert not failures, "KQL diagnostics:\n" + "\n".join(failures)


def test_the_queries_are_found_where_they_are_shipped() -> None:
    ids = [q.id for q in shipped_queries()]
    assert sum(i.startswith("docs/") for i in ids) >= 5, ids
    assert sum(i.startswith("infra/modules/alerts.bicep:") for i in ids) >= 2, ids


def test_the_checker_reports_unknown_columns_tables_and_syntax_errors(
    checked: tuple[list[Query], dict[str, list[dict[str, object]]]],
) -> None:
    _, results = checked
    assert results[GOOD_PROBE.id] == []
    for query in PROBES:
        assert results[query.id], f"{query.id}: no diagnostic"
    assert any("nmae" in str(d["message"]) for d in results["probe: column"])


def test_bicep_strings_are_read_with_their_escapes_and_multiline_form(tmp_path: Path) -> None:
    text = (
        "query: 'customEvents | where name == \\'CertificateRenewed\\' and tostring(customDimensions.source) == \"rcl\"'\n"
        "query: '''\ncustomEvents\n| where message has 'it''s'\n'''\n"
    )
    values = [read_string(text, offset).value for offset, _ in property_values(text, "query")]
    assert values == [
        "customEvents | where name == 'CertificateRenewed' and tostring(customDimensions.source) == \"rcl\"",
        "customEvents\n| where message has 'it''s'\n",
    ]


def test_an_unresolvable_interpolation_fails_loudly() -> None:
    with pytest.raises(BicepTextError, match="cannot resolve"):
        _resolve_interpolations("customEvents | take ${count}", ("count",), {}, "x.bicep:1")
    assert _resolve_interpolations("T | take ${n}", ("n",), {"n": "5"}, "x") == "T | take 5"
