"""Certificate material: formats, names, one-time passwords and parsing. Pure functions, no I/O."""

from __future__ import annotations

import re
import secrets
import string
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # cryptography is imported where certificates are handled, to keep cold start short
    from cryptography import x509

KEY_VAULT_NAME_PATTERN = re.compile(r"^[0-9A-Za-z-]{1,127}$")


class Storage(Enum):
    """How a certificate in a given format can land in Key Vault."""

    IMPORT_PFX = "import-pfx"  # PKCS#12 with its key
    IMPORT_PEM = "import-pem"  # PEM with a PKCS#8 key, when AVX returns the key; else merge
    MERGE = "merge"  # no key: only into a pending operation whose key Key Vault holds
    UNSTORABLE = "unstorable"


@dataclass(frozen=True)
class FormatInfo:
    name: str
    password_required: bool
    storage: Storage


# The AVX page's table of download formats, with what Key Vault can do with each.
FORMATS: dict[str, FormatInfo] = {
    info.name: info
    for info in (
        FormatInfo("CRT", False, Storage.MERGE),
        FormatInfo("CERT", False, Storage.MERGE),
        FormatInfo("CER", False, Storage.MERGE),
        FormatInfo("PEM", False, Storage.IMPORT_PEM),
        FormatInfo("DER", False, Storage.MERGE),
        FormatInfo("DERCER", False, Storage.MERGE),
        FormatInfo("P7B", False, Storage.MERGE),
        FormatInfo("P7C", False, Storage.MERGE),
        FormatInfo("PK8", False, Storage.UNSTORABLE),  # a key alone
        FormatInfo("PK12", True, Storage.IMPORT_PFX),
        FormatInfo("PFX", True, Storage.IMPORT_PFX),
        FormatInfo("JKS", True, Storage.UNSTORABLE),  # Key Vault cannot read a Java keystore
    )
}
DEFAULT_FORMAT = "PFX"


def generate_password(length: int = 32) -> str:
    """A strong one-time password that meets AVX's rule (8+ characters with upper, lower, digit and special)."""
    specials = "!#%+-.=@^_~"  # no quotes, backslashes or characters some keystores mangle
    alphabet = string.ascii_letters + string.digits + specials
    while True:
        password = "".join(secrets.choice(alphabet) for _ in range(length))
        if (
            any(c.islower() for c in password)
            and any(c.isupper() for c in password)
            and any(c.isdigit() for c in password)
            and any(c in specials for c in password)
        ):
            return password


def derive_certificate_name(common_name: str) -> str | None:
    """A Key Vault name from a common name: `*.contoso.com` -> `wildcard-contoso-com`. None when nothing is left."""
    name = common_name.strip()
    if name.startswith("*."):
        name = "wildcard-" + name[2:]
    name = re.sub(r"[^0-9A-Za-z-]+", "-", name)
    name = re.sub(r"-{2,}", "-", name).strip("-")[:127].rstrip("-")
    return name or None


def common_name_of(certificate: x509.Certificate) -> str | None:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    attributes = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if attributes:
        value = attributes[0].value
        return value.decode() if isinstance(value, bytes) else value
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = san.get_values_for_type(x509.DNSName)
        return names[0] if names else None
    except x509.ExtensionNotFound:
        return None


class CertificateParseError(ValueError):
    """Content that is not the certificate material its format promised (message never includes the content)."""


class UnsupportedKeyType(ValueError):
    """A certificate whose key type Key Vault cannot hold (Key Vault takes RSA and EC P-256/P-384/P-521/P-256K)."""


# Curves of Key Vault's EC keys (P-256, P-384, P-521, P-256K).
KEY_VAULT_CURVES = ("secp256r1", "secp384r1", "secp521r1", "secp256k1")


def key_vault_key_problem(public_key: object) -> str | None:
    """Why Key Vault cannot hold a certificate with this public key; None when it can. Pure."""
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    if isinstance(public_key, rsa.RSAPublicKey):
        return None if public_key.key_size >= 2048 else f"an RSA key of {public_key.key_size} bits"
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        curve = public_key.curve.name
        return None if curve in KEY_VAULT_CURVES else f"an EC key on curve {curve}"
    kind = type(public_key).__name__.replace("PublicKey", "").lstrip("_")
    return f"an {kind} key" if kind[:1] in "AEIOU" else f"a {kind} key"


