"""The text encoder's forward pass on onnxruntime: the same BERT, the same weights, ~4x faster on a
query (the vectorizer and the server both run it; the server's queries with int8 weights).

Why: a query is a handful of tokens, so each of the 24 weight matrices (42 MB in all) is multiplied
by a 3-10 row matrix. numpy hands that to OpenBLAS's sgemm, which re-packs the whole weight matrix
on every call: 22-25 ms for a 3-word-piece query on this machine, ~2 GB/s of weights. onnxruntime packs
constant weights once when the session is created (MLAS pre-packing), so a query costs little more
than streaming the weights once (6 ms; 2.4 ms with a quarter of the bytes in int8).

Library: onnxruntime (the inference engine the issue names; CPU wheel, no CUDA packages) with
``onnx`` only to build the graph in memory. The graph is written here from the safetensors weights
the ``Encoder`` already holds (no export tool, no torch); standard opset-20 operators only, so any
onnxruntime build runs it. ``tests/search/test_embed_onnx.py`` checks it against the numpy pass.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
from typing import Any

import numpy as np

#: an ``embed.Encoder`` (its weights: ``word``, ``pos``, ``layers``, ...); not imported, as ``embed``
#: imports this module
Encoder = Any

OPSET = 20  # Gelu (exact, BERT's) and LayerNormalization are standard from here


class Graph:
    """A small builder: initialisers and nodes with generated names (the text and image graphs)."""

    def __init__(self) -> None:
        from onnx import helper, numpy_helper

        self.helper, self.numpy_helper = helper, numpy_helper
        self.nodes: list = []
        self.inits: list = []
        self._n = 0

    def const(self, value: np.ndarray, name: str | None = None) -> str:
        self._n += 1
        name = name or f"c{self._n}"
        self.inits.append(self.numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, kind: str, *inputs: str, outputs: int = 1, **attrs):
        """A node's output name (or, with ``outputs`` > 1, a tuple of them)."""
        self._n += 1
        out = [f"{kind.lower()}{self._n}" + (f"_{i}" if outputs > 1 else "") for i in range(outputs)]
        self.nodes.append(self.helper.make_node(kind, list(inputs), out, **attrs))
        return out[0] if outputs == 1 else tuple(out)

    def model(self, name: str, inputs: list, last: str, output) -> bytes:
        """The serialised model whose one output (``output``, a value info) is the tensor ``last``."""
        self.nodes.append(self.helper.make_node("Identity", [last], [output.name]))
        graph = self.helper.make_graph(self.nodes, name, inputs, [output], self.inits)
        model = self.helper.make_model(graph, opset_imports=[self.helper.make_opsetid("", OPSET)])
        model.ir_version = 9
        return model.SerializeToString()


