"""Catalogue search (issue #16): clean catalogue text, chunk it by the embedding model's tokenizer,
embed it offline, and serve hybrid (vector + BM25) product search and chunk retrieval for an
assistant. Modules: ``text`` (HTML -> plain text, chunking), ``embed`` (all-MiniLM-L6-v2 on onnxruntime,
``embed_onnx`` its graph), ``index`` (the versioned search bundle), ``vectorize`` (the resumable job),
``serve`` (the HTTP handlers' logic), ``evaluate`` (recall/nDCG vs BM25). Visual search:
``torchfile`` (torch checkpoints read without torch or code execution), ``image_embed``
(EfficientNet-Lite0 on onnxruntime, ``image_embed_onnx`` its graph), ``image_decode`` (untrusted bytes -> 224 px RGB, with
limits), ``image_vectorize`` (catalogue images -> the image index), ``visual`` (the query side),
``visual_evaluate`` (near-duplicate top-1/top-5 on real photographs)."""
