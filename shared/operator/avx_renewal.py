"""`renew-avx`: one AppViewX webhook renewal from a JSON file (or `-`: standard input), through the registered webhook
function."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from shared.operator.files import parse_json, read_file_bytes
from shared.operator.local_host import LocalContext, registered_functions
from shared.operator.outcomes import EXIT_FAILED, EXIT_OK, CliMistake, failure_line

REQUEST_EXAMPLE = '{"resourceId": "..."} or {"commonName": "...", "serialNumber": "..."}'


def request_body(file: str) -> bytes:
    """The request's bytes, read once and checked to hold a JSON object; `-` reads standard input. What is sent is
    what was checked (a pipe or a process substitution cannot be read a second time)."""
    remedy = f"give a JSON file with the webhook's body (or - to read it from standard input), e.g. {REQUEST_EXAMPLE}"
    if file == "-":
        where, body = "standard input", sys.stdin.buffer.read()
    else:
        where, body = f"request file {file}", read_file_bytes(Path(file), "request file", remedy)
    if not isinstance(parse_json(body, where, remedy), dict):
        raise CliMistake(f"{where} does not hold a JSON object", remedy)
    return body


def renew_avx(file: str, idempotency_key: str | None, auto_approval: str | None) -> int:
    """Send the JSON body in `file` to the webhook function; the answer on stdout, a failure line on stderr."""
    import azure.functions as func

    body = request_body(file)
    headers = {"Content-Type": "application/json"}
    if idempotency_key:
        headers["Idempotency-Key"] = idempotency_key
    params = {"autoApproval": auto_approval} if auto_approval else {}
    request = func.HttpRequest(
        method="POST",
        url="http://localhost/api/certificates/renew",
        headers=headers,
        params=params,
        route_params={},
        body=body,
    )
    print("Renewing through AppViewX ...", file=sys.stderr)
    response = registered_functions()["renew_http"].get_user_function()(request, LocalContext("renew_http"))
    answer = json.loads(response.get_body())
    print(json.dumps(answer, indent=2))
    error = answer.get("error")
    if error:
        print(
            failure_line(error["code"], error["message"], error.get("remediation"), response.status_code),
            file=sys.stderr,
        )
    return EXIT_OK if response.status_code < 300 else EXIT_FAILED
