"""Which Host names the /metrics endpoint answers (export/server.py): DNS-rebinding protection.

A web page on another site can resolve its own name to 127.0.0.1 and then read a loopback server as
"same origin"; the Host header still carries that site's name, so the endpoint answers only to the
loopback names and the address it is bound to. Bound to a wildcard address (0.0.0.0, ::) it answers
to any Host: Prometheus scrapes the machine by whichever of its names or addresses it was given.
"""

from __future__ import annotations

from urllib.parse import urlsplit

__all__ = ["LOOPBACK_NAMES", "allowed_hosts", "host_allowed"]

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def allowed_hosts(bound: str) -> frozenset[str] | None:
    """Host names a request may name for an endpoint bound to `bound`; None: any (a wildcard address)."""
    if bound in ("", "0.0.0.0", "::"):
        return None
    return LOOPBACK_NAMES | {bound.strip("[]").lower()}


def host_allowed(header: str | None, allowed: frozenset[str] | None) -> bool:
    """Whether a request with this Host header (port ignored, a trailing dot too) may be answered."""
    if allowed is None:
        return True
    try:
        parts = urlsplit(f"//{header or ''}")
        _ = parts.port  # raises for a port that is not a number
    except ValueError:  # e.g. "[" or "host:port"
        return False
    if parts.username is not None or parts.path or parts.query or parts.fragment:
        return False
    return parts.hostname is not None and parts.hostname.rstrip(".") in allowed
