"""Operations: the one definition of slat-monitor's alert and recording rules, renderers that turn it into
Prometheus rule files and Grafana-managed alert rules, and file-based service discovery of watched runs.

Regenerate every committed artifact (prometheus/rules, grafana/provisioning) with
`python -m monitor.ops.generate`; tests/ops fails when the committed files differ from what it writes.
"""
