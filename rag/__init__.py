"""Production RAG retrieval: hybrid BM25 + dense search with fusion, Matryoshka funnel and reranking."""

__version__ = "0.1.0"
