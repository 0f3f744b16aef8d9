"""Decisions of the AppViewX webhook: request validation, error mapping and answer shaping. Pure, no I/O."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shared.appviewx.client import REMEDIATION, AvxRenewRequest, AvxRenewResult
from shared.azure.keyvault import StoredCertificate
from shared.core.certificates import (
    DEFAULT_FORMAT,
    FORMATS,
    KEY_VAULT_NAME_PATTERN,
    FormatInfo,
    Storage,
    derive_certificate_name,
    generate_password,
)
from shared.core.errors import ApiError, AvxError, Rejected
from shared.core.events import Source

MAX_BODY_BYTES = 64 * 1024
QUERY_PARAMETERS = ("autoApproval",)  # the only query parameter a renewal reads (the rest: function key, noise)
MAX_FIELD_LENGTH = 1024
MAX_NUMBER_LENGTH = 32  # no field the app reads is a number: anything longer is noise (or an attack on int())
# Characters no identifier the webhook forwards may hold: C0/C1 controls, and the invisible direction marks and
# overrides that make a name read differently from what it is (U+200E/F, U+202A-E, U+2066-9). A password may hold
# any printable character, but never a control character (a NUL reaches the PFX loader's native code).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_INVISIBLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


@dataclass(frozen=True)
class RenewCommand:
    """A validated webhook request: what to ask AVX for, and where to store the result."""

    avx: AvxRenewRequest
    key_vault_name: str | None
    auto_approval: bool | None
    # True when the PFX password is the app's own one-time password (never a caller's value): only such a password
    # may be registered with the redaction guard.
    password_generated: bool = False
    # The target vault: the request's `keyVault` (a listed URL or a unique name) until admission resolves it to the
    # listed vault's URL; None is the default vault.
    key_vault: str | None = None

    @property
    def storage(self) -> Storage:
        return FORMATS[self.avx.format].storage

    def target_name(self) -> str | None:
        """The Key Vault name known before AVX answers: the caller's, else one derived from the common name."""
        if self.key_vault_name:
            return self.key_vault_name
        return derive_certificate_name(self.avx.common_name) if self.avx.common_name else None


def _invalid(message: str, code: str = "INVALID_REQUEST", status: int = 400) -> ApiError:
    return ApiError(status=status, code=code, message=message, remediation=REMEDIATION.get(code))


