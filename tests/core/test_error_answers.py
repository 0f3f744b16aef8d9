"""Every error answer of the HTTP functions is `{"error": {code, message, remediation}, "invocationId"}`, and the
troubleshooting table in docs/webhook.md lists every code the app can answer."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest

from shared.core.errors import ApiError
from tests.appviewx.test_pending_and_idempotency import status_of
from tests.conftest import WebhookCaller
from tests.standins.stack import REPO_ROOT


def assert_error_shape(body: dict[str, Any], code: str) -> None:
    error = body["error"]
    assert error["code"] == code
    assert error["message"].strip() and error["remediation"].strip(), error
    assert "invocationId" in body


def test_status_route_errors_say_what_to_do(functions: dict[str, Any], app_env: dict[str, str]) -> None:
    status, body = status_of(functions, "not-an-id")
    assert status == 400
    assert_error_shape(body, "INVALID_REQUEST")
    status, body = status_of(functions, "0" * 32)
    assert status == 404
    assert_error_shape(body, "NOT_FOUND")
    assert "pendingId" in body["error"]["remediation"]


def test_bad_idempotency_key_and_oversized_body_say_what_to_do(call_webhook: WebhookCaller) -> None:
    status, body = call_webhook({"resourceId": "r1"}, headers={"Idempotency-Key": "bad key\twith tab"})
    assert status == 400
    assert_error_shape(body, "INVALID_REQUEST")
    assert "Idempotency-Key" in body["error"]["remediation"]
    status, body = call_webhook(raw=b"{" + b" " * (64 * 1024) + b"}")
    assert status == 413
    assert_error_shape(body, "PAYLOAD_TOO_LARGE")


def test_an_error_without_its_own_remediation_still_answers_one() -> None:
    for status, code in ((400, "SOMETHING_NEW"), (502, "AVX_BAD_RESPONSE"), (500, "INTERNAL_ERROR"), (409, "X")):
        assert_error_shape(ApiError(status, code, "it failed").body("inv-1"), code)
    assert ApiError(400, "X", "m", "do this").body(None)["error"]["remediation"] == "do this"


# -- every code the app can answer is in the troubleshooting table (docs/webhook.md) ------------------------------------------------------

# The modules on the HTTP functions' path: the HTTP triggers and the library, all but the RCL timers' path (which
# never answers HTTP) and the operator tooling.
NOT_ANSWERING = ("shared/rcl/", "shared/endpoints/", "shared/operator/")


def answering_modules() -> list[Path]:
    found = [*REPO_ROOT.glob("renew_http/*.py"), *REPO_ROOT.glob("shared/**/*.py")]
    return sorted(p for p in found if not p.relative_to(REPO_ROOT).as_posix().startswith(NOT_ANSWERING))


ERROR_CALLS = {
    "ApiError",
    "AvxError",
    "KeyVaultError",
    "IdentityError",
    "StateStoreError",
    "CertRenewError",
    "_invalid",
}
CODE = re.compile(r"^[A-Za-z][A-Za-z0-9]*([_-][A-Za-z0-9]+)+$|^[A-Z]{4,}$")


def _called_name(node: ast.Call) -> str:
    return node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")


def codes_in(source: str) -> set[str]:
    """Error codes a module can put in an answer: the code argument of the error constructors, `code = "..."` class
    attributes of the errors, and the AVX codes the app knows remediation for (AVX's own codes, passed through)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and _called_name(node) in ERROR_CALLS:
            candidates = [k.value for k in node.keywords if k.arg == "code"]
            if _called_name(node) in ("ApiError", "_invalid") and len(node.args) >= 2:
                candidates.append(node.args[1])
            found |= {c.value for c in candidates if isinstance(c, ast.Constant) and isinstance(c.value, str)}
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if (
                    isinstance(item, ast.Assign)
                    and any(isinstance(t, ast.Name) and t.id == "code" for t in item.targets)
                    and isinstance(item.value, ast.Constant)
                ):
                    found.add(item.value.value)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)) and "REMEDIATION" in {
            t.id for t in (node.targets if isinstance(node, ast.Assign) else [node.target]) if isinstance(t, ast.Name)
        }:
            if isinstance(node.value, ast.Dict):
                found |= {k.value for k in node.value.keys if isinstance(k, ast.Constant)}
    return {c for c in found if CODE.match(c)}


def answerable_codes() -> set[str]:
    from tests.standins.avx import STATUS_TABLE

    codes = {code for _, code, _ in STATUS_TABLE.values()}  # AVX's documented codes, answered as AVX gave them
    for path in answering_modules():
        codes |= codes_in(path.read_text(encoding="utf-8"))
    return codes


def troubleshooting_table() -> str:
    readme = (REPO_ROOT / "docs" / "webhook.md").read_text(encoding="utf-8")
    section = readme.split("\n## Troubleshooting by error code\n", 1)[1]
    return "\n".join(line for line in section.split("\n## ", 1)[0].splitlines() if line.startswith("|"))


def test_the_collector_finds_codes_of_every_kind() -> None:
    codes = answerable_codes()
    # One of each way a code enters an answer, so a broken collector cannot pass the next test by finding nothing.
    assert {
        "PAYLOAD_TOO_LARGE",
        "NOT_FOUND",
        "SIGNATURE_MISSING",
        "STATE_STORE_UNAVAILABLE",
        "AVX_UNREACHABLE",
    } <= codes
    assert {"OPEN_WORK_ORDERS_FOUND", "IDEMPOTENCY_KEY_REUSED", "UNSTORABLE_FORMAT"} <= codes


@pytest.mark.parametrize("code", sorted(answerable_codes()))
def test_the_troubleshooting_table_lists_every_code(code: str) -> None:
    assert f"`{code}`" in troubleshooting_table(), f"the troubleshooting table in docs/webhook.md lacks `{code}`"
