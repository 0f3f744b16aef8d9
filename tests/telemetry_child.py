"""Child-process driver of the telemetry tests: runs the app the way the Functions host would, then exits.

The Azure Monitor exporter batches and sends at process exit, so the app runs here, in its own process, while the
stand-ins (and the Application Insights ingestion stand-in) run in the test process. The environment carries the
settings (stand-in URLs, the test CA bundle, APPLICATIONINSIGHTS_CONNECTION_STRING); argv[1] is a JSON plan:

    [{"webhook": {...request body...}, "params": {...}},   # POST /api/certificates/renew
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


def run(plan: list[dict[str, Any]]) -> None:
    import function_app

    functions = {f.get_function_name(): f for f in function_app.app.get_functions()}
    for index, step in enumerate(plan):
        outcome: dict[str, Any] = {"step": index}
        if "webhook" in step:
            body = json.dumps(step["webhook"]).encode()
            request = func.HttpRequest(
                method="POST",
                url="http://localhost:7071/api/certificates/renew",
                headers={"Content-Type": "application/json", **_signed_headers(body)},
                params=step.get("params") or {},
                route_params={},
                body=body,
            )
            response = _call(functions["renew_http"], "renew_http", request, outcome)
            outcome.update(function="renew_http", status=response.status_code, body=response.get_body().decode())
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
