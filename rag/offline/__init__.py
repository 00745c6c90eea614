"""Offline work: batch jobs over an opened collection, never on the request path.

``evaluation`` (``rag eval``: quality and latency of a pipeline on a BEIR folder), ``reranker_training``
(``rag train-reranker``), ``datasets`` (a BEIR folder ingested into its cached collection, shared by both)
and ``metrics`` (IR metrics through pytrec_eval). Only the CLI imports this package (and tests and
benchmarks); the service never does — ``tests/test_layers.py`` checks it.
"""
