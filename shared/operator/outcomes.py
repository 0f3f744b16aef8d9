"""How an operator command ends: its exit code, a one-line mistake in how it was called, a one-line failure."""

from __future__ import annotations

import sys
from pathlib import Path

EXIT_OK, EXIT_FAILED, EXIT_MISTAKE = 0, 1, 2


class CliMistake(Exception):
    """A mistake in how the CLI was called (a file missing or malformed, ...): one line, what to do, no traceback."""

    def __init__(self, problem: str, remedy: str) -> None:
        super().__init__(f"{problem}: {remedy}")
        self.problem = problem
        self.remedy = remedy


def program_name(argv0: str | None = None) -> str:
    """`certrenew` when run as the console command, else `python -m shared` (how the user started it)."""
    name = Path(argv0 if argv0 is not None else sys.argv[0]).name
    return "certrenew" if name.startswith("certrenew") else "python -m shared"


def failure_line(code: str, message: str, remediation: str | None, status: int | None = None) -> str:
    """One line: what failed, and what to do about it."""
    head = f"FAILED ({status}) [{code}]" if status else f"FAILED [{code}]"
    line = f"{head} {message.rstrip('.')}."
    return f"{line} Remediation: {remediation}" if remediation else line
