"""Small lexical helpers over SQL text: split statements, find the first keyword.

Aware of quoted strings and identifiers (``'..'``, ``".."``, ```..```, with backslash
and doubled-quote escapes) and of ``--``/``# `` line and ``/* */`` block comments, so
a ``;`` inside a literal never splits a statement. Not a parser: enough to apply
migration files and to keep a read-only endpoint to one read statement.
"""

from __future__ import annotations

import re

__all__ = ["READ_KEYWORDS", "first_keyword", "read_only_violation", "split_statements"]

#: Statements a read-only endpoint accepts, by first keyword.
READ_KEYWORDS = frozenset({"SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXISTS", "EXPLAIN"})

_QUOTES = "'\"`"
_WORD = re.compile(r"[A-Za-z_]+")
_OUTFILE = re.compile(r"\bINTO\s+OUTFILE\b", re.IGNORECASE)


def _code_spans(sql: str) -> list[tuple[int, int, str]]:
    """Return ``(start, end, kind)`` spans: kind is ``code``, ``quoted`` or ``comment``."""
    spans: list[tuple[int, int, str]] = []
    i, start, n = 0, 0, len(sql)
    while i < n:
        ch = sql[i]
        if ch in _QUOTES:
            end = _end_of_quoted(sql, i)
            kind = "quoted"
        elif sql.startswith(("--", "# ", "#!"), i):
            nl = sql.find("\n", i)
            end, kind = (n if nl < 0 else nl), "comment"
        elif sql.startswith("/*", i):
            close = sql.find("*/", i + 2)
            end, kind = (n if close < 0 else close + 2), "comment"
        else:
            i += 1
            continue
        if start < i:
            spans.append((start, i, "code"))
        spans.append((i, end, kind))
        i = start = end
    if start < n:
        spans.append((start, n, "code"))
    return spans


def _end_of_quoted(sql: str, i: int) -> int:
    quote, j, n = sql[i], i + 1, len(sql)
    while j < n:
        if sql[j] == "\\":
            j += 2
        elif sql[j] == quote:
            if j + 1 < n and sql[j + 1] == quote:
                j += 2
            else:
                return j + 1
        else:
            j += 1
    return n


def split_statements(sql: str) -> list[str]:
    """Split ``sql`` on top-level ``;``; drop chunks that are only whitespace or comments."""
    statements: list[str] = []
    current: list[str] = []
    has_code = False
    for start, end, kind in _code_spans(sql):
        text = sql[start:end]
        if kind != "code":
            current.append(text)
            has_code = has_code or kind == "quoted"
            continue
        pieces = text.split(";")
        for k, piece in enumerate(pieces):
            if k > 0:
                if has_code:
                    statements.append("".join(current).strip())
                current, has_code = [], False
            current.append(piece)
            has_code = has_code or bool(piece.strip())
    if has_code:
        statements.append("".join(current).strip())
    return statements


def first_keyword(sql: str) -> str:
    """Return the first word of ``sql`` outside comments (upper-cased), or ``''``."""
    for start, end, kind in _code_spans(sql):
        if kind == "quoted":
            return ""
        if kind == "code":
            stripped = sql[start:end].lstrip(" \t\r\n(")
            if stripped:
                match = _WORD.match(stripped)
                return match.group(0).upper() if match else ""
    return ""


def read_only_violation(sql: str) -> str | None:
    """Return why ``sql`` is not one plain read statement, or None if it is."""
    statements = split_statements(sql)
    if len(statements) != 1:
        return f"expected exactly one statement, got {len(statements)}"
    keyword = first_keyword(statements[0])
    if keyword not in READ_KEYWORDS:
        allowed = ", ".join(sorted(READ_KEYWORDS))
        return f"only read statements are allowed ({allowed}); got {keyword or 'nothing'!r}"
    code = " ".join(sql[s:e] for s, e, kind in _code_spans(sql) if kind == "code")
    if _OUTFILE.search(code):
        return "INTO OUTFILE is not allowed on the read endpoint"
    return None
