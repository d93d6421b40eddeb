"""The versioned model bundle: everything the server needs to rank, in one directory.

Layout: ``<dir>/arrays.npz`` (numpy arrays below) and ``<dir>/manifest.json``
(written last, so a bundle without a manifest is incomplete). The manifest holds
version, dataset, data window, model type, offline metrics and ``schema_hash``:
a hash of the array names, dtypes and ranks this code expects, so a bundle from
an incompatible trainer is refused with ``BundleError`` and the server keeps the
one it has.

Arrays (n items, m users, K neighbours, C user candidates):
``item_ids`` int64[n] external ids; ``item_category`` int32[n] (-1 unknown);
``item_first_seen`` float64[n] unix seconds; ``item_available`` bool[n];
``neighbors`` int32[n,K] item indices (-1 pads) with ``neighbor_scores``
float32[n,K] (cosine of co-occurrence); ``item_factors`` float32[n,d] (ALS embeddings); ``user_ids`` str[m]; ``user_top`` int32[m,C]
and ``user_top_scores`` float32[m,C] (ALS candidates); ``user_hist_ptr`` int64[m+1] /
``user_hist`` int32 (CSR of items each user already touched) with ``user_hist_w`` float32
(frequency x recency, the "buy again" source); ``pop_global`` int32 (item indices by
time-decayed popularity) and ``item_pop`` float32[n] (that popularity); ``category_names``
str[n_cat]; ``cat_ptr`` int64[n_cat+1] / ``cat_items`` int32 (CSR of per-category popularity).
The manifest's ``serving`` section holds what the trainer tuned on the shop's validation
tail: the blend of sources and the measured exclusion policy (``ranking.RankConfig``).

Candidate retrieval (``ann.py``): the bundle may carry ``<dir>/ann.faiss``, an HNSW inner-product index
over ``item_factors`` (loaded memory-mapped), and the optional array ``user_factors`` float32[m,d]
(known users' ALS vectors, the index's queries). ``user_bought_ptr`` int64[m+1] / ``user_bought`` int32: the
CSR of the items each user *purchased*, written when the data has other events too (click streams:
``user_hist`` then holds views and carts, which "exclude purchased" must not ban); without them every
history item counts as a purchase (baskets, where it is one, and older bundles). The manifest's ``retrieval`` section says which source
the ALS candidates come from (``mode``: ``precomputed`` = ``user_top``, chosen by the trainer for small
catalogues; ``index`` = the index, ``user_top`` then has zero columns), the index's settings
(``M``, ``efSearch``) and the recall@K the training gate measured. Optional arrays and the index are not
part of ``schema_hash``: a bundle without them is the previous format and still loads.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from recops_contracts import storage
from recops_contracts.training import BUNDLE_ARRAYS_NAME, MANIFEST_NAME
from recops_serve import ann as ann_index
from recops_serve.sessionknn import SessionIndex

SCHEMA: dict[str, tuple[str, int]] = {
    "item_ids": ("int64", 1),
    "item_category": ("int32", 1),
    "item_first_seen": ("float64", 1),
    "item_available": ("bool", 1),
    "neighbors": ("int32", 2),
    "neighbor_scores": ("float32", 2),
    "item_factors": ("float32", 2),
    "user_ids": ("str", 1),
    "user_top": ("int32", 2),
    "user_top_scores": ("float32", 2),
    "user_hist_ptr": ("int64", 1),
    "user_hist": ("int32", 1),
    "user_hist_w": ("float32", 1),
    "pop_global": ("int32", 1),
    "item_pop": ("float32", 1),
    "category_names": ("str", 1),
    "cat_ptr": ("int64", 1),
    "cat_items": ("int32", 1),
    # session-kNN index (sessionknn.py); empty when the training data has no click sessions
    "sess_ptr": ("int64", 1),
    "sess_items": ("int32", 1),
    "item_sess_ptr": ("int64", 1),
    "item_sess": ("int32", 1),
    "item_sess_pos": ("int32", 1),
}
#: arrays a bundle may carry (checked when present); not in the schema hash
OPTIONAL: dict[str, tuple[str, int]] = {
    "user_factors": ("float32", 2),
    "user_bought_ptr": ("int64", 1),
    "user_bought": ("int32", 1),
}
SCHEMA_HASH = hashlib.sha256(json.dumps(SCHEMA, sort_keys=True).encode()).hexdigest()[:16]


class BundleError(RuntimeError):
    """A bundle is missing, incomplete, corrupt or of another schema."""


@dataclass
class ModelBundle:
    manifest: dict[str, Any]
    arrays: dict[str, np.ndarray] = field(repr=False)
    ann: ann_index.AnnIndex | None = field(default=None, repr=False)

    def __getattr__(self, name: str) -> np.ndarray:
        try:
            return self.__dict__["arrays"][name]
        except KeyError as e:
            raise AttributeError(name) from e

    @property
    def version(self) -> str:
        return str(self.manifest["version"])

    @property
    def n_items(self) -> int:
        return int(self.arrays["item_ids"].shape[0])

    @cached_property
    def _item_index(self) -> dict[int, int]:
        return {int(x): i for i, x in enumerate(self.arrays["item_ids"])}

    @cached_property
    def _user_index(self) -> dict[str, int]:
        return {str(u): i for i, u in enumerate(self.arrays["user_ids"])}

    def item_index(self, external_id: int) -> int | None:
        return self._item_index.get(int(external_id))

    def user_index(self, user_id: str) -> int | None:
        return self._user_index.get(user_id)

    def user_history(self, uidx: int) -> np.ndarray:
        p = self.arrays["user_hist_ptr"]
        return self.arrays["user_hist"][p[uidx] : p[uidx + 1]]

    def user_purchases(self, uidx: int) -> np.ndarray:
        """What "exclude purchased" bans: the user's purchases (``user_bought``), else the whole
        history (baskets, where every event is a purchase, and bundles from before the array)."""
        p = self.arrays.get("user_bought_ptr")
        if p is None:
            return self.user_history(uidx)
        return self.arrays["user_bought"][p[uidx] : p[uidx + 1]]

    @property
    def retrieval_mode(self) -> str:
        """Where a known user's ALS candidates come from: ``precomputed`` (user_top) or ``index``."""
        return str((self.manifest.get("retrieval") or {}).get("mode", "precomputed"))

    def user_vector(self, uidx: int) -> np.ndarray | None:
        uf = self.arrays.get("user_factors")
        return uf[uidx] if uf is not None and uidx < uf.shape[0] else None

    @cached_property
    def gram(self) -> np.ndarray:
        """YᵀY of the item factors (float64 d x d): the fixed part of every ALS fold-in."""
        y = self.arrays["item_factors"].astype(np.float64)
        return y.T @ y

    @cached_property
    def session_index(self) -> SessionIndex:
        a = self.arrays
        return SessionIndex(
            a["sess_ptr"], a["sess_items"], a["item_sess_ptr"], a["item_sess"], a["item_sess_pos"]
        )

    @cached_property
    def category_names(self) -> list[str]:
        return [str(c) for c in self.arrays["category_names"]]

    def category_popular(self, cat: int) -> np.ndarray:
        p = self.arrays["cat_ptr"]
        if cat < 0 or cat + 1 >= len(p):
            return self.arrays["pop_global"][:0]
        return self.arrays["cat_items"][p[cat] : p[cat + 1]]

    def validate(self) -> None:
        if self.manifest.get("schema_hash") != SCHEMA_HASH:
            raise BundleError(f"bundle schema {self.manifest.get('schema_hash')} != expected {SCHEMA_HASH}")
        for name, (dtype, ndim) in {**SCHEMA, **OPTIONAL}.items():
            arr = self.arrays.get(name)
            if arr is None and name in OPTIONAL:
                continue
            if arr is None:
                raise BundleError(f"bundle lacks array {name}")
            kind_ok = arr.dtype.kind == "U" if dtype == "str" else arr.dtype == np.dtype(dtype)
            if not kind_ok or arr.ndim != ndim:
                raise BundleError(f"array {name}: {arr.dtype}/{arr.ndim}d, expected {dtype}/{ndim}d")
        n = self.n_items
        for name in ("item_category", "item_first_seen", "item_available"):
            if self.arrays[name].shape[0] != n:
                raise BundleError(f"array {name} has {self.arrays[name].shape[0]} rows, expected {n}")
        if (
            self.arrays["neighbors"].shape[0] != n
            or self.arrays["neighbors"].shape != self.arrays["neighbor_scores"].shape
        ):
            raise BundleError("neighbour arrays do not match the catalogue")
        a = self.arrays
        m = a["user_ids"].shape[0]
        if a["user_top"].shape[0] != m or a["user_hist_ptr"].shape[0] != m + 1:
            raise BundleError("user arrays do not match user_ids")
        if (
            a["user_top"].shape != a["user_top_scores"].shape
            or a["user_hist_w"].shape != a["user_hist"].shape
        ):
            raise BundleError("user candidate or history arrays are inconsistent")
        if a["item_pop"].shape[0] != n:
            raise BundleError("popularity arrays do not match the catalogue")
        self._check_indices()
        self._check_retrieval()

    def _check_retrieval(self) -> None:
        """The index and user factors against the catalogue and the factors they were built from."""
        a, n = self.arrays, self.n_items
        d = a["item_factors"].shape[1]
        uf = a.get("user_factors")
        if uf is not None and uf.shape != (a["user_ids"].shape[0], d):
            raise BundleError(f"array user_factors is {uf.shape}, expected {(a['user_ids'].shape[0], d)}")
        if self.ann is not None:
            if self.ann.d != d:
                raise BundleError(f"ANN index has dimension {self.ann.d}, item_factors {d}")
            ids = self.ann.ids()
            if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= n):
                raise BundleError(f"ANN index has item ids outside the catalogue (0..{n - 1})")
        if self.retrieval_mode == "index":
            if self.ann is None:
                raise BundleError(
                    f"manifest says retrieval mode index but the bundle has no {ann_index.INDEX_FILE}"
                )
            if uf is None:
                raise BundleError("retrieval mode index needs the array user_factors")

    def _check_indices(self) -> None:
        """Every index array against the table it points into, and every CSR pointer against the
        array it slices: a bundle that passes never makes the ranking index out of range (a 500)."""
        a, n = self.arrays, self.n_items
        for name, pad in (("neighbors", True), ("user_top", True), ("user_hist", False)):
            _in_range(a, name, n, pad, "the catalogue")
        for name in ("pop_global", "cat_items"):
            _in_range(a, name, n, False, "the catalogue")
        _in_range(a, "item_category", max(1, a["category_names"].size), True, "category_names")
        _pointers(a, "user_hist_ptr", "user_hist")
        if ("user_bought_ptr" in a) != ("user_bought" in a):
            raise BundleError("arrays user_bought_ptr and user_bought come together")
        if "user_bought" in a:
            if a["user_bought_ptr"].shape[0] != a["user_ids"].shape[0] + 1:
                raise BundleError("array user_bought_ptr does not match user_ids")
            _in_range(a, "user_bought", n, False, "the catalogue")
            _pointers(a, "user_bought_ptr", "user_bought")
        _pointers(a, "cat_ptr", "cat_items")
        if a["sess_ptr"].size > 1 or a["sess_items"].size or a["item_sess"].size:
            if a["item_sess_ptr"].shape[0] != n + 1:
                raise BundleError("session index does not match the catalogue (item_sess_ptr)")
            _pointers(a, "sess_ptr", "sess_items")
            _pointers(a, "item_sess_ptr", "item_sess")
            if a["item_sess_pos"].size != a["item_sess"].size:
                raise BundleError("session index arrays are inconsistent (item_sess_pos vs item_sess)")
            _in_range(a, "sess_items", n, False, "the catalogue")
            _in_range(a, "item_sess", a["sess_ptr"].size - 1, False, "the sessions of sess_ptr")
            if a["item_sess"].size:
                length = np.diff(a["sess_ptr"])[a["item_sess"]]
                pos = a["item_sess_pos"]
                if int(pos.min()) < 0 or bool((pos >= length).any()):
                    raise BundleError("array item_sess_pos has positions outside their sessions")


