"""Operating a running service: `rag stats` (a terminal summary of /metrics)."""
