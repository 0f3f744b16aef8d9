"""The code's shape: no function over 50 lines in the library (shared/) and the triggers (renew_http/, renew_timer/).

A function that grows past that is split into named steps (see shared/rcl/decisions.py `classify` for a rule chain,
shared/appviewx/validation.py `parse_renew_request` for one function per field group)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAX_LINES = 50


def function_lengths() -> dict[tuple[str, str], int]:
    sources = [*ROOT.glob("shared/**/*.py"), *ROOT.glob("renew_http/*.py"), *ROOT.glob("renew_timer/*.py")]
    lengths: dict[tuple[str, str], int] = {}
    for path in sorted(sources):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno is not None:
                key = (path.relative_to(ROOT).as_posix(), node.name)
                lengths[key] = max(lengths.get(key, 0), node.end_lineno - node.lineno + 1)
    return lengths


def test_the_collector_sees_the_triggers_and_the_library() -> None:
    lengths = function_lengths()
    assert ("renew_http/__init__.py", "renew_http") in lengths
    assert ("shared/appviewx/webhook_renewal.py", "renew_and_store") in lengths


def test_no_function_is_longer_than_50_lines() -> None:
    long = {key: n for key, n in function_lengths().items() if n > MAX_LINES}
    assert not long, f"functions over {MAX_LINES} lines (split them into named steps): {long}"