def _optional_string(body: Mapping[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise Rejected(_invalid(f"{name} must be a string"))
    _no_hidden_characters(name, value, _INVISIBLE)
    value = value.strip()
    if len(value) > MAX_FIELD_LENGTH:
        raise Rejected(_invalid(f"{name} must be at most {MAX_FIELD_LENGTH} characters"))
    return value or None


def _no_hidden_characters(name: str, value: str, forbidden: re.Pattern[str]) -> None:
    found = forbidden.search(value)
    if found is not None:
        raise Rejected(
            _invalid(f"{name} holds a control or direction character (U+{ord(found.group()):04X}), which is refused")
        )


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys are all different: with two `resourceId`s, which one AVX (or a proxy in between)
    reads is anybody's guess."""
    document: dict[str, Any] = {}
    for key, value in pairs:
        if key in document:
            raise Rejected(_invalid(f"The request body gives {clean_key(key)} more than once"))
        document[key] = value
    return document


def clean_key(key: str) -> str:
    """A key of the caller's body, safe to quote in an answer (short, no control characters)."""
    return json.dumps(_INVISIBLE.sub("?", key[:64]))


def _number(text: str) -> float:
    # json's int() of a 5,000-digit literal raises ValueError (and costs quadratic time): refuse long numbers first.
    if len(text) > MAX_NUMBER_LENGTH:
        raise Rejected(_invalid(f"The request body holds a number longer than {MAX_NUMBER_LENGTH} characters"))
    value = float(text)
    if not math.isfinite(value):
        raise Rejected(_invalid("The request body holds a number out of range"))
    return value


def _no_constant(name: str) -> None:
    raise Rejected(_invalid(f"The request body holds {name}, which is not JSON"))


def _auto_approval(document: Mapping[str, Any], query: Mapping[str, str]) -> bool | None:
    """`autoApproval` as a JSON boolean in the body (the signed form), or `true`/`false` in the query (unsigned
    callers); not both."""
    in_body = "autoApproval" in document
    raw_query = query.get("autoApproval")
    if in_body and raw_query is not None:
        raise Rejected(_invalid("Give autoApproval once: in the body (preferred) or in the query"))
    if in_body:
        value = document["autoApproval"]
        if not isinstance(value, bool):
            raise Rejected(_invalid("autoApproval in the body must be true or false (a JSON boolean)"))
        return value
    if raw_query is None:
        return None
    if raw_query.lower() not in ("true", "false"):
        raise Rejected(_invalid("autoApproval must be true or false"))
    return raw_query.lower() == "true"


def check_body_size(body: bytes) -> None:
    """The one size rule of webhook bodies, checked before anything reads the body (signature, JSON)."""
    if len(body) > MAX_BODY_BYTES:
        raise Rejected(
            ApiError(
                413,
                "PAYLOAD_TOO_LARGE",
                f"The request body exceeds {MAX_BODY_BYTES} bytes",
                f"Send only the renewal's JSON body (at most {MAX_BODY_BYTES // 1024} KiB); nothing was renewed.",
            )
        )


def _json_object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object; numbers and constants pass `_number` and `_no_constant` on the way."""
    try:
        document = json.loads(
            body.decode("utf-8"),
            parse_int=_number,
            parse_float=_number,
            parse_constant=_no_constant,
            object_pairs_hook=_unique_keys,
        )
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError, ValueError):
        raise Rejected(_invalid("The request body must be a JSON object")) from None
    if not isinstance(document, dict):
        raise Rejected(_invalid("The request body must be a JSON object"))
    return document


def _certificate_format(document: Mapping[str, Any]) -> tuple[str, str | None]:
    """`certificateFormat`: the format asked for (not yet checked against FORMATS) and the caller's PFX password."""
    certificate_format = document.get("certificateFormat")
    if certificate_format is None:
        return DEFAULT_FORMAT, None
    if not isinstance(certificate_format, dict):
        raise Rejected(_invalid("certificateFormat must be an object with format and optional password"))
    fmt = _optional_string(certificate_format, "format") or DEFAULT_FORMAT
    password = certificate_format.get("password")
    if password is not None and not isinstance(password, str):
        raise Rejected(_invalid("certificateFormat.password must be a string"))
    if password is not None and len(password) > MAX_FIELD_LENGTH:
        raise Rejected(_invalid(f"certificateFormat.password must be at most {MAX_FIELD_LENGTH} characters"))
    if password is not None:
        _no_hidden_characters("certificateFormat.password", password, _CONTROL)
    return fmt, password or None


def _require_identity(resource_id: str | None, common_name: str | None, serial_number: str | None) -> None:
    """AVX finds the certificate by resourceId, or by commonName and serialNumber together."""
    if resource_id or (common_name and serial_number):
        return
    missing = ""
    if common_name and not serial_number:
        missing = " Mandatory field is missing or invalid - serialNumber."
    elif serial_number and not common_name:
        missing = " Mandatory field is missing or invalid - commonName."
    raise Rejected(
        _invalid("Either resourceId or commonName & serialNumber are Mandatory." + missing, "MANDATORY_FIELD_MISSING")
    )


def _format_info(fmt: str) -> FormatInfo:
    info = FORMATS.get(fmt.upper())
    if info is None:
        raise Rejected(
            _invalid(
                f"Validation Failure: Field format does not have the expected value (one of {', '.join(FORMATS)})",
                "VALIDATION_ERROR_0004",
            )
        )
    return info


def _check_target(workflow_type: str | None, key_vault_name: str | None) -> None:
    """The renewal's route (only AVX's direct workflow) and the Key Vault name the caller chose, if any."""
    if workflow_type is not None and workflow_type != "direct":
        raise Rejected(_invalid("Validation Failure: workflowType may only be direct", "VALIDATION_ERROR_0004"))
    if key_vault_name is not None and not KEY_VAULT_NAME_PATTERN.match(key_vault_name):
        raise Rejected(_invalid("keyVaultCertificateName must be 1-127 characters of 0-9, a-z, A-Z and -"))


def parse_renew_request(body: bytes, query: Mapping[str, str]) -> RenewCommand:
    """Validate a webhook request (whose size `check_body_size` passed) before anything is called: the command, or
    `Rejected` with the answer to give. Every field's type is checked before any rule across fields (the order
    decides which problem a request with several is answered with)."""
    document = _json_object(body)
    resource_id = _optional_string(document, "resourceId")
    common_name = _optional_string(document, "commonName")
    serial_number = _optional_string(document, "serialNumber")
    workflow_type = _optional_string(document, "workflowType")
    key_vault_name = _optional_string(document, "keyVaultCertificateName")
    key_vault = _optional_string(document, "keyVault")
    fmt, password = _certificate_format(document)
    auto_approval = _auto_approval(document, query)

    _require_identity(resource_id, common_name, serial_number)
    info = _format_info(fmt)
    _check_target(workflow_type, key_vault_name)

    password_generated = info.password_required and not password
    if password_generated:
        password = generate_password()
    return RenewCommand(
        avx=AvxRenewRequest(
            resource_id=resource_id,
            common_name=common_name,
            serial_number=serial_number,
            format=info.name,
            password=password,
            workflow_type=workflow_type,
        ),
        key_vault_name=key_vault_name,
        auto_approval=auto_approval,
        password_generated=password_generated,
        key_vault=key_vault,
    )


def unstorable(command: RenewCommand, pending_exists: bool | None) -> ApiError | None:
    """The 422 for a renewal whose result Key Vault could not store; None when it can be stored."""
    storage = command.storage
    fmt = command.avx.format
    if storage is Storage.UNSTORABLE:
        reason = "a Java keystore" if fmt == "JKS" else "a private key without its certificate"
        return ApiError(
            422,
            "UNSTORABLE_FORMAT",
            f"Format {fmt} yields {reason}, which Key Vault cannot import; nothing was renewed.",
            "Ask for PFX (the default), PK12 or PEM.",
        )
    if storage is Storage.MERGE and not pending_exists:
        where = f"under {command.target_name()!r}" if command.target_name() else "(no keyVaultCertificateName given)"
        return ApiError(
            422,
            "UNSTORABLE_FORMAT",
            f"Format {fmt} carries no private key, and Key Vault holds no pending certificate operation {where} to "
            "merge it into; nothing was renewed.",
            "Ask for PFX (the default) or PEM, or first create the certificate in Key Vault with issuer Unknown and "
            "name it in keyVaultCertificateName.",
        )
    return None


def avx_error_answer(error: AvxError) -> ApiError:
    """Map an AVX failure to the webhook's answer (the issue's error table)."""
    status = error.http_status
    if error.code == "AVX_TIMEOUT":
        return ApiError(504, error.code, error.message, error.remediation)
    if status in (400, 404, 406, 417):
        return ApiError(status, error.code, error.message, error.remediation)
    if status in (401, 403):
        return ApiError(
            502,
            error.code,
            f"AppViewX refused the app's own AVX account ({error.message}). The app's AVX account settings "
            "(AVX_USERNAME/AVX_PASSWORD) or its rights in AppViewX must be fixed; the caller's function key is fine.",
            error.remediation,
        )
    return ApiError(502, error.code, error.message, error.remediation)


def renewed_answer(stored: StoredCertificate, avx: AvxRenewResult) -> dict[str, Any]:
    return {"status": "renewed", "keyVault": stored.to_json(), "avx": avx.ids()}


def certificate_tags(avx: AvxRenewResult, serial_number: str | None) -> dict[str, str | None]:
    return {
        "source": Source.APPVIEWX,
        "avxResourceId": avx.resource_id,
        "avxRequestId": avx.request_id,
        "serialNumber": serial_number,
    }
