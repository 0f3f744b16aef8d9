"""What the clients of the upstream systems (AppViewX, RCL, Key Vault) share besides the outbound rules in
`shared.core.outbound`: the connect timeout, and how an optional text field of an answer is read. Pure, no I/O."""

from __future__ import annotations

from typing import Any

# The connect part of every upstream call's timeout; the read part and the whole call's deadline come from each
# system's own setting (AVX_TIMEOUT_SECONDS, RCL_TIMEOUT_SECONDS) or client.
CONNECT_TIMEOUT_SECONDS = 10.0


def optional_text(value: Any) -> str | None:
    """A field of an upstream's JSON answer as text: None when absent or empty, else `str(value)` (an id sent as a
    number reads as its digits)."""
    if value is None or value == "":
        return None
    return str(value)
