"""`serve`: the app's HTTP functions on a local port, through their registered routes and auth levels."""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import secrets
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlsplit

from shared.operator.local_host import LocalContext, registered_functions
from shared.operator.outcomes import EXIT_OK, CliMistake, program_name
from shared.operator.queue_host import QueueHost

serve_log = logging.getLogger("certrenew.serve")


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
    queues: ClassVar[QueueHost | None] = None  # the queue output bindings, as the host has them (None: no queues)

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
        if outputs and self.queues is not None:  # written once the invocation succeeded, as the host writes them
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
    host: str, port: int, function_key: str, functions: dict[str, Any] | None = None, queues: QueueHost | None = None
) -> ThreadingHTTPServer:
    routes = http_routes(functions or registered_functions())
    # A handler class per server: the server builds one handler per request from the class.
    attributes = {"routes": tuple(routes), "function_key": function_key, "queues": queues}
    handler = type("Handler", (FunctionsHandler,), attributes)
    return ThreadingHTTPServer((host, port), handler)


def start_queue_host() -> QueueHost | None:
    """The queue functions running in the background, and the queue output bindings of the served functions (None
    when the storage account has no queues: respond-async is then served synchronously; the reason is logged)."""
    return QueueHost.start(registered_functions(), LocalContext)


def serve(host: str, port: int, given_key: str | None) -> int:
    """Serve until stopped, with the function key given (--key), else CERTRENEW_FUNCTION_KEY, else a random one."""
    key = given_key or os.environ.get("CERTRENEW_FUNCTION_KEY") or secrets.token_urlsafe(24)
    server = bind_server(host, port, key, f"{program_name()} serve --port {port + 1}")
    queues = server.RequestHandlerClass.queues = start_queue_host()  # type: ignore[attr-defined]
    base = f"http://{host}:{server.server_address[1]}"
    print(f"Serving the app's HTTP functions on {base}/api/ (Ctrl+C stops)")
    for route in http_routes(registered_functions()):
        print(
            f"  {'/'.join(sorted(route.methods)):5} {base}/api/{route.template}  [{route.name}, auth {route.auth_level}]"
        )
    print(
        "Function key (send as x-functions-key header or ?code=): "
        + ("<from --key or CERTRENEW_FUNCTION_KEY>" if given_key or os.environ.get("CERTRENEW_FUNCTION_KEY") else key)
    )
    sys.stdout.flush()
    try:
        serve_until_stopped(server)
    finally:
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
    host: str,
    port: int,
    function_key: str,
    retry: str,
    functions: dict[str, Any] | None = None,
    queues: QueueHost | None = None,
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
