"""EfficientNet-Lite0 on onnxruntime: the image encoder's weights (batch norm already folded) as an
ONNX graph built here, so a query image costs a few milliseconds instead of tens.

Why: the numpy pass spends half its time in depthwise convolutions (an einsum over window views) and
half in 1x1 convolutions on small spatial maps; onnxruntime has direct NCHW depthwise and pointwise
kernels. The input size is fixed (224 px), so TensorFlow's SAME padding becomes static pads per
layer. ``tests/search/test_embed_onnx.py`` holds it to the numpy pass.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from recops_serve.search.embed_onnx import Graph, session

#: ``image_embed.ImageEncoder`` and its ``_Conv`` (folded weight ``w``, bias ``b``, ``k``, ``stride``);
#: not imported, as ``image_embed`` imports this module
ImageEncoder = _Conv = Any


def _pads(size: int, k: int, s: int) -> tuple[list[int], int]:
    """ONNX pads [top, left, bottom, right] for TensorFlow SAME on a square map; the output size."""
    out = -(-size // s)
    p = max((out - 1) * s + k - size, 0)
    return [p // 2, p // 2, p - p // 2, p - p // 2], out


def _weight(c: _Conv, depthwise: bool) -> np.ndarray:
    """The numpy pass's layouts back to ONNX's [cout, cin/groups, k, k]."""
    if depthwise:  # [k, k, c]
        return np.ascontiguousarray(c.w.transpose(2, 0, 1)[:, None])
    if c.w.ndim == 2:  # 1x1: [cin, cout]
        return np.ascontiguousarray(c.w.T[:, :, None, None])
    return np.ascontiguousarray(c.w.transpose(3, 2, 0, 1))  # [k, k, cin, cout]


def lite_model(enc: ImageEncoder) -> bytes:
    """preprocessed float32 [n, 224, 224, 3] (NHWC, as the numpy pass takes it) -> pooled [n, 1280]."""
    from onnx import TensorProto, helper

    g = Graph()
    zero, six = g.const(np.float32(0)), g.const(np.float32(6))
    size = enc.size

    def conv(x: str, c: _Conv, depthwise: bool = False) -> str:
        nonlocal size
        pads, size = _pads(size, c.k, c.stride)
        w = _weight(c, depthwise)
        groups = w.shape[0] if depthwise else 1
        return g.op(
            "Conv",
            x,
            g.const(w),
            g.const(c.b),
            strides=[c.stride] * 2,
            pads=pads,
            group=groups,
            kernel_shape=[c.k] * 2,
        )

    relu6 = lambda x: g.op("Clip", x, zero, six)  # noqa: E731
    x = relu6(conv(g.op("Transpose", "image", perm=[0, 3, 1, 2]), enc.stem))
    for b in enc.blocks:
        y = relu6(conv(x, b.expand)) if b.expand else x
        y = conv(relu6(conv(y, b.depthwise, depthwise=True)), b.project)
        x = g.op("Add", y, x) if b.residual else y
    x = relu6(conv(x, enc.head))
    pooled = g.op("Flatten", g.op("GlobalAveragePool", x))
    return g.model(
        "efficientnet-lite0",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["n", enc.size, enc.size, 3])],
        pooled,
        helper.make_tensor_value_info("features", TensorProto.FLOAT, ["n", enc.dim]),
    )


class LiteForward:
    """``features(preprocessed) -> float32[n, 1280]`` on one onnxruntime session."""

    def __init__(self, enc: ImageEncoder, threads: int = 1):
        self.session = session(lite_model(enc), threads)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(["features"], {"image": x})[0]
