"""Operator CLI: `certrenew COMMAND` or `python -m shared COMMAND` (each command has --help).

It runs the app's registered functions exactly as the Functions host would (same settings, bindings, routes and
auth levels), for operators without the Functions Core Tools:

  serve             the HTTP functions on a local port (for curl and Postman)
  renew-rcl         one nightly RCL renewal run, now
  verify-rcl        one follow-up check of RCL renewals, now
  renew-avx FILE    one AppViewX webhook renewal from a JSON file
  complete-pending  one run of the pending AppViewX completion
  status            recorded RCL renewals and AppViewX renewal records, as tables
  verify-endpoints  one endpoint check: does each endpoint in ENDPOINT_CHECKS serve Key Vault's current version?

Settings come from the environment, or from a local.settings.json file (--settings, before or after the command)
whose "Values" win over the environment for the names it sets (so a shell's REQUESTS_CA_BUNDLE cannot hide the
file's). Installed with `bash dev.sh setup`, the same CLI is the console command `certrenew`.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import math
import os
import re
import secrets
import signal
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlsplit

from shared.core.timestamps import iso_utc, utc

EXIT_OK, EXIT_FAILED, EXIT_MISTAKE = 0, 1, 2
serve_log = logging.getLogger("certrenew.serve")
LOCAL_STACK_SETTINGS = ".localstack/local.settings.json"
REQUEST_EXAMPLE = '{"resourceId": "..."} or {"commonName": "...", "serialNumber": "..."}'


class CliMistake(Exception):
    """A mistake in how the CLI was called (a file missing or malformed, ...): one line, what to do, no traceback."""

    def __init__(self, problem: str, remedy: str) -> None:
        super().__init__(f"{problem}: {remedy}")
        self.problem = problem
        self.remedy = remedy


def program_name(argv0: str | None = None) -> str:
    """`certrenew` when run as the console command, else `python -m shared` (how the user started it)."""
    name = Path(argv0 if argv0 is not None else sys.argv[0]).name
    return "certrenew" if name.startswith("certrenew") else "python -m shared"


class LocalContext:
    """The `context` the host passes: an invocation id for correlation."""

    def __init__(self, function_name: str) -> None:
        self.invocation_id = str(uuid.uuid4())
        self.function_name = function_name
        self.function_directory = str(Path(__file__).resolve().parents[1])
        self.trace_context = None
        self.retry_context = None
        self.thread_local_storage = None


def read_json_file(path: Path, what: str, remedy: str) -> Any:
    """A JSON document from `path`, or a CliMistake naming the file and what to do."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CliMistake(f"{what} {path} does not exist", remedy) from None
    except IsADirectoryError:
        raise CliMistake(f"{what} {path} is a folder, not a file", remedy) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CliMistake(f"{what} {path} cannot be read ({type(exc).__name__})", remedy) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno}, column {exc.colno}: {exc.msg}"
        raise CliMistake(f"{what} {path} is not valid JSON ({where})", remedy) from None


SETTINGS_REMEDY = (
    'give a local.settings.json with a "Values" object (copy local.settings.sample.json; for the local stack '
    f"use {LOCAL_STACK_SETTINGS}, written while `bash dev.sh local --serve` runs)"
)


def load_settings_file(path: Path) -> int:
    """Apply local.settings.json "Values" to the environment. The file wins over the environment for the names it
    sets (non-empty values): it is the operator's explicit choice, and a shell's leftovers (REQUESTS_CA_BUNDLE, an
    old AVX_API_URL) must not silently point the run elsewhere."""
    document = read_json_file(path, "settings file", SETTINGS_REMEDY)
    values = document.get("Values") if isinstance(document, dict) else None
    if values is None:
        values = {}
    if not isinstance(document, dict) or not isinstance(values, dict):
        raise CliMistake(f'settings file {path} has no "Values" object', SETTINGS_REMEDY)
    applied = 0
    for key, value in values.items():
        if value not in (None, ""):
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


