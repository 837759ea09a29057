"""A small YAML-subset parser for cloud-config, stdlib only (runs inside the guest).

Supported: block mappings and sequences (also sequences at the same indent as their key), flow
collections `[...]` and `{...}`, block scalars `|` and `>` with chomping indicators, single- and
double-quoted strings, plain scalars typed like YAML 1.1 (PyYAML): null, booleans (yes/no/on/off),
integers (decimal, 0x hex, leading-zero octal), floats; comments; `---` document start.
Not supported: anchors/aliases, tags (ignored), complex keys, multiple documents.
"""

from __future__ import annotations

import re
from typing import Any


class YamlError(ValueError):
    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(f"line {line}: {message}" if line is not None else message)


_NULLS = {"", "~", "null", "Null", "NULL"}
_TRUE = {"yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON", "y", "Y"}
_FALSE = {"no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF", "n", "N"}
_INT_DEC = re.compile(r"^[-+]?(0|[1-9][0-9_]*)$")
_INT_OCT = re.compile(r"^[-+]?0[0-7_]+$")
_INT_OCT_NEW = re.compile(r"^0o[0-7_]+$")
_INT_HEX = re.compile(r"^[-+]?0x[0-9a-fA-F_]+$")
_FLOAT = re.compile(r"^[-+]?([0-9][0-9_]*)?\.[0-9_]*([eE][-+][0-9]+)?$")
_BLOCK_HEADER = re.compile(r"^([|>])([-+]?)([1-9]?)([-+]?)$")
_ESCAPES = {
    "n": "\n",
    "t": "\t",
    "r": "\r",
    "0": "\0",
    "\\": "\\",
    '"': '"',
    "/": "/",
    " ": " ",
    "a": "\a",
    "b": "\b",
    "e": "\x1b",
    "f": "\f",
    "v": "\v",
    "N": "\x85",
    "_": "\xa0",
}


def plain_scalar(text: str) -> Any:
    """Type a plain (unquoted) scalar the way YAML 1.1 / PyYAML does."""
    if text in _NULLS:
        return None
    if text in _TRUE and text not in ("y", "Y"):
        return True
    if text in _FALSE and text not in ("n", "N"):
        return False
    if _INT_DEC.match(text):
        return int(text.replace("_", ""))
    if _INT_HEX.match(text):
        return int(text.replace("_", ""), 16)
    if _INT_OCT.match(text):
        return int(text.replace("_", ""), 8)
    if _INT_OCT_NEW.match(text):
        return text  # YAML 1.1 has no 0o prefix: PyYAML keeps it a string
    if _FLOAT.match(text) and any(c.isdigit() for c in text):
        return float(text.replace("_", ""))
    if text in (".inf", ".Inf", ".INF", "+.inf"):
        return float("inf")
    if text in ("-.inf", "-.Inf", "-.INF"):
        return float("-inf")
    if text in (".nan", ".NaN", ".NAN"):
        return float("nan")
    return text


def _strip_comment(text: str) -> str:
    """Remove a trailing '# comment' that is outside quotes."""
    quote = ""
    i = 0
    while i < len(text):
        c = text[i]
        if quote:
            if quote == '"' and c == "\\":
                i += 2
                continue
            if c == quote:
                if quote == "'" and i + 1 < len(text) and text[i + 1] == "'":
                    i += 2
                    continue
                quote = ""
        elif c in "'\"" and (i == 0 or text[i - 1] in " \t[{,:"):
            quote = c
        elif c == "#" and (i == 0 or text[i - 1] in " \t"):
            return text[:i].rstrip()
        i += 1
    return text.rstrip()


