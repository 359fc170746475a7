"""Text from findings and records shown as Markdown, without Markdown (or Streamlit's LaTeX / colour
directives) reinterpreting it: `2**-25` must not turn bold, `$` must not start a formula.
(Not named markdown.py: `streamlit run` puts dashboard/ on sys.path, where it would shadow the PyPI package.)"""

from __future__ import annotations

__all__ = ["escape"]

_SPECIAL = set("\\`*_[]<>#$~|")


def escape(text: object) -> str:
    """`text` with every Markdown-special character backslash-escaped; renders as the literal text."""
    return "".join("\\" + c if c in _SPECIAL else c for c in str(text))
