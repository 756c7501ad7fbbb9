"""Observability built on the runtime: Prometheus metrics, a service map of observed flows, and
kernel drop tracing (see docs/observability.md)."""