def _double_quoted(body: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(body):
        c = body[i]
        if c != "\\":
            out.append(c)
            i += 1
            continue
        i += 1
        if i >= len(body):
            raise YamlError("dangling backslash in double-quoted string")
        e = body[i]
        if e in _ESCAPES:
            out.append(_ESCAPES[e])
            i += 1
        elif e in "xuU":
            width = {"x": 2, "u": 4, "U": 8}[e]
            out.append(chr(int(body[i + 1 : i + 1 + width], 16)))
            i += 1 + width
        elif e == "\n":  # escaped line break: join without space
            i += 1
            while i < len(body) and body[i] in " \t":
                i += 1
        else:
            raise YamlError(f"unknown escape \\{e}")
    return "".join(out)


def _fold_quoted_lines(raw: str) -> str:
    """Multi-line quoted scalars: a single line break becomes a space, blank lines become newlines."""
    if "\n" not in raw:
        return raw
    lines = raw.split("\n")
    result = lines[0].rstrip(" \t")
    pending_newlines = 0
    for line in lines[1:]:
        stripped = line.strip(" \t")
        if not stripped:
            pending_newlines += 1
            continue
        result += ("\n" * pending_newlines if pending_newlines else " ") + stripped
        pending_newlines = 0
    return result + "\n" * pending_newlines


class _Flow:
    """Parser for flow collections and quoted scalars on one (joined) string."""

    def __init__(self, text: str, line: int) -> None:
        self.text = text
        self.pos = 0
        self.line = line

    def error(self, msg: str) -> YamlError:
        return YamlError(msg, self.line)

    def skip_ws(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in " \t\n":
            self.pos += 1

    def quoted(self) -> str:
        q = self.text[self.pos]
        self.pos += 1
        start = self.pos
        while self.pos < len(self.text):
            c = self.text[self.pos]
            if q == '"' and c == "\\":
                self.pos += 2
                continue
            if c == q:
                if q == "'" and self.text[self.pos + 1 : self.pos + 2] == "'":
                    self.pos += 2
                    continue
                raw = _fold_quoted_lines(self.text[start : self.pos])
                self.pos += 1
                return _double_quoted(raw) if q == '"' else raw.replace("''", "'")
            self.pos += 1
        raise self.error("unterminated quoted string")

    def value(self, in_flow: bool) -> Any:
        self.skip_ws()
        if self.pos >= len(self.text):
            return None
        c = self.text[self.pos]
        if c == "[":
            return self.sequence()
        if c == "{":
            return self.mapping()
        if c in "'\"":
            return self.quoted()
        return self.plain(in_flow)

    def plain(self, in_flow: bool) -> Any:
        start = self.pos
        while self.pos < len(self.text):
            c = self.text[self.pos]
            if in_flow and c in ",]}":
                break
            at_end = self.pos + 1 == len(self.text)
            if in_flow and c == ":" and (at_end or self.text[self.pos + 1] in " \t\n,]}"):
                break
            self.pos += 1
        return plain_scalar(" ".join(self.text[start : self.pos].split()))

    def sequence(self) -> list[Any]:
        self.pos += 1
        items: list[Any] = []
        while True:
            self.skip_ws()
            if self.pos >= len(self.text):
                raise self.error("unterminated flow sequence")
            if self.text[self.pos] == "]":
                self.pos += 1
                return items
            item = self.value(in_flow=True)
            self.skip_ws()
            if self.text[self.pos : self.pos + 1] == ":":  # single-pair mapping inside a sequence
                self.pos += 1
                item = {item: self.value(in_flow=True)}
                self.skip_ws()
            items.append(item)
            if self.text[self.pos : self.pos + 1] == ",":
                self.pos += 1
            elif self.text[self.pos : self.pos + 1] != "]":
                raise self.error("expected ',' or ']' in flow sequence")

    def mapping(self) -> dict[Any, Any]:
        self.pos += 1
        result: dict[Any, Any] = {}
        while True:
            self.skip_ws()
            if self.pos >= len(self.text):
                raise self.error("unterminated flow mapping")
            if self.text[self.pos] == "}":
                self.pos += 1
                return result
            key = self.value(in_flow=True)
            self.skip_ws()
            value: Any = None
            if self.text[self.pos : self.pos + 1] == ":":
                self.pos += 1
                value = self.value(in_flow=True)
                self.skip_ws()
            result[key] = value
            if self.text[self.pos : self.pos + 1] == ",":
                self.pos += 1
            elif self.text[self.pos : self.pos + 1] != "}":
                raise self.error("expected ',' or '}' in flow mapping")


def _indent_of(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _is_blank(line: str) -> bool:
    s = line.strip()
    return not s or s.startswith("#")


def _split_key(content: str) -> tuple[str, str] | None:
    """'key: value' -> (key, value) when the line is a mapping entry (colon outside quotes)."""
    if content.startswith(("'", '"')):
        q = content[0]
        i = 1
        while i < len(content):
            if content[i] == "\\" and q == '"':
                i += 2
                continue
            if content[i] == q:
                if q == "'" and content[i + 1 : i + 2] == "'":
                    i += 2
                    continue
                break
            i += 1
        rest = content[i + 1 :]
        if rest.startswith(":") and (len(rest) == 1 or rest[1] in " \t"):
            return content[: i + 1], rest[1:].strip()
        return None
    if content.startswith(("[", "{")):
        return None
    for m in re.finditer(r":(\s|$)", content):
        key = content[: m.start()]
        if "#" in key and re.search(r"\s#", key):
            return None
        return key, content[m.end() :].strip()
    return None


class _Block:
    def __init__(self, text: str) -> None:
        self.lines = text.expandtabs(8).split("\n") if "\t" in text else text.split("\n")
        self.i = 0

    def error(self, msg: str) -> YamlError:
        return YamlError(msg, self.i + 1)

    def next_content(self) -> int | None:
        """Index of the next non-blank line (skipping comments and '---'), or None."""
        while self.i < len(self.lines):
            line = self.lines[self.i]
            if _is_blank(line) or line.startswith("%"):
                self.i += 1
                continue
            if line.rstrip() == "---" or line.startswith("--- "):
                rest = line[4:].strip()
                if rest and not rest.startswith("#"):
                    self.lines[self.i] = rest
                    return self.i
                self.i += 1
                continue
            if line.rstrip() == "...":
                self.i = len(self.lines)
                return None
            return self.i
        return None

    def node(self, min_indent: int) -> Any:
        idx = self.next_content()
        if idx is None:
            return None
        line = self.lines[idx]
        indent = _indent_of(line)
        if indent < min_indent:
            return None
        content = line.strip()
        if content == "-" or content.startswith("- "):
            return self.sequence(indent)
        if _split_key(_strip_comment(content)) is not None:
            return self.mapping(indent)
        return self.scalar_lines(indent)

    def scalar_lines(self, indent: int) -> Any:
        """A scalar (or flow collection) that may continue on more-indented lines."""
        first = self.i
        parts = [_strip_comment(self.lines[self.i].strip())]
        self.i += 1
        text = parts[0]
        if text[:1] in "[{'\"":
            while not self._complete(text) and self.i < len(self.lines):
                parts.append(self.lines[self.i].strip())
                self.i += 1
                text = "\n".join(parts)
        else:
            while self.i < len(self.lines):
                nxt = self.lines[self.i]
                if _is_blank(nxt) or _indent_of(nxt) < indent:
                    break
                if _indent_of(nxt) == indent and (_split_key(nxt.strip()) or nxt.strip().startswith("- ")):
                    break
                parts.append(_strip_comment(nxt.strip()))
                self.i += 1
            text = " ".join(parts)
        return self.inline(text, first)

    @staticmethod
    def _complete(text: str) -> bool:
        try:
            flow = _Flow(text, 0)
            flow.value(in_flow=False)
            flow.skip_ws()
            return True
        except YamlError:
            return False

    def inline(self, text: str, line_index: int) -> Any:
        text = text.strip()
        if text.startswith("!"):  # a tag: ignore it
            _, _, text = text.partition(" ")
            text = text.strip()
        if text.startswith(("&", "*")):
            raise YamlError("anchors and aliases are not supported", line_index + 1)
        if text[:1] in "[{'\"":
            flow = _Flow(text, line_index + 1)
            value = flow.value(in_flow=False)
            flow.skip_ws()
            if flow.pos != len(flow.text):
                raise YamlError(f"unexpected text after value: {flow.text[flow.pos :]!r}", line_index + 1)
            return value
        return plain_scalar(text)

    def value_after_indicator(self, rest: str, parent_indent: int, key_line: int) -> Any:
        """The value that follows 'key:' or '- ' on the same line (possibly continuing below)."""
        rest = _strip_comment(rest)
        header = _BLOCK_HEADER.match(rest)
        if header:
            return self.block_scalar(header, parent_indent)
        if not rest:
            idx = self.next_content()
            if idx is None:
                return None
            nxt = self.lines[idx]
            if _indent_of(nxt) > parent_indent:
                return self.node(parent_indent + 1)
            return None
        if rest[:1] in "[{'\"" and not self._complete(rest):
            parts = [rest]
            while not self._complete("\n".join(parts)) and self.i < len(self.lines):
                parts.append(self.lines[self.i].strip())
                self.i += 1
            return self.inline("\n".join(parts), key_line)
        if rest[:1] not in "[{'\"":
            # plain scalars may continue on more-indented lines
            parts = [rest]
            while self.i < len(self.lines):
                nxt = self.lines[self.i]
                if _is_blank(nxt) or _indent_of(nxt) <= parent_indent:
                    break
                parts.append(_strip_comment(nxt.strip()))
                self.i += 1
            rest = " ".join(parts)
        return self.inline(rest, key_line)

    def block_scalar(self, header: re.Match[str], parent_indent: int) -> str:
        style = header.group(1)
        chomp = header.group(2) or header.group(4)
        explicit = header.group(3)
        raw: list[str] = []
        block_indent = parent_indent + int(explicit) if explicit else None
        while self.i < len(self.lines):
            line = self.lines[self.i]
            if not line.strip():
                raw.append("")
                self.i += 1
                continue
            ind = _indent_of(line)
            if block_indent is None:
                if ind <= parent_indent:
                    break
                block_indent = ind
            if ind < block_indent:
                break
            raw.append(line[block_indent:])
            self.i += 1
        # trailing blank lines belong to the scalar only for chomping purposes
        body_end = len(raw)
        while body_end and raw[body_end - 1] == "":
            body_end -= 1
        trailing = len(raw) - body_end
        lines = raw[:body_end]
        if style == "|":
            text = "\n".join(lines)
        else:
            text = ""
            prev_more_indented = False
            for n, line in enumerate(lines):
                more_indented = line.startswith((" ", "\t"))
                if n == 0:
                    text = line
                elif line == "":
                    text += "\n"
                elif text.endswith("\n") or more_indented or prev_more_indented:
                    text += "" if text.endswith("\n") and not (more_indented or prev_more_indented) else "\n"
                    text += line
                else:
                    text += " " + line
                prev_more_indented = more_indented
        if not lines:
            return "" if chomp != "+" else "\n" * trailing
        if chomp == "-":
            return text
        if chomp == "+":
            return text + "\n" + "\n" * trailing
        return text + "\n"

    def sequence(self, indent: int) -> list[Any]:
        items: list[Any] = []
        while True:
            idx = self.next_content()
            if idx is None:
                break
            line = self.lines[idx]
            content = line.strip()
            if _indent_of(line) != indent or not (content == "-" or content.startswith("- ")):
                if _indent_of(line) > indent:
                    raise self.error("bad indentation in sequence")
                break
            rest = content[1:].lstrip(" ")
            offset = indent + (len(content) - len(rest))
            if rest and (rest == "-" or rest.startswith("- ") or _split_key(_strip_comment(rest))):
                # a nested collection starting on the dash line: re-read it at its own column
                self.lines[idx] = " " * offset + rest
                items.append(self.node(offset))
            else:
                self.i += 1
                items.append(self.value_after_indicator(rest, indent, idx))
        return items

    def mapping(self, indent: int) -> dict[Any, Any]:
        result: dict[Any, Any] = {}
        while True:
            idx = self.next_content()
            if idx is None:
                break
            line = self.lines[idx]
            if _indent_of(line) != indent:
                if _indent_of(line) > indent:
                    raise self.error("bad indentation in mapping")
                break
            split = _split_key(_strip_comment(line.strip()))
            if split is None:
                if line.strip() == "-" or line.strip().startswith("- "):
                    break
                raise self.error(f"expected 'key: value', got {line.strip()!r}")
            raw_key, rest = split
            key = self.inline(raw_key, idx) if raw_key else None
            self.i += 1
            if not _strip_comment(rest):
                nxt = self.next_content()
                if nxt is not None:
                    nline = self.lines[nxt]
                    nstrip = nline.strip()
                    if _indent_of(nline) == indent and (nstrip == "-" or nstrip.startswith("- ")):
                        result[key] = self.sequence(indent)  # sequence at the key's own indent
                        continue
            result[key] = self.value_after_indicator(rest, indent, idx)
        return result


def loads(text: str) -> Any:
    """Parse one YAML document (the cloud-config subset described above)."""
    parser = _Block(text.replace("\r\n", "\n"))
    value = parser.node(0)
    if parser.next_content() is not None:
        raise parser.error(f"unexpected content: {parser.lines[parser.i].strip()!r}")
    return value