def _in_range(a: dict[str, np.ndarray], name: str, bound: int, pad: bool, what: str) -> None:
    arr = a[name]
    lo = -1 if pad else 0
    if arr.size and (int(arr.max()) >= bound or int(arr.min()) < lo):
        raise BundleError(
            f"array {name} has indices outside {what} (valid {lo}..{bound - 1}, "
            f"found {int(arr.min())}..{int(arr.max())})"
        )


def _pointers(a: dict[str, np.ndarray], name: str, target: str) -> None:
    """A CSR pointer array: starts at 0, never decreases, ends at the size of what it slices."""
    p = a[name]
    if p.size == 0 or int(p[0]) != 0 or int(p[-1]) != a[target].size or bool((np.diff(p) < 0).any()):
        raise BundleError(
            f"array {name} is not a valid pointer array into {target} ({a[target].size} entries)"
        )


def save_bundle(bundle: ModelBundle, uri: str) -> None:
    """Write atomically: a reader sees the old bundle or the complete new one, never half."""
    final = storage.local_path(uri)
    tmp = storage.atomic_dir(final)
    np.savez(tmp / BUNDLE_ARRAYS_NAME, **bundle.arrays)
    if bundle.ann is not None:
        bundle.ann.save(tmp / ann_index.INDEX_FILE)
    manifest = {**bundle.manifest, "schema_hash": SCHEMA_HASH, "n_items": bundle.n_items}
    (tmp / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True))
    storage.publish_dir(tmp, final)


def load_bundle(uri: str) -> ModelBundle:
    path = storage.local_path(uri)
    try:
        manifest = json.loads((path / MANIFEST_NAME).read_text())
        with np.load(path / BUNDLE_ARRAYS_NAME, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        index = None
        if (path / ann_index.INDEX_FILE).exists():
            ef = int((manifest.get("retrieval") or {}).get("ef_search") or ann_index.EF_LADDER[1])
            index = ann_index.AnnIndex.load(path / ann_index.INDEX_FILE, ef, mmap=True)
    except (OSError, ValueError, KeyError) as e:
        raise BundleError(f"cannot load bundle at {uri}: {e}") from e
    except Exception as e:  # zipfile/zlib errors on a corrupt file
        raise BundleError(f"corrupt bundle at {uri}: {e}") from e
    bundle = ModelBundle(manifest=manifest, arrays=arrays, ann=index)
    bundle.validate()
    return bundle
