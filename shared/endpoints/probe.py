"""TLS endpoints: which certificate does an endpoint really serve?

`served_certificate` opens a TCP connection to the endpoint's address, starts TLS with SNI = the host name clients
use, and reads the leaf certificate it serves — without verifying it: an expired, self-signed or privately issued
certificate is exactly what the check must be able to see. Nothing is sent after the handshake.

Everything (name resolution aside) happens within one deadline per endpoint; name resolution is bounded by the
caller's wait (shared.endpoints.run). Failures come back as a `Problem` with a stable reason, never an exception.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time

from shared.core.settings import EndpointCheck
from shared.endpoints.decisions import (
    DNS_FAILED,
    NO_CERTIFICATE,
    TIMEOUT,
    TLS_FAILED,
    UNREACHABLE,
    Problem,
    ServedCertificate,
    served_from_der,
)

TIMEOUT_SECONDS = 5.0  # connect and TLS handshake together, per endpoint

_context_lock = threading.Lock()
_context: ssl.SSLContext | None = None


def _reading_context() -> ssl.SSLContext:
    """One client context for every probe (thread-safe for wrap_socket): TLS, but no verification."""
    global _context
    with _context_lock:
        if _context is None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            # Deliberate: the check reads what the endpoint serves, trusted or not (nothing is sent over it).
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE  # a certificate reader: nothing is sent
            _context = context
        return _context


def served_certificate(check: EndpointCheck, timeout: float = TIMEOUT_SECONDS) -> ServedCertificate | Problem:
    """The leaf certificate `check.address` serves for SNI `check.host`, or why it could not be read."""
    deadline = time.monotonic() + timeout
    where = f"{check.host} at {check.address}"
    try:
        raw = socket.create_connection((check.address_host, check.port), timeout=timeout)
    except socket.gaierror:
        return Problem(DNS_FAILED, f"{check.address_host} could not be resolved")
    except TimeoutError:
        return Problem(TIMEOUT, f"{where}: no TCP connection within {timeout:g} s")
    except ConnectionRefusedError:
        return Problem(UNREACHABLE, f"{where} refused the connection")
    except OSError as exc:
        return Problem(UNREACHABLE, f"{where} could not be reached ({exc.strerror or type(exc).__name__})")
    try:
        left = deadline - time.monotonic()
        if left <= 0:
            return Problem(TIMEOUT, f"{where}: no TLS handshake within {timeout:g} s")
        raw.settimeout(left)  # the handshake as a whole is bounded by what is left of the deadline
        with _reading_context().wrap_socket(raw, server_hostname=check.host, do_handshake_on_connect=False) as tls:
            tls.do_handshake()
            der = tls.getpeercert(binary_form=True)
    except TimeoutError:
        return Problem(TIMEOUT, f"{where}: no TLS handshake within {timeout:g} s")
    except ssl.SSLError as exc:
        return Problem(TLS_FAILED, f"{where}: TLS handshake failed ({exc.reason or type(exc).__name__})")
    except OSError as exc:  # reset or closed during the handshake
        return Problem(TLS_FAILED, f"{where}: the connection ended during the TLS handshake ({type(exc).__name__})")
    finally:
        raw.close()
    if not der:
        return Problem(NO_CERTIFICATE, f"{where} completed the TLS handshake without a certificate")
    try:
        return served_from_der(der)
    except ValueError:
        return Problem(NO_CERTIFICATE, f"{where} served a certificate that could not be read")
