"""Text a student controls (a folder name, a reason quoting their spec) made safe for the place
it is written: a spreadsheet cell, a markdown page, a terminal line. Every writer of user text
goes through one of these three."""
from __future__ import annotations

import html
import re
import unicodedata

# bidirectional overrides and isolates: they reorder what a reader sees ("Trojan Source")
_BIDI = set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_MD_SPECIAL = re.compile(r"([\\`*_\[\]#|~])")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # OWASP's CSV injection list


def _hidden(c: str) -> bool:
    return unicodedata.category(c) in ("Cc", "Zl", "Zp") or c in _BIDI


def terminal_text(text) -> str:
    """Control characters shown, not obeyed: a newline as \\n, ESC as \\x1b, U+202E as \\u202e."""
    return "".join(c.encode("unicode_escape").decode() if _hidden(c) else c for c in str(text))


def md_text(text) -> str:
    """Text for a markdown page (a heading, a table cell, a list item) that stays one piece of text:
    control characters shown, HTML's <, > and & as entities, markdown's specials backslash-escaped."""
    return _MD_SPECIAL.sub(r"\\\1", html.escape(terminal_text(text), quote=False))


def csv_cell(text) -> str:
    """A text cell a spreadsheet shows rather than evaluates: a leading apostrophe where it would
    start a formula. Only for text; numbers are written as numbers."""
    text = str(text)
    return "'" + text if text.startswith(_FORMULA_START) else text
