"""HTML cleaning, chunking by the model's tokenizer, and the embedding model itself."""

from __future__ import annotations

import itertools
import zipfile

import numpy as np
import pytest

from recops_serve.search import embed
from recops_serve.search.embed import Encoder, ModelError, default_encoder
from recops_serve.search.text import CHUNK_TOKENS, OVERLAP_TOKENS, chunk_text, html_to_text, product_text
from tests.search.catalog import FORBIDDEN, PRODUCTS, dirty_html


def test_dirty_html_reaches_no_chunk():
    name, cat, desc = PRODUCTS[0]
    html = dirty_html(name, desc, 7) * 20  # long enough for several chunks
    enc = default_encoder()
    text = product_text(f"{name} 7", cat, html, '{"colour": "<i>navy</i>", "sizes": ["S", "M"]}')
    chunks = chunk_text(text, f"{name} 7", enc.tokenizer)
    assert len(chunks) > 1
    for ch in chunks:
        for bad in FORBIDDEN:
            assert bad not in ch.text, (bad, ch.text)
    joined = "\n".join(c.text for c in chunks)
    # the visible text survives, entities decoded (NFKC: … is ...), list items and table cells kept
    for good in (
        "Organic Whole Milk",
        "\u2013 batch 7",
        "Fish & chips friendly... café quality.",
        "- Item no. 7",
    ):
        assert good in joined
    assert "softhyphen text" in joined and "Weight 107 g" in joined
    assert "colour: navy" in text and "sizes: S, M" in text


def test_plain_text_fast_path_equals_the_parser():
    """Text with no "<" and no "&" skips BeautifulSoup; the parser would give the same text."""
    from bs4 import BeautifulSoup

    from recops_serve.search.text import _clean_chars

    for plain in (
        "ICE - CRUSHED/CUBED (National)",
        "caf\u00e9 \u200b zero-width\n\n\nlines",
        " a\tb\u00a0c ",
    ):
        assert html_to_text(plain) == _clean_chars(BeautifulSoup(plain, "lxml").get_text())


def test_plain_text_passes_through():
    assert html_to_text("Plain  text,\n\n\n two lines") == "Plain text,\n\ntwo lines"
    assert html_to_text("") == "" and html_to_text(None) == ""
    assert html_to_text("<p>a &lt;b&gt; c</p>") == "a <b> c"  # an escaped bracket is text, shown as such


def test_chunks_fit_the_model_and_overlap():
    enc = default_encoder()
    sentences = [
        f"Sentence number {i} describes feature {i * 7} of the product in detail." for i in range(120)
    ]
    text = " ".join(sentences)
    chunks = chunk_text(text, "Title X", enc.tokenizer)
    assert len(chunks) >= 5
    for n, ch in enumerate(chunks):
        assert ch.tokens == enc.count_tokens(ch.text)
        assert ch.tokens <= CHUNK_TOKENS  # + [CLS] + [SEP] = the model's 256
        assert ch.tokens >= CHUNK_TOKENS // 2 or n == len(chunks) - 1
        if n:
            assert ch.text.startswith("Title X\n")
    for a, b in itertools.pairwise(chunks):  # neighbours share text
        tail = a.text.split()[-(OVERLAP_TOKENS // 4) :]
        assert " ".join(tail) in b.text
    # cut at sentence ends where possible
    assert sum(c.text.rstrip().endswith(".") for c in chunks[:-1]) >= len(chunks) - 2
    assert CHUNK_TOKENS + 2 == enc.max_tokens == 256


def test_reference_similarities():
    """sentence-transformers' published example for all-MiniLM-L6-v2 (cosine similarities)."""
    v = default_encoder().encode(
        ["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."]
    )
    sim = v @ v.T
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(sim[0, 1], 0.6660, atol=5e-4)
    np.testing.assert_allclose(sim[0, 2], 0.1046, atol=5e-4)
    np.testing.assert_allclose(sim[1, 2], 0.1411, atol=5e-4)
    # batching and padding do not change a vector
    solo = default_encoder().encode(["He drove to the stadium."])
    np.testing.assert_allclose(solo[0], v[2], atol=1e-5)


def test_weights_are_verified(tmp_path):
    src = embed.minilm_zip()
    bad = tmp_path / "model.zip"
    with zipfile.ZipFile(src) as z, zipfile.ZipFile(bad, "w") as out:
        for info in z.infolist():
            data = z.read(info)
            if info.filename == "model.safetensors":
                data = data[:-4] + b"\0\0\0\0"
            out.writestr(info, data)
    with pytest.raises(ModelError, match=r"sha256 .* is not the pinned"):
        Encoder(bad, sha256=embed.MINILM_SHA256)
