"""Catalogue text: HTML descriptions to plain text, and chunks sized by the model's own tokenizer.

Cleaning uses BeautifulSoup over lxml's HTML parser (never regular expressions): ``<script>``,
``<style>``, ``<noscript>``, ``<template>``, ``<svg>``, ``<iframe>``, ``<head>`` and comments are
dropped with their content, as is every element hidden from a shopper (``hidden``,
``aria-hidden="true"``, inline ``display:none`` / ``visibility:hidden``); attributes (inline CSS,
colours, classes, data-*) never become text. Block elements end a line, ``<li>`` becomes
``- item``, ``<br>`` a line break. Entities are decoded by the parser; the text is then NFKC
normalised and stripped of control and format characters (zero-width spaces and joiners, soft
hyphens, bidi marks, BOM) and runs of blanks collapse.

Chunking: the product's text (title, category, cleaned description, attributes) is cut into windows
of at most ``CHUNK_TOKENS`` word pieces with ``OVERLAP_TOKENS`` shared between neighbours; a window
ends at the last sentence or line end in its final third when there is one (semantic cut), else at
the token limit. Every chunk after the first starts with the product title, so each one names its
product. The model reads 256 tokens ([CLS] + 254 + [SEP]): chunks hold at most 254, title included.
"""

from __future__ import annotations

import json
import unicodedata
from dataclasses import dataclass

from bs4 import BeautifulSoup, Comment

DROP_TAGS = ("script", "style", "noscript", "template", "svg", "iframe", "head", "object", "embed", "canvas")
BLOCK_TAGS = frozenset(
    [
        "address",
        "article",
        "aside",
        "blockquote",
        "dd",
        "div",
        "dl",
        "dt",
        "fieldset",
        "figcaption",
        "figure",
        "footer",
        "form",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "header",
        "hr",
        "li",
        "main",
        "nav",
        "ol",
        "p",
        "pre",
        "section",
        "table",
        "tbody",
        "thead",
        "tfoot",
        "tr",
        "ul",
        "caption",
    ]
)
CHUNK_TOKENS = 254  # + [CLS] + [SEP] = the model's 256
OVERLAP_TOKENS = 48
SENTENCE_ENDS = (".", "!", "?", ";", "\n")


def _hidden(tag) -> bool:
    attrs = tag.attrs or {}
    if "hidden" in attrs or str(attrs.get("aria-hidden", "")).lower() == "true":
        return True
    style = "".join(str(attrs.get("style", "")).lower().split())
    return "display:none" in style or "visibility:hidden" in style


def _clean_chars(text: str) -> str:
    text = unicodedata.normalize("NFKC", text)
    kept = []
    for ch in text:
        cat = unicodedata.category(ch)
        if ch == "\n":
            kept.append(ch)
        elif cat in ("Cc", "Cf", "Co", "Cs", "Cn"):
            kept.append(" " if ch in "\t\r\x0b\x0c" else "")
        elif cat.startswith("Z"):
            kept.append(" ")
        else:
            kept.append(ch)
    lines = (" ".join(line.split()) for line in "".join(kept).split("\n"))
    out: list[str] = []
    for line in lines:
        if line or (out and out[-1]):
            out.append(line)
    return "\n".join(out).strip()


def html_to_text(html: str | None) -> str:
    """Visible text of an HTML fragment (or plain text, which passes through unchanged but normalised)."""
    if not html:
        return ""
    if "<" not in html and "&" not in html:  # no tag and no entity: nothing for a parser to do
        return _clean_chars(html)
    soup = BeautifulSoup(html, "lxml")
    for c in soup.find_all(string=lambda s: isinstance(s, Comment)):
        c.extract()
    for tag in soup.find_all(DROP_TAGS):
        tag.decompose()
    for tag in soup.find_all(_hidden):
        tag.decompose()
    for br in soup.find_all("br"):
        br.replace_with("\n")
    for li in soup.find_all("li"):
        li.insert(0, "- ")
    for tag in soup.find_all(BLOCK_TAGS):
        tag.insert_before("\n")
        tag.insert_after("\n")
    for cell in soup.find_all(("td", "th")):
        cell.insert_after(" ")
    return _clean_chars(soup.get_text())


def attributes_text(attributes: str | dict | None) -> str:
    """``{"colour": "navy", "size": ["S", "M"]}`` -> ``colour: navy\\nsize: S, M`` (bad JSON: dropped)."""
    if not attributes:
        return ""
    if isinstance(attributes, str):
        try:
            attributes = json.loads(attributes)
        except ValueError:
            return ""
    if not isinstance(attributes, dict):
        return ""
    lines = []
    for k, v in attributes.items():
        if isinstance(v, list):
            v = ", ".join(str(x) for x in v)
        elif isinstance(v, dict):
            v = ", ".join(f"{a} {b}" for a, b in v.items())
        line = _clean_chars(html_to_text(f"{k}: {v}"))
        if line:
            lines.append(line)
    return "\n".join(lines)


def product_text(title: str, category: str | None, description: str | None, attributes=None) -> str:
    parts = [_clean_chars(html_to_text(title)) if title else ""]
    if category:
        parts.append(_clean_chars(category))
    parts.append(html_to_text(description))
    parts.append(attributes_text(attributes))
    return "\n".join(p for p in parts if p)


@dataclass(frozen=True)
class Chunk:
    text: str
    tokens: int  # word pieces, without [CLS]/[SEP]


def chunk_text(
    text: str, title: str, tokenizer, max_tokens: int = CHUNK_TOKENS, overlap: int = OVERLAP_TOKENS
) -> list[Chunk]:
    """Windows of ``text`` of at most ``max_tokens`` word pieces (title prefix included), ``overlap``
    shared, each cut at a sentence end in its last third when one exists."""
    if not text:
        return []
    enc = tokenizer.encode(text, add_special_tokens=False)
    offsets = enc.offsets
    n = len(offsets)
    if n <= max_tokens:
        return [Chunk(text, n)]
    title = _clean_chars(title) if title else ""
    prefix = f"{title}\n" if title else ""
    prefix_tokens = len(tokenizer.encode(prefix, add_special_tokens=False).ids) if prefix else 0
    chunks: list[Chunk] = []
    start = 0
    while start < n:
        budget = max_tokens - (prefix_tokens if start > 0 else 0)
        budget = max(budget, max_tokens // 2)
        end = min(n, start + budget)
        if end < n:  # prefer a sentence/line end in the last third of the window
            for j in range(end - 1, start + (2 * budget) // 3, -1):
                tail = text[offsets[j][1] - 1 : offsets[j][1]]
                nxt = text[offsets[j][1] : offsets[j + 1][0]]
                if tail in SENTENCE_ENDS or "\n" in nxt:
                    end = j + 1
                    break
        body = text[offsets[start][0] : offsets[end - 1][1]].strip()
        head = prefix if start > 0 and not body.startswith(title) else ""
        piece = head + body
        chunks.append(Chunk(piece, len(tokenizer.encode(piece, add_special_tokens=False).ids)))
        if end >= n:
            break
        start = max(end - overlap, start + 1)
    return chunks
