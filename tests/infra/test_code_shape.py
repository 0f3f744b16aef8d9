"""The code's shape: no function over 50 lines in the library (shared/) and the triggers (renew_http/, renew_timer/).

A ratchet: the functions still longer than that are listed with their length today; a new long function fails,
and so does a listed one that grew (or was split: then its line goes)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAX_LINES = 50

# Still to split (path, function): its length today.
KNOWN_LONG: dict[tuple[str, str], int] = {
}


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
    assert ("shared/appviewx/pipeline.py", "renew_and_store") in lengths


def test_no_function_is_longer_than_50_lines_but_the_listed_ones() -> None:
    long = {key: n for key, n in function_lengths().items() if n > MAX_LINES}
    new = {key: n for key, n in long.items() if key not in KNOWN_LONG}
    assert not new, f"functions over {MAX_LINES} lines: {new}"
    grown = {key: n for key, n in long.items() if n > KNOWN_LONG[key]}
    assert not grown, f"listed long functions grew: {grown}"
    gone = sorted(key for key in KNOWN_LONG if key not in long)
    assert not gone, f"now at most {MAX_LINES} lines (remove them from KNOWN_LONG): {gone}"
