"""A small threaded HTTP(S) server that the protocol stand-ins build on.

Each stand-in subclasses `StandIn`, implements `handle(request) -> Response`, and gets: a free port on
127.0.0.1, optional TLS from a test CA, a record of every request it received, a count of the TCP
connections it accepted, and start/stop that the tests and the local stack share.
"""

from __future__ import annotations

import json
import socketserver
import ssl
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8"))

    def header(self, name: str) -> str | None:
        for key, value in self.headers.items():
            if key.lower() == name.lower():
                return value
        return None

    def query_one(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    # Seconds to wait before answering (for timeout tests); the wait ends early when the server stops.
    delay: float = 0.0
    # Close the connection without answering (a dropped connection).
    drop: bool = False

    @classmethod
    def json(cls, payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
        merged = {"Content-Type": "application/json; charset=utf-8", **(headers or {})}
        return cls(status=status, body=json.dumps(payload).encode("utf-8"), headers=merged)

    @classmethod
    def text(cls, text: str, status: int = 200, content_type: str = "text/plain") -> Response:
        return cls(status=status, body=text.encode("utf-8"), headers={"Content-Type": content_type})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    standin: StandIn

    def get_request(self) -> tuple[Any, Any]:
        sock, addr = super().get_request()
        with self.standin.lock:
            self.standin.connections += 1
        return sock, addr


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        return  # quiet: the stand-ins record requests instead of printing them

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        request = RecordedRequest(
            method=self.command,
            path=parts.path,
            query=parse_qs(parts.query, keep_blank_values=True),
            headers={k: v for k, v in self.headers.items()},
            body=body,
        )
        standin = self.server.standin
        with standin.lock:
            standin.requests.append(request)
        try:
            response = standin.handle(request)
        except Exception as exc:  # a stand-in bug must show as a 500, not hang the client
            response = Response.text(f"stand-in error: {type(exc).__name__}: {exc}", status=500)
        if response.delay and standin.stopping.wait(response.delay):
            return
        if response.drop:
            self.close_connection = True
            return
        self.send_response(response.status)
        headers = {"Content-Length": str(len(response.body)), **response.headers}
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _serve


class StandIn:
    """Base class: subclasses implement `handle`."""

    name = "stand-in"

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self.ssl_context = ssl_context
        self.requests: list[RecordedRequest] = []
        self.connections = 0
        self.lock = threading.RLock()
        self.stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self, port: int = 0) -> StandIn:
        server = _Server(("127.0.0.1", port), _Handler)
        server.standin = self
        if self.ssl_context is not None:
            server.socket = self.ssl_context.wrap_socket(server.socket, server_side=True)
        self._server = server
        self.stopping.clear()
        self._thread = threading.Thread(target=server.serve_forever, name=self.name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def port(self) -> int:
        assert self._server is not None, f"{self.name} is not running"
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    # -- records ---------------------------------------------------------------------------------
    def reset_records(self) -> None:
        with self.lock:
            self.requests.clear()
            self.connections = 0

    def received(self, method: str | None = None, path_suffix: str | None = None) -> list[RecordedRequest]:
        with self.lock:
            return [
                r
                for r in self.requests
                if (method is None or r.method == method) and (path_suffix is None or r.path.endswith(path_suffix))
            ]

    def handle(self, request: RecordedRequest) -> Response:  # pragma: no cover - abstract
        raise NotImplementedError


# Keep socketserver's default small backlog from refusing bursts in the load tests.
socketserver.TCPServer.request_queue_size = 128
