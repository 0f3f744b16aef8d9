"""Azure Key Vault (certificates) stand-in, speaking the REST protocol that `azure-keyvault-certificates` uses.

Served over HTTPS (the SDK refuses http:// vaults) with a test CA. Implements:

- the challenge: a request without a bearer token gets 401 + `WWW-Authenticate: Bearer authorization=..., resource=...`
  (the SDK then asks its credential for `https://vault.azure.net/.default` and re-sends); with `expected_token`, any
  other token gets 401 as well;
- `POST /certificates/{name}/import` (PKCS#12 with `pwd`, or PEM with a PKCS#8 key when the policy's
  `secret_props.contentType` is `application/x-pem-file`), validated like Key Vault;
- `GET /certificates/{name}[/{version}]`, `GET /certificates/{name}/versions`, `GET /certificates/{name}/policy`,
  `GET /certificates` (paged: `maxresults`, then `nextLink` with a `$skiptoken`);
- `POST /certificates/{name}/create` with issuer `Unknown` (the stand-in makes and keeps the key and answers with the
  CSR) or `Self` (self-signed, completed at once);
- `GET|DELETE /certificates/{name}/pending` and `POST /certificates/{name}/pending/merge`;
- 409 for create/import while an `inProgress` pending operation exists (as Key Vault does);
- fault injection (`fail_next`) and throttling (`throttle`) for tests;
- PKCS#12 parsing in a process pool (`parse_in_processes`), for the benchmark's storms.

Any api-version is accepted. Routes it does not implement answer 501 (azure-core does not retry 501).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import ssl
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from .base import RecordedRequest, Response, StandIn

TENANT_ID = "72f988bf-86f1-41af-91ab-2d7cd011db47"
VAULT_RESOURCE = "https://vault.azure.net"
CHALLENGE = f'Bearer authorization="https://login.microsoftonline.com/{TENANT_ID}", resource="{VAULT_RESOURCE}"'
NAME_PATTERN = re.compile(r"^[0-9A-Za-z-]{1,127}$")
PKCS12_CONTENT_TYPE = "application/x-pkcs12"
PEM_CONTENT_TYPE = "application/x-pem-file"
RECOVERY_LEVEL = "Recoverable+Purgeable"
LIST_PAGE_MAX = 25  # Key Vault returns at most 25 items per list page
OPERATIONS = ("import", "merge", "get", "pending", "create", "policy", "versions", "list")

_NOT_FOUND_HELP = (
    "If you recently deleted this certificate you may be able to recover it using the correct recovery command. "
    "For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182"
)
_PEM_UNREADABLE = (
    "The specified PEM X.509 certificate content can not be read. Please check if certificate is in valid PEM "
    "format. Accepted formats: PEM content or Base64 encoded PEM content."
)
_PFX_UNREADABLE = (
    "The specified PKCS#12 X.509 certificate content can not be read. Please check if certificate is in valid "
    "PKCS#12 format."
)
_KEY_MISMATCH = "Public key from x509 certificate and key of this instance doesn't match"
_PENDING_CONFLICT = (
    "A new key vault certificate can not be created or imported while a pending key vault certificate's status is "
    "inProgress."
)

_DN_KEYS: dict[str, x509.ObjectIdentifier] = {
    "CN": NameOID.COMMON_NAME,
    "O": NameOID.ORGANIZATION_NAME,
    "OU": NameOID.ORGANIZATIONAL_UNIT_NAME,
    "L": NameOID.LOCALITY_NAME,
    "S": NameOID.STATE_OR_PROVINCE_NAME,
    "ST": NameOID.STATE_OR_PROVINCE_NAME,
    "C": NameOID.COUNTRY_NAME,
    "E": NameOID.EMAIL_ADDRESS,
    "EMAILADDRESS": NameOID.EMAIL_ADDRESS,
    "DC": NameOID.DOMAIN_COMPONENT,
    "STREET": NameOID.STREET_ADDRESS,
    "SERIALNUMBER": NameOID.SERIAL_NUMBER,
}
_KEY_USAGE_NAMES = (
    ("digital_signature", "digitalSignature"),
    ("content_commitment", "nonRepudiation"),
    ("key_encipherment", "keyEncipherment"),
    ("data_encipherment", "dataEncipherment"),
    ("key_agreement", "keyAgreement"),
    ("key_cert_sign", "keyCertSign"),
    ("crl_sign", "cRLSign"),
)
_CURVES: dict[str, ec.EllipticCurve] = {
    "P-256": ec.SECP256R1(),
    "P-384": ec.SECP384R1(),
    "P-521": ec.SECP521R1(),
    "P-256K": ec.SECP256K1(),
}


class KeyVaultError(Exception):
    """Raised inside the handlers; becomes Key Vault's error JSON `{"error": {"code", "message"}}`."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def response(self) -> Response:
        return Response.json({"error": {"code": self.code, "message": self.message}}, status=self.status)


