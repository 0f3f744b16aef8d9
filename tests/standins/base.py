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
from collections.abc import Callable, Iterable
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
    # Send the body one byte at a time, this many seconds apart (a trickling upstream); headers go at once.
    trickle: float = 0.0
    # With `trickle`: the status line and headers go one byte at a time too (each read quick, the whole slow).
    trickle_headers: bool = False
    # A body made piece by piece as it is sent (a huge answer the stand-in never holds whole): chunked transfer
    # encoding, or a Content-Length of `declared_length` when given. Overrides `body`.
    chunks: Callable[[], Iterable[bytes]] | None = None
    declared_length: int | None = None

    @classmethod
    def huge_json_array(cls, size: int, *, declare_length: bool) -> Response:
        """A JSON array of about `size` bytes of small objects, generated while it is sent."""
        item = b'{"id": 1, "name": "padding.contoso.com", "target": "' + b"x" * 900 + b'"},'
        count = max(1, size // len(item))

        def pieces() -> Iterable[bytes]:
            yield b"["
            block = item * 64
            for _ in range(count // 64):
                yield block
            yield item * (count % 64)
            yield b'{"id": 2, "name": "last"}]'

        total = 1 + len(item) * count + len(b'{"id": 2, "name": "last"}]')
        headers = {"Content-Type": "application/json"}
        return cls(200, b"", headers, chunks=pieces, declared_length=total if declare_length else None)

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
        if response.chunks is not None:
            self._send_pieces(response)
            return
        headers = {"Content-Length": str(len(response.body)), **response.headers}
        for key, value in headers.items():
            self.send_header(key, value)
        if response.trickle and response.trickle_headers:
            self._headers_buffer.append(b"\r\n")
            head, self._headers_buffer = b"".join(self._headers_buffer), []
            try:
                for index in range(len(head)):
                    if self.server.standin.stopping.wait(response.trickle):
                        return
                    self.wfile.write(head[index : index + 1])
                    self.wfile.flush()
            except OSError:
                self.close_connection = True
                return
        else:
            self.end_headers()
        if self.command == "HEAD":
            return
        if not response.trickle:
            self.wfile.write(response.body)
            return
        try:
            for index in range(len(response.body)):
                if self.server.standin.stopping.wait(response.trickle):
                    return
                self.wfile.write(response.body[index : index + 1])
                self.wfile.flush()
        except OSError:  # the client gave up on the trickle: that is what the tests look for
            self.close_connection = True

    def _send_pieces(self, response: Response) -> None:
        assert response.chunks is not None
        chunked = response.declared_length is None
        headers = dict(response.headers)
        if chunked:
            headers["Transfer-Encoding"] = "chunked"
        else:
            headers["Content-Length"] = str(response.declared_length)
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        try:
            for piece in response.chunks():
                if not piece:
                    continue
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
        except OSError:  # the client refused the rest of the answer
            pass
        self.close_connection = True

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
