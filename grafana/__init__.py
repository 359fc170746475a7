"""Grafana dashboards as code (grafana-foundation-sdk). `grafana/main.py` assembles them, one module per
row under `grafana/rows/`, factories in `grafana/common.py`; `python -m monitor.ops.generate` writes the
sorted JSON under `grafana/provisioning/dashboards/`, which is committed."""