@dataclass
class StoredVersion:
    """One version of a certificate as the stand-in keeps it."""

    name: str
    version: str
    certificate: x509.Certificate
    chain: list[x509.Certificate]
    private_key: PrivateKeyTypes | None
    tags: dict[str, str] | None
    content_type: str
    policy: dict[str, Any]
    source: str  # "import", "merge", "self" or "seed"
    enabled: bool = True
    created: int = field(default_factory=lambda: int(time.time()))
    updated: int = field(default_factory=lambda: int(time.time()))

    @property
    def has_key(self) -> bool:
        return self.private_key is not None

    @property
    def thumbprint(self) -> str:
        """SHA-1 of the DER certificate, upper-case hex."""
        return hashlib.sha1(self.der, usedforsecurity=False).hexdigest().upper()

    @property
    def der(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.DER)


@dataclass
class PendingOperation:
    """A certificate operation (`/certificates/{name}/pending`)."""

    name: str
    issuer_name: str
    private_key: PrivateKeyTypes | None  # the key Key Vault made; it never leaves the vault
    csr_der: bytes
    subject: str
    policy: dict[str, Any]
    tags: dict[str, str] | None
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    status: str = "inProgress"
    status_details: str | None = "Pending certificate created. Please Perform Merge to complete the request."
    target: str | None = None
    cancellation_requested: bool = False


@dataclass
class _FailRule:
    remaining: int
    response: Response
    operation: str | None


# -- helpers ---------------------------------------------------------------------------------------------------


def _b64url_nopad(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _epoch(moment: datetime) -> int:
    return int(moment.timestamp())


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value


def _dn_string(name: x509.Name) -> str:
    """Subject as Key Vault shows it: most specific first, `, ` between parts (`CN=a, O=b`)."""
    return ", ".join(rdn.rfc4514_string() for rdn in reversed(name.rdns))


def parse_subject(subject: str) -> x509.Name:
    """Parse a policy subject such as `CN=example.com, O=Contoso` (most specific first) into an x509.Name."""
    parts = [p.strip() for p in re.split(r"(?<!\\)[,;]", subject) if p.strip()]
    if not parts:
        raise KeyVaultError(400, "BadParameter", "Property x509_props.subject has invalid value")
    attributes: list[x509.NameAttribute] = []
    for part in parts:
        key, sep, value = part.partition("=")
        oid = _DN_KEYS.get(key.strip().upper())
        if not sep or oid is None or not value.strip():
            raise KeyVaultError(400, "BadParameter", f"Property x509_props.subject has invalid value: {subject}")
        attributes.append(x509.NameAttribute(oid, value.strip().replace("\\,", ",")))
    return x509.Name(list(reversed(attributes)))


def _public_der(key: Any) -> bytes:
    return bytes(key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo))


def _key_matches(cert: x509.Certificate, key: PrivateKeyTypes) -> bool:
    return _public_der(cert.public_key()) == _public_der(key.public_key())


def _key_props(key: PrivateKeyTypes | None) -> dict[str, Any]:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        curve = next((n for n, c in _CURVES.items() if c.name == key.curve.name), None)
        return {"exportable": True, "kty": "EC", "crv": curve, "reuse_key": False}
    size = key.key_size if isinstance(key, rsa.RSAPrivateKey) else 2048
    return {"exportable": True, "kty": "RSA", "key_size": size, "reuse_key": False}


def _x509_props_from_cert(cert: x509.Certificate) -> dict[str, Any]:
    props: dict[str, Any] = {"subject": _dn_string(cert.subject)}
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        sans: dict[str, Any] = {}
        dns = san.get_values_for_type(x509.DNSName)
        if dns:
            sans["dns_names"] = dns
        emails = san.get_values_for_type(x509.RFC822Name)
        if emails:
            sans["emails"] = emails
        ips = san.get_values_for_type(x509.IPAddress)
        if ips:
            sans["ip_addresses"] = [str(ip) for ip in ips]
        if sans:
            props["sans"] = sans
    except x509.ExtensionNotFound:
        pass
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        props["ekus"] = [oid.dotted_string for oid in eku]
    except x509.ExtensionNotFound:
        pass
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        props["key_usage"] = [name for attr, name in _KEY_USAGE_NAMES if getattr(usage, attr)]
    except x509.ExtensionNotFound:
        pass
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    props["validity_months"] = max(1, round(lifetime.days / 30))
    return props


def _overlay(base: dict[str, Any], top: dict[str, Any] | None) -> dict[str, Any]:
    """Shallow-per-section merge: sections of `top` that are dicts update those of `base`; others replace."""
    merged = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()}
    for key, value in (top or {}).items():
        if value is None:
            continue
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key].update({k: v for k, v in value.items() if v is not None})
        else:
            merged[key] = value
    return merged


