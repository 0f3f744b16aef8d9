"""TLS endpoints on 127.0.0.1 for the endpoint check: what a Front Door / Application Gateway / App Service binding
looks like from outside.

- `TlsEndpoint(certificate, key)`: completes the TLS handshake serving that certificate (and records the SNI names
  it was asked for), then closes the connection;
- `SilentEndpoint()`: accepts TCP connections and never answers the handshake (a hung load balancer);
- `refused_address()`: an address where nothing listens (connection refused).
"""

from __future__ import annotations

import socket
import ssl
import tempfile
import threading
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.standins.stack import free_port


class _Listener:
    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.port = int(self.sock.getsockname()[1])
        self.stopped = threading.Event()
        self.connections = 0
        self.held: list[socket.socket] = []
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> Any:
        self.thread.start()
        return self

    def _serve(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            with self.lock:
                self.connections += 1
            threading.Thread(target=self.handle, args=(conn,), daemon=True).start()

    def handle(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(timeout=5)
        self.sock.close()
        with self.lock:
            for conn in self.held:
                conn.close()
            self.held.clear()


class TlsEndpoint(_Listener):
    """Serves `certificate` (with `chain`) to every client, whatever SNI it asks for."""

    def __init__(self, certificate: x509.Certificate, key: Any, chain: list[x509.Certificate] | None = None) -> None:
        super().__init__()
        self.certificate = certificate
        self.server_names: list[str | None] = []
        with tempfile.TemporaryDirectory(prefix="tls-endpoint-") as work:
            cert_path, key_path = Path(work) / "cert.pem", Path(work) / "key.pem"
            pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in [certificate, *(chain or [])])
            cert_path.write_bytes(pem)
            key_path.write_bytes(
                key.private_bytes(
                    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
                )
            )
            self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.context.load_cert_chain(cert_path, key_path)
        self.context.sni_callback = self._record_sni

    def _record_sni(self, _sock: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, _ctx: ssl.SSLContext) -> None:
        with self.lock:
            self.server_names.append(server_name)

    def handle(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        try:
            with self.context.wrap_socket(conn, server_side=True) as tls:
                tls.recv(1)  # the checker sends nothing and closes; wait for that (or the timeout)
        except (OSError, ssl.SSLError):
            pass
        finally:
            conn.close()


class SilentEndpoint(_Listener):
    """Accepts TCP connections and never says a word: the TLS handshake never completes."""

    def handle(self, conn: socket.socket) -> None:
        with self.lock:
            self.held.append(conn)  # kept open, unanswered, until the endpoint stops


def refused_address() -> str:
    """An address on 127.0.0.1 where nothing listens: connecting is refused at once."""
    return f"127.0.0.1:{free_port()}"
