"""Opening PFXs in helper processes (shared.core.pfx, issue 28): the same answers as opening them in the worker, the
check done in another process, helpers that die, stall or cannot start, and no secret in a helper's command line or
environment. Real helper processes over real pipes; PFXs from tests/standins/certs.py."""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from shared.core import pfx
from shared.core.certificates import CertificateParseError, UnsupportedKeyType, open_pfx
from shared.core.errors import SettingsError
from shared.core.pfx import PfxOpener
from shared.core.settings import Settings
from tests.standins import certs

PFX_PASSWORD = "SENTINEL-pfx-helper-password-1Aa!"
APP_SECRET = "SENTINEL-app-secret-in-the-environment"


@pytest.fixture
def opener() -> Iterator[PfxOpener]:
    opened = PfxOpener(1)
    yield opened
    opened.close()


@pytest.fixture(scope="module")
def issued() -> certs.IssuedCertificate:
    return certs.issue_certificate("helper.contoso.com")


def _pfx(issued: certs.IssuedCertificate, password: str = PFX_PASSWORD) -> bytes:
    return certs.encode(issued, "PFX", password)


def _refusals(issued: certs.IssuedCertificate) -> list[tuple[str, bytes, str | None, type[Exception], str]]:
    encryption = serialization.BestAvailableEncryption(PFX_PASSWORD.encode())
    no_key = pkcs12.serialize_key_and_certificates(b"x", None, issued.certificate, None, encryption)
    ed25519 = certs.issue_certificate("ed.contoso.com", key_type="ed25519")
    return [
        ("wrong password", _pfx(issued), "wrong-password", CertificateParseError, "requested password"),
        ("no password", _pfx(issued), None, CertificateParseError, "requested password"),
        ("not a pfx", b"not a pfx", PFX_PASSWORD, CertificateParseError, "requested password"),
        ("no key", no_key, PFX_PASSWORD, CertificateParseError, "no certificate with a private key"),
        ("ed25519", _pfx(ed25519), PFX_PASSWORD, UnsupportedKeyType, "Key Vault cannot hold"),
    ]


def test_a_helper_opens_a_pfx_as_the_worker_would(opener: PfxOpener, issued: certs.IssuedCertificate) -> None:
    here = open_pfx(_pfx(issued), PFX_PASSWORD)
    there = opener.open(_pfx(issued), PFX_PASSWORD)

    assert there.leaf == issued.certificate == here.leaf
    assert there.chain == here.chain and len(there.chain) == len(issued.chain) >= 1


def test_refusals_are_the_same_in_a_helper_and_the_helper_goes_on(
    opener: PfxOpener, issued: certs.IssuedCertificate
) -> None:
    for label, content, password, refusal, text in _refusals(issued):
        with pytest.raises(refusal, match=text) as in_helper:
            opener.open(content, password)
        with pytest.raises(refusal, match=text) as in_worker:
            open_pfx(content, password)
        assert str(in_helper.value) == str(in_worker.value), label
        assert PFX_PASSWORD not in str(in_helper.value)
    assert len(opener.helper_pids()) == 1  # one helper answered every refusal and is still there
    assert opener.open(_pfx(issued), PFX_PASSWORD).leaf == issued.certificate


def test_a_key_that_is_not_the_leafs_is_refused(
    issued: certs.IssuedCertificate, monkeypatch: pytest.MonkeyPatch
) -> None:
    # cryptography will not write such a PFX (its serializer refuses the pair), so its loader is given one here.
    other = certs.issue_certificate("other.contoso.com")
    monkeypatch.setattr(pkcs12, "load_key_and_certificates", lambda *_: (other.private_key, issued.certificate, []))
    with pytest.raises(CertificateParseError, match="does not match its certificate"):
        open_pfx(b"a pfx", PFX_PASSWORD)


def test_the_key_check_runs_in_the_helper_not_in_the_worker(
    opener: PfxOpener, issued: certs.IssuedCertificate, monkeypatch: pytest.MonkeyPatch
) -> None:
    def not_here(*_: object) -> None:
        raise AssertionError("the PFX was opened in the worker's interpreter")

    monkeypatch.setattr(pfx, "open_pfx", not_here)
    assert opener.open(_pfx(issued), PFX_PASSWORD).leaf == issued.certificate
    (pid,) = opener.helper_pids()
    assert pid != os.getpid()


def test_threads_share_at_most_the_configured_helpers(issued: certs.IssuedCertificate) -> None:
    opener = PfxOpener(2)
    seen: set[int] = set()
    errors: list[BaseException] = []

    def renew() -> None:
        try:
            for _ in range(4):
                assert opener.open(_pfx(issued), PFX_PASSWORD).leaf == issued.certificate
                seen.update(opener.helper_pids())
        except BaseException as exc:  # reported below, on the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=renew) for _ in range(8)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    finally:
        opener.close()
    assert not errors
    assert 1 <= len(seen) <= 2


def test_a_helper_that_died_is_replaced(
    opener: PfxOpener, issued: certs.IssuedCertificate, caplog: pytest.LogCaptureFixture
) -> None:
    opener.open(_pfx(issued), PFX_PASSWORD)
    (first,) = opener.helper_pids()
    os.kill(first, 9)

    with caplog.at_level(logging.WARNING, logger="certrenew.pfx"):
        assert opener.open(_pfx(issued), PFX_PASSWORD).leaf == issued.certificate
    (second,) = opener.helper_pids()
    assert second != first
    assert "helper process ended" in caplog.text


