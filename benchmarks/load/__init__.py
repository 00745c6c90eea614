"""Locust load tests for `rag serve` (locustfile.py) and the queries they send (queries.py)."""
