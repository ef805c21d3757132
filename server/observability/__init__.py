"""Metrics (Prometheus text format) and structured logging for the server."""
