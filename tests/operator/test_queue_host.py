"""Issue 27: the local host delivers queues as the Functions host does. The served webhook's queue output binding
writes to Azurite's queue; `renew_queued` gets the message, `renew_queued_poison` what failed maxDequeueCount times.
Everything runs through `function_app.app`, the real Azure Storage Queues SDK against Azurite's queue service, and
real HTTP against the serve loop."""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from shared.operator import queue_host
from shared.operator.local_host import LocalContext
from shared.operator.queue_host import QueueHost, QueueHostError, QueueOptions
from shared.operator.serve import make_server
from tests.standins.base import Response
from tests.standins.stack import Azurite, StandIns

KEY = "queue-test-key"


def test_options_are_host_json_with_the_hosts_defaults() -> None:
    assert queue_host.load_queue_options() == QueueOptions(
        batch_size=4, max_dequeue_count=5, visibility_timeout=300.0, max_polling_interval=2.0, message_encoding="none"
    )
    assert queue_host.queue_options({}) == QueueOptions(16, 5, 0.0, 60.0, "base64")
    assert queue_host.timespan_seconds("1.02:00:00.5") == 93600.5
    with pytest.raises(QueueHostError, match="timespan"):
        queue_host.timespan_seconds("5 minutes")
    with pytest.raises(QueueHostError, match="messageEncoding"):
        queue_host.queue_options({"extensions": {"queues": {"messageEncoding": "utf-16"}}})


def test_message_encoding_and_setting_names() -> None:
    text = '{"pendingId": "ab"}'
    assert queue_host.encode_message(text, "base64") == base64.b64encode(text.encode()).decode()
    assert queue_host.decode_message(queue_host.encode_message(text, "base64"), "base64") == text.encode()
    assert queue_host.decode_message(text, "none") == text.encode()
    with pytest.raises(QueueHostError, match="not base64"):
        queue_host.decode_message(text, "base64")  # the host fails such a delivery
    assert queue_host.resolve_name("%RENEWAL_QUEUE%-poison", {"RENEWAL_QUEUE": "r1"}) == "r1-poison"
    with pytest.raises(QueueHostError, match="RENEWAL_QUEUE"):
        queue_host.resolve_name("%RENEWAL_QUEUE%", {})


def test_which_connection_strings_reach_queues() -> None:
    assert queue_host.queue_endpoint_problem("UseDevelopmentStorage=true") is None
    assert queue_host.queue_endpoint_problem("AccountName=a;AccountKey=k;EndpointSuffix=core.windows.net") is None
    assert queue_host.queue_endpoint_problem("AccountName=a;AccountKey=k;QueueEndpoint=http://127.0.0.1:1/a") is None
    assert "no QueueEndpoint" in str(queue_host.queue_endpoint_problem("AccountName=a;TableEndpoint=http://x/a"))
    assert queue_host.queue_endpoint_problem("") is not None


