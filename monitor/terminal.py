"""Text for a terminal: names from a model, a run record or Prometheus shown as text, never as control
sequences. A layer called "x\\x1b[2J" must not clear the screen, and one holding a newline must not
forge a line of the report.
"""

from __future__ import annotations

__all__ = ["printable"]

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(ch: str) -> str:
    if ch in _NAMED:
        return _NAMED[ch]
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else (f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")


def printable(text: object) -> str:
    """`text` (str() of anything) with every character a terminal would act on escaped: C0/C1 controls
    (ESC as \\x1b), DEL, newlines, line/paragraph separators and bidirectional overrides (Python's
    `str.isprintable`, which keeps ordinary letters of every script). Spaces stay."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() or ch == " " else _escape(ch) for ch in text)