def _load_pem_bundle(value: str, password: str | None) -> tuple[x509.Certificate, list[x509.Certificate], Any]:
    """PEM import as Key Vault does it: certificate(s) plus a PKCS#8 key (plain, or encrypted with `pwd`)."""
    text = value.strip()
    if not text.startswith("-----BEGIN"):
        try:
            text = base64.b64decode(text, validate=False).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
            raise KeyVaultError(400, "BadParameter", _PEM_UNREADABLE) from exc
    data = text.encode("utf-8")
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise KeyVaultError(400, "BadParameter", _PEM_UNREADABLE) from exc
    blocks = re.findall(rb"-----BEGIN ([A-Z0-9 ]+)-----.*?-----END \1-----", data, flags=re.DOTALL)
    key_blocks = [b for b in blocks if b.endswith(b"PRIVATE KEY")]
    if not key_blocks:
        raise KeyVaultError(
            400, "BadParameter", "Private key is not specified in the specified X.509 PEM certificate content."
        )
    if any(b not in (b"PRIVATE KEY", b"ENCRYPTED PRIVATE KEY") for b in key_blocks):
        # Key Vault accepts only PKCS#8 keys in PEM ("BEGIN RSA PRIVATE KEY"/"BEGIN EC PRIVATE KEY" fail).
        raise KeyVaultError(400, "BadParameter", _PEM_UNREADABLE)
    match = re.search(
        rb"-----BEGIN (ENCRYPTED )?PRIVATE KEY-----.*?-----END (ENCRYPTED )?PRIVATE KEY-----", data, re.DOTALL
    )
    assert match is not None
    try:
        key = serialization.load_pem_private_key(match.group(0), password.encode("utf-8") if password else None)
    except (ValueError, TypeError) as exc:
        raise KeyVaultError(400, "BadParameter", _PEM_UNREADABLE) from exc
    leaf = next((c for c in certs if _key_matches(c, key)), None)
    if leaf is None:
        raise KeyVaultError(400, "BadParameter", _KEY_MISMATCH)
    return leaf, [c for c in certs if c is not leaf], key


