"""Test certificate material for the stand-ins and the tests (built with `cryptography` only).

One module-level issuing CA ("certrenew test issuing CA") signs every leaf. RSA keys come from a small
pool per key size, because generating 2048-bit keys is slow; consecutive certificates get different
keys from the pool.
"""

from __future__ import annotations

import hashlib
import itertools
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from cryptography.hazmat.primitives.serialization import pkcs7, pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ISSUER_COMMON_NAME = "certrenew test issuing CA"
KEY_POOL_SIZE = 4


@dataclass
class IssuedCertificate:
    certificate: x509.Certificate
    private_key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey | None  # None when signed from a CSR
    chain: list[x509.Certificate] = field(default_factory=list)  # issuing CA cert(s), leaf excluded

    @property
    def common_name(self) -> str:
        values = self.certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        return str(values[0].value) if values else ""


_lock = threading.Lock()
_issuer: tuple[x509.Certificate, rsa.RSAPrivateKey] | None = None
_key_pools: dict[int, list[rsa.RSAPrivateKey]] = {}
_key_counters: dict[int, itertools.count[int]] = {}


def _new_key(key_size: int) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=key_size)


def pooled_key(key_size: int = 2048) -> rsa.RSAPrivateKey:
    """A key from the pool for `key_size` (round robin over KEY_POOL_SIZE keys, made on first use)."""
    with _lock:
        pool = _key_pools.setdefault(key_size, [])
        counter = _key_counters.setdefault(key_size, itertools.count())
        index = next(counter) % KEY_POOL_SIZE
        if index >= len(pool):
            pool.append(_new_key(key_size))
        return pool[index]


def test_issuer() -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    """The cached issuing CA (certificate, key) that signs every test leaf."""
    global _issuer
    with _lock:
        if _issuer is None:
            key = _new_key(2048)
            name = x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "certrenew tests"),
                    x509.NameAttribute(NameOID.COMMON_NAME, ISSUER_COMMON_NAME),
                ]
            )
            now = datetime.now(UTC)
            certificate = (
                x509.CertificateBuilder()
                .subject_name(name)
                .issuer_name(name)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - timedelta(days=1))
                .not_valid_after(now + timedelta(days=3650))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(
                    x509.KeyUsage(
                        digital_signature=True,
                        content_commitment=False,
                        key_encipherment=False,
                        data_encipherment=False,
                        key_agreement=False,
                        key_cert_sign=True,
                        crl_sign=True,
                        encipher_only=False,
                        decipher_only=False,
                    ),
                    critical=True,
                )
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                .sign(key, hashes.SHA256())
            )
            _issuer = (certificate, key)
        return _issuer


test_issuer.__test__ = False  # type: ignore[attr-defined]  # not a pytest test despite the name


