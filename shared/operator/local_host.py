"""What the Functions host gives the app's functions, played locally: the registered functions and a `context`."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any


class LocalContext:
    """The `context` the host passes: an invocation id for correlation."""

    def __init__(self, function_name: str) -> None:
        self.invocation_id = str(uuid.uuid4())
        self.function_name = function_name
        self.function_directory = str(Path(__file__).resolve().parents[1])
        self.trace_context = None
        self.retry_context = None
        self.thread_local_storage = None


_registered: dict[str, Any] | None = None


def registered_functions() -> dict[str, Any]:
    """The app's functions by name, as the host indexes them. `get_functions()` may run only once per process."""
    global _registered
    if _registered is None:
        import function_app

        _registered = {f.get_function_name(): f for f in function_app.app.get_functions()}
    return _registered
