"""Monitoring as code: dashboards, alerts, promtool tests and the stack's configs, generated from one config.

``python -m monitoring.generate`` writes them; :func:`panel_queries` gives every dashboard panel's PromQL
ready to run against a Prometheus (end-to-end tests).
"""

from monitoring.dashboard import panel_queries

__all__ = ["panel_queries"]
