"""PROTOCOL FAKE of the Grafana HTTP API - not Grafana. We cannot run Grafana here, so this small server
implements only the endpoints `slat-monitor grafana push` calls, with the status codes and the few
validations Grafana documents (Bearer auth, 404 for unknown UIDs, 409 for duplicate creates, rules need
an existing folder and a condition that names one of their queries, group intervals in multiples of
10 s). It records every request so tests can check method, path, body and auth header. It proves what
we SEND, not how a real Grafana interprets it: see docs/ops.md for what is and isn't verified.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Recorded:
    method: str
    path: str
    authorization: str | None
    body: Any
    disable_provenance: str | None


@dataclass
class GrafanaState:
    folders: dict[str, dict] = field(default_factory=dict)
    dashboards: dict[str, dict] = field(default_factory=dict)
    rules: dict[str, dict] = field(default_factory=dict)
    groups: dict[tuple[str, str], int] = field(default_factory=dict)  # (folder, group) -> interval s
    datasources: dict[str, dict] = field(default_factory=dict)


def _rule_error(rule: dict, state: GrafanaState) -> str | None:
    if rule.get("folderUID") not in state.folders:
        return "folder does not exist"
    if not rule.get("title") or not rule.get("ruleGroup") or not rule.get("data"):
        return "title, ruleGroup and data are required"
    if rule.get("condition") not in {q.get("refId") for q in rule["data"]}:
        return "condition must be the refId of one of the queries"
    return None


class FakeGrafana:
    """`FakeGrafana(token)`: `.url`, `.state`, `.requests`; `.close()`. Only `token` is accepted.
    `.fail = (status, message)` makes every authorised request answer that (a misbehaving server)."""

    def __init__(self, token: str) -> None:
        self.token, self.state, self.requests = token, GrafanaState(), []
        self.fail: tuple[int, str] | None = None
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                body = json.loads(raw) if raw else None
                with fake._lock:
                    fake.requests.append(Recorded(self.command, self.path, self.headers.get("Authorization"),
                                                  body, self.headers.get("X-Disable-Provenance")))
                    status, payload = fake.route(self.command, self.path, body, self.headers)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = _handle  # noqa: N815 - http.server's naming

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def route(self, method: str, path: str, body: Any, headers: Any) -> tuple[int, Any]:
        if headers.get("Authorization") != f"Bearer {self.token}":
            return 401, {"message": "invalid API key"}
        if self.fail is not None:
            return self.fail[0], {"message": self.fail[1]}
        s = self.state
        if m := re.fullmatch(r"/api/folders/([\w-]+)", path):
            return (200, s.folders[m[1]]) if m[1] in s.folders else (404, {"message": "folder not found"})
        if path == "/api/folders" and method == "POST":
            if body["uid"] in s.folders:
                return 409, {"message": "a folder with the same uid already exists"}
            s.folders[body["uid"]] = {"uid": body["uid"], "title": body["title"]}
            return 200, s.folders[body["uid"]]
        if path == "/api/dashboards/db" and method == "POST":
            return self._save_dashboard(body)
        if path.startswith("/api/v1/provisioning/"):
            return self._provisioning(method, path.removeprefix("/api/v1/provisioning"), body)
        if path.startswith("/api/datasources"):
            return self._datasources(method, path, body)
        return 404, {"message": "not found (protocol fake)"}

    def _save_dashboard(self, body: dict) -> tuple[int, Any]:
        board = body.get("dashboard") or {}
        if not board.get("uid") or not board.get("title") or "panels" not in board:
            return 400, {"message": "dashboard needs uid, title and panels"}
        if body.get("folderUid") not in self.state.folders:
            return 400, {"message": "folder not found"}
        if board["uid"] in self.state.dashboards and not body.get("overwrite"):
            return 412, {"status": "version-mismatch"}
        self.state.dashboards[board["uid"]] = board
        return 200, {"status": "success", "uid": board["uid"], "version": 1}

    def _provisioning(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        s = self.state
        if path == "/alert-rules" and method == "POST":
            if body.get("uid") in s.rules:
                return 409, {"message": "rule uid already exists"}
            if error := _rule_error(body, s):
                return 400, {"message": error}
            s.rules[body["uid"]] = body
            s.groups.setdefault((body["folderUID"], body["ruleGroup"]), 60)
            return 201, body
        if m := re.fullmatch(r"/alert-rules/([\w-]+)", path):
            if m[1] not in s.rules:
                return 404, {"message": "rule not found"}
            if method == "GET":
                return 200, s.rules[m[1]]
            if error := _rule_error(body, s):
                return 400, {"message": error}
            s.rules[m[1]] = body
            return 200, body
        if m := re.fullmatch(r"/folder/([\w-]+)/rule-groups/([\w-]+)", path):
            key = (m[1], m[2])
            if key not in s.groups:
                return 404, {"message": "rule group not found"}
            if method == "PUT":
                if body["interval"] <= 0 or body["interval"] % 10:
                    return 400, {"message": "interval must be a multiple of 10 s"}
                s.groups[key] = body["interval"]
            rules = [r for r in s.rules.values() if (r["folderUID"], r["ruleGroup"]) == key]
            return 200, {"title": m[2], "folderUid": m[1], "interval": s.groups[key], "rules": rules}
        return 404, {"message": "not found (protocol fake)"}

    def _datasources(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        s = self.state
        if m := re.fullmatch(r"/api/datasources/uid/([\w-]+)", path):
            if m[1] not in s.datasources:
                return 404, {"message": "data source not found"}
            if method == "PUT":
                s.datasources[m[1]] = body
            return 200, s.datasources[m[1]]
        if path == "/api/datasources" and method == "POST":
            if body["uid"] in s.datasources:
                return 409, {"message": "data source with the same uid already exists"}
            s.datasources[body["uid"]] = body
            return 200, {"datasource": body}
        return 404, {"message": "not found (protocol fake)"}
