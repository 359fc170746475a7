"""Hostile input for the triage page's tests (test_page_hostile.py): strings with Markdown links, HTML,
scripts, `javascript:` links, images, formulas and line breaks; a real watched run whose layer and run
names are such strings; a "Prometheus" whose every answer is an error carrying one."""

from __future__ import annotations

import json
import sqlite3
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import torch
from torch import nn

import monitor

__all__ = ["DETAIL", "LAYERS", "QUERY_RUN", "REPLY", "RUN", "XSS", "HostileNet", "HostilePrometheus",
           "hostile_record"]

XSS = "<img src=x onerror=alert(1)>"
# Module paths: "." nests modules, so "[x](http://evil" + "example)" is the layer "[x](http://evil.example)".
LAYERS = (XSS, "<script>alert(2)</script>", "[js](javascript:alert(3))", "![pic](http://evil.example/p.png)",
          "[x](http://evil.example)", "www.evil.example", "a\nb $x^2$ :red[red] **bold** <b>b</b>")
RUN = "[run](http://evil.example) <img src=x onerror=alert(4)>"
DETAIL = "<script>alert(5)</script> [d](http://evil.example/d) javascript:alert(6)"
REPLY = "[reply](http://evil.example/r) <img src=x onerror=alert(7)> $y$"
QUERY_RUN = "[q](http://evil.example/q)<img src=x onerror=alert(8)>"


class HostileNet(nn.Module):
    """An fp32 input layer, then fp16 Linear layers whose module paths are LAYERS (TRELLIS #162 set-up)."""

    def __init__(self) -> None:
        super().__init__()
        self.chain: list[nn.Module] = []
        for i, path in enumerate(LAYERS):
            parent: nn.Module = self
            *folders, leaf = path.split(".")
            for name in folders:
                if name not in parent._modules:
                    parent.add_module(name, nn.Module())
                parent = parent._modules[name]
            layer = nn.Linear(8, 8 if i + 1 < len(LAYERS) else 1)
            parent.add_module(leaf, layer.half() if i else layer)
            self.chain.append(layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.chain[0](x).half()
        for layer in self.chain[1:]:
            x = layer(x)
        return x.float()


def hostile_record(path: Path) -> Path:
    """A real watched run of HostileNet (AdamW eps=1e-8: NaN after step 1, so findings, charts and events
    name the layers), then an event whose texts are hostile, as a crafted record would hold (the page
    writes it out as "First non-finite <tensor> at step 2 in <layer> (message=<detail>)")."""
    torch.manual_seed(0)
    model = HostileNet()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, eps=1e-8)
    with monitor.watch(model, opt, port=None, record=str(path), run=RUN) as w:
        for _ in range(3):
            x, y = torch.randn(16, 8), torch.randn(16, 1)
            opt.zero_grad(set_to_none=True)
            loss = nn.functional.mse_loss(model(x), y)
            w.observe_loss(loss)
            loss.backward()
            opt.step()
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO slatmon_events (step, kind, layer, tensor, detail) VALUES (?, ?, ?, ?, ?)",
                     (2, "nonfinite", LAYERS[1], XSS, json.dumps({"message": DETAIL})))
    return path


class HostilePrometheus:
    """An HTTP server answering every Prometheus API call with HTTP 400 and the error text REPLY."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                body = json.dumps({"status": "error", "errorType": "bad_data", "error": REPLY}).encode()
                self.send_response(400)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer  # noqa: N815 - http.server's naming

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
