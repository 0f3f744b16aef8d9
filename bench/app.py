"""The app's functions as the host sees them, listed once per process: azure-functions' FunctionApp refuses a second
get_functions() (it would register every function again and finds the names taken), as the host calls it once."""

from __future__ import annotations

import functools
from typing import Any


@functools.cache
def app_functions() -> dict[str, Any]:
    import function_app

    return {f.get_function_name(): f for f in function_app.app.get_functions()}
