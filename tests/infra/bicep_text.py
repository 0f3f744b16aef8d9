"""Reading the Bicep in infra/ as text (Bicep cannot be compiled on these machines): its strings with Bicep's escapes,
its resource blocks, its property values. Enough for the infrastructure and KQL tests, not a Bicep parser."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"

# Bicep's escapes in '...' strings; '''...''' strings have none (and no interpolation).
ESCAPES = {"\\": "\\", "'": "'", "n": "\n", "r": "\r", "t": "\t", "$": "$"}


class BicepTextError(ValueError):
    pass


@dataclass(frozen=True)
class BicepString:
    value: str  # escapes resolved; each interpolation kept as ${expression}
    interpolations: tuple[str, ...]
    end: int  # index just after the closing quote


def bicep_files() -> list[Path]:
    return sorted(INFRA.rglob("*.bicep"))


def read_string(text: str, start: int) -> BicepString:
    """The Bicep string literal that starts at text[start] (a quote)."""
    if text.startswith("'''", start):
        end = text.find("'''", start + 3)
        if end < 0:
            raise BicepTextError(f"unterminated ''' string at offset {start}")
        value = text[start + 3 : end]
        if value.startswith("\n"):  # the first line break after the opening ''' is not part of the value
            value = value[1:]
        elif value.startswith("\r\n"):
            value = value[2:]
        return BicepString(value, (), end + 3)
    if text[start] != "'":
        raise BicepTextError(f"no string at offset {start}: {text[start : start + 20]!r}")
    out: list[str] = []
    interpolations: list[str] = []
    i = start + 1
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            nxt = text[i + 1 : i + 2]
            if nxt == "u" and text[i + 2 : i + 3] == "{":
                close = text.index("}", i)
                out.append(chr(int(text[i + 3 : close], 16)))
                i = close + 1
                continue
            if nxt not in ESCAPES:
                raise BicepTextError(f"invalid escape \\{nxt} at offset {i}")
            out.append(ESCAPES[nxt])
            i += 2
        elif ch == "'":
            return BicepString("".join(out), tuple(interpolations), i + 1)
        elif ch == "\n":
            raise BicepTextError(f"line break in a '...' string at offset {i} (use ''' for multi-line strings)")
        elif text.startswith("${", i):
            close = _matching(text, i + 1, "{", "}")
            expression = text[i + 2 : close].strip()
            interpolations.append(expression)
            out.append("${" + expression + "}")
            i = close + 1
        else:
            out.append(ch)
            i += 1
    raise BicepTextError(f"unterminated string at offset {start}")


def skip_trivia_and_strings(text: str, i: int) -> int | None:
    """If text[i] starts a comment or a string, the index after it; else None."""
    if text.startswith("//", i):
        end = text.find("\n", i)
        return len(text) if end < 0 else end
    if text.startswith("/*", i):
        return text.index("*/", i) + 2
    if text[i] == "'":
        return read_string(text, i).end
    return None


def _matching(text: str, open_at: int, opening: str, closing: str) -> int:
    depth = 0
    i = open_at
    while i < len(text):
        skipped = skip_trivia_and_strings(text, i) if text[i] in "/'" else None
        if skipped is not None:
            i = skipped
            continue
        if text[i] == opening:
            depth += 1
        elif text[i] == closing:
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise BicepTextError(f"no matching {closing} for offset {open_at}")


@dataclass(frozen=True)
class Resource:
    path: Path
    symbol: str
    type: str  # e.g. Microsoft.Insights/scheduledQueryRules
    api_version: str
    body: str  # the text between the resource's outer braces


RESOURCE = re.compile(r"^resource\s+(\w+)\s+'([^'@]+)@([^']+)'(?:\s+existing)?\s*=\s*(?:if\s*\()?", re.M)


def resources(path: Path, type_name: str | None = None) -> list[Resource]:
    text = path.read_text(encoding="utf-8")
    found: list[Resource] = []
    for match in RESOURCE.finditer(text):
        symbol, rtype, version = match.groups()
        if type_name and rtype.lower() != type_name.lower():
            continue
        open_at = text.index("{", match.end())
        if text[match.end() - 1 : match.end()] == "(":  # conditional resource: skip its condition
            open_at = text.index("{", _matching(text, match.end() - 1, "(", ")"))
        close = _matching(text, open_at, "{", "}")
        found.append(Resource(path, symbol, rtype, version, text[open_at + 1 : close]))
    return found


def property_values(text: str, name: str) -> list[tuple[int, str]]:
    """(offset, raw value text up to the end of its line or string) of each `name:` property in text."""
    values: list[tuple[int, str]] = []
    for match in re.finditer(rf"^[ \t]*{re.escape(name)}\s*:\s*", text, re.M):
        at = match.end()
        if text[at] == "'":
            end = read_string(text, at).end
        else:
            end = text.find("\n", at)
            end = len(text) if end < 0 else end
        values.append((at, text[at:end]))
    return values


def string_variables(text: str) -> dict[str, BicepString]:
    """`var name = '...'` (or ''' ... ''') declarations whose value is a single string literal."""
    found: dict[str, BicepString] = {}
    for match in re.finditer(r"^var\s+(\w+)\s*=\s*(?=')", text, re.M):
        literal = read_string(text, match.end())
        rest = text[literal.end : text.find("\n", literal.end) if "\n" in text[literal.end :] else len(text)]
        if not rest.strip() or rest.strip().startswith("//"):
            found[match.group(1)] = literal
    return found


def literal_parameters(text: str) -> dict[str, str]:
    """`param name type = <string or number literal>` defaults, as text."""
    found: dict[str, str] = {}
    for match in re.finditer(r"^param\s+(\w+)\s+\w+\s*=\s*", text, re.M):
        at = match.end()
        if text[at] == "'":
            literal = read_string(text, at)
            if not literal.interpolations:
                found[match.group(1)] = literal.value
        else:
            number = re.match(r"-?\d+(?:\.\d+)?\b", text[at:])
            if number:
                found[match.group(1)] = number.group(0)
    return found
