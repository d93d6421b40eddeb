"""EfficientNet-Lite0 in numpy: the ImageNet classifier on real photographs proves the port (stem,
blocks, padding, folded batch norm, preprocessing); the checkpoint reader refuses code."""

from __future__ import annotations

import io
import pickle

import numpy as np
import pytest

from recops_serve.search import image_embed as ie
from recops_serve.search.embed import ModelError
from recops_serve.search.image_decode import decode, from_array
from recops_serve.search.torchfile import CheckpointError, load_state_dict
from tests.search.photos import jpeg, photo

#: ILSVRC-2012 class ids (the classifier's row order)
CATS = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE = {967, 968, 504}  # espresso, cup, coffee mug
ROCKET = {657, 744, 812}  # missile, projectile, space shuttle


@pytest.fixture(scope="module")
def enc() -> ie.ImageEncoder:
    return ie.default_image_encoder()


@pytest.mark.parametrize(("name", "classes"), [("chelsea", CATS), ("coffee", COFFEE), ("rocket", ROCKET)])
def test_imagenet_top5_on_real_photos(enc, name, classes):
    # through the server's own decode path (JPEG bytes -> crop -> 224)
    logits = enc.logits(decode(jpeg(photo(name)))[None])[0]
    top5 = set(np.argsort(-logits)[:5].tolist())
    assert top5 & classes, (name, sorted(top5))
    assert int(np.argmax(logits)) in classes, (name, int(np.argmax(logits)))


def test_embeddings_are_unit_and_discriminative(enc):
    x = np.stack([from_array(photo(n)) for n in ("chelsea", "coffee", "astronaut")])
    v = enc.embed(x)
    assert v.shape == (3, 1280)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    # a recompressed copy is far closer to its original than to another photo
    again = enc.embed(decode(jpeg(photo("chelsea"), quality=40))[None])[0]
    assert again @ v[0] > 0.9 > max(again @ v[1], again @ v[2])


def test_weights_are_pinned(tmp_path):
    p = tmp_path / "lite0.pth"
    raw = bytearray(ie.lite0_weights().read_bytes())
    raw[-1] ^= 1
    p.write_bytes(bytes(raw))
    with pytest.raises(ModelError, match="sha256"):
        ie.ImageEncoder(p, sha256=ie.LITE0_SHA256)


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned",))


def test_checkpoint_reader_refuses_code():
    with pytest.raises(CheckpointError, match="refused global"):
        load_state_dict(pickle.dumps({"w": _Evil()}, protocol=2))
    # a legacy-format stream whose state_dict names another callable is refused too
    buf = io.BytesIO()
    for obj in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}):
        pickle.dump(obj, buf, protocol=2)
    pickle.dump({"w": _Evil()}, buf, protocol=2)
    with pytest.raises(CheckpointError, match=r"refused global (posix|os)\.system"):
        load_state_dict(buf.getvalue())