def _leaf(
    subject: x509.Name,
    public_key: rsa.RSAPublicKey | ed25519.Ed25519PublicKey,
    san: x509.SubjectAlternativeName | None,
    *,
    days: int,
    not_before: datetime | None,
    serial_number: int | None,
) -> x509.Certificate:
    issuer_cert, issuer_key = test_issuer()
    start = not_before if not_before is not None else datetime.now(UTC) - timedelta(minutes=5)
    if start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_cert.subject)
        .public_key(public_key)
        .serial_number(serial_number if serial_number is not None else x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    )
    if san is not None:
        builder = builder.add_extension(san, critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def issue_certificate(
    common_name: str,
    *,
    days: int = 90,
    not_before: datetime | None = None,
    serial_number: int | None = None,
    key_size: int = 2048,
    key_type: str = "rsa",
) -> IssuedCertificate:
    """A leaf for `common_name` (also its SAN dNSName), valid from `not_before` (default: 5 minutes ago) for `days`.

    `key_type="ed25519"` gives an Ed25519 key, which Key Vault cannot hold (for the unsupported-key tests).
    """
    key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
    key = ed25519.Ed25519PrivateKey.generate() if key_type == "ed25519" else pooled_key(key_size)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    san = x509.SubjectAlternativeName([x509.DNSName(common_name)])
    certificate = _leaf(subject, key.public_key(), san, days=days, not_before=not_before, serial_number=serial_number)
    return IssuedCertificate(certificate=certificate, private_key=key, chain=[test_issuer()[0]])


def sign_csr(csr_der: bytes, *, days: int = 90) -> IssuedCertificate:
    """Sign a CSR (DER, or PEM) with the test issuer; keeps the CSR's subject and SANs (or uses its CN as SAN)."""
    if csr_der.lstrip().startswith(b"-----BEGIN"):
        csr = x509.load_pem_x509_csr(csr_der)
    else:
        csr = x509.load_der_x509_csr(csr_der)
    if not csr.is_signature_valid:
        raise ValueError("CSR signature is not valid")
    public_key = csr.public_key()
    if not isinstance(public_key, rsa.RSAPublicKey):
        raise TypeError("only RSA CSRs are supported by the test issuer")
    try:
        san: x509.SubjectAlternativeName | None = csr.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        ).value
    except x509.ExtensionNotFound:
        cns = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        san = x509.SubjectAlternativeName([x509.DNSName(str(cns[0].value))]) if cns else None
    certificate = _leaf(csr.subject, public_key, san, days=days, not_before=None, serial_number=None)
    return IssuedCertificate(certificate=certificate, private_key=None, chain=[test_issuer()[0]])


def _pem_certs(issued: IssuedCertificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in [issued.certificate, *issued.chain])


def encode(issued: IssuedCertificate, fmt: str, password: str | None = None) -> bytes:
    """The file AppViewX would serve for download format `fmt` (case-insensitive).

    PFX/PK12: PKCS#12 with key (when there is one), leaf and chain, encrypted with `password` (required).
    PEM, CRT, CERT: PEM leaf then chain, no key. CER, DER, DERCER: DER leaf. P7B, P7C: PKCS#7 (DER) of leaf and
    chain. PK8: unencrypted PKCS#8 PEM private key. JKS: not produced (ValueError).
    """
    kind = fmt.strip().upper().lstrip(".")
    if kind in ("PFX", "PK12", "P12"):
        if not password:
            raise ValueError(f"format {fmt} needs a password")
        name = issued.common_name.encode("utf-8") or None
        return pkcs12.serialize_key_and_certificates(
            name=name,
            key=issued.private_key,
            cert=issued.certificate,
            cas=issued.chain or None,
            encryption_algorithm=serialization.BestAvailableEncryption(password.encode("utf-8")),
        )
    if kind in ("PEM", "CRT", "CERT"):
        return _pem_certs(issued)
    if kind in ("CER", "DER", "DERCER"):
        return issued.certificate.public_bytes(serialization.Encoding.DER)
    if kind in ("P7B", "P7C"):
        return pkcs7.serialize_certificates([issued.certificate, *issued.chain], serialization.Encoding.DER)
    if kind == "PK8":
        return private_key_pem(issued, pkcs8=True)
    if kind == "JKS":
        raise ValueError("JKS is not produced by the stand-ins")
    raise ValueError(f"unknown download format {fmt!r}")


def private_key_pem(issued: IssuedCertificate, pkcs8: bool = True) -> bytes:
    """The private key, unencrypted: PKCS#8 ("BEGIN PRIVATE KEY") or PKCS#1 ("BEGIN RSA PRIVATE KEY")."""
    if issued.private_key is None:
        raise ValueError("this certificate was signed from a CSR; its private key is not here")
    return issued.private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8 if pkcs8 else serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def thumbprint_hex(cert: x509.Certificate) -> str:
    """SHA-1 of the DER certificate, upper-case hex (the Windows/Key Vault thumbprint)."""
    return hashlib.sha1(cert.public_bytes(serialization.Encoding.DER), usedforsecurity=False).hexdigest().upper()
