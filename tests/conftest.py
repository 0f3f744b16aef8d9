"""The test harness: local protocol stand-ins on 127.0.0.1, the app's settings pointed at them, and the app's
functions taken from `function_app.app` exactly as the Functions host indexes them."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest

from tests.standins.stack import (
    SENTINELS,
    Azurite,
    FakeContext,
    StandIns,
    app_functions,
    base_environment,
    start_standins,
)
from tests.standins.tableproxy import CountingProxy

# What `bash dev.sh test --quick` leaves out (CI runs everything): the modules that go end to end through
# subprocesses (the local stack, telemetry children), the load test, fault injection with its retries and timeouts,
# fuzzing (each 5-80 s in all), and the single tests measured over 2 s (`pytest --durations=0`, two workers).
SLOW_MODULES = frozenset(
    {"test_localrun", "test_load", "test_faults", "test_openapi", "test_fuzz", "test_telemetry", "test_queue_host"}
)
SLOW_TESTS = frozenset(
    {
        "test_refused_requests_with_fresh_passwords_do_not_slow_later_renewals",
        "test_trickling_tls_peers_neither_outlast_the_probe_deadline_nor_starve_other_endpoints",
        "test_each_endpoint_is_reported_by_what_it_really_serves",
        "test_identity_endpoint_failure_is_a_clear_error",
        "test_identity_endpoint_failure_spends_no_rcl_call",
        "test_every_shipped_query_is_valid_kql_against_the_application_insights_schema",
        "test_key_vault_failure_is_kept_pending_with_the_avx_ids",
        "test_idempotency_keys_are_per_caller",
        "test_poison_after_avx_may_have_acted_hands_the_record_to_the_timer",
        "test_old_rows_are_removed_in_bounded_batches_and_open_ones_never",
        "test_a_list_of_thousands_of_certificates",
        "test_a_trickling_avx_answer_ends_within_the_timeout_overall",
        "test_rcl_headers_trickled_byte_by_byte_end_within_the_timeout_overall",
        "test_avx_headers_trickled_byte_by_byte_end_within_the_timeout_overall",
        "test_throttled_then_failing_then_delivered",
    }
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        name = getattr(item, "originalname", None) or item.name
        if item.path.stem in SLOW_MODULES or name in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def standins(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandIns]:
    running = start_standins(tmp_path_factory.mktemp("standins"))
    yield running
    running.stop()


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    server = Azurite.start(tmp_path_factory.mktemp("azurite"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def functions() -> dict[str, Any]:
    return app_functions()


@pytest.fixture
def app_env(standins: StandIns, azurite: Azurite, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """The app's settings pointed at the stand-ins and Azurite; every cached client is dropped before and after."""
    from shared import context as app_context

    env = base_environment(standins)
    env["AzureWebJobsStorage"] = azurite.connection_string
    # Each test gets its own tables, so records of one test never meet another's.
    suffix = uuid.uuid4().hex[:8]
    env["PENDING_TABLE"] = f"pending{suffix}"
    env["IDEMPOTENCY_TABLE"] = f"idem{suffix}"
    env["RENEWAL_STATE_TABLE"] = f"renewals{suffix}"
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    standins.reset()
    app_context.reset()
    yield env
    app_context.reset()


@pytest.fixture
def table_proxy(app_env: dict[str, str], azurite: Azurite, monkeypatch: pytest.MonkeyPatch) -> Iterator[CountingProxy]:
    """The app's tables reached through a fault-injecting proxy in front of Azurite (`fail_next`)."""
    from shared import context as app_context

    proxy = CountingProxy(azurite.port).start()
    monkeypatch.setenv("AzureWebJobsStorage", azurite.connection_string.replace(f":{azurite.port}/", f":{proxy.port}/"))
    app_context.reset()
    yield proxy
    proxy.stop()


@pytest.fixture
def storage_env(app_env: dict[str, str]) -> dict[str, str]:
    """Kept for readability where a test is about the tables: app_env already points at Azurite."""
    return app_env


class WebhookCaller:
    def __init__(self, functions: dict[str, Any]) -> None:
        self.function = functions["renew_http"].get_user_function()
        self.last_context: FakeContext | None = None

    def __call__(
        self,
        body: Any = None,
        *,
        raw: bytes | None = None,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, Any]]:
        data = raw if raw is not None else json.dumps(body).encode()
        request = func.HttpRequest(
            method="POST",
            url="http://localhost:7071/api/certificates/renew",
            headers={"Content-Type": "application/json", **(headers or {})},
            params=params or {},
            route_params={},
            body=data,
        )
        self.last_context = FakeContext("renew_http")
        response = self.function(request, self.last_context)
        text = response.get_body().decode()
        for sentinel in SENTINELS:
            assert sentinel not in text, "a secret reached the HTTP answer"
        assert response.mimetype == "application/json"
        return response.status_code, json.loads(text)


@pytest.fixture
def call_webhook(functions: dict[str, Any], app_env: dict[str, str]) -> WebhookCaller:
    return WebhookCaller(functions)


@pytest.fixture(autouse=True)
def no_secret_in_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Every test: no sentinel secret may appear in any log record the app emitted."""
    caplog.set_level(logging.DEBUG)
    yield
    for record in caplog.records:
        text = record.getMessage() + " " + json.dumps({k: str(v) for k, v in record.__dict__.items()})
        if record.exc_info:
            text += logging.Formatter().formatException(record.exc_info)
        for sentinel in SENTINELS:
            assert sentinel not in text, f"a secret reached a log record: {record.name} {record.getMessage()[:80]}"


@pytest.fixture(autouse=True)
def every_event_is_typed() -> Iterator[None]:
    """Every test: each event the app emits is named by an `Event` member, and its `source` is a `Source` member."""
    from shared.core.events import Event, Source
    from shared.core.telemetry import add_event_sink, remove_event_sink

    untyped: list[str] = []

    def check(name: Any, attributes: dict[str, Any]) -> None:
        if not isinstance(name, Event):
            untyped.append(f"name {name!r}")
        if "source" in attributes and not isinstance(attributes["source"], Source):
            untyped.append(f"{name}: source {attributes['source']!r}")

    add_event_sink(check)
    yield
    remove_event_sink(check)
    assert not untyped, f"events emitted with untyped names or sources: {untyped}"


@pytest.fixture
def tmp_dir(tmp_path: Path) -> Path:
    return tmp_path