class FunctionsHandler(BaseHTTPRequestHandler):
    """Serves the app's HTTP functions as the Functions host does; `make_server` binds the routes and the key."""

    protocol_version = "HTTP/1.1"
    routes: ClassVar[tuple[Route, ...]] = ()
    function_key: ClassVar[str] = ""
    queues: ClassVar[Any] = None  # a shared.operator.queue_host.QueueHost: queue output bindings, as the host has them

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        # One line per served request; the path only (the query may carry the function key as ?code=).
        took = (time.monotonic() - getattr(self, "started", time.monotonic())) * 1000
        serve_log.info("%s %s -> %s (%.0f ms)", self.command, self.path.split("?")[0], code, took)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        serve_log.warning("%s %s: %s", self.command, self.path.split("?")[0], format % args)

    def _answer(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for key, value in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _serve(self) -> None:
        self.started = time.monotonic()
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        allowed: set[str] = set()
        for route in self.routes:
            params = route.match(parts.path)
            if params is None:
                continue
            allowed |= route.methods
            if self.command not in route.methods:
                continue
            if route.auth_level != "ANONYMOUS" and not self._key_given(query):
                self._answer(401, b"", {})  # what the Functions host answers to a missing or wrong key
                return
            query.pop("code", None)
            self._call(route, parts.path, query, params, body)
            return
        if allowed:
            self._answer(405, b"", {"Allow": ", ".join(sorted(allowed))})
        else:
            self._answer(404, b"", {})

    def _key_given(self, query: dict[str, str]) -> bool:
        given = self.headers.get("x-functions-key") or query.get("code") or ""
        return secrets.compare_digest(given.encode(), self.function_key.encode())

    def _call(self, route: Route, path: str, query: dict[str, str], params: dict[str, str], body: bytes) -> None:
        """Run the route's function with the request the host would build, and send its answer."""
        import azure.functions as func

        request = func.HttpRequest(
            method=self.command,
            url=f"http://{self.headers.get('Host', 'localhost')}{path}",
            headers=dict(self.headers.items()),
            params=query,
            route_params=params,
            body=body,
        )
        outputs = self.queues.outputs(route.name) if self.queues is not None else {}
        response = route.function(request, LocalContext(route.name), **outputs)
        if outputs:  # written once the invocation succeeded, as the host writes output bindings
            try:
                self.queues.write_outputs(route.name, outputs)
            except Exception as exc:  # the host fails the invocation: 500, and the record waits for the timer
                serve_log.error("%s: writing its queue output failed (%s)", route.name, type(exc).__name__)
                self._answer(500, b"", {})
                return
        headers = dict(response.headers.items())
        headers.setdefault("Content-Type", response.mimetype or "application/json")
        self._answer(response.status_code, response.get_body(), headers)

    def __getattr__(self, name: str) -> Any:
        # Every method, known or not, goes through the routes (405 when a route exists but not for it).
        if name.startswith("do_"):
            return self._serve
        raise AttributeError(name)


def make_server(
    host: str, port: int, function_key: str, functions: dict[str, Any] | None = None, queues: Any = None
) -> ThreadingHTTPServer:
    routes = http_routes(functions or registered_functions())
    # A handler class per server: the server builds one handler per request from the class.
    attributes = {"routes": tuple(routes), "function_key": function_key, "queues": queues}
    handler = type("Handler", (FunctionsHandler,), attributes)
    return ThreadingHTTPServer((host, port), handler)


def start_queue_host() -> Any:
    """The queue functions running in the background and the queue output bindings (None when the storage account
    has no queues: then respond-async is served synchronously; the reason is logged)."""
    from shared.operator.queue_host import QueueHost

    return QueueHost.start(registered_functions(), LocalContext)


def cmd_serve(args: argparse.Namespace) -> int:
    key = args.key or os.environ.get("CERTRENEW_FUNCTION_KEY") or secrets.token_urlsafe(24)
    server = bind_server(args.host, args.port, key, f"{program_name()} serve --port {args.port + 1}")
    queues = server.RequestHandlerClass.queues = start_queue_host()  # type: ignore[attr-defined]
    base = f"http://{args.host}:{server.server_address[1]}"
    print(f"Serving the app's HTTP functions on {base}/api/ (Ctrl+C stops)")
    for route in http_routes(registered_functions()):
        print(
            f"  {'/'.join(sorted(route.methods)):5} {base}/api/{route.template}  [{route.name}, auth {route.auth_level}]"
        )
    print(
        "Function key (send as x-functions-key header or ?code=): "
        + ("<from --key or CERTRENEW_FUNCTION_KEY>" if args.key or os.environ.get("CERTRENEW_FUNCTION_KEY") else key)
    )
    sys.stdout.flush()
    serve_until_stopped(server)
    if queues is not None:
        queues.stop()
    return EXIT_OK


def port_busy_mistake(host: str, port: int, error: OSError, retry: str) -> CliMistake:
    if error.errno == errno.EADDRINUSE:
        return CliMistake(
            f"port {port} on {host} is busy (another serve, `func start` or `bash dev.sh local --serve` may be "
            "running)",
            f"stop it, or choose a free port, e.g. `{retry}`",
        )
    return CliMistake(f"cannot listen on {host}:{port} ({error.strerror or error})", f"choose another, e.g. `{retry}`")


def check_port_free(host: str, port: int, retry: str) -> None:
    """Refuse a busy port before anything slow runs (the server binds it the same way, SO_REUSEADDR included)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise port_busy_mistake(host, port, exc, retry) from None


def bind_server(
    host: str, port: int, function_key: str, retry: str, functions: dict[str, Any] | None = None, queues: Any = None
) -> ThreadingHTTPServer:
    """`make_server`, with a busy port reported as a CliMistake that suggests `retry`."""
    try:
        return make_server(host, port, function_key, functions, queues)
    except OSError as exc:
        raise port_busy_mistake(host, port, exc, retry) from None


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


def failure_line(code: str, message: str, remediation: str | None, status: int | None = None) -> str:
    """One line: what failed, and what to do about it."""
    head = f"FAILED ({status}) [{code}]" if status else f"FAILED [{code}]"
    line = f"{head} {message.rstrip('.')}."
    return f"{line} Remediation: {remediation}" if remediation else line


def _run_timer(name: str) -> int:
    import azure.functions as func

    from shared.core.errors import CertRenewError

    print(f"Running {name} now ...", file=sys.stderr)
    try:
        registered_functions()[name].get_user_function()(func.timer.TimerRequest(past_due=False), LocalContext(name))
    except CertRenewError as exc:
        print(failure_line(exc.code, exc.message, exc.remediation), file=sys.stderr)
        return EXIT_FAILED
    print(f"{name} finished.", file=sys.stderr)
    return EXIT_OK


def cmd_renew_avx(args: argparse.Namespace) -> int:
    import azure.functions as func

    path = Path(args.file)
    remedy = f"give a JSON file with the webhook's body, e.g. {REQUEST_EXAMPLE}"
    if not isinstance(read_json_file(path, "request file", remedy), dict):
        raise CliMistake(f"request file {path} does not hold a JSON object", remedy)
    body = path.read_bytes()
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


# -- words, times and rounding the status tables and the local report share ------------------------

# Record states as the operator reads them; a state not listed prints as stored (new states need no change here).
STATE_WORDS = {"scheduled": "pending"}  # an RCL record not seen renewed yet: the follow-up check's "pending"
INSTALLED_WORDS = {True: "installed on its target", False: "not installed on its target yet"}


def state_word(state: Any) -> str:
    return STATE_WORDS.get(str(state or ""), str(state or ""))


def parse_time(value: Any) -> datetime | None:
    """A datetime from a table value or an ISO string (telemetry properties); None when there is none."""
    if isinstance(value, datetime):
        return utc(value)
    if isinstance(value, str) and value.strip():
        try:
            return utc(datetime.fromisoformat(value.strip()))
        except ValueError:
            return None
    return None


def when(value: Any) -> str:
    """ISO 8601 UTC to the second (`2026-12-08T22:36:02Z`): microseconds are noise in a table."""
    moment = parse_time(value)
    if moment is None:
        return "" if value in (None, "") else str(value)
    return iso_utc(moment.replace(microsecond=0)) or ""


def days_until(moment: datetime, now: datetime) -> int:
    """Whole days to `moment`, to the nearest day (10.9 days is "in 11 days")."""
    return math.floor((utc(moment) - utc(now)) / timedelta(days=1) + 0.5)


def in_days(value: Any, now: datetime) -> str:
    moment = parse_time(value)
    if moment is None:
        return ""
    days = days_until(moment, now)
    if days == 0:
        return "today"
    count = f"{abs(days)} day{'' if abs(days) == 1 else 's'}"
    return f"in {count}" if days > 0 else f"{count} ago"


def expiry_words(value: Any, now: datetime) -> str:
    """`2026-12-08T22:36:02Z (in 11 days)`."""
    relative = in_days(value, now)
    return f"{when(value)} ({relative})" if relative else when(value)


def clip(text: Any, width: int = 80) -> str:
    """`text` on one line, at most about `width` characters, cut between words (never inside one)."""
    words = " ".join(str(text or "").split())
    if len(words) <= width:
        return words
    cut = words.rfind(" ", 0, width)
    return (words[:cut] if cut > 0 else words.split(" ", 1)[0]).rstrip(" ,;:") + " …"


def rcl_note(record: dict[str, Any]) -> str:
    if record.get("reason"):
        return clip(f"{record['reason']}: {record.get('message') or ''}".rstrip(": "))
    if record.get("state") == "renewed":
        return INSTALLED_WORDS[bool(record.get("installed"))]
    return ""


def rcl_expiry(record: dict[str, Any], now: datetime) -> str:
    # A renewed record shows the new expiry; every other one the expiry RCL was asked to renew.
    return expiry_words(record.get("newExpiryDate") or record.get("expiryDate"), now)


def pending_names(records: Sequence[Any]) -> dict[str, str]:
    """The certificate each pending record is about, by pending id: its Key Vault name or common name; for a
    renewal asked by resourceId only, the common name AppViewX lists for it (one read-only search per id)."""
    names: dict[str, str] = {}
    unnamed: dict[str, list[str]] = {}
    for record in records:
        name = getattr(record, "key_vault_name", None) or getattr(record, "common_name", None)
        resource_id = getattr(record, "requested_resource_id", None) or getattr(record, "avx_resource_id", None)
        if name:
            names[record.pending_id] = name
        elif resource_id:
            unnamed.setdefault(resource_id, []).append(record.pending_id)
    for resource_id, pending_ids in unnamed.items():
        found = _avx_common_name(resource_id)
        for pending_id in pending_ids:
            names[pending_id] = found or f"resourceId {resource_id}"
    return names


def _avx_common_name(resource_id: str) -> str | None:
    from shared import context as app_context
    from shared.core.errors import CertRenewError

    try:
        listed = app_context.avx_client().search(resource_id=resource_id)
    except CertRenewError as exc:  # AVX not configured or not reachable: the table still prints
        logging.getLogger("certrenew.cli").debug("No AppViewX name for %s: %s", resource_id, exc.message)
        return None
    return next((c.common_name for c in listed if c.common_name), None)


def status_hint(error: Exception, settings_path: Path | None) -> str:
    """The likely cause of `status` failing, in words an operator can act on."""
    from shared.core.errors import SettingsError, StateStoreError

    if isinstance(error, SettingsError) and settings_path is None:
        return (
            "no settings were given: pass --settings local.settings.json (for the local stack "
            f"--settings {LOCAL_STACK_SETTINGS} while `bash dev.sh local --serve` runs), or set AzureWebJobsStorage"
        )
    if isinstance(error, SettingsError):
        return f"fix the named setting in {settings_path}"
    if isinstance(error, StateStoreError):
        endpoint = local_table_endpoint(os.environ.get("AzureWebJobsStorage", ""))
        if endpoint:
            return (
                f"nothing answers at {endpoint}: the local stack (its Azurite) is not running; start "
                "`bash dev.sh local --serve` in another terminal and keep it running while you use status "
                f"(each start writes a new {LOCAL_STACK_SETTINGS})"
            )
        return (
            "the storage account in AzureWebJobsStorage cannot be reached from here, or you may not read its "
            "tables: check the network path and your access (az login, or the connection string's key)"
        )
    return getattr(error, "remediation", None) or ""


def local_table_endpoint(connection_string: str) -> str | None:
    """The table endpoint of a storage connection string when it is on this machine (Azurite), else None."""
    parts = dict(p.split("=", 1) for p in connection_string.split(";") if "=" in p)
    if parts.get("UseDevelopmentStorage", "").lower() == "true":
        return "http://127.0.0.1:10002"
    endpoint = parts.get("TableEndpoint", "")
    host = urlsplit(endpoint).hostname or ""
    return endpoint.rstrip("/") if host in ("127.0.0.1", "localhost", "::1") else None


def _read_status_tables(settings_path: Path | None) -> tuple[list[dict[str, Any]], list[Any]] | None:
    """The RCL renewal records and the AppViewX records; None after telling on stderr why they cannot be read."""
    from shared import context as app_context
    from shared.core.errors import CertRenewError

    try:
        return app_context.renewal_state().all_records(), app_context.pending_store().all_records()
    except CertRenewError as exc:
        print(
            f"{program_name()} status: cannot read the app's tables ([{exc.code}] {exc.message.rstrip('.')}). "
            f"Likely cause: {status_hint(exc, settings_path)}.",
            file=sys.stderr,
        )
        return None


def _print_rcl_renewals(rcl_records: Sequence[dict[str, Any]], now: datetime) -> None:
    rcl_rows = [
        (
            r.get("certificateName"),
            r.get("certificateId"),
            r.get("target"),
            state_word(r.get("state")),
            rcl_expiry(r, now),
            when(r.get("scheduledAt")),
            rcl_note(r),
        )
        for r in rcl_records
    ]
    _print_table(
        "RCL renewals",
        ("certificate", "id", "target", "state", "expiry", "scheduled", "note"),
        rcl_rows,
        "(none recorded)",
    )


def cmd_status(args: argparse.Namespace) -> int:
    from shared.appviewx.records import OPEN_STATES

    now = datetime.now(UTC)
    tables = _read_status_tables(args.settings)
    if tables is None:
        return EXIT_FAILED
    rcl_records, pending_records = tables
    _print_rcl_renewals(rcl_records, now)
    names = pending_names(pending_records)
    pending_rows = [
        (
            p.pending_id,
            names.get(p.pending_id, ""),
            state_word(p.state),
            p.reason,
            p.attempts,
            when(p.next_attempt_at) if p.state in OPEN_STATES else "",
            clip(p.last_error, 60),
        )
        for p in pending_records
    ]
    print()
    _print_table(
        "AppViewX renewals (accepted, pending, renewed, failed)",
        ("pending id", "certificate", "state", "reason", "tries", "next try", "last error"),
        pending_rows,
    )
    return EXIT_OK


def _add_common_options(parser: argparse.ArgumentParser, *, on_command: bool) -> None:
    """--settings and -v, accepted before or after the command. On a command they default to SUPPRESS, so a value
    given before the command is not overwritten when it is not repeated after it."""
    parser.add_argument(
        "--settings",
        type=Path,
        default=argparse.SUPPRESS if on_command else None,
        help="a local.settings.json whose Values win over the environment for the names it sets",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS if on_command else False, help="log at DEBUG"
    )


def build_parser(prog: str = "python -m shared") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0], epilog=None)
    _add_common_options(parser, on_command=False)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, **kwargs: Any) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, **kwargs)
        _add_common_options(sub, on_command=True)
        return sub

    serve = command(
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
        sub = command(name, help=text, description=text[0].upper() + text[1:] + ".")
        sub.set_defaults(run=lambda _args, f=function: _run_timer(f))

    renew = command(
        "renew-avx",
        help="renew one certificate through AppViewX from a JSON file",
        description="Send one webhook renewal (the JSON body the webhook takes) through the app.",
    )
    renew.add_argument("file", help=f"JSON file with the request body, e.g. {REQUEST_EXAMPLE}")
    renew.add_argument("--idempotency-key")
    renew.add_argument("--auto-approval", choices=("true", "false"))
    renew.set_defaults(run=cmd_renew_avx)

    status = command(
        "status",
        help="show recorded RCL renewals and pending AVX renewals",
        description="Show the recorded RCL renewals and the pending AppViewX renewals as tables.",
    )
    status.set_defaults(run=cmd_status)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    prog = program_name()
    args = build_parser(prog).parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("azure", "urllib3", "msal"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    from shared.core.errors import CertRenewError

    try:
        if args.settings:
            load_settings_file(args.settings)
        return int(args.run(args))
    except CliMistake as exc:
        print(f"{prog} {args.command}: {exc}", file=sys.stderr)
        return EXIT_MISTAKE
    except CertRenewError as exc:
        print(failure_line(exc.code, exc.message, exc.remediation), file=sys.stderr)
        return EXIT_FAILED
