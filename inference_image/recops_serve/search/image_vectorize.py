"""The catalogue's product images -> EfficientNet-Lite0 vectors for the search bundle's image index.

Each item's ``image_uri`` (a path, ``file://`` or ``oss://``: ``recops_contracts.storage``, the
mounted OSS root in the cluster) is read, decoded with the same limits and crop as an uploaded
query (``image_decode``: a catalogue image is untrusted input too) and embedded in batches.
An item without ``image_uri`` is skipped (not counted against the catalogue). A missing file or a
broken image is counted and a few examples kept for the manifest; only when they exceed
``max_failed`` (a fraction of the items that name an image, default 5 %) is the job a data error:
a catalogue whose images are mostly unreachable is a wrong mount, not a few bad photos.

Resumable: after each batch ``progress(next_row, vectors, rows, report)`` may checkpoint (the caller
decides when) and return True to stop (SIGTERM); ``start`` / ``resumed`` continue from one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from recops_contracts import storage
from recops_serve.search.image_decode import MAX_IMAGE_BYTES, ImageInputError, decode

MAX_FAILED = 0.05
EXAMPLES = 5


@dataclass
class ImageReport:
    with_uri: int = 0
    embedded: int = 0
    missing: int = 0
    broken: int = 0
    examples: list[str] = field(default_factory=list)

    def fail(self, kind: str, item_id: int, uri: str, why: str) -> None:
        setattr(self, kind, getattr(self, kind) + 1)
        if len(self.examples) < EXAMPLES:
            self.examples.append(f"item {item_id} {uri}: {kind}: {why}"[:300])

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ImageReport:
        return cls(d["items_with_image"], d["embedded"], d["missing"], d["broken"], list(d["examples"]))

    def as_dict(self) -> dict[str, Any]:
        return {
            "items_with_image": self.with_uri,
            "embedded": self.embedded,
            "missing": self.missing,
            "broken": self.broken,
            "examples": self.examples,
        }


def read_image(uri: str) -> bytes:
    path = storage.local_path(uri)
    size = path.stat().st_size
    if size > MAX_IMAGE_BYTES:
        raise ImageInputError(f"{size} bytes, larger than the {MAX_IMAGE_BYTES} byte limit", 413)
    return path.read_bytes()


def embed_catalog_images(
    item_ids: list[int],
    image_uris: list[str | None],
    encoder,
    batch: int = 16,
    max_failed: float = MAX_FAILED,
    log=print,
    resumed: tuple[int, np.ndarray, np.ndarray, ImageReport] | None = None,
    progress=None,
) -> tuple[np.ndarray, np.ndarray, ImageReport, float] | None:
    """(vectors [m, d], item rows [m], report, seconds), or None when ``progress`` asked to stop.
    Raises ``DataError`` past ``max_failed``."""
    from recops_serve.datasource import DataError

    start, report = 0, ImageReport()
    rows: list[int] = []
    vectors: list[np.ndarray] = []
    if resumed is not None:
        start, done_vectors, done_rows, report = resumed
        vectors, rows = [done_vectors], done_rows.tolist()
    pending: list[int] = []
    pixels: list[np.ndarray] = []
    t0 = time.perf_counter()

    def flush(next_row: int) -> bool:
        if pixels:
            vectors.append(encoder.embed(np.stack(pixels), batch=batch))
            rows.extend(pending)
            pixels.clear()
            pending.clear()
        report.embedded = len(rows)
        if progress is None:
            return False
        return bool(progress(next_row, np.concatenate(vectors) if vectors else None, rows, report))

    for row in range(start, len(item_ids)):
        item_id, uri = item_ids[row], image_uris[row]
        if not uri:
            continue
        report.with_uri += 1
        try:
            data = read_image(uri)
        except storage.StorageError as e:
            raise DataError(f"image_uri of item {item_id}: {e}") from None
        except FileNotFoundError:
            report.fail("missing", item_id, uri, "no such file")
            continue
        except OSError as e:
            report.fail("missing", item_id, uri, f"{type(e).__name__}: {e.strerror or e}")
            continue
        except ImageInputError as e:
            report.fail("broken", item_id, uri, str(e))
            continue
        try:
            pixels.append(decode(data))
        except ImageInputError as e:
            report.fail("broken", item_id, uri, str(e))
            continue
        pending.append(row)
        if len(pixels) == batch and flush(row + 1):
            return None
    flush(len(item_ids))
    seconds = time.perf_counter() - t0
    failed = report.missing + report.broken
    if report.with_uri and failed / report.with_uri > max_failed:
        raise DataError(
            f"{failed} of {report.with_uri} product images are missing or broken, more than "
            f"{max_failed:.0%} (first: {report.examples[0] if report.examples else '?'})"
        )
    if failed:
        log(f"images: {failed} of {report.with_uri} missing or broken (reported in the manifest)")
    dim = encoder.dim
    vecs = np.concatenate(vectors) if vectors else np.zeros((0, dim), np.float32)
    return vecs, np.asarray(rows, np.int32), report, seconds
