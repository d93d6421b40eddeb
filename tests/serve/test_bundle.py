"""Bundle validation: an index the ranking would dereference outside the catalogue is refused at load
(BundleError, the server keeps the bundle it has) instead of a 500 for every user later."""

from __future__ import annotations

import numpy as np
import pytest

from recops_serve.bundle import BundleError, ModelBundle, load_bundle, save_bundle


@pytest.mark.parametrize("array", ["user_top", "user_hist", "neighbors", "pop_global", "cat_items"])
def test_out_of_range_item_indices_are_refused(bundles, tmp_path, array):
    b = load_bundle(str(bundles["v1"]))
    arrays = {k: v.copy() for k, v in b.arrays.items()}
    arrays[array].reshape(-1)[0] = b.n_items + 5  # points past the item table
    save_bundle(ModelBundle(dict(b.manifest), arrays), str(tmp_path / "bad"))
    with pytest.raises(BundleError, match=f"{array} has item indices outside the catalogue"):
        load_bundle(str(tmp_path / "bad"))


def test_history_weights_must_match_the_history(bundles, tmp_path):
    b = load_bundle(str(bundles["v1"]))
    arrays = {**b.arrays, "user_hist_w": np.zeros(3, np.float32)}
    save_bundle(ModelBundle(dict(b.manifest), arrays), str(tmp_path / "bad"))
    with pytest.raises(BundleError, match="inconsistent"):
        load_bundle(str(tmp_path / "bad"))
