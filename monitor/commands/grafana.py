"""`slat-monitor grafana push --url URL`: upload dashboards and alert rules to an existing Grafana.

The API token comes from an environment variable only (GRAFANA_TOKEN by default; a service-account
token with the Editor role, plus alert-rule write permission): a URL carrying user:password is
refused, and the token is not sent over plain http to another machine, nor with TLS checks off, without
`--insecure`. Nothing printed holds a credential (monitor/ops/redact.py); a server's error text is cut
short. Re-running overwrites by UID.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from ..ops.alerts import DEFAULT_TRIAGE_URL
from ..ops.ids import DATASOURCE_UID

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser("grafana", help="Grafana: push dashboards and alert rules",
                       description=__doc__.split("\n")[0])
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    push = actions.add_parser("push", help="upload dashboards and alert rules (idempotent)")
    push.add_argument("--url", required=True, help="Grafana base URL, e.g. http://127.0.0.1:3000")
    push.add_argument("--token-env", default="GRAFANA_TOKEN",
                      help="environment variable holding the API token (default GRAFANA_TOKEN)")
    push.add_argument("--datasource-uid", default=DATASOURCE_UID,
                      help=f"UID of the Prometheus datasource to query (default {DATASOURCE_UID})")
    push.add_argument("--prometheus-url", default=None,
                      help="also create/update that datasource, pointing at this Prometheus URL")
    push.add_argument("--triage-url", default=DEFAULT_TRIAGE_URL, help="triage page base URL linked by alerts")
    push.add_argument("--editable", action="store_true", help="leave the alert rules editable in Grafana's UI")
    push.add_argument("--insecure", action="store_true",
                      help="allow sending the token over plain http to another machine, or with ?verify=false")
    return p


def _url_problem(url: str, insecure: bool) -> str | None:
    """Why the token must not go to `url` (one line, the URL redacted), or None."""
    from urllib.parse import parse_qs, urlsplit

    from ..ops.redact import is_loopback, redact_url

    shown = redact_url(url)
    try:
        parts = urlsplit(url)
        _ = parts.port
    except ValueError:
        return f"--url {shown!r} is not a URL: expected e.g. https://grafana.example.com"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"--url {shown!r} is not an http(s) URL: expected e.g. https://grafana.example.com"
    if parts.username is not None or parts.password is not None:
        return (f"--url {shown!r} carries credentials: remove user:password from it and put a service-account "
                "token in the environment (GRAFANA_TOKEN, or the variable --token-env names)")
    if insecure:
        return None
    if parts.scheme == "http" and not is_loopback(url):
        return (f"--url {shown!r} is plain http to another machine: the token would cross the network "
                "readable; use https, or pass --insecure to send it anyway")
    if parse_qs(parts.query).get("verify", ["true"])[0].lower() in ("false", "0", "no", "off"):
        return f"--url {shown!r} turns TLS certificate checks off (verify=false): pass --insecure to allow it"
    return None


def run(args: argparse.Namespace) -> int:
    from grafana_client import GrafanaApi
    from grafana_client.client import GrafanaException, GrafanaUnauthorizedError
    from niquests.exceptions import RequestException  # grafana-client's HTTP library

    from ..ops.grafana_push import push
    from ..ops.redact import redact_text, redact_url

    problem = _url_problem(args.url, args.insecure)
    if problem:
        print(f"slat-monitor grafana push: {problem}", file=sys.stderr)
        return 2
    token = os.environ.get(args.token_env, "").strip()
    if not token:
        print(f"slat-monitor grafana push: set {args.token_env} to a Grafana service-account token "
              "(Administration > Service accounts), e.g. `export GRAFANA_TOKEN=glsa_...`", file=sys.stderr)
        return 2
    url, secrets = redact_url(args.url), [token]
    api = GrafanaApi.from_url(args.url, credential=token)
    try:
        for line in push(api, args.datasource_uid, args.triage_url, args.prometheus_url, args.editable):
            print(f"slat-monitor grafana push: {redact_text(line, secrets, limit=1000)}")
    except GrafanaUnauthorizedError:
        print(f"slat-monitor grafana push: {url} rejected the token in {args.token_env} (401)", file=sys.stderr)
        return 1
    except GrafanaException as exc:
        status = f"HTTP {exc.status_code}" if exc.status_code else "no response"
        print(f"slat-monitor grafana push: {url}: {status}: {redact_text(exc.message, secrets)}", file=sys.stderr)
        return 1
    except RequestException as exc:
        print(f"slat-monitor grafana push: no response from {url} (is Grafana running there?): "
              f"{redact_text(exc, secrets)}", file=sys.stderr)
        return 1
    return 0
