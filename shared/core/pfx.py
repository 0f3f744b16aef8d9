"""Opening a PKCS#12 off the worker's interpreter lock.

cryptography checks a PFX's RSA key when it loads it (`pkcs12.load_key_and_certificates` has no way around it) and
holds the interpreter lock for the whole check: about 35 ms of CPU for a 2048-bit key, during which none of the
worker's other threads (other renewals waiting on AVX, Key Vault or the tables) runs. A burst of renewals answered by
AVX at the same moment queued up behind each other's checks (issue 28). The check stays, so an unusable key is still
refused before Key Vault is written; it runs in helper processes (`python -m shared.core.pfx`) that the worker starts
on first use and keeps, so the worker's threads go on while a key is checked.

Each helper serves one request at a time over its stdin/stdout; a pool of PFX_OPEN_PROCESSES helpers serves the
worker's threads. What crosses the pipe: the PFX and its password in, the leaf and the other certificates (DER) or a
refusal out. A helper gets no environment but the module path (none of the app's settings, so none of its secrets),
and the password never appears in its command line. A helper that dies is replaced; content that kills two helpers
in a row is refused (in the worker itself it would have ended every invocation in flight); one that takes longer than
PFX_OPEN_TIMEOUT_SECONDS is refused and its helper killed. When no helper can be started the PFX is opened in the worker.
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import select
import struct
import subprocess  # nosec B404: starts only our own interpreter on this module (helper_command)
import sys
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from shared.core.certificates import (
    CertificateParseError,
    PfxContents,
    UnsupportedKeyType,
    open_pfx,
)

if TYPE_CHECKING:
    from cryptography import x509

log = logging.getLogger("certrenew.pfx")

PFX_OPEN_TIMEOUT_SECONDS = 30.0  # a 2048-bit PFX opens in ~40 ms; a PBKDF2 count chosen to stall us does not
HELPER_START_TIMEOUT_SECONDS = 20.0
RETRY_START_AFTER_SECONDS = (
    60.0  # after a helper could not be started, open in the worker this long before trying again
)

# The protocol, one request at a time: the helper writes READY once, then for each request
#   in:  u8 has_password, u32 len, password (UTF-8), u32 len, pfx
#   out: OK, u32 count, (u32 len, DER) x count   -- the leaf first
#        REFUSED_CONTENT / REFUSED_KEY, u32 len, message (the app's own text, never the content)
READY = b"R"
OK = b"K"
REFUSED_CONTENT = b"E"
REFUSED_KEY = b"U"
_U32 = struct.Struct(">I")
MAX_FRAME = 64 * 1024 * 1024


class HelperLost(Exception):
    """The helper ended or broke the protocol (never carries the content)."""


class HelperTimedOut(HelperLost):
    """The helper did not answer in time."""


class _Helper:
    def __init__(self, command: Sequence[str], env: dict[str, str]) -> None:
        self.process = subprocess.Popen(  # nosec B603: our own interpreter and module, no shell, no caller input
            list(command),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            close_fds=True,
        )
        self._out = self.process.stdout.fileno() if self.process.stdout else -1
        self._buffer = bytearray()
        if self._read_exact(1, time.monotonic() + HELPER_START_TIMEOUT_SECONDS) != READY:
            self.close()
            raise HelperLost("the helper did not start")

    def open(self, pfx: bytes, password: str | None, timeout: float) -> PfxContents:
        from cryptography import x509

        secret = password.encode() if password is not None else b""
        request = b"".join((bytes([password is not None]), _U32.pack(len(secret)), secret, _U32.pack(len(pfx)), pfx))
        deadline = time.monotonic() + timeout
        stdin = self.process.stdin
        try:
            if stdin is None:
                raise OSError("no pipe")
            stdin.write(request)
            stdin.flush()
        except (OSError, ValueError):
            raise HelperLost("the helper ended before taking the request") from None
        status = self._read_exact(1, deadline)
        if status == OK:
            (count,) = _U32.unpack(self._read_exact(4, deadline))
            ders = [self._read_exact(self._length(deadline), deadline) for _ in range(count)]
            if not ders:
                raise HelperLost("the helper answered no certificate")
            certificates = [x509.load_der_x509_certificate(der) for der in ders]
            return PfxContents(certificates[0], tuple(certificates[1:]))
        if status in (REFUSED_CONTENT, REFUSED_KEY):
            message = self._read_exact(self._length(deadline), deadline).decode("utf-8", "replace")
            raise (CertificateParseError if status == REFUSED_CONTENT else UnsupportedKeyType)(message)
        raise HelperLost("the helper broke the protocol")

    def _length(self, deadline: float) -> int:
        (length,) = _U32.unpack(self._read_exact(4, deadline))
        if length > MAX_FRAME:
            raise HelperLost("the helper broke the protocol")
        return length

    def _read_exact(self, size: int, deadline: float) -> bytes:
        while len(self._buffer) < size:
            left = deadline - time.monotonic()
            if left <= 0:
                raise HelperTimedOut("the helper did not answer in time")
            ready, _, _ = select.select([self._out], [], [], left)
            if not ready:
                continue
            chunk = os.read(self._out, max(65536, size - len(self._buffer)))
            if not chunk:
                raise HelperLost("the helper ended")
            self._buffer += chunk
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    def close(self) -> None:
        for stream in (self.process.stdin, self.process.stdout):
            try:
                if stream:
                    stream.close()
            except OSError:
                pass
        if self.process.poll() is None:
            self.process.kill()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:  # pragma: no cover - a killed child always ends
            pass


def helper_command() -> list[str]:
    """Our interpreter running this module, with the worker's module path given on the command line: -E keeps the
    helper from reading PYTHON* variables, and the environment it gets holds nothing else."""
    bootstrap = "import sys; sys.path[:0] = sys.argv[1:]; from shared.core.pfx import serve; serve()"
    return [sys.executable, "-E", "-c", bootstrap, *[p for p in sys.path if p]]


def helper_environment() -> dict[str, str]:
    return {name: os.environ[name] for name in ("PATH", "SYSTEMROOT", "LANG") if name in os.environ}


class PfxOpener:
    """Opens PFXs in up to `processes` helper processes (0: in this process), one request per helper at a time."""

    def __init__(
        self,
        processes: int,
        *,
        timeout: float = PFX_OPEN_TIMEOUT_SECONDS,
        command: Sequence[str] | None = None,
    ) -> None:
        self.processes = processes
        self.timeout = timeout
        self._command = list(command) if command else helper_command()
        self._idle: queue.LifoQueue[_Helper | object] = queue.LifoQueue()
        self._lock = threading.Lock()
        self._started = 0
        self._helpers: set[_Helper] = set()  # started and not discarded
        self._in_worker_until = 0.0
        self._closed = False

    def open(self, pfx: bytes, password: str | None) -> PfxContents:
        if self.processes <= 0 or time.monotonic() < self._in_worker_until:
            return open_pfx(pfx, password)
        for attempt in (1, 2):
            helper = self._take()
            if helper is None:
                return open_pfx(pfx, password)
            try:
                contents = helper.open(pfx, password, self.timeout)
            except HelperTimedOut:
                self._discard(helper)
                raise CertificateParseError(f"the PKCS#12 content was not opened within {self.timeout:g} s") from None
            except HelperLost as lost:
                self._discard(helper)
                if attempt == 2:
                    raise CertificateParseError("the PKCS#12 content ended the process that opened it, twice") from None
                log.warning("The PFX helper process ended (%s); opening the PFX in a new one", lost)
                continue
            except (CertificateParseError, UnsupportedKeyType):
                self._give_back(helper)  # the content was refused; the helper answered in full
                raise
            except BaseException:
                self._discard(helper)  # interrupted mid-answer: its pipe holds the rest of it
                raise
            self._give_back(helper)
            return contents
        raise AssertionError("unreachable")  # pragma: no cover

    def _take(self) -> _Helper | None:
        """An idle helper, a new one while fewer than `processes` run, else the next one given back. None: none could
        be started (the caller opens the PFX in the worker)."""
        while True:
            if time.monotonic() < self._in_worker_until:
                # A start just failed: every thread that waited for it opens in the worker, none retries at once;
                # each passes the wake on to the next waiter.
                self._idle.put_nowait(_WAKE)
                return None
            try:
                helper = self._idle.get_nowait()
            except queue.Empty:
                helper = None
            if isinstance(helper, _Helper):
                return helper
            with self._lock:
                start = self._started < self.processes
                if start:
                    self._started += 1
            if start:
                return self._start()
            helper = self._idle.get()
            if isinstance(helper, _Helper):
                return helper
            # woken by a discarded helper: its place is free, go round and take it

    def helper_pids(self) -> list[int]:
        """Process ids of the helpers this opener runs (for operators' diagnostics and tests)."""
        with self._lock:
            return sorted(helper.process.pid for helper in self._helpers)

    def _start(self) -> _Helper | None:
        try:
            helper = _Helper(self._command, helper_environment())
        except (OSError, HelperLost) as problem:
            with self._lock:
                self._started -= 1
                self._in_worker_until = time.monotonic() + RETRY_START_AFTER_SECONDS
            log.warning(
                "No PFX helper process could be started (%s); PFXs are opened in the worker for %.0f s",
                type(problem).__name__,
                RETRY_START_AFTER_SECONDS,
            )
            self._idle.put_nowait(_WAKE)  # threads waiting for this helper would otherwise wait for ever
            return None
        with self._lock:
            self._helpers.add(helper)
        return helper

    def _give_back(self, helper: _Helper) -> None:
        if self._closed:
            self._forget(helper)
        else:
            self._idle.put(helper)

    def _forget(self, helper: _Helper) -> None:
        helper.close()
        with self._lock:
            self._helpers.discard(helper)

    def _discard(self, helper: _Helper) -> None:
        self._forget(helper)
        with self._lock:
            self._started -= 1
        # a thread waiting for an idle helper may now start one: wake it with nothing and let it try again
        self._idle.put_nowait(_WAKE)

    def close(self) -> None:
        self._closed = True
        while True:
            if time.monotonic() < self._in_worker_until:
                # A start just failed: every thread that waited for it opens in the worker, none retries at once;
                # each passes the wake on to the next waiter.
                self._idle.put_nowait(_WAKE)
                return None
            try:
                helper = self._idle.get_nowait()
            except queue.Empty:
                return
            if isinstance(helper, _Helper):
                self._forget(helper)


_WAKE = object()  # put in the idle queue to wake a thread waiting for a helper when one is discarded


# -- the helper process ----------------------------------------------------------------------------------------------


def serve() -> None:
    """The helper's loop: answer requests from stdin on stdout until stdin ends."""
    import cryptography.hazmat.primitives.serialization.pkcs12  # noqa: F401 - loaded before READY, not per request
    from cryptography.hazmat.primitives.serialization import Encoding

    source, sink = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # anything printed by accident goes to stderr (discarded), never into the protocol
    sink.write(READY)
    sink.flush()
    while True:
        flag = source.read(1)
        if not flag:
            return
        password_bytes = _read_frame(source)
        pfx = _read_frame(source)
        if password_bytes is None or pfx is None:
            return
        password = password_bytes.decode("utf-8", "surrogateescape") if flag == b"\x01" else None
        try:
            contents = open_pfx(pfx, password)
        except UnsupportedKeyType as refused:
            sink.write(REFUSED_KEY + _frame(str(refused).encode()))
        except CertificateParseError as refused:
            sink.write(REFUSED_CONTENT + _frame(str(refused).encode()))
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException:  # a panic of native code on hostile content is a refusal of that content
            sink.write(REFUSED_CONTENT + _frame(b"the PKCS#12 content could not be opened"))
        else:
            ders = [c.public_bytes(Encoding.DER) for c in (contents.leaf, *contents.chain)]
            sink.write(OK + _U32.pack(len(ders)) + b"".join(_frame(der) for der in ders))
        sink.flush()


def _frame(data: bytes) -> bytes:
    return _U32.pack(len(data)) + data


def _read_frame(source: object) -> bytes | None:
    header = source.read(4)  # type: ignore[attr-defined]
    if len(header) < 4:
        return None
    (length,) = _U32.unpack(header)
    if length > MAX_FRAME:
        return None
    data = source.read(length)  # type: ignore[attr-defined]
    return data if len(data) == length else None


# -- the worker's opener ---------------------------------------------------------------------------------------------

_opener: PfxOpener | None = None
_opener_lock = threading.Lock()


def worker_opener() -> PfxOpener:
    """The worker process's one opener, sized by PFX_OPEN_PROCESSES; its helpers start when a PFX is first opened and
    are kept for the process's life (replaced only when the setting changes, as the local stack and tests do)."""
    global _opener
    from shared.core.settings import load_settings

    processes = load_settings().worker.pfx_processes
    opener = _opener
    if opener is not None and opener.processes == processes:
        return opener
    with _opener_lock:
        if _opener is None or _opener.processes != processes:
            if _opener is not None:
                _opener.close()
                atexit.unregister(_opener.close)
            _opener = PfxOpener(processes)
            atexit.register(_opener.close)
        return _opener


def leaf_of_pfx(pfx: bytes, password: str | None) -> x509.Certificate:
    """The leaf of a PFX whose key was checked (type, match, RSA validity), opened by the worker's helpers."""
    return worker_opener().open(pfx, password).leaf
