"""The Key Vault stand-in speaks the protocol the real `azure-keyvault-certificates` SDK uses.

Every test drives the real `CertificateClient` over HTTPS (test CA via REQUESTS_CA_BUNDLE) against the stand-in.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ResourceNotFoundError
from azure.keyvault.certificates import (
    CertificateClient,
    CertificateContentType,
    CertificateOperation,
    CertificatePolicy,
    KeyVaultCertificate,
)
from azure.keyvault.certificates._shared import http_challenge_cache
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs7, pkcs12

from tests.standins import certs, tls
from tests.standins.base import Response
from tests.standins.keyvault import CHALLENGE, KeyVaultStandIn

TOKEN = "tok"


class StaticCredential:
    """The smallest TokenCredential: always the same token; records the scopes and options asked for."""

    def __init__(self, token: str = TOKEN) -> None:
        self.token = token
        self.calls: list[tuple[tuple[str, ...], dict[str, Any]]] = []

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.calls.append((scopes, kwargs))
        return AccessToken(self.token, int(time.time()) + 3600)


@pytest.fixture
def ca(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tls.TestCA:
    ca = tls.make_test_ca(tmp_path / "ca")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(ca.bundle_path))
    return ca


@pytest.fixture
def vault(ca: tls.TestCA) -> Iterator[KeyVaultStandIn]:
    standin = KeyVaultStandIn(ca.server_context(), expected_token=TOKEN)
    standin.start()
    # The SDK caches challenges per host:port for the whole process; a reused port must start without one.
    # (Only this vault's entry: other stand-ins in the session count on theirs.)
    http_challenge_cache.remove_challenge_for_url(standin.url)
    yield standin
    http_challenge_cache.remove_challenge_for_url(standin.url)
    standin.stop()


def make_client(vault: KeyVaultStandIn, credential: StaticCredential | None = None, **kwargs: Any) -> CertificateClient:
    return CertificateClient(
        vault_url=vault.url,
        credential=credential or StaticCredential(),
        verify_challenge_resource=False,
        **kwargs,
    )


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def error_code(exc: HttpResponseError) -> str:
    assert exc.response is not None
    return str(exc.response.json()["error"]["code"])


# -- import ------------------------------------------------------------------------------------------------------


def test_import_pfx_with_password_and_tags(vault: KeyVaultStandIn) -> None:
    credential = StaticCredential()
    client = make_client(vault, credential)
    issued = certs.issue_certificate("www.example.com")
    pfx = certs.encode(issued, "PFX", "S3cret!pw")

    result = client.import_certificate("www-example-com", pfx, password="S3cret!pw", tags={"managed-by": "certrenew"})

    assert isinstance(result, KeyVaultCertificate)
    assert result.name == "www-example-com"
    assert result.properties.version is not None
    assert re.fullmatch(r"[0-9a-f]{32}", result.properties.version)
    assert result.id == f"{vault.url}/certificates/www-example-com/{result.properties.version}"
    assert result.key_id == f"{vault.url}/keys/www-example-com/{result.properties.version}"
    assert result.secret_id == f"{vault.url}/secrets/www-example-com/{result.properties.version}"
    assert result.properties.x509_thumbprint == hashlib.sha1(der(issued.certificate), usedforsecurity=False).digest()
    assert result.properties.x509_thumbprint.hex().upper() == certs.thumbprint_hex(issued.certificate)
    assert result.cer == der(issued.certificate)
    assert result.properties.not_before == issued.certificate.not_valid_before_utc.replace(microsecond=0)
    assert result.properties.expires_on == issued.certificate.not_valid_after_utc.replace(microsecond=0)
    assert result.properties.enabled is True
    assert result.properties.tags == {"managed-by": "certrenew"}
    assert result.policy is not None
    assert result.policy.subject == "CN=www.example.com"
    assert result.policy.san_dns_names == ["www.example.com"]
    assert result.policy.content_type == CertificateContentType.pkcs12
    assert result.policy.issuer_name == "Unknown"

    stored = vault.latest("www-example-com")
    assert stored is not None
    assert stored.version == result.properties.version
    assert stored.has_key
    assert stored.thumbprint == certs.thumbprint_hex(issued.certificate)
    assert stored.tags == {"managed-by": "certrenew"}
    assert stored.content_type == "application/x-pkcs12"
    assert [c.subject for c in stored.chain] == [c.subject for c in issued.chain]
    # The token was asked for the vault resource from the challenge, in the challenge's tenant.
    assert credential.calls[0][0] == ("https://vault.azure.net/.default",)
    assert credential.calls[0][1]["tenant_id"] == "72f988bf-86f1-41af-91ab-2d7cd011db47"


def test_imports_parsed_in_processes_are_validated_and_stored_alike(vault: KeyVaultStandIn) -> None:
    # The benchmark's storms parse imports in a process pool (Key Vault parses side by side on its own servers).
    vault.parse_in_processes(1)
    try:
        client = make_client(vault)
        issued = certs.issue_certificate("pooled.example.com")
        result = client.import_certificate("pooled", certs.encode(issued, "PFX", "S3cret!pw"), password="S3cret!pw")
        assert result.cer == der(issued.certificate)
        stored = vault.latest("pooled")
        assert stored is not None and stored.has_key
        with pytest.raises(HttpResponseError) as caught:
            client.import_certificate("pooled", certs.encode(issued, "PFX", "S3cret!pw"), password="wrong")
        assert caught.value.status_code == 400
        assert error_code(caught.value) == "BadParameter"
    finally:
        vault.parse_in_processes(None)


def test_import_pfx_wrong_password_is_bad_parameter(vault: KeyVaultStandIn) -> None:
    client = make_client(vault)
    pfx = certs.encode(certs.issue_certificate("a.example.com"), "PFX", "right-password")
    with pytest.raises(HttpResponseError) as caught:
        client.import_certificate("a", pfx, password="wrong-password")
    assert caught.value.status_code == 400
    assert error_code(caught.value) == "BadParameter"
    assert vault.latest("a") is None


def test_import_pem_with_pkcs8_key(vault: KeyVaultStandIn) -> None:
    client = make_client(vault)
    issued = certs.issue_certificate("pem.example.com")
    pem = certs.encode(issued, "PEM") + certs.private_key_pem(issued, pkcs8=True)

    result = client.import_certificate(
        "pem-cert",
        pem,
        policy=CertificatePolicy(content_type=CertificateContentType.pem),
        tags={"source": "avx"},
    )

    assert result.properties.x509_thumbprint.hex().upper() == certs.thumbprint_hex(issued.certificate)
    assert result.policy is not None
    assert result.policy.content_type == CertificateContentType.pem
    assert result.policy.subject == "CN=pem.example.com"
    stored = vault.latest("pem-cert")
    assert stored is not None
    assert stored.content_type == "application/x-pem-file"
    assert stored.has_key
    assert len(stored.chain) == 1
    # The SDK base64-encodes the PEM text itself; Key Vault accepts PEM or base64 of PEM.
    sent = vault.received("POST", "/certificates/pem-cert/import")[-1].json()
    assert base64.b64decode(sent["value"]) == pem
    assert sent["policy"]["secret_props"]["contentType"] == "application/x-pem-file"


def test_import_pem_with_pkcs1_key_is_rejected(vault: KeyVaultStandIn) -> None:
    client = make_client(vault)
    issued = certs.issue_certificate("pkcs1.example.com")
    pem = certs.encode(issued, "PEM") + certs.private_key_pem(issued, pkcs8=False)
    assert b"BEGIN RSA PRIVATE KEY" in pem
    with pytest.raises(HttpResponseError) as caught:
        client.import_certificate("pkcs1", pem, policy=CertificatePolicy(content_type=CertificateContentType.pem))
    assert caught.value.status_code == 400
    assert error_code(caught.value) == "BadParameter"
    assert vault.latest("pkcs1") is None


def test_import_pem_without_key_is_rejected(vault: KeyVaultStandIn) -> None:
    client = make_client(vault)
    pem = certs.encode(certs.issue_certificate("nokey.example.com"), "PEM")
    with pytest.raises(HttpResponseError) as caught:
        client.import_certificate("nokey", pem, policy=CertificatePolicy(content_type=CertificateContentType.pem))
    assert caught.value.status_code == 400
    assert error_code(caught.value) == "BadParameter"


def test_import_pem_without_pem_content_type_is_rejected(vault: KeyVaultStandIn) -> None:
    # Without policy.secret_props.contentType = application/x-pem-file the vault reads the value as PKCS#12.
    client = make_client(vault)
    issued = certs.issue_certificate("nopolicy.example.com")
    with pytest.raises(HttpResponseError) as caught:
        client.import_certificate("nopolicy", certs.encode(issued, "PEM") + certs.private_key_pem(issued))
    assert caught.value.status_code == 400
    assert error_code(caught.value) == "BadParameter"


def test_import_invalid_name_is_rejected(vault: KeyVaultStandIn) -> None:
    client = make_client(vault)
    pfx = certs.encode(certs.issue_certificate("x.example.com"), "PFX", "pw")
    with pytest.raises(HttpResponseError) as caught:
        client.import_certificate("x_example_com", pfx, password="pw")
    assert caught.value.status_code == 400
    assert error_code(caught.value) == "BadParameter"


# -- get ---------------------------------------------------------------------------------------------------------


def test_get_certificate_latest_and_by_version(vault: KeyVaultStandIn) -> None:
    client = make_client(vault)
    first = certs.issue_certificate("multi.example.com")
    second = certs.issue_certificate("multi.example.com")
    v1 = client.import_certificate("multi", certs.encode(first, "PFX", "pw"), password="pw", tags={"n": "1"})
    v2 = client.import_certificate("multi", certs.encode(second, "PFX", "pw"), password="pw", tags={"n": "2"})
    assert v1.properties.version != v2.properties.version

    latest = client.get_certificate("multi")
    assert latest.properties.version == v2.properties.version
    assert latest.cer == der(second.certificate)
    assert latest.properties.tags == {"n": "2"}
    assert latest.policy is not None
    assert latest.policy.subject == "CN=multi.example.com"

    assert v1.properties.version is not None
    old = client.get_certificate_version("multi", v1.properties.version)
    assert old.cer == der(first.certificate)
    assert old.properties.tags == {"n": "1"}

    versions = {p.version for p in client.list_properties_of_certificate_versions("multi")}
    assert versions == {v1.properties.version, v2.properties.version}
    assert [len(vault.certificates["multi"])] == [2]
    assert vault.received("GET", "/certificates/multi/")  # get_certificate asks for version "" (trailing slash)


def test_get_absent_certificate_is_404(vault: KeyVaultStandIn) -> None:
    client = make_client(vault)
    with pytest.raises(ResourceNotFoundError) as caught:
        client.get_certificate("absent")
    assert caught.value.status_code == 404
    assert error_code(caught.value) == "CertificateNotFound"
    with pytest.raises(ResourceNotFoundError):
        client.get_certificate_version("absent", "0" * 32)


# -- create (issuer Unknown) and merge ----------------------------------------------------------------------------


def test_create_with_unknown_issuer_then_merge(vault: KeyVaultStandIn) -> None:
    client = make_client(vault)
    policy = CertificatePolicy(issuer_name="Unknown", subject="CN=new.example.com", san_dns_names=["new.example.com"])

    started = time.monotonic()
    poller = client.begin_create_certificate("new-cert", policy=policy, tags={"managed-by": "certrenew"})
    operation = poller.result()  # finishes at once for issuer Unknown: the result is the pending operation
    assert time.monotonic() - started < 5
    assert isinstance(operation, CertificateOperation)
    assert operation.issuer_name == "Unknown"
    assert operation.status == "inProgress"
    assert operation.id == f"{vault.url}/certificates/new-cert/pending"
    assert operation.csr is not None
    create_request = vault.received("POST", "/certificates/new-cert/create")[-1].json()
    assert create_request["policy"]["issuer"]["name"] == "Unknown"
    assert create_request["policy"]["x509_props"]["subject"] == "CN=new.example.com"

    fetched = client.get_certificate_operation("new-cert")
    assert fetched.csr == operation.csr
    csr = x509.load_der_x509_csr(fetched.csr)
    assert csr.is_signature_valid
    assert csr.subject.rfc4514_string() == "CN=new.example.com"
    san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["new.example.com"]

    signed = certs.sign_csr(fetched.csr)
    assert signed.private_key is None
    merged = client.merge_certificate("new-cert", [der(signed.certificate), *(der(c) for c in signed.chain)])

    assert merged.name == "new-cert"
    assert merged.properties.version is not None
    assert merged.properties.x509_thumbprint.hex().upper() == certs.thumbprint_hex(signed.certificate)
    assert merged.cer == der(signed.certificate)
    assert merged.properties.tags == {"managed-by": "certrenew"}  # tags given at create time
    assert merged.policy is not None
    assert merged.policy.subject == "CN=new.example.com"
    stored = vault.latest("new-cert")
    assert stored is not None
    assert stored.version == merged.properties.version
    assert stored.source == "merge"
    assert stored.has_key  # the key made at create time stays in the vault
    assert len(stored.chain) == 1
    assert client.get_certificate("new-cert").properties.version == merged.properties.version

    with pytest.raises(ResourceNotFoundError) as caught:
        client.get_certificate_operation("new-cert")
    assert error_code(caught.value) == "PendingCertificateNotFound"


def test_create_pending_helper_and_merge_of_pem_chain(vault: KeyVaultStandIn) -> None:
    client = make_client(vault)
    csr_der = vault.create_pending("helper", "CN=helper.example.com")

    operation = client.get_certificate_operation("helper")
    assert operation.csr == csr_der
    assert operation.status == "inProgress"
    assert operation.issuer_name == "Unknown"

    signed = certs.sign_csr(csr_der)
    merged = client.merge_certificate("helper", [certs.encode(signed, "PEM")], tags={"renewed": "yes"})
    assert merged.properties.x509_thumbprint.hex().upper() == certs.thumbprint_hex(signed.certificate)
    assert merged.properties.tags == {"renewed": "yes"}
    stored = vault.latest("helper")
    assert stored is not None
    assert len(stored.chain) == 1
    assert "helper" not in vault.pending


def test_merge_with_certificate_for_another_key_is_rejected(vault: KeyVaultStandIn) -> None:
    client = make_client(vault)
    vault.create_pending("wrongkey", "CN=wrongkey.example.com")
    other = certs.issue_certificate("wrongkey.example.com")
    with pytest.raises(HttpResponseError) as caught:
        client.merge_certificate("wrongkey", [der(other.certificate)])
    assert caught.value.status_code == 400
    assert error_code(caught.value) == "BadParameter"
    assert "wrongkey" in vault.pending
    assert vault.latest("wrongkey") is None


def test_merge_without_pending_is_404(vault: KeyVaultStandIn) -> None:
    client = make_client(vault)
    signed = certs.issue_certificate("nopending.example.com")
    with pytest.raises(ResourceNotFoundError) as caught:
        client.merge_certificate("nopending", [der(signed.certificate)])
    assert error_code(caught.value) == "PendingCertificateNotFound"


def test_create_while_pending_is_conflict_and_pending_can_be_deleted(vault: KeyVaultStandIn) -> None:
    client = make_client(vault)
    first_csr = vault.create_pending("busy", "CN=busy.example.com")
    policy = CertificatePolicy(issuer_name="Unknown", subject="CN=busy.example.com")
    with pytest.raises(HttpResponseError) as caught:
        client.begin_create_certificate("busy", policy=policy)
    assert caught.value.status_code == 409

    deleted = client.delete_certificate_operation("busy")
    assert deleted.csr == first_csr
    operation = client.begin_create_certificate("busy", policy=policy).result()
    assert isinstance(operation, CertificateOperation)
    assert operation.csr != first_csr


def test_create_with_self_issuer_completes_at_once(vault: KeyVaultStandIn) -> None:
    client = make_client(vault)
    result = client.begin_create_certificate(
        "selfie", policy=CertificatePolicy(issuer_name="Self", subject="CN=selfie.example.com")
    ).result()
    assert isinstance(result, KeyVaultCertificate)
    assert result.policy is not None
    assert result.policy.subject == "CN=selfie.example.com"
    assert client.get_certificate_operation("selfie").status == "completed"


# -- authentication ------------------------------------------------------------------------------------------------


def test_challenge_happens_once_per_client(vault: KeyVaultStandIn) -> None:
    client = make_client(vault)
    issued = certs.issue_certificate("chal.example.com")
    client.import_certificate("chal", certs.encode(issued, "PFX", "pw"), password="pw")
    client.get_certificate("chal")
    with pytest.raises(ResourceNotFoundError):
        client.get_certificate("other")

    assert vault.challenge_count == 1
    first, *rest = vault.requests
    assert first.header("Authorization") is None
    assert first.body == b""  # the SDK elicits the challenge with a bodiless copy of the request
    assert first.path == "/certificates/chal/import"
    assert all(r.header("Authorization") == f"Bearer {TOKEN}" for r in rest)
    assert len(rest) == 3


def test_challenge_header_is_key_vaults(vault: KeyVaultStandIn) -> None:
    import requests

    answer = requests.get(f"{vault.url}/certificates/x/?api-version=7.5", timeout=5)
    assert answer.status_code == 401
    assert answer.headers["WWW-Authenticate"] == CHALLENGE
    assert answer.json()["error"]["code"] == "Unauthorized"


def test_wrong_token_is_rejected(vault: KeyVaultStandIn) -> None:
    client = make_client(vault, StaticCredential("not-the-token"))
    with pytest.raises(ClientAuthenticationError) as caught:
        client.get_certificate("anything")
    assert caught.value.status_code == 401
    assert vault.rejected_tokens >= 1


# -- fault injection and throttling ------------------------------------------------------------------------------


def test_fail_next_answers_injected_response(vault: KeyVaultStandIn) -> None:
    client = make_client(vault, retry_total=0)
    pfx = certs.encode(certs.issue_certificate("fail.example.com"), "PFX", "pw")
    vault.fail_next(1, Response.json({"error": {"code": "InternalError", "message": "boom"}}, status=500), "import")

    with pytest.raises(ResourceNotFoundError):  # not an import: not affected
        client.get_certificate("fail")
    with pytest.raises(HttpResponseError) as caught:
        client.import_certificate("fail", pfx, password="pw")
    assert caught.value.status_code == 500
    assert vault.latest("fail") is None

    client.import_certificate("fail", pfx, password="pw")  # the rule is used up
    assert vault.latest("fail") is not None


def test_fail_next_is_retried_by_default_sdk_policy(vault: KeyVaultStandIn) -> None:
    client = make_client(vault, retry_backoff_factor=0.01)
    vault.fail_next(2, Response.json({"error": {"code": "ServiceUnavailable", "message": "x"}}, status=503), "get")
    with pytest.raises(ResourceNotFoundError):
        client.get_certificate("retry")
    authorized = [r for r in vault.received("GET", "/certificates/retry/") if r.header("Authorization")]
    assert len(authorized) == 3  # two injected 503s, then the real 404


def test_throttle_answers_429_with_retry_after(vault: KeyVaultStandIn) -> None:
    client = make_client(vault, retry_total=0)
    pfx = certs.encode(certs.issue_certificate("busy.example.com"), "PFX", "pw")
    vault.throttle(1, 30.0, retry_after=7)

    client.import_certificate("throttled", pfx, password="pw")
    with pytest.raises(HttpResponseError) as caught:
        client.import_certificate("throttled", pfx, password="pw")
    assert caught.value.status_code == 429
    assert caught.value.response is not None
    assert caught.value.response.headers["Retry-After"] == "7"
    assert error_code(caught.value) == "Throttled"
    assert vault.throttled_count == 1
    client.get_certificate("throttled")  # reads are not limited

    vault.throttle(None, 0)
    client.import_certificate("throttled", pfx, password="pw")
    assert len(vault.certificates["throttled"]) == 2


def test_throttle_retry_after_is_honoured_by_sdk(vault: KeyVaultStandIn) -> None:
    client = make_client(vault)  # default retry policy
    pfx = certs.encode(certs.issue_certificate("honour.example.com"), "PFX", "pw")
    vault.throttle(1, 1.0, retry_after=1)
    client.import_certificate("honour", pfx, password="pw")
    started = time.monotonic()
    client.import_certificate("honour", pfx, password="pw")
    assert time.monotonic() - started >= 0.9
    assert vault.throttled_count >= 1
    assert len(vault.certificates["honour"]) == 2


# -- certificate material ----------------------------------------------------------------------------------------


def test_encode_formats() -> None:
    issued = certs.issue_certificate("formats.example.com")
    assert issued.private_key is not None
    leaf_der = der(issued.certificate)

    loaded = pkcs12.load_pkcs12(certs.encode(issued, "pfx", "pw"), b"pw")
    assert loaded.cert is not None
    assert der(loaded.cert.certificate) == leaf_der
    assert loaded.key is not None
    assert len(loaded.additional_certs) == 1
    assert certs.encode(issued, "PK12", "pw")
    with pytest.raises(ValueError, match="password"):
        certs.encode(issued, "PFX")

    for fmt in ("PEM", "CRT", "CERT"):
        pems = x509.load_pem_x509_certificates(certs.encode(issued, fmt))
        assert [der(c) for c in pems] == [leaf_der, der(certs.test_issuer()[0])]
        assert b"PRIVATE KEY" not in certs.encode(issued, fmt)
    for fmt in ("CER", "DER", "DERCER"):
        assert certs.encode(issued, fmt) == leaf_der
    for fmt in ("P7B", "P7C"):
        p7 = pkcs7.load_der_pkcs7_certificates(certs.encode(issued, fmt))
        # PKCS#7 holds a SET OF certificates: DER encoding sorts them, so the leaf need not come first.
        assert {der(c) for c in p7} == {leaf_der, der(certs.test_issuer()[0])}
    assert certs.encode(issued, "PK8").startswith(b"-----BEGIN PRIVATE KEY-----")
    assert certs.private_key_pem(issued, pkcs8=False).startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    with pytest.raises(ValueError, match="JKS"):
        certs.encode(issued, "JKS")


def test_issue_certificate_options() -> None:
    from datetime import UTC, datetime, timedelta

    start = datetime(2025, 1, 1, tzinfo=UTC)
    issued = certs.issue_certificate("opts.example.com", days=10, not_before=start, serial_number=4242)
    assert issued.certificate.not_valid_before_utc == start
    assert issued.certificate.not_valid_after_utc == start + timedelta(days=10)
    assert issued.certificate.serial_number == 4242
    san = issued.certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["opts.example.com"]
    issuer_cert, _ = certs.test_issuer()
    assert issued.certificate.issuer == issuer_cert.subject
    issued.certificate.verify_directly_issued_by(issuer_cert)
    assert (
        certs.issue_certificate("a.example.com").private_key is not certs.issue_certificate("a.example.com").private_key
    )


def test_reset_records_drops_leftover_faults(vault: KeyVaultStandIn) -> None:
    client = make_client(vault, retry_total=0)
    vault.fail_next(5, Response(status=500), "get")
    vault.throttle(0, 60.0)
    with pytest.raises(HttpResponseError):
        client.get_certificate("left")
    assert vault.challenge_count == 1

    vault.reset_records()
    assert vault.challenge_count == 1  # counters stay: the SDK's challenge cache is process-wide too
    assert vault.requests == []
    with pytest.raises(ResourceNotFoundError):  # the leftover 500s are gone
        client.get_certificate("left")
    pfx = certs.encode(certs.issue_certificate("left.example.com"), "PFX", "pw")
    client.import_certificate("left", pfx, password="pw")  # so is the throttle

    vault.reset()
    assert vault.certificates == {}
    assert vault.challenge_count == 0
