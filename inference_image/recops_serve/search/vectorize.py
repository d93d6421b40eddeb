"""``recops-serve vectorize``: catalogue -> search bundle, resumably, on spot capacity.

Reads the catalogue of the data contract (docs/data.md: ``item_id``, ``category``, optional
``title``, ``description`` (HTML allowed), ``attributes`` (JSON object), ``available``,
``image_uri``; ``builtin:completejourney`` for the bundled one), cleans and chunks each product's
text (``text``), embeds the distinct chunk texts in batches (``embed``: a chunk text shared by
many products is embedded once), then writes the search bundle (``index``). Embedding is
checkpointed at most every ``--checkpoint-interval`` seconds and on SIGTERM (exit 143, as training:
the Job's podFailurePolicy ignores it); ``--resume`` continues from the checkpoint if it belongs to
the same catalogue text and model. ``--visual`` also embeds each product's ``image_uri`` with
EfficientNet-Lite0 into a second index (``image_vectorize``; missing or broken images are counted
in the manifest's ``visual`` section, fatal only above ``--max-failed-images``; the image pass checkpoints in ``<checkpoint>/images``
the same way). Data errors exit 78 with a one-line reason in the termination
message; nothing is written to ``--out``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import signal
import sys
import time
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
import pyarrow as pa

from recops_contracts import storage
from recops_contracts.training import EXIT_CONFIG, EXIT_PREEMPTED
from recops_serve.search import text as textmod

COLUMNS = ("item_id", "category", "title", "description", "attributes", "available", "image_uri")


def read_catalog(uri: str, limit: int | None = None) -> dict[str, list]:
    """The catalogue's search columns (last row per item_id wins, as for training)."""
    from recops_serve import datasource as d

    if uri == "builtin:completejourney":
        tables = [(d._builtin_catalog_table("completejourney", None), uri)]
    elif uri.startswith(d.BUILTIN):
        raise d.DataError(f"{uri}: only builtin:completejourney has a catalogue with text")
    else:
        files = d._discover(uri, "catalogue")
        tables = []
        for frag, name in d._fragments(files, None):
            schema = d._schema(frag, name, d.CATALOG_REQUIRED)
            tables.append((d._scan(frag, name, [c for c in COLUMNS if c in schema.names]), name))
    rows: dict[int, tuple] = {}
    for table, name in tables:
        n = table.num_rows
        ids = d._item_ids(table["item_id"], name)
        valid = pc_valid(table["item_id"])
        cols = table.column_names

        def text(col: str, cols=cols, table=table, name=name, n=n) -> list:
            if col not in cols:
                return [None] * n
            return d._text(table[col], name, col).to_pylist()

        category, title, desc = text("category"), text("title"), text("description")
        attrs, image = text("attributes"), text("image_uri")
        avail = d._available(table["available"], name) if "available" in cols else np.ones(n, bool)
        for r in np.flatnonzero(valid):
            rows[int(ids[r])] = (category[r], title[r] or "", desc[r], attrs[r], bool(avail[r]), image[r])
    keys = sorted(rows)[: limit or None]
    out: dict[str, list] = {c: [] for c in COLUMNS}
    for k in keys:
        out["item_id"].append(k)
        for c, v in zip(COLUMNS[1:], rows[k], strict=True):
            out[c].append(v)
    return out


def pc_valid(col: pa.ChunkedArray) -> np.ndarray:
    import pyarrow.compute as pc

    return pc.is_valid(col).to_numpy(zero_copy_only=False) if len(col) else np.zeros(0, bool)


