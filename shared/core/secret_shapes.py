"""What secret-shaped text looks like, whoever's secret it is: bearer/basic credentials, JWTs, `user:password@` in
URLs, values of sensitive keys in `key=value` / `"key": "value"` text, PEM blocks and long base64 runs, and the
attribute names whose whole value is secret. Pure, no I/O; the redaction guard (shared.core.redaction) applies it
after removing the secrets it knows by value.
"""

from __future__ import annotations

import re

REDACTED = "[REDACTED]"

_PEM = re.compile(r"-----BEGIN [A-Z0-9 ]{1,64}-----.*?(?:-----END [A-Z0-9 ]{1,64}-----|\Z)", re.S)
_AUTH_SCHEME = re.compile(r"(?i)\b(bearer|basic)(\s+|%20|\+)[A-Za-z0-9\-._~+/]{4,}=*")
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
_URL_USERINFO = re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://)[^/\s:@]+:[^/\s@]+@")
_SENSITIVE_KEY = re.compile(
    r"(?i)(?:password|passwd|pwd|passphrase|secret|token|sessionid|identity[-_]header|authorization|api[-_]?key|"
    r"accountkey|sharedaccesskey|privatekey|private_key|sig|signature)$"
)
# `key=value`, `key: value`, `"key": "value"`; whether the key is sensitive is decided by `_key_value`.
_KEY_VALUE = re.compile(
    r"(?P<key>(?<![\w.-])[\"']?(?P<name>[\w.-]++)[\"']?\s*+[:=]\s*+)"
    r"(?P<value>\"(?:[^\"\\]|\\.)*+\"|'[^']*+'|[^\s,;&}\])\"']++)"
)
# Attribute / extra-field names whose whole value is secret.
_SENSITIVE_NAME = re.compile(
    r"(?i)(password|passwd|pwd|passphrase|secret|token|sessionid|identity.header|authorization|api.?key|"
    r"accountkey|privatekey|private.key|signature|cookie)"
)
_BASE64_RUN = re.compile(r"[A-Za-z0-9+/_-]{60,}={0,2}")
_HEX = re.compile(r"[0-9A-Fa-f]+")


def _looks_like_base64(run: str) -> bool:
    body = run.rstrip("=")
    if _HEX.fullmatch(body):
        return False  # thumbprints, hashes, ids
    # One alphabet or the other: a URL path mixes "/" with "-" or "_", base64 does not.
    if any(c in body for c in "+/") and any(c in body for c in "-_"):
        return False
    return any(c.isupper() for c in body) and any(c.islower() for c in body) and any(c.isdigit() for c in body)


def _key_value(match: re.Match[str]) -> str:
    value = match.group("value")
    if not _SENSITIVE_KEY.search(match.group("name")):
        # The value may itself hold `key=value` ("said: password=..."): look inside it too.
        return match.group("key") + (_KEY_VALUE.sub(_key_value, value) if ("=" in value or ":" in value) else value)
    if value.startswith(("[REDACTED", '"[REDACTED', "'[REDACTED")):
        return match.group(0)
    quote_char = value[0] if value[:1] in "\"'" else ""
    return f"{match.group('key')}{quote_char}{REDACTED}{quote_char}"


def names_a_secret(name: str) -> bool:
    """Whether an attribute or `extra` field name says its whole value is secret."""
    return bool(_SENSITIVE_NAME.search(name))


def redact_shapes(text: str) -> str:
    """`text` with every secret-shaped part replaced by a marker."""
    text = _PEM.sub("[REDACTED PEM]", text)
    text = _AUTH_SCHEME.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    text = _JWT.sub("[REDACTED JWT]", text)
    text = _URL_USERINFO.sub(lambda m: f"{m.group(1)}{REDACTED}@", text)
    text = _KEY_VALUE.sub(_key_value, text)
    return _BASE64_RUN.sub(lambda m: "[REDACTED BASE64]" if _looks_like_base64(m.group(0)) else m.group(0), text)
