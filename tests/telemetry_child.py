"""Child-process driver of the telemetry tests: runs the app the way the Functions host would, then exits.

The Azure Monitor exporter batches and sends at process exit, so the app runs here, in its own process, while the
stand-ins (and the Application Insights ingestion stand-in) run in the test process. The environment carries the
settings (stand-in URLs, the test CA bundle, APPLICATIONINSIGHTS_CONNECTION_STRING); argv[1] is a JSON plan:

    [{"webhook": {...request body...}, "params": {...}},   # POST /api/certificates/renew
     {"webhook": {...}, "prefer": "respond-async"},        # the same, its queue output written to the storage queue
     {"queues": "drain"},                                  # deliver the queues to the queue functions until empty
     {"status": "<pendingId>" or "last"},                  # GET /api/certificates/renew/{pendingId} ("last": the
                                                           #   last 202 answer's)
     {"function": "<registered function name>"},          # a timer trigger, run once
     {"eventgrid": {"id", "eventType", "subject", "data"}},  # keyvault_events, one Event Grid event
     {"probe": "<marker>"}]                                 # deliberately leak every secret setting (guard test)

Each step's outcome is printed as one JSON line: {"step": i, "function": ..., "invocationId": ..., "status": ...,
"body": ...}.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import sys
import time
from typing import Any

import azure.functions as func
from azure.functions.timer import TimerRequest

from tests.standins.stack import FakeContext


def _signed_headers(body: bytes) -> dict[str, str]:
    secret = os.environ.get("WEBHOOK_HMAC_SECRET", "").strip()
    if not secret:
        return {}
    import hashlib
    import hmac

    timestamp = str(int(time.time()))
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return {"X-Signature-Timestamp": timestamp, "X-Signature": f"sha256={digest}"}


def _call(function: Any, name: str, trigger: Any, outcome: dict[str, Any]) -> Any:
    user_function = function.get_user_function()
    parameters = inspect.signature(user_function).parameters
    if "context" in parameters:
        context = FakeContext(name)
        outcome["invocationId"] = context.invocation_id
        return user_function(trigger, context)
    return user_function(trigger)


SECRET_SETTINGS = ("AVX_PASSWORD", "IDENTITY_HEADER", "WEBHOOK_HMAC_SECRET", "RCL_CLIENT_SECRET")


def _probe(marker: str) -> None:
    """Code that leaks on purpose, on every path the guard covers: a log line with args, a library exception with
    the secret in its message (logged with its traceback), an `extra` field, and a span attribute / URL."""
    from opentelemetry import trace

    from shared.core import redaction
    from shared.core.telemetry import invocation

    # The settings' secrets, and those the webhook registered (its calls' PFX passwords).
    secrets = [os.environ[name] for name in SECRET_SETTINGS if os.environ.get(name)]
    secrets += redaction._live_registered()
    log = logging.getLogger("certrenew.probe")
    with invocation(f"probe-{marker}"):
        log.warning("%s leaking %s with Authorization: Bearer %s", marker, secrets, "eyJhbGciOi.eyJzdWIiOi.c2ln")
        try:
            raise ConnectionError(f"{marker} https://user:{secrets[0]}@example.invalid/?sig={secrets[-1]}")
        except ConnectionError:
            log.exception("%s request failed", marker, extra={"detail": " ".join(secrets)})
        span = trace.get_current_span()
        span.set_attribute("http.url", f"https://example.invalid/x?password={secrets[0]}")
        span.set_attribute("probe.note", f"{marker} {' '.join(secrets)}")


def _webhook(functions: dict[str, Any], step: dict[str, Any], outcome: dict[str, Any]) -> None:
    body = json.dumps(step["webhook"]).encode()
    prefer = {"Prefer": step["prefer"]} if step.get("prefer") else {}
    request = func.HttpRequest(
        method="POST",
        url="http://localhost:7071/api/certificates/renew",
        headers={"Content-Type": "application/json", **prefer, **_signed_headers(body)},
        params=step.get("params") or {},
        route_params={},
        body=body,
    )
    if not prefer:
        response = _call(functions["renew_http"], "renew_http", request, outcome)
    else:  # with the queue output binding the host passes, written to the storage queue when the call succeeds
        from shared.operator.queue_host import QueueHost

        queues = QueueHost(functions, FakeContext)
        outputs = queues.outputs("renew_http")
        context = FakeContext("renew_http")
        outcome["invocationId"] = context.invocation_id
        response = functions["renew_http"].get_user_function()(request, context, **outputs)
        queues.write_outputs("renew_http", outputs)
        outcome["location"] = response.headers.get("Location")
    outcome.update(function="renew_http", status=response.status_code, body=response.get_body().decode())


def _status(functions: dict[str, Any], pending_id: str, outcome: dict[str, Any]) -> None:
    request = func.HttpRequest(
        method="GET",
        url=f"http://localhost:7071/api/certificates/renew/{pending_id}",
        headers={},
        params={},
        route_params={"pendingId": pending_id},
        body=b"",
    )
    response = _call(functions["renew_status"], "renew_status", request, outcome)
    outcome.update(function="renew_status", status=response.status_code, body=response.get_body().decode())


def run(plan: list[dict[str, Any]]) -> None:
    import function_app

    functions = {f.get_function_name(): f for f in function_app.app.get_functions()}
    last_accepted = ""
    for index, step in enumerate(plan):
        outcome: dict[str, Any] = {"step": index}
        if "webhook" in step:
            _webhook(functions, step, outcome)
            if outcome["status"] == 202:
                last_accepted = json.loads(outcome["body"]).get("pendingId", "")
        elif "queues" in step:
            from shared.operator.queue_host import QueueHost

            QueueHost(functions, FakeContext).drain()
            outcome.update(function="queues")
        elif "status" in step:
            _status(functions, last_accepted if step["status"] == "last" else step["status"], outcome)
        elif "eventgrid" in step:
            spec = step["eventgrid"]
            event = func.EventGridEvent(
                id=spec["id"],
                data=spec["data"],
                topic=spec.get("topic", "/subscriptions/local/providers/Microsoft.KeyVault/vaults/local"),
                subject=spec.get("subject", ""),
                event_type=spec["eventType"],
                event_time=None,
                data_version="1",
            )
            outcome.update(function="keyvault_events", status=None)
            try:
                _call(functions["keyvault_events"], "keyvault_events", event, outcome)
            except Exception as exc:  # the host would record a failed invocation (Event Grid redelivers)
                outcome["error"] = type(exc).__name__
        elif "probe" in step:
            _probe(step["probe"])
            outcome.update(function="probe")
        else:
            name = step["function"]
            outcome.update(function=name, status=None)
            try:
                _call(functions[name], name, TimerRequest(past_due=False), outcome)
            except Exception as exc:  # the host would record a failed invocation; the test reads it
                outcome["error"] = type(exc).__name__
        print(json.dumps(outcome), flush=True)


def main() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    run(json.loads(sys.argv[1]))


if __name__ == "__main__":
    main()