def chunk_catalog(cat: dict[str, list], tokenizer) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Per chunk: its item row, text and token count."""
    chunk_item, chunk_text, chunk_tokens = [], [], []
    for row in range(len(cat["item_id"])):
        title = textmod.html_to_text(cat["title"][row])
        doc = textmod.product_text(
            title, cat["category"][row], cat["description"][row], cat["attributes"][row]
        )
        if not doc:  # nothing to search: the id alone
            doc = f"item {cat['item_id'][row]}"
        for ch in textmod.chunk_text(doc, title, tokenizer):
            chunk_item.append(row)
            chunk_text.append(ch.text)
            chunk_tokens.append(ch.tokens)
    return np.asarray(chunk_item, np.int32), chunk_text, np.asarray(chunk_tokens, np.int32)


def vectorize(
    catalog: str,
    out: str,
    version: str,
    checkpoint: str | None = None,
    interval: float = 300.0,
    resume: bool = False,
    limit: int | None = None,
    batch: int = 256,
    log=print,
    visual: bool = False,
    max_failed_images: float = 0.05,
) -> dict[str, Any]:
    from recops_serve.search.embed import MINILM_SHA256, MODEL_NAME, default_encoder
    from recops_serve.search.index import write_bundle
    from recops_serve.train import Checkpointer, Preempted

    t0 = time.perf_counter()
    cat = read_catalog(catalog, limit)
    enc = default_encoder()
    chunk_item, chunk_text, chunk_tokens = chunk_catalog(cat, enc.tokenizer)
    t_chunk = time.perf_counter() - t0
    uniq, inverse = np.unique(np.asarray(chunk_text, dtype=object).astype(str), return_inverse=True)
    fingerprint = hashlib.sha256(
        "\x00".join(uniq.tolist()).encode() + MINILM_SHA256["model.safetensors"].encode()
    ).hexdigest()[:16]
    log(
        f"catalogue {catalog}: {len(cat['item_id'])} items -> {len(chunk_text)} chunks "
        f"({len(uniq)} distinct texts) in {t_chunk:.1f} s"
    )
    ckpt = Checkpointer(checkpoint, interval)
    if checkpoint and not resume:
        ckpt.clear()

    def on_term(*_: object) -> None:
        ckpt.stop_requested = True

    previous = signal.signal(signal.SIGTERM, on_term) if _main_thread() else None
    try:
        vectors = np.zeros((len(uniq), enc.dim), np.float32)
        done = 0
        saved = ckpt.load() if resume else None
        if saved:
            state, arrays = saved
            if state.get("fingerprint") == fingerprint:
                done = int(state["done"])
                vectors[:done] = arrays["vectors"][:done]
                log(f"resuming at {done}/{len(uniq)} chunk texts")
            else:
                log("checkpoint belongs to another catalogue or model; starting fresh")
        t1 = time.perf_counter()
        start_done = done
        while done < len(uniq):
            end = min(len(uniq), done + batch)
            vectors[done:end] = enc.encode(uniq[done:end].tolist())
            done = end
            due = time.monotonic() - ckpt.clock.last >= interval
            if ckpt.uri and (due or ckpt.stop_requested):
                ckpt.save({"fingerprint": fingerprint, "done": done}, {"vectors": vectors[:done]})
                log(f"checkpoint: {done}/{len(uniq)} chunk texts embedded")
            if ckpt.stop_requested and done < len(uniq):
                raise Preempted()
        t_embed = time.perf_counter() - t1
        if visual and ckpt.uri:  # the text pass is done: a preemption in the image pass keeps it
            ckpt.save({"fingerprint": fingerprint, "done": done}, {"vectors": vectors[:done]})
        images = _embed_images(cat, max_failed_images, log, ckpt.child("images"), resume) if visual else None
        manifest = {
            "version": version,
            "catalog": catalog,
            "model": {"name": MODEL_NAME, "sha256": MINILM_SHA256, "max_tokens": enc.max_tokens},
            "chunking": {"max_tokens": textmod.CHUNK_TOKENS, "overlap_tokens": textmod.OVERLAP_TOKENS},
            "texts_embedded": len(uniq) - start_done,
            "embed_seconds": round(t_embed, 2),
            "chunk_seconds": round(t_chunk, 2),
        }
        if images is not None:
            manifest["visual"] = images[2]
        result = write_bundle(
            out,
            manifest,
            vectors,
            inverse.astype(np.int32),
            chunk_item,
            chunk_text,
            chunk_tokens,
            {k: cat[k] for k in ("item_id", "title", "category", "available", "image_uri")},
            visual=images[:2] if images is not None else None,
        )
        ckpt.clear()
        return result
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _embed_images(
    cat: dict[str, list], max_failed: float, log, ckpt, resume: bool
) -> tuple[np.ndarray, np.ndarray, dict]:
    """The image pass, checkpointed in ``ckpt`` (the text checkpoint's ``images`` child) like the
    text pass: at most every interval and on SIGTERM (then ``Preempted``)."""
    from recops_serve.search.image_embed import LITE0_SHA256, MODEL_NAME, default_image_encoder
    from recops_serve.search.image_vectorize import ImageReport, embed_catalog_images
    from recops_serve.train import Preempted

    enc = default_image_encoder()
    fingerprint = hashlib.sha256(
        repr((cat["item_id"], cat["image_uri"])).encode() + LITE0_SHA256.encode()
    ).hexdigest()[:16]
    resumed = None
    saved = ckpt.load() if resume else None
    if saved and saved[0].get("fingerprint") == fingerprint:
        state, arrays = saved
        resumed = (
            int(state["next_row"]),
            arrays["vectors"],
            arrays["rows"],
            ImageReport.from_dict(state["report"]),
        )
        log(f"images: resuming at catalogue row {resumed[0]}/{len(cat['item_id'])}")

    def progress(next_row: int, vectors, rows, report) -> bool:
        due = time.monotonic() - ckpt.clock.last >= ckpt.interval
        if ckpt.uri and (due or ckpt.stop_requested):
            empty = np.zeros((0, enc.dim), np.float32)
            state = {"fingerprint": fingerprint, "next_row": next_row, "report": report.as_dict()}
            ckpt.save(
                state, {"vectors": empty if vectors is None else vectors, "rows": np.asarray(rows, np.int32)}
            )
            log(f"checkpoint: images up to catalogue row {next_row}/{len(cat['item_id'])}")
        return ckpt.stop_requested and next_row < len(cat["item_id"])

    got = embed_catalog_images(
        cat["item_id"],
        cat["image_uri"],
        enc,
        max_failed=max_failed,
        log=log,
        resumed=resumed,
        progress=progress,
    )
    if got is None:
        raise Preempted()
    vecs, rows, report, seconds = got
    log(f"images: {report.embedded} of {report.with_uri} embedded in {seconds:.1f} s")
    section = {
        "model": {"name": MODEL_NAME, "sha256": LITE0_SHA256, "image_size": enc.size},
        "images": report.as_dict(),
        "embed_seconds": round(seconds, 2),
        "max_failed": max_failed,
    }
    return vecs, rows, section


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="recops-serve vectorize", description=__doc__)
    p.add_argument("--catalog", required=True, help="catalogue URI (docs/data.md) or builtin:completejourney")
    p.add_argument("--out", required=True, help="search bundle URI (the version directory)")
    p.add_argument("--version", required=True)
    p.add_argument("--checkpoint", help="checkpoint directory URI")
    p.add_argument("--checkpoint-interval", type=float, default=300)
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint if one exists")
    p.add_argument("--limit-items", type=int, default=0, help="the first N items by id (tests)")
    p.add_argument("--batch", type=int, default=256, help="chunk texts per embedding batch")
    p.add_argument("--visual", action="store_true", help="also embed image_uri into the image index")
    p.add_argument(
        "--max-failed-images",
        type=float,
        default=0.05,
        help="fraction of image_uri that may be missing or broken before the job fails (default 0.05)",
    )
    args = p.parse_args(argv)
    from recops_serve.datasource import DataError
    from recops_serve.search.embed import ModelError
    from recops_serve.train import Preempted, _termination_message

    try:
        result = vectorize(
            args.catalog,
            args.out,
            args.version,
            checkpoint=args.checkpoint,
            interval=args.checkpoint_interval,
            resume=args.resume,
            limit=args.limit_items or None,
            batch=args.batch,
            log=lambda m: print(m, flush=True),
            visual=args.visual,
            max_failed_images=args.max_failed_images,
        )
    except (DataError, ModelError, storage.StorageError) as e:
        print(f"recops-serve vectorize: {e}", file=sys.stderr)
        _termination_message(str(e))
        return EXIT_CONFIG
    except Preempted:
        print(f"preempted: checkpoint written to {args.checkpoint}", flush=True)
        return EXIT_PREEMPTED
    print(
        f"search bundle {args.version} written to {args.out} ({result['n_items']} items, "
        f"{result['n_chunks']} chunks, embed {result['embed_seconds']} s)",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
