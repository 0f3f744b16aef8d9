"""Issue 28: the PFX AppViewX returns is opened (its RSA key checked) in the worker's helper process on every path
that stores it, through `function_app.app` against the AVX and Key Vault stand-ins and Azurite; PFX_OPEN_PROCESSES=0
opens it in the worker, and content the helper refuses is refused as before (nothing written to Key Vault)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from shared.core import pfx
from shared.core.certificates import PfxContents
from tests.appviewx.test_renew_queue import deliver, imports, post_async
from tests.standins.stack import StandIns


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}.contoso.com"


@pytest.fixture
def opened_in_worker(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Counts the PFXs opened in the worker's own interpreter (the helpers have their own copy of open_pfx)."""
    opened: list[bytes] = []
    in_worker = pfx.open_pfx

    def counted(content: bytes, password: str | None) -> PfxContents:
        opened.append(content)
        return in_worker(content, password)

    monkeypatch.setattr(pfx, "open_pfx", counted)
    return opened


def test_the_webhook_checks_the_pfx_in_a_helper(
    standins: StandIns, call_webhook: Any, opened_in_worker: list[bytes]
) -> None:
    item = standins.avx.add_certificate(_unique("helper"))
    status, answer = call_webhook({"resourceId": item.resource_id})

    assert status == 200 and answer["status"] == "renewed", answer
    assert len(imports(standins)) == 1
    assert opened_in_worker == []
    assert pfx.worker_opener().helper_pids()


def test_a_queued_renewal_checks_the_pfx_in_a_helper(
    standins: StandIns, functions: dict[str, Any], app_env: dict[str, str], opened_in_worker: list[bytes]
) -> None:
    item = standins.avx.add_certificate(_unique("queued-helper"))
    response, answer, queue = post_async(functions, {"resourceId": item.resource_id})
    assert response.status_code == 202, answer
    deliver(functions, queue.value)

    assert len(imports(standins)) == 1
    assert opened_in_worker == []


def test_pfx_open_processes_0_opens_it_in_the_worker(
    standins: StandIns, call_webhook: Any, opened_in_worker: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PFX_OPEN_PROCESSES", "0")
    item = standins.avx.add_certificate(_unique("in-worker"))
    status, answer = call_webhook({"resourceId": item.resource_id})

    assert status == 200 and answer["status"] == "renewed", answer
    assert len(opened_in_worker) == 1
    assert pfx.worker_opener().helper_pids() == []


def test_a_pfx_the_helper_refuses_writes_nothing(standins: StandIns, call_webhook: Any) -> None:
    standins.avx.key_type = "ed25519"
    try:
        item = standins.avx.add_certificate(_unique("ed-helper"))
        status, answer = call_webhook({"resourceId": item.resource_id})
    finally:
        standins.avx.key_type = "rsa"
    assert status == 502, answer
    assert answer["error"]["code"] == "UNSUPPORTED_KEY_TYPE", answer
    assert imports(standins) == []
