"""Operator CLI: `python -m shared COMMAND` (each command has --help).

It runs the app's registered functions exactly as the Functions host would (same settings, bindings, routes and
auth levels), for operators without the Functions Core Tools:

  serve             the HTTP functions on a local port (for curl and Postman)
  renew-rcl         one nightly RCL renewal run, now
  verify-rcl        one follow-up check of RCL renewals, now
  renew-avx FILE    one AppViewX webhook renewal from a JSON file
  complete-pending  one run of the pending AppViewX completion
  status            recorded RCL renewals and AppViewX renewal records, as tables
  verify-endpoints  one endpoint check: does each endpoint in ENDPOINT_CHECKS serve Key Vault's current version?

Settings come from the environment, or from a local.settings.json file (--settings) whose "Values" are applied
first, as `func start` does.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import secrets
import signal
import sys
import threading
import uuid
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

EXIT_OK, EXIT_FAILED = 0, 1


class LocalContext:
    """The `context` the host passes: an invocation id for correlation."""

    def __init__(self, function_name: str) -> None:
        self.invocation_id = str(uuid.uuid4())
        self.function_name = function_name
        self.function_directory = str(Path(__file__).resolve().parents[1])
        self.trace_context = None
        self.retry_context = None
        self.thread_local_storage = None


def load_settings_file(path: Path) -> int:
    """Apply local.settings.json "Values" to the environment (values already set win, as with `func start`)."""
    document = json.loads(path.read_text(encoding="utf-8"))
    values = document.get("Values") or {}
    applied = 0
    for key, value in values.items():
        if key not in os.environ and value not in (None, ""):
            os.environ[key] = str(value)
            applied += 1
    return applied


_registered: dict[str, Any] | None = None


def registered_functions() -> dict[str, Any]:
    """The app's functions by name, as the host indexes them. `get_functions()` may run only once per process."""
    global _registered
    if _registered is None:
        import function_app

        _registered = {f.get_function_name(): f for f in function_app.app.get_functions()}
    return _registered


_functions = registered_functions


# -- serve -----------------------------------------------------------------------------------------


class Route:
    def __init__(self, name: str, function: Any, binding: dict[str, Any]) -> None:
        self.name = name
        self.function = function.get_user_function()
        self.methods = {m.upper() for m in binding.get("methods") or ["GET", "POST"]}
        self.auth_level = str(binding.get("authLevel", "FUNCTION")).upper()
        template = binding.get("route") or name
        pattern = re.sub(r"\{(\w+)(?::[^}]*)?\}", r"(?P<\1>[^/]+)", template)
        self.regex = re.compile(f"^/api/{pattern}/?$")
        self.template = template

    def match(self, path: str) -> dict[str, str] | None:
        found = self.regex.match(path)
        return found.groupdict() if found else None


def http_routes(functions: dict[str, Any]) -> list[Route]:
    routes = []
    for name, function in functions.items():
        for binding in json.loads(function.get_function_json())["bindings"]:
            if binding.get("type") == "httpTrigger":
                routes.append(Route(name, function, binding))
    # Literal routes before templated ones, as the host orders them.
    return sorted(routes, key=lambda r: r.template.count("{"))