def check_key_vault_key(certificate: x509.Certificate) -> None:
    problem = key_vault_key_problem(certificate.public_key())
    if problem:
        raise UnsupportedKeyType(
            f"the certificate carries {problem}, which Key Vault cannot hold (it takes RSA 2048+ and EC P-256, "
            "P-384, P-521, P-256K)"
        )


@dataclass(frozen=True)
class PfxContents:
    """What the app reads of a PKCS#12: its leaf (name, serial, expiry, key type) and the certificates beside it."""

    leaf: x509.Certificate
    chain: tuple[x509.Certificate, ...] = ()


def open_pfx(pfx: bytes, password: str | None) -> PfxContents:
    """Open a PKCS#12 here, in this process: cryptography decrypts it and checks its RSA key (a CPU-bound check that
    holds the interpreter lock; shared.core.pfx runs this in a helper process instead). Refuses content without a
    certificate and its key, a key that is not the leaf's, and a key type Key Vault cannot hold."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.serialization import pkcs12

    try:
        key, certificate, others = pkcs12.load_key_and_certificates(pfx, password.encode() if password else None)
    except (ValueError, TypeError):
        raise CertificateParseError("the PKCS#12 content could not be opened with the requested password") from None
    if certificate is None or key is None:
        raise CertificateParseError("the PKCS#12 content holds no certificate with a private key")
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if key.public_key().public_bytes(*spki) != certificate.public_key().public_bytes(*spki):
        raise CertificateParseError("the PKCS#12 content's private key does not match its certificate")
    check_key_vault_key(certificate)
    return PfxContents(certificate, tuple(others))


def parse_certificates(content: bytes) -> list[x509.Certificate]:
    """Certificates from PEM, DER or PKCS#7 (PEM or DER) content, leaf first as given."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import pkcs7

    try:
        if b"-----BEGIN PKCS7-----" in content:
            return pkcs7.load_pem_pkcs7_certificates(content)
        if b"-----BEGIN" in content:
            return x509.load_pem_x509_certificates(content)
    except ValueError:
        raise CertificateParseError("the PEM content holds no readable certificate") from None
    for loader in (x509.load_der_x509_certificate, pkcs7.load_der_pkcs7_certificates):
        try:
            loaded = loader(content)
        except ValueError:
            continue
        return loaded if isinstance(loaded, list) else [loaded]
    raise CertificateParseError("the content is not a certificate in PEM, DER or PKCS#7 form")


# A leaf, its intermediates and a root: a few. A chain longer than this is not a chain (7,000 certificates fit under
# the answer cap, and ordering them cost seconds of CPU).
MAX_CHAIN_CERTIFICATES = 32


def order_leaf_first(certificates: list[x509.Certificate]) -> list[x509.Certificate]:
    """Put the end-entity certificate (the one that issued none of the others) first; PKCS#7 carries no order.
    Raises CertificateParseError for more than MAX_CHAIN_CERTIFICATES certificates; linear in their number."""
    if len(certificates) > MAX_CHAIN_CERTIFICATES:
        raise CertificateParseError(
            f"the content holds {len(certificates)} certificates; a chain has at most {MAX_CHAIN_CERTIFICATES}"
        )
    issuers = {}
    for certificate in certificates:
        issuers.setdefault(certificate.issuer.public_bytes(), []).append(certificate)
    for candidate in certificates:
        issued = issuers.get(candidate.subject.public_bytes(), [])
        if not any(other is not candidate for other in issued):
            return [candidate] + [c for c in certificates if c is not candidate]
    return certificates


def pem_bundle_with_pkcs8_key(
    certificates: list[x509.Certificate], key_pem_or_der: bytes, password: str | None
) -> bytes:
    """The PEM Key Vault imports: a PKCS#8 private key, then the certificate chain."""
    from cryptography.hazmat.primitives import serialization

    try:
        if b"-----BEGIN" in key_pem_or_der:
            key = serialization.load_pem_private_key(key_pem_or_der, password.encode() if password else None)
        else:
            key = serialization.load_der_private_key(key_pem_or_der, password.encode() if password else None)
    except (ValueError, TypeError):
        raise CertificateParseError("the private key AVX returned could not be read") from None
    leaf = certificates[0]
    check_key_vault_key(leaf)
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if key.public_key().public_bytes(*spki) != leaf.public_key().public_bytes(*spki):
        raise CertificateParseError("the private key AVX returned does not match the certificate")
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return key_pem + b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates)


def der_chain(certificates: list[x509.Certificate]) -> list[bytes]:
    from cryptography.hazmat.primitives import serialization

    return [c.public_bytes(serialization.Encoding.DER) for c in certificates]