def _validated_pfx(value: str, password: str | None) -> tuple[bytes, list[bytes], bytes] | tuple[int, str, str]:
    """`_load_pfx` in a worker process: the leaf, chain and key as DER (the key validated there), or the error's
    status, code and message (picklable either way)."""
    try:
        cert, chain, key = _load_pfx(value, password)
    except KeyVaultError as error:
        return error.status, error.code, error.message
    der = serialization.Encoding.DER
    key_der = key.private_bytes(der, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return cert.public_bytes(der), [c.public_bytes(der) for c in chain], key_der


def _load_pfx_in(pool: Any, value: str, password: str | None) -> tuple[x509.Certificate, list[x509.Certificate], Any]:
    """`_load_pfx` with the PKCS#12 parse (and cryptography's RSA key check, tens of ms holding the interpreter
    lock) done in `pool`'s processes; the results are loaded here without checking the key again."""
    result = pool.submit(_validated_pfx, value, password).result()
    if isinstance(result[0], int):
        status, code, message = result
        raise KeyVaultError(status, code, message)
    cert_der, chain_der, key_der = result
    key = serialization.load_der_private_key(key_der, None, unsafe_skip_rsa_key_validation=True)
    return (
        x509.load_der_x509_certificate(cert_der),
        [x509.load_der_x509_certificate(c) for c in chain_der],
        key,
    )


def _load_pfx(value: str, password: str | None) -> tuple[x509.Certificate, list[x509.Certificate], Any]:
    try:
        data = base64.b64decode(value, validate=True)
        loaded = pkcs12.load_pkcs12(data, password.encode("utf-8") if password else None)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise KeyVaultError(400, "BadParameter", _PFX_UNREADABLE) from exc
    if loaded.key is None:
        raise KeyVaultError(400, "BadParameter", "Private key is not specified in the specified X.509 PKCS#12 content.")
    if loaded.cert is None:
        raise KeyVaultError(400, "BadParameter", _PFX_UNREADABLE)
    cert = loaded.cert.certificate
    if not _key_matches(cert, loaded.key):
        raise KeyVaultError(400, "BadParameter", _KEY_MISMATCH)
    return cert, [c.certificate for c in loaded.additional_certs], loaded.key


def _decode_x5c(items: Any) -> list[x509.Certificate]:
    if not isinstance(items, list) or not items:
        raise KeyVaultError(400, "BadParameter", "Property x5c has invalid value")
    certs: list[x509.Certificate] = []
    for item in items:
        try:
            raw = base64.b64decode(item, validate=False)
            if raw.lstrip().startswith(b"-----BEGIN"):
                certs.extend(x509.load_pem_x509_certificates(raw))
            else:
                certs.append(x509.load_der_x509_certificate(raw))
        except (binascii.Error, ValueError, TypeError) as exc:
            raise KeyVaultError(400, "BadParameter", "Property x5c has invalid value") from exc
    return certs


def _new_key(key_props: dict[str, Any]) -> PrivateKeyTypes:
    kty = str(key_props.get("kty") or "RSA").upper()
    if kty.startswith("EC"):
        curve = _CURVES.get(str(key_props.get("crv") or "P-256"))
        if curve is None:
            raise KeyVaultError(400, "BadParameter", "Property key_props.crv has invalid value")
        return ec.generate_private_key(curve)
    if not kty.startswith("RSA"):
        raise KeyVaultError(400, "BadParameter", "Property key_props.kty has invalid value")
    size = int(key_props.get("key_size") or 2048)
    if size not in (2048, 3072, 4096):
        raise KeyVaultError(400, "BadParameter", "Property key_props.key_size has invalid value")
    return rsa.generate_private_key(public_exponent=65537, key_size=size)


def _request_extensions(x509_props: dict[str, Any]) -> list[tuple[x509.ExtensionType, bool]]:
    extensions: list[tuple[x509.ExtensionType, bool]] = []
    sans = x509_props.get("sans") or {}
    general: list[x509.GeneralName] = [x509.DNSName(d) for d in sans.get("dns_names") or []]
    general += [x509.RFC822Name(e) for e in sans.get("emails") or []]
    if general:
        extensions.append((x509.SubjectAlternativeName(general), False))
    ekus = x509_props.get("ekus") or ["1.3.6.1.5.5.7.3.1", "1.3.6.1.5.5.7.3.2"]
    extensions.append((x509.ExtendedKeyUsage([x509.ObjectIdentifier(e) for e in ekus]), False))
    usages = set(x509_props.get("key_usage") or ["digitalSignature", "keyEncipherment"])
    flags = {attr: name in usages for attr, name in _KEY_USAGE_NAMES}
    extensions.append(
        (x509.KeyUsage(**flags, encipher_only=False, decipher_only=False), True)  # type: ignore[arg-type]
    )
    return extensions


# -- the stand-in ----------------------------------------------------------------------------------------------


class KeyVaultStandIn(StandIn):
    """Key Vault certificates over HTTPS; see the module docstring."""

    name = "keyvault-standin"

    def __init__(self, ssl_context: ssl.SSLContext | None, expected_token: str | None = None) -> None:
        super().__init__(ssl_context)
        self.expected_token = expected_token
        self.certificates: dict[str, list[StoredVersion]] = {}
        self.pending: dict[str, PendingOperation] = {}
        self.challenge_count = 0  # 401 challenges answered (missing or rejected bearer token)
        self.rejected_tokens = 0  # of those, requests that carried a token other than expected_token
        self.throttled_count = 0
        self._fail_rules: list[_FailRule] = []
        self._throttle: tuple[int, float, int, tuple[str, ...]] | None = None
        self._throttle_hits: deque[float] = deque()
        self._held: dict[str, threading.Event] = {}  # operation -> set when a held request arrived
        self._release = threading.Event()
        self._parse_pool: Any = None  # see parse_in_processes

    def parse_in_processes(self, workers: int | None) -> None:
        """Parse imported PKCS#12 files in `workers` processes (None: in the handling thread, the default).

        Key Vault parses imports on its own servers, side by side. In one interpreter the stand-in parses them one
        after another (cryptography's RSA key check holds the interpreter lock for tens of ms), behind AVX's
        certificate issuing too, which turns a burst of imports into a queue that is the stand-in's, not Key
        Vault's. The benchmark's storms use a pool; the validation and the answers are the same either way."""
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        old, self._parse_pool = self._parse_pool, None
        if old is not None:
            old.shutdown(wait=True)
        if workers:
            self._parse_pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))

    # -- test controls ---------------------------------------------------------------------------------------
    @property
    def vault_url(self) -> str:
        return self.url

    def fail_next(self, count: int, response: Response, operation: str | None = None) -> None:
        """Answer the next `count` authenticated requests of `operation` (any when None) with `response`."""
        if operation is not None and operation not in OPERATIONS:
            raise ValueError(f"operation must be one of {OPERATIONS} or None")
        with self.lock:
            self._fail_rules.append(_FailRule(remaining=count, response=response, operation=operation))

    def hold(self, operation: str) -> threading.Event:
        """Hold every request of `operation` until `release_held()`, then drop it unanswered and unapplied (the
        caller died meanwhile). The returned event is set when the first held request arrives."""
        if operation not in OPERATIONS:
            raise ValueError(f"operation must be one of {OPERATIONS}")
        arrived = threading.Event()
        with self.lock:
            self._release.clear()
            self._held[operation] = arrived
        return arrived

    def release_held(self) -> None:
        with self.lock:
            self._held.clear()
        self._release.set()

    def throttle(
        self,
        max_per_window: int | None,
        window_seconds: float = 10.0,
        retry_after: int = 1,
        operations: tuple[str, ...] = ("import", "merge"),
    ) -> None:
        """429 (with Retry-After) once more than `max_per_window` of `operations` arrive within `window_seconds`.

        Only accepted requests count towards the window. `max_per_window=None` turns throttling off.
        """
        with self.lock:
            self._throttle = (
                None if max_per_window is None else (max_per_window, window_seconds, retry_after, operations)
            )
            self._throttle_hits.clear()

    def reset_records(self) -> None:
        """Forget requests; drop leftover `fail_next` rules and throttling. Stored state stays, and so do the
        counters (`challenge_count` counts per process, like the SDK's process-wide challenge cache)."""
        with self.lock:
            super().reset_records()
            self._fail_rules.clear()
            self._held.clear()
            self._release.set()
            self._throttle = None
            self._throttle_hits.clear()

    def reset(self) -> None:
        """`reset_records`, zeroed counters and an empty vault (no certificates, no pending operations)."""
        with self.lock:
            self.reset_records()
            self.challenge_count = 0
            self.rejected_tokens = 0
            self.throttled_count = 0
            self.certificates.clear()
            self.pending.clear()

    def latest(self, name: str) -> StoredVersion | None:
        with self.lock:
            versions = self.certificates.get(name)
            return versions[-1] if versions else None

    def seed(
        self,
        name: str,
        certificate: x509.Certificate,
        private_key: PrivateKeyTypes | None,
        *,
        chain: list[x509.Certificate] | None = None,
        tags: dict[str, str] | None = None,
        content_type: str = PKCS12_CONTENT_TYPE,
        enabled: bool = True,
    ) -> StoredVersion:
        """Store a version directly (no HTTP), e.g. an existing certificate that is about to expire."""
        policy = self._policy(name, certificate, private_key, None, content_type)
        stored = StoredVersion(
            name=name,
            version=uuid.uuid4().hex,
            certificate=certificate,
            chain=list(chain or []),
            private_key=private_key,
            tags=dict(tags) if tags is not None else None,
            content_type=content_type,
            policy=policy,
            source="seed",
            enabled=enabled,
        )
        with self.lock:
            self.certificates.setdefault(name, []).append(stored)
        return stored

    def create_pending(
        self,
        name: str,
        subject: str | None = None,
        *,
        dns_names: list[str] | None = None,
        tags: dict[str, str] | None = None,
    ) -> bytes:
        """Make a pending issuer-Unknown operation without HTTP (subject default `CN={name}`); returns the CSR DER."""
        policy: dict[str, Any] = {
            "x509_props": {"subject": subject or f"CN={name}", "sans": {"dns_names": dns_names} if dns_names else None},
            "issuer": {"name": "Unknown"},
        }
        operation = self._make_pending(name, _drop_none(policy), tags)
        with self.lock:
            self.pending[name] = operation
        return operation.csr_der

    # -- dispatch --------------------------------------------------------------------------------------------
    def handle(self, request: RecordedRequest) -> Response:
        auth = request.header("Authorization") or ""
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return self._challenge("AKV10000: Request is missing a Bearer or PoP token.")
        if self.expected_token is not None and token.strip() != self.expected_token:
            with self.lock:
                self.rejected_tokens += 1
            return self._challenge("AKV10022: Invalid audience. (stand-in: not the expected bearer token)")

        parts = request.path.strip("/").split("/")
        operation = self._operation(request.method, parts)
        with self.lock:
            arrived = self._held.get(operation or "")
        if arrived is not None:
            arrived.set()
            while not (self._release.wait(0.1) or self.stopping.is_set()):
                pass
            return Response(drop=True)
        injected = self._injected(operation)
        if injected is not None:
            return injected
        throttled = self._throttled(operation)
        if throttled is not None:
            return throttled
        try:
            return self._dispatch(request, parts, operation)
        except KeyVaultError as error:
            return error.response()

    def _challenge(self, message: str) -> Response:
        with self.lock:
            self.challenge_count += 1
        return Response.json(
            {"error": {"code": "Unauthorized", "message": message}},
            status=401,
            headers={"WWW-Authenticate": CHALLENGE},
        )

    @staticmethod
    def _operation(method: str, parts: list[str]) -> str | None:
        if not parts or parts[0] != "certificates":
            return None
        if len(parts) == 1:
            return "list" if method == "GET" else None
        if len(parts) == 2:
            return "get" if method == "GET" else None
        tail = parts[2:]
        if tail == ["import"] and method == "POST":
            return "import"
        if tail == ["create"] and method == "POST":
            return "create"
        if tail == ["pending", "merge"] and method == "POST":
            return "merge"
        if tail == ["pending"] and method in ("GET", "DELETE"):
            return "pending"
        if tail == ["policy"] and method == "GET":
            return "policy"
        if tail == ["versions"] and method == "GET":
            return "versions"
        if len(tail) == 1 and method == "GET":
            return "get"
        return None

    def _injected(self, operation: str | None) -> Response | None:
        with self.lock:
            for rule in self._fail_rules:
                if rule.remaining > 0 and (rule.operation is None or rule.operation == operation):
                    rule.remaining -= 1
                    return rule.response
            self._fail_rules = [r for r in self._fail_rules if r.remaining > 0]
        return None

    def _throttled(self, operation: str | None) -> Response | None:
        with self.lock:
            if self._throttle is None or operation not in self._throttle[3]:
                return None
            limit, window, retry_after, _ = self._throttle
            now = time.monotonic()
            while self._throttle_hits and now - self._throttle_hits[0] >= window:
                self._throttle_hits.popleft()
            if len(self._throttle_hits) >= limit:
                self.throttled_count += 1
                return Response.json(
                    {
                        "error": {
                            "code": "Throttled",
                            "message": "Request was not processed because too many requests were received. "
                            "Reason: VaultRequestTypeLimitReached",
                        }
                    },
                    status=429,
                    headers={"Retry-After": str(retry_after)},
                )
            self._throttle_hits.append(now)
        return None

    def _dispatch(self, request: RecordedRequest, parts: list[str], operation: str | None) -> Response:
        if operation is None:
            raise KeyVaultError(501, "NotImplemented", f"stand-in does not implement {request.method} {request.path}")
        if operation == "list":
            return self._list_certificates(request)
        name = parts[1]
        if not NAME_PATTERN.match(name):
            raise KeyVaultError(400, "BadParameter", f"The request URI contains an invalid name: {name}")
        if operation == "import":
            return self._import(name, self._body(request))
        if operation == "create":
            return self._create(name, self._body(request))
        if operation == "merge":
            return self._merge(name, self._body(request))
        if operation == "pending":
            return self._pending(name, delete=request.method == "DELETE")
        if operation == "policy":
            return Response.json(self._policy_json(self._current(name, None)))
        if operation == "versions":
            return self._list_versions(name)
        version = parts[2] if len(parts) > 2 else None
        stored = self._current(name, version)
        return Response.json(self._bundle(stored, include_policy=not version))

    @staticmethod
    def _body(request: RecordedRequest) -> dict[str, Any]:
        try:
            body = request.json()
        except (ValueError, UnicodeDecodeError) as exc:
            raise KeyVaultError(400, "BadParameter", "The request body is not valid JSON") from exc
        if not isinstance(body, dict):
            raise KeyVaultError(400, "BadParameter", "The request body must be a JSON object")
        return body

    # -- documents -------------------------------------------------------------------------------------------
    def _policy(
        self,
        name: str,
        cert: x509.Certificate | None,
        key: PrivateKeyTypes | None,
        provided: dict[str, Any] | None,
        content_type: str,
    ) -> dict[str, Any]:
        now = int(time.time())
        base: dict[str, Any] = {
            "key_props": _key_props(key),
            "secret_props": {"contentType": content_type},
            "x509_props": {
                "ekus": ["1.3.6.1.5.5.7.3.1", "1.3.6.1.5.5.7.3.2"],
                "key_usage": ["digitalSignature", "keyEncipherment"],
                "validity_months": 12,
            },
            "lifetime_actions": [{"trigger": {"lifetime_percentage": 80}, "action": {"action_type": "EmailContacts"}}],
            "issuer": {"name": "Unknown"},
        }
        provided = {k: v for k, v in (provided or {}).items() if k not in ("id", "attributes")}
        merged = _overlay(base, provided)
        if cert is not None:  # the certificate itself is the truth for what it contains
            merged = _overlay(merged, {"x509_props": _x509_props_from_cert(cert), "key_props": _key_props(key)})
        merged["secret_props"] = {"contentType": content_type}
        merged["attributes"] = {"enabled": True, "created": now, "updated": now}
        return _drop_none(merged)

    def _policy_json(self, stored: StoredVersion) -> dict[str, Any]:
        return {"id": f"{self.url}/certificates/{stored.name}/policy", **stored.policy}

    def _bundle(self, stored: StoredVersion, include_policy: bool = True) -> dict[str, Any]:
        cert = stored.certificate
        base = f"{self.url}/{{kind}}/{stored.name}/{stored.version}"
        document: dict[str, Any] = {
            "id": base.format(kind="certificates"),
            "kid": base.format(kind="keys"),
            "sid": base.format(kind="secrets"),
            "x5t": _b64url_nopad(hashlib.sha1(stored.der, usedforsecurity=False).digest()),
            "cer": base64.b64encode(stored.der).decode("ascii"),
            "contentType": stored.content_type,
            "attributes": {
                "enabled": stored.enabled,
                "nbf": _epoch(cert.not_valid_before_utc),
                "exp": _epoch(cert.not_valid_after_utc),
                "created": stored.created,
                "updated": stored.updated,
                "recoverableDays": 90,
                "recoveryLevel": RECOVERY_LEVEL,
            },
        }
        if stored.tags is not None:
            document["tags"] = stored.tags
        if include_policy:
            document["policy"] = self._policy_json(stored)
        return document

    def _item(self, stored: StoredVersion, with_version: bool) -> dict[str, Any]:
        bundle = self._bundle(stored, include_policy=False)
        item_id = bundle["id"] if with_version else f"{self.url}/certificates/{stored.name}"
        item = {"id": item_id, "x5t": bundle["x5t"], "attributes": bundle["attributes"]}
        if stored.tags is not None:
            item["tags"] = stored.tags
        return item

    def _operation_json(self, op: PendingOperation) -> dict[str, Any]:
        document: dict[str, Any] = {
            "id": f"{self.url}/certificates/{op.name}/pending",
            "issuer": {"name": op.issuer_name},
            "csr": base64.b64encode(op.csr_der).decode("ascii"),
            "cancellation_requested": op.cancellation_requested,
            "status": op.status,
            "status_details": op.status_details,
            "request_id": op.request_id,
        }
        if op.target:
            document["target"] = op.target
        return _drop_none(document)

    # -- operations ------------------------------------------------------------------------------------------
    def _current(self, name: str, version: str | None) -> StoredVersion:
        with self.lock:
            versions = self.certificates.get(name) or []
            if version:
                found = next((v for v in versions if v.version == version), None)
            else:
                found = versions[-1] if versions else None
        if found is None:
            ident = f"{name}/{version}" if version else name
            raise KeyVaultError(
                404,
                "CertificateNotFound",
                f"A certificate with (name/id) {ident} was not found in this key vault. {_NOT_FOUND_HELP}",
            )
        return found

    def _check_no_pending(self, name: str) -> None:
        with self.lock:
            op = self.pending.get(name)
            if op is not None and op.status == "inProgress":
                raise KeyVaultError(409, "Conflict", _PENDING_CONFLICT)

    def _store(self, stored: StoredVersion) -> None:
        with self.lock:
            self.certificates.setdefault(stored.name, []).append(stored)

    def _import(self, name: str, body: dict[str, Any]) -> Response:
        value = body.get("value")
        if not isinstance(value, str) or not value:
            raise KeyVaultError(400, "BadParameter", "Property value is required")
        password = body.get("pwd")
        policy = body.get("policy") or {}
        content_type = ((policy.get("secret_props") or {}).get("contentType")) or PKCS12_CONTENT_TYPE
        if content_type == PEM_CONTENT_TYPE:
            cert, chain, key = _load_pem_bundle(value, password)
        elif content_type == PKCS12_CONTENT_TYPE and self._parse_pool is not None:
            cert, chain, key = _load_pfx_in(self._parse_pool, value, password)
        elif content_type == PKCS12_CONTENT_TYPE:
            cert, chain, key = _load_pfx(value, password)
        else:
            raise KeyVaultError(
                400, "BadParameter", f"Property secret_props.contentType has invalid value: {content_type}"
            )
        self._check_no_pending(name)
        enabled = (body.get("attributes") or {}).get("enabled")
        stored = StoredVersion(
            name=name,
            version=uuid.uuid4().hex,
            certificate=cert,
            chain=chain,
            private_key=key,
            tags=body.get("tags"),
            content_type=content_type,
            policy=self._policy(name, cert, key, policy, content_type),
            source="import",
            enabled=True if enabled is None else bool(enabled),
        )
        self._store(stored)
        return Response.json(self._bundle(stored))

    def _make_pending(self, name: str, policy: dict[str, Any], tags: dict[str, str] | None) -> PendingOperation:
        x509_props = policy.get("x509_props") or {}
        subject = x509_props.get("subject")
        sans = x509_props.get("sans") or {}
        if not subject and not any(sans.values()):
            raise KeyVaultError(400, "BadParameter", "Either subject or subject alternative names are required")
        name_obj = parse_subject(subject) if subject else x509.Name([])
        key = _new_key(policy.get("key_props") or {})
        builder = x509.CertificateSigningRequestBuilder().subject_name(name_obj)
        for extension, critical in _request_extensions(x509_props):
            builder = builder.add_extension(extension, critical=critical)
        csr = builder.sign(key, hashes.SHA256())  # type: ignore[arg-type]
        issuer_name = str((policy.get("issuer") or {}).get("name") or "Unknown")
        full_policy = self._policy(
            name, None, key, policy, (policy.get("secret_props") or {}).get("contentType") or PKCS12_CONTENT_TYPE
        )
        full_policy["issuer"] = {**(full_policy.get("issuer") or {}), "name": issuer_name}
        return PendingOperation(
            name=name,
            issuer_name=issuer_name,
            private_key=key,
            csr_der=csr.public_bytes(serialization.Encoding.DER),
            subject=_dn_string(name_obj),
            policy=full_policy,
            tags=tags,
        )

    def _create(self, name: str, body: dict[str, Any]) -> Response:
        policy = body.get("policy")
        if not policy:
            existing = self.latest(name)
            if existing is None:
                raise KeyVaultError(400, "BadParameter", "Property policy is required")
            policy = existing.policy
        issuer_name = str((policy.get("issuer") or {}).get("name") or "Unknown")
        if issuer_name.lower() not in ("unknown", "self"):
            raise KeyVaultError(400, "BadParameter", f"stand-in supports issuers Unknown and Self, not {issuer_name}")
        self._check_no_pending(name)
        op = self._make_pending(name, policy, body.get("tags"))
        with self.lock:
            self._check_no_pending(name)  # again: another request may have created one meanwhile
            if issuer_name.lower() == "self":
                self._self_sign(op, body)
            self.pending[name] = op
        document = self._operation_json(op)
        if op.issuer_name.lower() == "self":
            # Key Vault answers a Self create as still inProgress; the first poll sees it completed. (The SDK's
            # poller only fetches the certificate after it has seen an inProgress -> completed transition.)
            document.update(status="inProgress", status_details="Pending certificate created.")
            document.pop("target", None)
        location = f"{self.url}/certificates/{name}/pending?request_id={op.request_id}"
        return Response.json(document, status=202, headers={"Location": location})

    def _self_sign(self, op: PendingOperation, body: dict[str, Any]) -> None:
        assert op.private_key is not None
        csr = x509.load_der_x509_csr(op.csr_der)
        months = int((op.policy.get("x509_props") or {}).get("validity_months") or 12)
        now = datetime.now(UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(csr.subject)
            .issuer_name(csr.subject)
            .public_key(csr.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=30 * months))
        )
        for extension in csr.extensions:
            builder = builder.add_extension(extension.value, critical=extension.critical)
        cert = builder.sign(op.private_key, hashes.SHA256())  # type: ignore[arg-type]
        content_type = (op.policy.get("secret_props") or {}).get("contentType") or PKCS12_CONTENT_TYPE
        self._store(
            StoredVersion(
                name=op.name,
                version=uuid.uuid4().hex,
                certificate=cert,
                chain=[],
                private_key=op.private_key,
                tags=body.get("tags"),
                content_type=content_type,
                policy=op.policy,
                source="self",
            )
        )
        op.private_key = None
        op.status = "completed"
        op.status_details = None
        op.target = f"{self.url}/certificates/{op.name}"

    def _pending(self, name: str, delete: bool) -> Response:
        with self.lock:
            op = self.pending.pop(name, None) if delete else self.pending.get(name)
        if op is None:
            raise KeyVaultError(404, "PendingCertificateNotFound", f"Pending certificate not found: {name}")
        return Response.json(self._operation_json(op))

    def _merge(self, name: str, body: dict[str, Any]) -> Response:
        certs = _decode_x5c(body.get("x5c"))
        with self.lock:
            op = self.pending.get(name)
        if op is None:
            raise KeyVaultError(404, "PendingCertificateNotFound", f"Pending certificate not found: {name}")
        if op.private_key is None or op.status != "inProgress":
            raise KeyVaultError(
                403, "Forbidden", f"Merge is not allowed on pending certificate {name} in status {op.status}."
            )
        if op.issuer_name.lower() != "unknown":
            raise KeyVaultError(
                403,
                "Forbidden",
                f"Merge is forbidden on pending object created with issuer : {op.issuer_name} while it is in progess.",
            )
        leaf = certs[0]
        if not _key_matches(leaf, op.private_key):
            raise KeyVaultError(400, "BadParameter", _KEY_MISMATCH)
        content_type = (op.policy.get("secret_props") or {}).get("contentType") or PKCS12_CONTENT_TYPE
        enabled = (body.get("attributes") or {}).get("enabled")
        stored = StoredVersion(
            name=name,
            version=uuid.uuid4().hex,
            certificate=leaf,
            chain=certs[1:],
            private_key=op.private_key,
            tags=body.get("tags") if body.get("tags") is not None else op.tags,
            content_type=content_type,
            policy=op.policy,
            source="merge",
            enabled=True if enabled is None else bool(enabled),
        )
        with self.lock:
            if self.pending.get(name) is not op:
                raise KeyVaultError(409, "Conflict", f"There was a conflict while merging pending certificate {name}.")
            del self.pending[name]
            self.certificates.setdefault(name, []).append(stored)
        location = f"{self.url}/certificates/{name}"
        return Response.json(self._bundle(stored), status=201, headers={"Location": location})

    def _list_certificates(self, request: RecordedRequest) -> Response:
        """Key Vault's paging: `maxresults` (1-25, default 25) per page and an absolute `nextLink` carrying a
        `$skiptoken` (here the offset) and the same query, until the last page's `nextLink` is null."""
        raw_max = request.query_one("maxresults")
        try:
            page_size = int(raw_max) if raw_max else LIST_PAGE_MAX
        except ValueError:
            raise KeyVaultError(400, "BadParameter", "maxresults must be an integer") from None
        if not 1 <= page_size <= LIST_PAGE_MAX:
            raise KeyVaultError(400, "BadParameter", f"maxresults must be between 1 and {LIST_PAGE_MAX}")
        raw_skip = request.query_one("$skiptoken") or "0"
        if not raw_skip.isdigit():
            raise KeyVaultError(400, "BadParameter", "The $skiptoken is not valid")
        start = int(raw_skip)
        with self.lock:
            names = sorted(n for n, v in self.certificates.items() if v)
            items = [self._item(self.certificates[n][-1], with_version=False) for n in names[start : start + page_size]]
        next_link = None
        if start + page_size < len(names):
            query = {k: v[0] for k, v in request.query.items() if k not in ("$skiptoken", "maxresults")}
            query.update({"$skiptoken": str(start + page_size), "maxresults": str(page_size)})
            next_link = f"{self.url}/certificates?{urlencode(query)}"
        return Response.json({"value": items, "nextLink": next_link})

    def _list_versions(self, name: str) -> Response:
        with self.lock:
            versions = list(self.certificates.get(name) or [])
        return Response.json({"value": [self._item(v, with_version=True) for v in versions], "nextLink": None})
