"""Catalogue search (issue #16): clean catalogue text, chunk it by the embedding model's tokenizer,
embed it offline, and serve hybrid (vector + BM25) product search and chunk retrieval for an
assistant. Modules: ``text`` (HTML -> plain text, chunking), ``embed`` (all-MiniLM-L6-v2 as a numpy
forward pass), ``index`` (the versioned search bundle), ``vectorize`` (the resumable job),
``serve`` (the HTTP handlers' logic), ``evaluate`` (recall/nDCG vs BM25)."""