# A helper that takes the request and dies on it, every time: what content that kills the opener would do.
DIES_ON_EVERY_REQUEST = (
    "import sys; sys.stdout.buffer.write(b'R'); sys.stdout.buffer.flush(); sys.stdin.buffer.read(1); sys.exit(3)"
)
# A helper that takes the request and never answers: what a PFX with a stalling PBKDF2 count would do.
NEVER_ANSWERS = "import sys, time; sys.stdout.buffer.write(b'R'); sys.stdout.buffer.flush(); time.sleep(600)"


def test_content_that_ends_two_helpers_is_refused(issued: certs.IssuedCertificate) -> None:
    opener = PfxOpener(1, command=[sys.executable, "-c", DIES_ON_EVERY_REQUEST])
    try:
        with pytest.raises(CertificateParseError, match="ended the process that opened it, twice"):
            opener.open(_pfx(issued), PFX_PASSWORD)
        assert opener.helper_pids() == []
    finally:
        opener.close()


def test_content_that_stalls_a_helper_is_refused_and_the_helper_killed(issued: certs.IssuedCertificate) -> None:
    opener = PfxOpener(1, timeout=0.5, command=[sys.executable, "-c", NEVER_ANSWERS])
    try:
        with pytest.raises(CertificateParseError, match=r"not opened within 0\.5 s"):
            opener.open(_pfx(issued), PFX_PASSWORD)
        assert opener.helper_pids() == []  # killed and reaped, not left sleeping
    finally:
        opener.close()


def test_without_a_helper_the_pfx_is_opened_in_the_worker(
    issued: certs.IssuedCertificate, caplog: pytest.LogCaptureFixture
) -> None:
    opener = PfxOpener(1, command=[str(Path("/nonexistent/python"))])
    with caplog.at_level(logging.WARNING, logger="certrenew.pfx"):
        assert opener.open(_pfx(issued), PFX_PASSWORD).leaf == issued.certificate
        assert opener.open(_pfx(issued), PFX_PASSWORD).leaf == issued.certificate
    assert caplog.text.count("No PFX helper process could be started") == 1  # then the worker, quietly, for a while
    with pytest.raises(CertificateParseError):
        opener.open(_pfx(issued), "wrong-password")


# A helper that ends before it is ready, slowly enough that other threads are waiting for it by then.
ENDS_BEFORE_READY = "import time; time.sleep(0.5)"


def test_threads_waiting_for_a_helper_that_could_not_start_open_in_the_worker(
    issued: certs.IssuedCertificate,
) -> None:
    opener = PfxOpener(1, command=[sys.executable, "-c", ENDS_BEFORE_READY])
    leaves: list[object] = []

    def renew() -> None:
        leaves.append(opener.open(_pfx(issued), PFX_PASSWORD).leaf)

    threads = [threading.Thread(target=renew, daemon=True) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    opener.close()
    assert not any(thread.is_alive() for thread in threads), "a thread waited for ever for a helper that never came"
    assert leaves == [issued.certificate] * 4
    assert opener.helper_pids() == []


def test_processes_0_opens_in_the_worker(issued: certs.IssuedCertificate) -> None:
    opener = PfxOpener(0)
    assert opener.open(_pfx(issued), PFX_PASSWORD).leaf == issued.certificate
    assert opener.helper_pids() == []


def test_no_secret_reaches_a_helpers_command_line_or_environment(
    issued: certs.IssuedCertificate, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AVX_PASSWORD", APP_SECRET)
    monkeypatch.setenv("WEBHOOK_HMAC_SECRET", APP_SECRET)
    opener = PfxOpener(1)
    try:
        opener.open(_pfx(issued), PFX_PASSWORD)
        (pid,) = opener.helper_pids()
        seen = Path(f"/proc/{pid}/cmdline").read_bytes() + Path(f"/proc/{pid}/environ").read_bytes()
    finally:
        opener.close()
    assert PFX_PASSWORD.encode() not in seen
    assert APP_SECRET.encode() not in seen
    assert b"AVX_PASSWORD" not in seen


def test_pfx_open_processes_is_read_and_checked_by_name() -> None:
    assert Settings({}).worker.pfx_processes == 1
    assert Settings({"PFX_OPEN_PROCESSES": "0"}).worker.pfx_processes == 0
    assert Settings({"PFX_OPEN_PROCESSES": "4"}).worker.pfx_processes == 4
    for wrong in ("9", "-1", "two", "1.5"):
        with pytest.raises(SettingsError, match="PFX_OPEN_PROCESSES"):
            Settings({"PFX_OPEN_PROCESSES": wrong}).worker  # noqa: B018 - reading the group validates it


def test_the_worker_opener_follows_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.core.settings import reset_settings

    monkeypatch.setenv("PFX_OPEN_PROCESSES", "0")
    reset_settings()
    try:
        assert pfx.worker_opener().processes == 0
        monkeypatch.setenv("PFX_OPEN_PROCESSES", "2")
        reset_settings()
        assert pfx.worker_opener().processes == 2
        assert pfx.worker_opener() is pfx.worker_opener()
    finally:
        monkeypatch.delenv("PFX_OPEN_PROCESSES")
        reset_settings()
