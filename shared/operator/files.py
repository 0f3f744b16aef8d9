"""The operator's JSON files: the local.settings.json a command runs with, and a renewal request."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from shared.operator.outcomes import CliMistake

LOCAL_STACK_SETTINGS = ".localstack/local.settings.json"


def read_json_file(path: Path, what: str, remedy: str) -> Any:
    """A JSON document from `path`, or a CliMistake naming the file and what to do."""
    return parse_json(read_file_bytes(path, what, remedy), f"{what} {path}", remedy)


def read_file_bytes(path: Path, what: str, remedy: str) -> bytes:
    """The file's bytes, read once (a pipe or a process substitution, /dev/fd/N, can be read only once)."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise CliMistake(f"{what} {path} does not exist", remedy) from None
    except IsADirectoryError:
        raise CliMistake(f"{what} {path} is a folder, not a file", remedy) from None
    except OSError as exc:
        raise CliMistake(f"{what} {path} cannot be read ({type(exc).__name__})", remedy) from None


def parse_json(data: bytes, where: str, remedy: str) -> Any:
    """The JSON document in `data` (UTF-8), or a CliMistake naming `where` it came from and what to do."""
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise CliMistake(f"{where} cannot be read ({type(exc).__name__})", remedy) from None
    except json.JSONDecodeError as exc:
        position = f"line {exc.lineno}, column {exc.colno}: {exc.msg}"
        raise CliMistake(f"{where} is not valid JSON ({position})", remedy) from None


SETTINGS_REMEDY = (
    'give a local.settings.json with a "Values" object (copy local.settings.sample.json; for the local stack '
    f"use {LOCAL_STACK_SETTINGS}, written while `bash dev.sh local --serve` runs)"
)


def load_settings_file(path: Path) -> int:
    """Apply local.settings.json "Values" to the environment. The file wins over the environment for the names it
    sets (non-empty values): it is the operator's explicit choice, and a shell's leftovers (REQUESTS_CA_BUNDLE, an
    old AVX_API_URL) must not silently point the run elsewhere."""
    document = read_json_file(path, "settings file", SETTINGS_REMEDY)
    values = document.get("Values") if isinstance(document, dict) else None
    if values is None:
        values = {}
    if not isinstance(document, dict) or not isinstance(values, dict):
        raise CliMistake(f'settings file {path} has no "Values" object', SETTINGS_REMEDY)
    applied = 0
    for key, value in values.items():
        if value not in (None, ""):
            os.environ[key] = str(value)
            applied += 1
    return applied
