"""Credentials out of what the commands print: user:password in URLs, bearer and basic tokens, Grafana
service-account tokens, `token=` / `"password": ...` pairs, and any secret the caller knows; server
answers cut short, so a misbehaving server cannot print a page of its own (or our) secrets.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit, urlunsplit

__all__ = ["MASK", "is_loopback", "redact_text", "redact_url"]

MASK = "***"
_LIMIT = 300
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@]+@")
_SCHEMES = re.compile(r"(?i)\b(bearer|basic)(\s+)[A-Za-z0-9._~+/=-]{8,}")
_TOKENS = re.compile(r"\b(glsa|glc|glpat|ghp|gho|xox[abp])_[A-Za-z0-9_-]{6,}|\beyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9._-]+")
_PAIRS = re.compile(r"(?i)([\"']?\b[\w-]*(?:token|passw(?:or)?d|secret|api[_-]?key|credential|auth[\w-]*)[\"']?"
                    r"\s*[:=]\s*)(\"[^\"]*\"|'[^']*'|[^\s,;&}]+)")


def redact_url(url: str) -> str:
    """`url` with its user:password replaced by MASK and secret-looking query values masked."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact_text(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = MASK + "@" + netloc.rsplit("@", 1)[1]
    return redact_text(urlunsplit(parts._replace(netloc=netloc)), limit=len(url) + 64)


def redact_text(text: object, secrets: Iterable[str] = (), limit: int = _LIMIT) -> str:
    """`text` with credentials masked (known `secrets` first, then the patterns above), cut to `limit`
    characters with a note of the full length."""
    out = str(text)
    for secret in sorted((s for s in secrets if s and len(s) >= 4), key=len, reverse=True):
        out = out.replace(secret, MASK)
    out = _USERINFO.sub(lambda m: m[1] + MASK + "@", out)
    out = _SCHEMES.sub(lambda m: m[1] + m[2] + MASK, out)
    out = _TOKENS.sub(MASK, out)
    out = _PAIRS.sub(lambda m: m[1] + MASK, out)
    return out if len(out) <= limit else out[:limit] + f"... ({len(out)} characters)"


def is_loopback(url: str) -> bool:
    """Whether `url` names this machine by a loopback name or address (localhost, 127.0.0.0/8, ::1)."""
    import ipaddress

    try:
        host = (urlsplit(url).hostname or "").rstrip(".")
    except ValueError:
        return False
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
