"""The AppViewX renew page's tables, as data, each row with the page line it comes from.

`PAGE` is `shared/reference/avx-certificate-renew-sync-api.txt` (read-only reference beside the repository); line
numbers are that file's. The AVX stand-in (`tests/standins/avx.py`) answers from these tables, and
`tests/appviewx/test_avx_standin_conformance.py` walks them row by row, so a reader sees which line each behaviour
comes from. NOTES means `shared/reference/NOTES.md`, section "AppViewX (AVX) certificate API".
"""

from __future__ import annotations

from dataclasses import dataclass

PAGE = "avx-certificate-renew-sync-api.txt"


@dataclass(frozen=True)
class StatusRow:
    """One row of the page's "Status Codes" table (page lines 234-312)."""

    line: int  # page line of the row
    status: int
    code: str
    message: str
    condition: str  # what makes the stand-in answer it (the "Before you begin" line, or a payload rule)


# Keyed by a short row name (the tests script rows by it). The 202 row (line 237) is the success of an asynchronous
# (or not yet approved) renewal, answered by the stand-in itself, not an error: see AvxStandIn._submitted.
STATUS_TABLE_ROWS: dict[str, StatusRow] = {
    "AVX_GW_003": StatusRow(
        238,
        401,
        "AVX_GW_003",
        "Authentication failed, reason - Invalid Credentials.",
        "userName/password headers (lines 33-47) wrong; or an unknown sessionId/token (NOTES)",
    ),
    "INVALID_REQUEST": StatusRow(
        242,
        400,
        "INVALID_REQUEST",
        "Invalid request specified.",
        "body not a JSON object; content-type not application/json (line 57); gwsource missing (line 63); isSync "
        "not true/false (line 79); ttl not a positive integer (line 93) - the page names no code for the last four",
    ),
    "INVALID_SERIAL": StatusRow(
        246, 400, "VALIDATION_ERROR_0004", "Invalid serialNumber", "serialNumber not hexadecimal (stand-in reading)"
    ),
    "INVALID_RESOURCE": StatusRow(
        250,
        400,
        "VALIDATION_ERROR_0004",
        "Invalid resourceId",
        "resourceId not a Mongo ObjectId (line 117: 'Mongo ID'; 24 hex digits) and not a registered id",
    ),
    "MANDATORY_EITHER": StatusRow(
        254,
        400,
        "MANDATORY_FIELD_MISSING",
        "Either resourceId or commonName & serialNumber are Mandatory",
        "neither resourceId nor commonName/serialNumber (lines 121, 127, 134)",
    ),
    "MANDATORY_CN": StatusRow(
        260,
        400,
        "MANDATORY_FIELD_MISSING",
        "Mandatory field is missing or invalid - commonName.",
        "serialNumber without commonName and without resourceId",
    ),
    "MANDATORY_SERIAL": StatusRow(
        264,
        400,
        "MANDATORY_FIELD_MISSING",
        "Mandatory field is missing or invalid - serialNumber.",
        "commonName without serialNumber and without resourceId",
    ),
    "INVALID_FORMAT": StatusRow(
        268,
        400,
        "VALIDATION_ERROR_0004",
        "Validation Failure: Field format does not have the expected value",
        "certificateFormat.format not in Table 4 (lines 162-175)",
    ),
    "AVX_GW_005": StatusRow(
        272,
        403,
        "AVX_GW_005",
        "User does not have access to the targeted API",
        "the user lacks ACF permission in the certificate's category (line 7)",
    ),
    "NO_RECORDS_FOUND": StatusRow(
        276,
        404,
        "NO_RECORDS_FOUND",
        "No matching records found",
        "a well-formed resourceId, or commonName + serialNumber, that AVX does not hold",
    ),
    "CERT-VWF-0006": StatusRow(
        280,
        406,
        "CERT-VWF-0006",
        "Life cycle action is unsupported by CA or another work order is in progress or certificate belongs to read "
        "group or is in Monitored status.",
        "the CA does not support renew (line 282); also a revoked certificate (line 8: the page names no code)",
    ),
    "READ_GROUP": StatusRow(
        286,
        417,
        "READ_GROUP",
        "Group is given with read permission, so cannot perform any operation",
        "the certificate's group is read-only for the user (line 10)",
    ),
    "OPEN_WORK_ORDERS_FOUND": StatusRow(
        290,
        417,
        "OPEN_WORK_ORDERS_FOUND",
        "Since requested certificate's work order is in progress, cannot initiate another action",
        "a renewal of the record awaits approval or is being processed (line 11)",
    ),
    "CERT-GEN-0055": StatusRow(
        296,
        417,
        "CERT-GEN-0055",
        "orderValidityUnit and orderValidityUnitValue field inside caConnectorInfo.vendorSpecificDetails or "
        "validityUnit and validityUnitValue is mandatory",
        "the CA connector has no validity configured (lines 9, 14)",
    ),
    "FAILED_NO_KEY": StatusRow(
        300,
        500,
        "FAILED",
        "Certificate Renew action failed during renewal submission due to CSR or private key is not available.",
        "AVX holds neither CSR nor private key of the certificate (line 12)",
    ),
    "CANNOT_PERFORM_OPERATION": StatusRow(
        304,
        500,
        "CANNOT_PERFORM_OPERATION",
        "Cannot perform the specified operation. Probable Cause: The specified action is not permitted for "
        "certificates in a monitored status.",
        "the certificate is monitored, not managed (line 8)",
    ),
    "FAILED_DOWNLOAD": StatusRow(
        308,
        500,
        "FAILED",
        "Certificate Renew action performed successfully but failed to download. Reason - Mandatory field is "
        "missing or invalid - format",
        "certificateFormat.format missing: AVX RENEWED (a new record exists) but sends no content",
    ),
    "avx-common-011": StatusRow(
        312,
        500,
        "avx-common-011",
        "Error while processing",
        "the CA cannot be reached (line 15: the page names no code for it; this generic row is the stand-in's)",
    ),
}

# (HTTP status, appStatusCode, message) by row name: the form the tests script errors in.
STATUS_TABLE: dict[str, tuple[int, str, str]] = {
    name: (row.status, row.code, row.message) for name, row in STATUS_TABLE_ROWS.items()
}
ACCEPTED_LINE, ACCEPTED_MESSAGE = 237, "Renew action has been triggered successfully."


@dataclass(frozen=True)
class FormatRow:
    """One row of Table 4, "Possible values for certificate download format" (page lines 162-175)."""

    line: int
    extension: str
    value: str
    password_required: bool


FORMAT_TABLE: tuple[FormatRow, ...] = (
    FormatRow(164, ".crt", "CRT", False),
    FormatRow(165, ".cert", "CERT", False),
    FormatRow(166, ".cer", "CER", False),
    FormatRow(167, ".pem", "PEM", False),
    FormatRow(168, ".der", "DER", False),
    FormatRow(169, ".cer", "DERCER", False),
    FormatRow(170, ".p7b", "P7B", False),
    FormatRow(171, ".p7c", "P7C", False),
    FormatRow(172, ".pk8", "PK8", False),
    FormatRow(173, ".pk12", "PK12", True),
    FormatRow(174, ".pfx", "PFX", True),
    FormatRow(175, ".jks", "JKS", True),
)
ALL_FORMATS = frozenset(row.value for row in FORMAT_TABLE)
PASSWORD_FORMATS = frozenset(row.value for row in FORMAT_TABLE if row.password_required)
