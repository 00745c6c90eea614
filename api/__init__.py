"""HTTP layer over :mod:`rag` (FastAPI). Build the app with :func:`api.app.create_app`."""