@pytest.fixture(scope="module")
def azurite_queues(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    server = Azurite.start(tmp_path_factory.mktemp("azurite-queues"), queues=True)
    yield server
    server.stop()


@pytest.fixture
def queue_env(app_env: dict[str, str], azurite_queues: Azurite, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    from shared import context as app_context

    monkeypatch.setenv("AzureWebJobsStorage", azurite_queues.connection_string)
    monkeypatch.setenv("RENEWAL_QUEUE", f"renewals-{uuid.uuid4().hex[:8]}")
    app_context.reset()
    return {**app_env, "AzureWebJobsStorage": azurite_queues.connection_string}


def serving(functions: dict[str, Any], queues: QueueHost | None) -> tuple[str, Any]:
    server = make_server("127.0.0.1", 0, KEY, functions, queues)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}", server


def poll_state(base: str, location: str, until: tuple[str, ...] = ("renewed", "failed"), seconds: float = 30) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        answer = requests.get(f"{base}{location}", params={"code": KEY}, timeout=10).json()
        if answer["state"] in until or time.monotonic() > deadline:
            return answer
        time.sleep(0.2)


def test_served_respond_async_answers_202_and_the_queue_function_renews(
    standins: StandIns, functions: dict[str, Any], queue_env: dict[str, str]
) -> None:
    item = standins.avx.add_certificate("served-async.contoso.com")
    queues = QueueHost.start(functions, LocalContext)
    assert queues is not None
    base, server = serving(functions, queues)
    try:
        answer = requests.post(
            f"{base}/api/certificates/renew",
            params={"code": KEY},
            headers={"Prefer": "respond-async"},
            json={"resourceId": item.resource_id},
            timeout=30,
        )
        assert answer.status_code == 202, answer.text
        location = answer.headers["Location"]
        assert location == f"/api/certificates/renew/{answer.json()['pendingId']}"
        assert answer.headers["Preference-Applied"] == "respond-async" and int(answer.headers["Retry-After"]) > 0
        final = poll_state(base, location)
        assert final["state"] == "renewed" and final["keyVaultCertificateId"].startswith("https://127.0.0.1:"), final
        assert len(standins.avx.renew_calls()) == 1
    finally:
        server.shutdown()
        server.server_close()
        queues.stop()


def test_a_failing_message_is_retried_then_poisoned_and_the_poison_function_ends_it(
    standins: StandIns, functions: dict[str, Any], queue_env: dict[str, str]
) -> None:
    """AVX answers 503 to every try: the message fails maxDequeueCount times, moves to `<queue>-poison`, and
    `renew_queued_poison` ends the record failed with the last reason."""
    item = standins.avx.add_certificate("poisoned.contoso.com")
    options = QueueOptions(batch_size=4, max_dequeue_count=2, visibility_timeout=0, max_polling_interval=0.2)
    host = QueueHost(functions, LocalContext, options)
    host.check()
    outputs = host.outputs("renew_http")
    assert list(outputs) == ["renewals"]
    from tests.appviewx.test_renew_queue import post_async

    response, answer, queued = post_async(functions, {"resourceId": item.resource_id})
    assert response.status_code == 202 and queued.value is not None
    outputs["renewals"].set(queued.value)
    host.write_outputs("renew_http", outputs)
    for _ in range(2):
        standins.avx.script(Response.text("busy", status=503))
    host.drain(timeout=30)

    renewals, poison = host.triggers[0].queue, host.triggers[1].queue
    assert (host.triggers[0].name, host.triggers[1].name) == ("renew_queued", "renew_queued_poison")
    assert poison == f"{renewals}-poison"
    from tests.appviewx.test_avx_pipeline import status_of

    record = status_of(functions, answer["pendingId"])
    assert record["state"] == "failed" and record["reason"] == "QUEUE_RETRIES_EXHAUSTED", record
    assert "503" in record["lastError"]
    for name in (renewals, poison):  # both queues are empty: the message was settled, not left behind
        assert list(host.client(queue_env["AzureWebJobsStorage"], name).peek_messages()) == []


def test_base64_encoding_is_written_and_read_as_the_host_does(
    functions: dict[str, Any], queue_env: dict[str, str]
) -> None:
    host = QueueHost(functions, LocalContext, QueueOptions(message_encoding="base64"))
    outputs = host.outputs("renew_http")
    outputs["renewals"].set('{"v": 1}')
    host.write_outputs("renew_http", outputs)
    client = host.client(queue_env["AzureWebJobsStorage"], host.triggers[0].queue)
    (message,) = client.peek_messages()
    assert base64.b64decode(message.content) == b'{"v": 1}'


def test_without_a_queue_endpoint_serving_stays_synchronous(
    functions: dict[str, Any],
    app_env: dict[str, str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The tests' Azurite has tables only: no queue host, and the webhook answers respond-async synchronously."""
    monkeypatch.setenv("RENEWAL_QUEUE", "certificate-renewals")
    assert QueueHost.start(functions, LocalContext) is None
    assert "no QueueEndpoint" in caplog.text and "answered synchronously" in caplog.text


def test_the_host_json_the_queue_host_reads_is_the_apps() -> None:
    assert queue_host.HOST_JSON == Path(__file__).resolve().parents[2] / "host.json"
    assert json.loads(queue_host.HOST_JSON.read_text())["extensions"]["queues"]["maxDequeueCount"] == 5
