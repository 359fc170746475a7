"""Exporters of the watcher's observations: Prometheus collector and HTTP endpoint."""
