"""Readers that turn external stores into a History for the diagnosis (Prometheus today)."""
