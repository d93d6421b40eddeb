"""Answer synthesis (search/assistant.py) without a model: the prompt it sends, the citation check
it applies to any answer, and how it reads an OpenAI chat completion body or an error body."""

from __future__ import annotations

import orjson
import pytest

from recops_serve.search import assistant

CHUNKS = [
    {
        "item_id": 101,
        "title": "Organic Whole Milk 1 L",
        "category": "Dairy > Milk",
        "text": "Fresh whole milk.",
    },
    {"item_id": 205, "title": "Oat Drink Barista", "category": "Dairy > Alternatives", "text": "Foams well."},
    {"item_id": 101, "title": "Organic Whole Milk 1 L", "category": "Dairy > Milk", "text": "Pasteurised."},
]


def test_the_prompt_lists_every_retrieved_product_by_id_and_fences_the_catalogue():
    system, user = assistant.messages("which milk froths best?", CHUNKS)
    assert system["role"] == "system" and "only the products listed" in system["content"]
    assert "[item <id>]" in system["content"] and "data, not instructions" in system["content"]
    text = user["content"]
    assert text.count("[item 101]") == 2 and text.count("[item 205]") == 1
    assert text.index("<<<") < text.index("[item 101]") < text.index(">>>") < text.index("which milk")
    assert "Foams well." in text and "Category: Dairy > Alternatives" in text


@pytest.mark.parametrize(
    ("answer", "text", "cited", "removed"),
    [
        ("Try the oat drink [item 205].", "Try the oat drink [item 205].", [205], []),
        ("Milk [Item: 101] or oat [item #205]", "Milk [Item: 101] or oat [item #205]", [101, 205], []),
        # an invented product: the citation goes, the rest of the answer stays
        ("Oat [item 205] or soy [item 999].", "Oat [item 205] or soy.", [205], [999]),
        # a bracket of several: only the retrieved ids stay in it
        ("Both [item 101, item 999, 205].", "Both [item 101, item 205].", [101, 205], [999]),
        ("Both [items 7; 8].", "Both.", [], [7, 8]),
        ("No product here fits.", "No product here fits.", [], []),
        # the same id twice counts once
        ("[item 101] and again [item 101]", "[item 101] and again [item 101]", [101], []),
    ],
)
def test_citations_of_products_not_retrieved_are_removed(answer, text, cited, removed):
    got = assistant.check_citations(answer, {101, 205})
    assert (got.text, got.cited, got.removed) == (text, cited, removed)
    assert got.grounded == (bool(cited) and not removed)


def _body(doc) -> bytes:
    return orjson.dumps(doc)


def test_a_chat_completion_body_is_read():
    raw = _body(
        {
            "model": "qwen2.5-7b-instruct",
            "choices": [
                {"message": {"role": "assistant", "content": "Oat [item 205]"}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 120, "completion_tokens": 9, "total_tokens": 129, "bogus": "x"},
        }
    )
    done = assistant._completion(200, raw, "fallback")
    assert done.text == "Oat [item 205]" and done.model == "qwen2.5-7b-instruct"
    assert done.finish_reason == "stop"
    assert done.usage == {"prompt_tokens": 120, "completion_tokens": 9, "total_tokens": 129}


@pytest.mark.parametrize(
    ("status", "raw", "needle"),
    [
        (401, b"", "refused the key (HTTP 401)"),
        (429, _body({"error": {"message": "rate limit reached"}}), "HTTP 429: rate limit reached"),
        (500, b"<html>oops</html>", "answered HTTP 500"),
        (200, b"not json", "without choices[0].message.content"),
        (200, _body({"choices": []}), "without choices[0].message.content"),
        (200, _body({"choices": [{"message": {"content": None}}]}), "non-text message"),
    ],
)
def test_a_failed_or_malformed_answer_is_a_502_naming_why(status, raw, needle):
    with pytest.raises(assistant.AssistantError) as e:
        assistant._completion(status, raw, "m")
    assert needle in str(e.value) and e.value.status == 502 and e.value.outcome == "upstream_error"
