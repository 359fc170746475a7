"""Text from records, links and servers shown where Streamlit only takes Markdown (alert boxes, expander
labels, captions), without Markdown reinterpreting it: no link, image, HTML, formula or colour directive
can come out of it, and `2**-25` does not turn bold.

The page shows data through `st.text` / `st.code` / dataframes wherever it can; this is for the rest.
(Not named markdown.py: `streamlit run` puts dashboard/ on sys.path, where it would shadow the PyPI package.)"""

from __future__ import annotations

import re

__all__ = ["JOINER", "escape"]

# Characters that open a construct anywhere in a line: emphasis, code, links and images (`[`), HTML and
# autolinks (`<`), headings, formulas (`$`), strikethrough, tables, entities (`&amp;`).
_ALWAYS = set("\\`*_[]<>#$~|&")
# Streamlit turns URLs, www. names and e-mail addresses into links, and `:smile:` / `:material/x:` into
# emoji and icons, AFTER parsing (a backslash escape does not stop that): an invisible WORD JOINER
# breaks each pattern instead - after a colon followed by a non-space (`http:⁠//`), inside `www⁠.`
# and before `@`. "AdamW: lr" stays as it is.
JOINER = "\u2060"
_COLON = re.compile(r":(?=\S)")
_WWW = re.compile(r"(?i)\b(www)\.")
_LINE_START = re.compile(r"^([-+=]|\d+[.)])")  # a list item or heading underline if the text starts with it
_CONTROL = {c: " " for c in (*range(0x20), 0x7F)}  # a line break would end a label or start a block


def escape(text: object) -> str:
    """`text` as Markdown that Streamlit renders as the literal text, on one line: the characters that
    open a construct are backslash-escaped (CommonMark: an escaped punctuation character is literal and
    starts nothing), link and emoji patterns are broken by an invisible word joiner (JOINER), control
    characters (newlines included) become spaces."""
    out = "".join("\\" + c if c in _ALWAYS else c for c in str(text).translate(_CONTROL))
    out = _WWW.sub(r"\1" + JOINER + ".", _COLON.sub(":" + JOINER, out)).replace("@", JOINER + "@")
    return _LINE_START.sub(lambda m: m[0][:-1] + "\\" + m[0][-1], out)
