"""Timer triggers of the nightly RCL renewal (filled in by the RCL issue)."""

from __future__ import annotations

import azure.functions as func

bp = func.Blueprint()