def make_server(
    host: str, port: int, function_key: str, functions: dict[str, Any] | None = None
) -> ThreadingHTTPServer:
    import azure.functions as func

    routes = http_routes(functions or _functions())

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
            logging.getLogger("certrenew.serve").info("%s %s", self.command, self.path.split("?")[0])

        def _answer(self, status: int, body: bytes, headers: dict[str, str]) -> None:
            self.send_response(status)
            for key, value in {**headers, "Content-Length": str(len(body))}.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            parts = urlsplit(self.path)
            query = dict(parse_qsl(parts.query, keep_blank_values=True))
            allowed: set[str] = set()
            for route in routes:
                params = route.match(parts.path)
                if params is None:
                    continue
                allowed |= route.methods
                if self.command not in route.methods:
                    continue
                if route.auth_level != "ANONYMOUS":
                    given = self.headers.get("x-functions-key") or query.get("code") or ""
                    if not secrets.compare_digest(given.encode(), function_key.encode()):
                        self._answer(401, b"", {})  # what the Functions host answers to a missing or wrong key
                        return
                query.pop("code", None)
                request = func.HttpRequest(
                    method=self.command,
                    url=f"http://{self.headers.get('Host', 'localhost')}{parts.path}",
                    headers=dict(self.headers.items()),
                    params=query,
                    route_params=params,
                    body=body,
                )
                response = route.function(request, LocalContext(route.name))
                headers = dict(response.headers.items())
                headers.setdefault("Content-Type", response.mimetype or "application/json")
                self._answer(response.status_code, response.get_body(), headers)
                return
            if allowed:
                self._answer(405, b"", {"Allow": ", ".join(sorted(allowed))})
            else:
                self._answer(404, b"", {})

        def __getattr__(self, name: str) -> Any:
            # Every method, known or not, goes through the routes (405 when a route exists but not for it).
            if name.startswith("do_"):
                return self._serve
            raise AttributeError(name)

    return ThreadingHTTPServer((host, port), Handler)


def cmd_serve(args: argparse.Namespace) -> int:
    key = args.key or os.environ.get("CERTRENEW_FUNCTION_KEY") or secrets.token_urlsafe(24)
    server = make_server(args.host, args.port, key)
    base = f"http://{args.host}:{server.server_address[1]}"
    print(f"Serving the app's HTTP functions on {base}/api/ (Ctrl+C stops)")
    for route in http_routes(_functions()):
        print(
            f"  {'/'.join(sorted(route.methods)):5} {base}/api/{route.template}  [{route.name}, auth {route.auth_level}]"
        )
    print(
        "Function key (send as x-functions-key header or ?code=): "
        + ("<from --key or CERTRENEW_FUNCTION_KEY>" if args.key or os.environ.get("CERTRENEW_FUNCTION_KEY") else key)
    )
    sys.stdout.flush()
    serve_until_stopped(server)
    return EXIT_OK