def int8_weights(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-output-channel int8: ``w [in, out] ~= q * scale[out]``, q in [-127, 127]."""
    scale = np.maximum(np.abs(w).max(axis=0), 1e-12) / np.float32(127)
    q = np.clip(np.rint(w / scale), -127, 127).astype(np.int8)
    return q, scale.astype(np.float32)


def bert_model(enc: Encoder, int8: bool = False) -> bytes:
    """The encoder's BERT (ids, mask int64[b, t] -> hidden float32[b, t, h]) as a serialised model.

    ``int8``: every weight matrix as int8 with one scale per output channel, its product as
    ``DynamicQuantizeLinear`` (the activations to uint8, scale per call) -> ``MatMulInteger`` ->
    rescale: the standard-operator pattern onnxruntime fuses into its int8 kernel."""
    from onnx import TensorProto, helper

    g = Graph()

    def matmul(x: str, w: np.ndarray) -> str:
        if not int8:
            return g.op("MatMul", x, g.const(w))
        q, scale = int8_weights(w)
        qx = g.op("DynamicQuantizeLinear", x, outputs=3)
        y = g.op("MatMulInteger", qx[0], g.const(q), qx[2], g.const(np.zeros(q.shape[1], np.int8)))
        rescale = g.op("Mul", qx[1], g.const(scale))
        return g.op("Mul", g.op("Cast", y, to=TensorProto.FLOAT), rescale)

    h, nh = enc.hidden, enc.heads
    dh = h // nh
    i64 = lambda *v: g.const(np.array(v, np.int64))  # noqa: E731
    ids, mask = "ids", "mask"
    t = g.op("Gather", g.op("Shape", ids), i64(1))  # [1]: the sequence length
    pos = g.op("Slice", g.const(enc.pos), i64(0), t, i64(0))
    x = g.op("Add", g.op("Add", g.op("Gather", g.const(enc.word), ids), pos), g.const(enc.type0))
    x = g.op("LayerNormalization", x, g.const(enc.ln_w), g.const(enc.ln_b), axis=-1, epsilon=enc.eps)
    keep = g.op("Cast", g.op("Unsqueeze", mask, i64(1, 2)), to=TensorProto.FLOAT)  # [b, 1, 1, t]
    bias = g.op("Mul", g.op("Sub", g.const(np.float32(1)), keep), g.const(np.float32(-1e9)))
    scale = g.const(np.float32(1 / math.sqrt(dh)))
    heads = i64(0, 0, nh, dh)
    for L in enc.layers:
        qkv = g.op("Add", matmul(x, L.qkv_w), g.const(L.qkv_b))
        q, k, v = (g.op("Slice", qkv, i64(j * h), i64((j + 1) * h), i64(2)) for j in range(3))
        q = g.op("Transpose", g.op("Reshape", q, heads), perm=[0, 2, 1, 3])
        k = g.op("Transpose", g.op("Reshape", k, heads), perm=[0, 2, 3, 1])
        v = g.op("Transpose", g.op("Reshape", v, heads), perm=[0, 2, 1, 3])
        s = g.op("Softmax", g.op("Add", g.op("Mul", g.op("MatMul", q, k), scale), bias), axis=-1)
        ctx = g.op("Reshape", g.op("Transpose", g.op("MatMul", s, v), perm=[0, 2, 1, 3]), i64(0, 0, h))
        attn = g.op("Add", matmul(ctx, L.out_w), g.const(L.out_b))
        x = g.op(
            "LayerNormalization",
            g.op("Add", attn, x),
            g.const(L.ln1_w),
            g.const(L.ln1_b),
            axis=-1,
            epsilon=enc.eps,
        )
        ff = g.op("Gelu", g.op("Add", matmul(x, L.ff1_w), g.const(L.ff1_b)))
        ff = g.op("Add", matmul(ff, L.ff2_w), g.const(L.ff2_b))
        x = g.op(
            "LayerNormalization",
            g.op("Add", ff, x),
            g.const(L.ln2_w),
            g.const(L.ln2_b),
            axis=-1,
            epsilon=enc.eps,
        )
    dims = ["b", "t"]
    return g.model(
        "bert",
        [helper.make_tensor_value_info(n, TensorProto.INT64, dims) for n in (ids, mask)],
        x,
        helper.make_tensor_value_info("hidden", TensorProto.FLOAT, [*dims, h]),
    )


def session(model: bytes, threads: int = 1):
    """An onnxruntime CPU session with every graph optimisation, on ``threads`` intra-op threads."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    out = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    del model
    release_memory()
    return out


def release_memory() -> None:
    """Give the freed build-time copies (the model proto and bytes, ~2x the weights) back to the OS:
    glibc keeps them mapped otherwise (measured: the server's int8 encoder at 484 MB RSS instead of 256)."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim this way
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class OnnxForward:
    """``forward(ids, mask) -> hidden`` on one onnxruntime session (one intra-op thread: the server
    runs one query per search thread; more threads would fight the event loop for the 2 cores)."""

    def __init__(self, enc: Encoder, threads: int = 1, int8: bool = False):
        self.session = session(bert_model(enc, int8), threads)

    def __call__(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return self.session.run(["hidden"], {"ids": ids, "mask": mask})[0]
