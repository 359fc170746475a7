"""`slat-monitor grafana push --url URL`: upload dashboards and alert rules to an existing Grafana.

The API token comes from an environment variable (GRAFANA_TOKEN by default; a service-account token
with the Editor role, plus alert-rule write permission). Re-running overwrites by UID.
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
    return p


def run(args: argparse.Namespace) -> int:
    from grafana_client import GrafanaApi
    from grafana_client.client import GrafanaException, GrafanaUnauthorizedError
    from niquests.exceptions import RequestException  # grafana-client's HTTP library

    from ..ops.grafana_push import push

    token = os.environ.get(args.token_env, "").strip()
    if not token:
        print(f"slat-monitor grafana push: set {args.token_env} to a Grafana service-account token "
              "(Administration > Service accounts), e.g. `export GRAFANA_TOKEN=glsa_...`", file=sys.stderr)
        return 2
    api = GrafanaApi.from_url(args.url, credential=token)
    try:
        for line in push(api, args.datasource_uid, args.triage_url, args.prometheus_url, args.editable):
            print(f"slat-monitor grafana push: {line}")
    except GrafanaUnauthorizedError:
        print(f"slat-monitor grafana push: {args.url} rejected the token in {args.token_env} (401)",
              file=sys.stderr)
        return 1
    except GrafanaException as exc:
        status = f"HTTP {exc.status_code}" if exc.status_code else "no response"
        print(f"slat-monitor grafana push: {args.url}: {status}: {exc.message}", file=sys.stderr)
        return 1
    except RequestException as exc:
        print(f"slat-monitor grafana push: no response from {args.url} (is Grafana running there?): {exc}",
              file=sys.stderr)
        return 1
    return 0
