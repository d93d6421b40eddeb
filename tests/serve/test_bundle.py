"""Bundle validation: every index array is checked against the table it points into, so a bundle that
would make the ranking index out of range is refused at load (BundleError, the server keeps the bundle
it has) instead of a 500 for every user later. One test per array."""

from __future__ import annotations

import numpy as np
import pytest

from recops_serve import sessionknn
from recops_serve.bundle import BundleError, ModelBundle, load_bundle, save_bundle


def with_sessions(b: ModelBundle) -> dict[str, np.ndarray]:
    """The bundle's arrays plus a small valid session index over its catalogue (the completejourney
    slice has no click sessions), so the session arrays can be corrupted one by one."""
    rng = np.random.default_rng(0)
    sess = np.repeat(np.arange(40), 4)
    items = rng.integers(0, b.n_items, sess.size)
    idx = sessionknn.build(sess, items, np.arange(sess.size, dtype=float), b.n_items)
    # and each user's first history item as a purchase (the click-stream arrays, also optional)
    m = b.arrays["user_ids"].size
    first = [b.user_history(u)[:1] for u in range(m)]
    bought = {
        "user_bought_ptr": np.r_[0, np.cumsum([f.size for f in first])].astype(np.int64),
        "user_bought": np.concatenate(first).astype(np.int32),
    }
    return {**{k: v.copy() for k, v in b.arrays.items()}, **idx, **bought}


def refused(b: ModelBundle, arrays: dict[str, np.ndarray], tmp_path, match: str) -> None:
    save_bundle(ModelBundle(dict(b.manifest), arrays), str(tmp_path / "bad"))
    with pytest.raises(BundleError, match=match):
        load_bundle(str(tmp_path / "bad"))


def test_the_session_index_used_below_is_valid(bundles, tmp_path):
    b = load_bundle(str(bundles["v1"]))
    save_bundle(ModelBundle(dict(b.manifest), with_sessions(b)), str(tmp_path / "ok"))
    assert load_bundle(str(tmp_path / "ok")).sess_ptr.size == 41


@pytest.mark.parametrize(
    ("array", "bound"),
    [
        ("neighbors", "n_items"),
        ("user_top", "n_items"),
        ("user_hist", "n_items"),
        ("user_bought", "n_items"),
        ("pop_global", "n_items"),
        ("cat_items", "n_items"),
        ("sess_items", "n_items"),
        ("item_category", "categories"),
        ("item_sess", "sessions"),
        ("item_sess_pos", "positions"),
    ],
)
@pytest.mark.parametrize("side", ["past the end", "negative"])
def test_index_arrays_pointing_outside_their_table_are_refused(bundles, tmp_path, array, bound, side):
    b = load_bundle(str(bundles["v1"]))
    arrays = with_sessions(b)
    limit = {
        "n_items": b.n_items,
        "categories": b.arrays["category_names"].size,
        "sessions": arrays["sess_ptr"].size - 1,
        "positions": 4,  # every session above has 4 clicks
    }[bound]
    flat = arrays[array].reshape(-1)
    flat[0] = limit if side == "past the end" else -2  # -1 is the pad where one exists
    refused(b, arrays, tmp_path, f"array {array} has (indices|positions) outside")


@pytest.mark.parametrize(
    ("pointer", "target"),
    [
        ("user_hist_ptr", "user_hist"),
        ("user_bought_ptr", "user_bought"),
        ("cat_ptr", "cat_items"),
        ("sess_ptr", "sess_items"),
        ("item_sess_ptr", "item_sess"),
    ],
)
@pytest.mark.parametrize("fault", ["end past the target", "decreasing"])
def test_pointer_arrays_must_slice_their_target(bundles, tmp_path, pointer, target, fault):
    b = load_bundle(str(bundles["v1"]))
    arrays = with_sessions(b)
    p = arrays[pointer]
    if fault == "end past the target":
        p[-1] = arrays[target].size + 10
    else:
        p[1], p[2] = p[2] + 1, p[2]  # one slice runs backwards (the end stays right)
    refused(b, arrays, tmp_path, f"(array {pointer} is not a valid pointer array into {target}|{pointer})")


def test_purchases_come_as_a_pointer_and_items_pair_sized_to_the_users(bundles, tmp_path):
    b = load_bundle(str(bundles["v1"]))
    arrays = with_sessions(b)
    refused(b, {k: v for k, v in arrays.items() if k != "user_bought"}, tmp_path, "come together")
    short = {**arrays, "user_bought_ptr": arrays["user_bought_ptr"][:-1].copy()}
    refused(b, short, tmp_path, "user_bought_ptr does not match user_ids")


def test_history_weights_must_match_the_history(bundles, tmp_path):
    b = load_bundle(str(bundles["v1"]))
    arrays = {**b.arrays, "user_hist_w": np.zeros(3, np.float32)}
    refused(b, arrays, tmp_path, "inconsistent")
