from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from mintleaf_server.llm import tokens
from mintleaf_server.llm.tokens import (
    count_message_tokens,
    count_text_tokens,
    encoding_for_model,
    encoding_name_for_model,
    seed_tiktoken_cache,
)

# The example conversation of OpenAI's cookbook "How to count tokens with tiktoken", whose published
# counts are 129 (gpt-4 / cl100k_base) and 124 (gpt-4o / o200k_base).
COOKBOOK = [
    {
        "role": "system",
        "content": "You are a helpful, pattern-following assistant that translates corporate jargon into plain English.",
    },
    {"role": "system", "name": "example_user", "content": "New synergies will help drive top-line growth."},
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Things working well together will increase revenue.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "Let's circle back when we have more bandwidth to touch base on opportunities for increased leverage.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Let's talk later when we're less busy about how to do better.",
    },
    {
        "role": "user",
        "content": "This late pivot means we don't have time to boil the ocean for the client deliverable.",
    },
]


def test_encoding_choice() -> None:
    assert encoding_name_for_model("gpt-4o-mini") == "o200k_base"
    assert encoding_name_for_model("openai/o3-mini") == "o200k_base"
    assert encoding_name_for_model("gpt-4") == "cl100k_base"
    assert encoding_name_for_model("llama3.2") == "cl100k_base"


def test_known_token_ids_offline() -> None:
    cl100k = encoding_for_model("gpt-4")
    o200k = encoding_for_model("gpt-4o")
    assert cl100k is not None and o200k is not None
    assert cl100k.encode("hello world") == [15339, 1917]
    assert cl100k.encode("tiktoken is great!") == [83, 1609, 5963, 374, 2294, 0]
    assert o200k.encode("hello world") == [24912, 2375]
    assert count_text_tokens("gpt-4o", "tiktoken is great!") == 6


def test_message_counts_match_cookbook() -> None:
    assert count_message_tokens("gpt-4", COOKBOOK) == 129
    assert count_message_tokens("gpt-4o", COOKBOOK) == 124


def test_tool_calls_and_parts_are_counted() -> None:
    plain = count_message_tokens("gpt-4o", [{"role": "assistant", "content": None}])
    with_call = count_message_tokens(
        "gpt-4o",
        [
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}
                ],
            }
        ],
    )
    assert with_call > plain
    parts = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "hello world"},
                {"type": "image_url", "image_url": {"url": "x"}},
            ],
        }
    ]
    assert (
        count_message_tokens("gpt-4o", parts)
        == count_message_tokens("gpt-4o", [{"role": "user", "content": "hello world"}]) + 85
    )


def test_seed_verifies_and_repairs_files(tmp_path: Path) -> None:
    directory = seed_tiktoken_cache(tmp_path)
    url = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"
    target = directory / hashlib.sha1(url.encode()).hexdigest()
    assert hashlib.sha256(target.read_bytes()).hexdigest().startswith("223921b7")
    target.write_bytes(b"corrupt")
    seed_tiktoken_cache(tmp_path)
    assert hashlib.sha256(target.read_bytes()).hexdigest().startswith("223921b7")


def test_fallback_estimate_when_no_encoding(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tokens, "_encodings", {"cl100k_base": None})
    assert encoding_for_model("llama3") is None
    assert count_text_tokens("llama3", "x" * 10) == 3
