"""The certificate helpers (shared.core.certificates) on their own: formats, Key Vault names, one-time passwords,
parsing and the key rules. Pure functions over in-memory material from tests/standins/certs.py, no I/O."""

from __future__ import annotations

import string
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import pkcs7, pkcs12
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import strategies as st

from shared.core.certificates import (
    DEFAULT_FORMAT,
    FORMATS,
    KEY_VAULT_NAME_PATTERN,
    CertificateParseError,
    Storage,
    UnsupportedKeyType,
    check_key_vault_key,
    common_name_of,
    der_chain,
    derive_certificate_name,
    generate_password,
    key_vault_key_problem,
    open_pfx,
    order_leaf_first,
    parse_certificates,
    pem_bundle_with_pkcs8_key,
)
from tests.standins import certs

PFX_PASSWORD = "SENTINEL-caller-pfx-password-1Aa!"


@pytest.fixture(scope="module")
def issued() -> certs.IssuedCertificate:
    return certs.issue_certificate("www.contoso.com")


def self_signed(subject: x509.Name, san: list[str] | None = None) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())  # quick to make, unlike RSA
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
    )
    if san is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in san]), critical=False)
    return builder.sign(key, hashes.SHA256())


# -- formats, names, passwords ------------------------------------------------------------------------------------------


def test_the_format_table() -> None:
    assert FORMATS[DEFAULT_FORMAT].storage is Storage.IMPORT_PFX
    assert {name for name, info in FORMATS.items() if info.password_required} == {"PFX", "PK12", "JKS"}
    assert {name for name, info in FORMATS.items() if info.storage is Storage.UNSTORABLE} == {"PK8", "JKS"}
    assert all(name == info.name and name.isupper() for name, info in FORMATS.items())


@pytest.mark.parametrize(
    ("common_name", "expected"),
    [
        ("www.contoso.com", "www-contoso-com"),
        ("*.contoso.com", "wildcard-contoso-com"),
        ("  api..contoso.com. ", "api-contoso-com"),
        ("café.example", "caf-example"),
        ("Upper-Case.Example", "Upper-Case-Example"),
        ("a" * 126 + ".b", "a" * 126),  # cut to 127 characters, never ending in "-"
        ("---", None),
        ("*.", "wildcard"),
        ("", None),
    ],
)
def test_a_key_vault_name_from_a_common_name(common_name: str, expected: str | None) -> None:
    assert derive_certificate_name(common_name) == expected


@given(st.text(max_size=300))
def test_a_derived_name_is_always_a_key_vault_name(common_name: str) -> None:
    name = derive_certificate_name(common_name)
    assert name is None or KEY_VAULT_NAME_PATTERN.match(name)


def test_a_one_time_password_meets_avx_rules() -> None:
    specials = "!#%+-.=@^_~"
    passwords = {generate_password() for _ in range(50)}
    assert len(passwords) == 50  # never repeated
    for password in passwords:
        assert len(password) == 32 and set(password) <= set(string.ascii_letters + string.digits + specials)
        assert any(c.islower() for c in password) and any(c.isupper() for c in password)
        assert any(c.isdigit() for c in password) and any(c in specials for c in password)
    assert len(generate_password(8)) == 8


# -- common name, key rules ---------------------------------------------------------------------------------------------


def test_the_common_name_of_a_certificate(issued: certs.IssuedCertificate) -> None:
    assert common_name_of(issued.certificate) == "www.contoso.com"
    organisation_only = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Contoso")])
    assert common_name_of(self_signed(organisation_only, san=["api.contoso.com", "b.contoso.com"])) == "api.contoso.com"
    assert common_name_of(self_signed(organisation_only)) is None
    assert common_name_of(self_signed(organisation_only, san=[])) is None


@pytest.mark.parametrize(
    ("make_key", "problem"),
    [
        (lambda: certs.pooled_key(2048), None),
        (lambda: ec.generate_private_key(ec.SECP256R1()), None),
        (lambda: ec.generate_private_key(ec.SECP384R1()), None),
        (lambda: ec.generate_private_key(ec.SECP521R1()), None),
        (lambda: ec.generate_private_key(ec.SECP256K1()), None),
        (lambda: rsa.generate_private_key(65537, 1024), "an RSA key of 1024 bits"),
        (lambda: ec.generate_private_key(ec.SECP224R1()), "an EC key on curve secp224r1"),
        (lambda: ed25519.Ed25519PrivateKey.generate(), "an Ed25519 key"),
        (lambda: ed448.Ed448PrivateKey.generate(), "an Ed448 key"),
    ],
    ids=["rsa2048", "p256", "p384", "p521", "p256k", "rsa1024", "p224", "ed25519", "ed448"],
)
def test_the_keys_key_vault_can_hold(make_key: object, problem: str | None) -> None:
    assert key_vault_key_problem(make_key().public_key()) == problem  # type: ignore[operator]


def test_a_certificate_with_a_key_key_vault_cannot_hold_is_refused() -> None:
    unsupported = certs.issue_certificate("ed.contoso.com", key_type="ed25519")
    with pytest.raises(UnsupportedKeyType, match="an Ed25519 key, which Key Vault cannot hold"):
        check_key_vault_key(unsupported.certificate)


# -- PKCS#12 ------------------------------------------------------------------------------------------------------------


def test_the_leaf_of_a_pfx(issued: certs.IssuedCertificate) -> None:
    pfx = certs.encode(issued, "PFX", PFX_PASSWORD)
    assert open_pfx(pfx, PFX_PASSWORD).leaf == issued.certificate


