"""The webhook against its OpenAPI description: schemathesis drives `python -m shared serve` (the app's HTTP
functions behind their registered routes and auth levels), backed by the stand-ins. No 500, and no answer
outside the description."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    response_schema_conformance,
    status_code_conformance,
)

from shared.operator.serve import make_server
from tests.standins.stack import StandIns, app_functions

SPEC = Path(__file__).resolve().parents[2] / "renew_http" / "openapi.yaml"
KEY = "local-test-function-key"
schema = schemathesis.openapi.from_path(SPEC)


@pytest.fixture
def served(app_env: dict[str, str], standins: StandIns) -> Iterator[str]:
    for name in ("www.contoso.com", "api.contoso.com"):
        standins.avx.add_certificate(name, resource_id=name.split(".")[0])
    server = make_server("127.0.0.1", 0, KEY, app_functions())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@schema.parametrize()
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_webhook_matches_its_description(case: schemathesis.Case, served: str) -> None:
    # Schema-valid requests may still get documented 4xx answers (AVX's NO_RECORDS_FOUND for an unknown id, 422 for
    # a keyless format with no pending CSR), so "positive data acceptance" is not one of the checks.
    response = case.call_and_validate(
        base_url=served,
        headers={"x-functions-key": KEY},
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
            ignored_auth,
        ],
    )
    assert response.status_code < 500


def test_serve_enforces_the_function_key(served: str) -> None:
    import requests

    assert requests.post(f"{served}/api/certificates/renew", json={"resourceId": "www"}, timeout=10).status_code == 401
    wrong = requests.post(f"{served}/api/certificates/renew?code=nope", json={"resourceId": "www"}, timeout=10)
    assert wrong.status_code == 401
    ok = requests.post(f"{served}/api/certificates/renew?code={KEY}", json={"resourceId": "www"}, timeout=30)
    assert ok.status_code == 200, ok.text
    assert ok.json()["keyVault"]["name"] == "www-contoso-com"
    assert requests.get(f"{served}/api/certificates/renew", timeout=10).status_code == 405
    assert requests.get(f"{served}/api/nothing", timeout=10).status_code == 404