def serve_until_stopped(server: ThreadingHTTPServer, seconds: float | None = None) -> None:
    """Serve until Ctrl+C or SIGTERM (or `seconds`), then close the socket."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    if seconds is not None:
        timer = threading.Timer(seconds, server.shutdown)
        timer.daemon = True
        timer.start()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


# -- one-off runs ----------------------------------------------------------------------------------


def _run_timer(name: str) -> int:
    import azure.functions as func

    from shared.errors import CertRenewError

    print(f"Running {name} now ...", file=sys.stderr)
    try:
        _functions()[name].get_user_function()(func.timer.TimerRequest(past_due=False), LocalContext(name))
    except CertRenewError as exc:
        print(f"FAILED [{exc.code}] {exc.message}", file=sys.stderr)
        if exc.remediation:
            print(f"Remediation: {exc.remediation}", file=sys.stderr)
        return EXIT_FAILED
    print(f"{name} finished.", file=sys.stderr)
    return EXIT_OK


def cmd_renew_avx(args: argparse.Namespace) -> int:
    import azure.functions as func

    body = Path(args.file).read_bytes()
    headers = {"Content-Type": "application/json"}
    if args.idempotency_key:
        headers["Idempotency-Key"] = args.idempotency_key
    params = {"autoApproval": args.auto_approval} if args.auto_approval else {}
    request = func.HttpRequest(
        method="POST",
        url="http://localhost/api/certificates/renew",
        headers=headers,
        params=params,
        route_params={},
        body=body,
    )
    print("Renewing through AppViewX ...", file=sys.stderr)
    response = _functions()["renew_http"].get_user_function()(request, LocalContext("renew_http"))
    answer = json.loads(response.get_body())
    print(json.dumps(answer, indent=2))
    error = answer.get("error")
    if error:
        print(f"FAILED ({response.status_code}) [{error['code']}] {error['message']}", file=sys.stderr)
        if error.get("remediation"):
            print(f"Remediation: {error['remediation']}", file=sys.stderr)
    return EXIT_OK if response.status_code < 300 else EXIT_FAILED


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[("" if v is None else str(v)) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(out)


def _print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]], empty: str = "(none)") -> None:
    print(title)
    print(format_table(headers, rows) if rows else f"  {empty}")


def _installed_note(record: dict[str, Any]) -> str:
    if record.get("state") != "renewed":
        return ""
    return "installed" if record.get("installed") else "not installed on its target yet"


def cmd_status(args: argparse.Namespace) -> int:
    from shared import context as app_context
    from shared.pending import OPEN_STATES

    def when(value: Any) -> str:
        return value.strftime("%Y-%m-%d %H:%M") if hasattr(value, "strftime") else str(value or "")

    rcl_rows = [
        (
            r.get("certificateName"),
            r.get("certificateId"),
            r.get("target"),
            r.get("state"),
            when(r.get("expiryDate")),
            when(r.get("scheduledAt")),
            r.get("reason") or _installed_note(r),
        )
        for r in app_context.renewal_state().all_records()
    ]
    _print_table(
        "RCL renewals",
        ("certificate", "id", "target", "state", "expiry before", "scheduled", "note"),
        rcl_rows,
        "(none recorded)",
    )
    pending_rows = [
        (
            p.pending_id,
            p.key_vault_name or p.common_name or p.requested_resource_id,
            p.state,
            p.reason,
            p.attempts,
            when(p.next_attempt_at) if p.state in OPEN_STATES else "",
            (p.last_error or "")[:60],
        )
        for p in app_context.pending_store().all_records()
    ]
    print()
    _print_table(
        "AppViewX renewals (accepted, pending, renewed, failed)",
        ("pending id", "certificate", "state", "reason", "tries", "next try", "last error"),
        pending_rows,
    )
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m shared", description=__doc__.split("\n\n")[0], epilog=None)
    parser.add_argument("--settings", type=Path, help="a local.settings.json whose Values are applied first")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="serve the HTTP functions locally",
        description="Serve the app's HTTP functions on a local port through their registered routes and auth levels.",
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=7071)
    serve.add_argument(
        "--key",
        help="the function key callers must send (default: CERTRENEW_FUNCTION_KEY, else a random one printed at start)",
    )
    serve.set_defaults(run=cmd_serve)

    for name, function, text in (
        ("renew-rcl", "renew_timer", "run the nightly RCL renewal once, now"),
        ("verify-rcl", "verify_renewals", "run the follow-up check of RCL renewals once, now"),
        ("complete-pending", "complete_pending", "try the pending AppViewX renewals once, now"),
        ("verify-endpoints", "verify_endpoints", "check once, now, which certificate each endpoint serves"),
    ):
        sub = commands.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        sub.set_defaults(run=lambda _args, f=function: _run_timer(f))

    renew = commands.add_parser(
        "renew-avx",
        help="renew one certificate through AppViewX from a JSON file",
        description="Send one webhook renewal (the JSON body the webhook takes) through the app.",
    )
    renew.add_argument("file", help='JSON file with the request body, e.g. {"resourceId": "..."}')
    renew.add_argument("--idempotency-key")
    renew.add_argument("--auto-approval", choices=("true", "false"))
    renew.set_defaults(run=cmd_renew_avx)

    status = commands.add_parser(
        "status",
        help="show recorded RCL renewals and pending AVX renewals",
        description="Show the recorded RCL renewals and the pending AppViewX renewals as tables.",
    )
    status.set_defaults(run=cmd_status)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("azure", "urllib3", "msal"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    if args.settings:
        load_settings_file(args.settings)
    from shared.errors import CertRenewError

    try:
        return int(args.run(args))
    except CertRenewError as exc:
        print(f"FAILED [{exc.code}] {exc.message}", file=sys.stderr)
        if exc.remediation:
            print(f"Remediation: {exc.remediation}", file=sys.stderr)
        return EXIT_FAILED