def test_a_pfx_with_the_wrong_password_is_refused_without_showing_it(issued: certs.IssuedCertificate) -> None:
    pfx = certs.encode(issued, "PFX", PFX_PASSWORD)
    for password in ("wrong-password", None):
        with pytest.raises(CertificateParseError) as caught:
            open_pfx(pfx, password)
        assert "requested password" in str(caught.value) and PFX_PASSWORD not in str(caught.value)
    with pytest.raises(CertificateParseError):
        open_pfx(b"not a pfx", PFX_PASSWORD)


def test_a_pfx_without_its_private_key_is_refused(issued: certs.IssuedCertificate) -> None:
    encryption = serialization.BestAvailableEncryption(PFX_PASSWORD.encode())
    no_key = pkcs12.serialize_key_and_certificates(b"x", None, issued.certificate, None, encryption)
    with pytest.raises(CertificateParseError, match="no certificate with a private key"):
        open_pfx(no_key, PFX_PASSWORD)


def test_a_pfx_with_a_key_key_vault_cannot_hold_is_refused() -> None:
    unsupported = certs.issue_certificate("ed.contoso.com", key_type="ed25519")
    with pytest.raises(UnsupportedKeyType):
        open_pfx(certs.encode(unsupported, "PFX", PFX_PASSWORD), PFX_PASSWORD)


# -- PEM, DER, PKCS#7 ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["PEM", "CRT", "DER", "P7B"])
def test_certificates_from_every_download_format(issued: certs.IssuedCertificate, fmt: str) -> None:
    parsed = parse_certificates(certs.encode(issued, fmt))
    # PKCS#7 keeps a set of certificates, in no promised order: order_leaf_first puts the leaf back in front.
    assert order_leaf_first(parsed) == ([issued.certificate] if fmt == "DER" else [issued.certificate, *issued.chain])


def test_certificates_from_pem_pkcs7(issued: certs.IssuedCertificate) -> None:
    content = pkcs7.serialize_certificates([issued.certificate, *issued.chain], serialization.Encoding.PEM)
    assert order_leaf_first(parse_certificates(content)) == [issued.certificate, *issued.chain]


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"garbage",
        b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n",
        b"-----BEGIN PKCS7-----",
    ],
)
def test_content_that_is_no_certificate(content: bytes) -> None:
    with pytest.raises(CertificateParseError):
        parse_certificates(content)


def test_the_leaf_is_put_first(issued: certs.IssuedCertificate) -> None:
    ca = issued.chain[0]
    assert order_leaf_first([ca, issued.certificate]) == [issued.certificate, ca]
    assert order_leaf_first([issued.certificate, ca]) == [issued.certificate, ca]
    assert order_leaf_first([ca]) == [ca]


def test_the_der_chain(issued: certs.IssuedCertificate) -> None:
    chain = der_chain([issued.certificate, *issued.chain])
    assert [x509.load_der_x509_certificate(d) for d in chain] == [issued.certificate, *issued.chain]


# -- PEM bundle with a PKCS#8 key ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("key_form", ["pkcs8-pem", "pkcs1-pem", "pkcs8-der", "encrypted-pem"])
def test_the_pem_key_vault_imports(issued: certs.IssuedCertificate, key_form: str) -> None:
    key = issued.private_key
    assert isinstance(key, rsa.RSAPrivateKey)
    password = None
    if key_form == "pkcs8-pem":
        key_bytes = certs.private_key_pem(issued, pkcs8=True)
    elif key_form == "pkcs1-pem":
        key_bytes = certs.private_key_pem(issued, pkcs8=False)
    elif key_form == "pkcs8-der":
        key_bytes = key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    else:
        password = PFX_PASSWORD
        key_bytes = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(password.encode()),
        )
    bundle = pem_bundle_with_pkcs8_key([issued.certificate, *issued.chain], key_bytes, password)
    assert bundle.startswith(b"-----BEGIN PRIVATE KEY-----")  # unencrypted PKCS#8 first, then the chain
    assert x509.load_pem_x509_certificates(bundle) == [issued.certificate, *issued.chain]
    loaded = serialization.load_pem_private_key(bundle, None)
    assert loaded.private_numbers() == key.private_numbers()  # type: ignore[union-attr]


def test_a_key_that_does_not_match_the_certificate_is_refused(issued: certs.IssuedCertificate) -> None:
    other = certs.issue_certificate("other.contoso.com")  # the next key of the pool
    assert other.private_key is not None
    with pytest.raises(CertificateParseError, match="does not match the certificate"):
        pem_bundle_with_pkcs8_key([issued.certificate], certs.private_key_pem(other), None)


@pytest.mark.parametrize(
    "key_bytes", [b"", b"garbage", b"-----BEGIN PRIVATE KEY-----\nxx\n-----END PRIVATE KEY-----\n"]
)
def test_a_key_that_cannot_be_read_is_refused(issued: certs.IssuedCertificate, key_bytes: bytes) -> None:
    with pytest.raises(CertificateParseError, match="could not be read"):
        pem_bundle_with_pkcs8_key([issued.certificate], key_bytes, None)


def test_an_encrypted_key_without_its_password_is_refused(issued: certs.IssuedCertificate) -> None:
    key = issued.private_key
    assert isinstance(key, rsa.RSAPrivateKey)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(PFX_PASSWORD.encode()),
    )
    with pytest.raises(CertificateParseError):
        pem_bundle_with_pkcs8_key([issued.certificate], encrypted, None)
