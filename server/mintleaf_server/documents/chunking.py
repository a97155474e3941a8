"""Token-based chunking with overlap.

Each item of a doc's content list is already a chunk; an item longer than `chunk_tokens` is cut
into windows of `chunk_tokens` tokens that overlap by `overlap_tokens`. Windows are cut on token
boundaries and mapped back to the original text through byte offsets (snapped to UTF-8 character
boundaries), so a chunk is always an exact substring of its item: no decode artefacts, and the
text-search index sees the words the user wrote.

Tokens come from `token_offsets`, the one function to swap when mintleaf_server.llm.tokens lands:
tiktoken's cl100k_base, read offline from the `bpe-openai` package, and a word tokenizer
(whitespace-delimited words, each keeping its trailing spaces) when either is missing.
Rejected: Julep's recursive character splitter (30,000 characters per chunk is far beyond what
embedding models read; character counts say nothing about an embedding model's token limit).
"""

from __future__ import annotations

import base64
import functools
import gzip
import hashlib
import importlib.util
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import DocInvalid

__all__ = ["Chunk", "ChunkingConfig", "chunk_content", "count_tokens", "token_offsets", "tokenizer_name"]

# Official sha256 of cl100k_base.tiktoken (the same value tiktoken checks after a download).
_CL100K_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"
_CL100K_PATTERN = r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
_WORD = re.compile(r"\s*\S+\s*|\s+")


@dataclass(frozen=True)
class ChunkingConfig:
    """`chunk_tokens` per chunk, `overlap_tokens` shared by consecutive chunks of one item."""

    chunk_tokens: int = 512
    overlap_tokens: int = 64

    def __post_init__(self) -> None:
        if self.chunk_tokens < 1:
            raise DocInvalid("chunking.chunk_tokens", "must be at least 1")
        if not 0 <= self.overlap_tokens < self.chunk_tokens:
            raise DocInvalid("chunking.overlap_tokens", "must be ≥ 0 and less than chunk_tokens")


@dataclass(frozen=True)
class Chunk:
    content_index: int  # item of the content list it comes from
    chunk_index: int  # position among all the doc's chunks
    text: str


@functools.cache
def _tiktoken_offsets() -> Callable[[str], list[int]] | None:
    """cl100k_base built from the file bpe-openai ships (tiktoken itself would download it)."""
    # find_spec locates bpe_openai without importing it (its import runs deprecated resource APIs).
    spec = importlib.util.find_spec("bpe_openai")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "cl100k_base.tiktoken.gz"
    try:
        import tiktoken

        raw = path.read_bytes()
    except (ImportError, OSError):
        return None
    data = gzip.decompress(raw)
    if hashlib.sha256(data).hexdigest() != _CL100K_SHA256:
        return None
    ranks = {
        base64.b64decode(tok): int(rank) for tok, rank in (line.split() for line in data.splitlines() if line)
    }
    enc = tiktoken.Encoding(
        name="cl100k_base", pat_str=_CL100K_PATTERN, mergeable_ranks=ranks, special_tokens={}
    )

    def offsets(text: str) -> list[int]:
        ends: list[int] = []
        pos = 0
        for token in enc.encode_ordinary(text):
            pos += len(enc.decode_single_token_bytes(token))
            ends.append(pos)
        return ends

    return offsets


def _word_offsets(text: str) -> list[int]:
    ends: list[int] = []
    pos = 0
    for match in _WORD.finditer(text):
        pos += len(match.group().encode())
        ends.append(pos)
    return ends


def tokenizer_name() -> str:
    return "cl100k_base" if _tiktoken_offsets() is not None else "words"


def token_offsets(text: str) -> list[int]:
    """End byte offset (in `text.encode()`) of each token of `text`; the last equals its byte length."""
    offsets = _tiktoken_offsets()
    return offsets(text) if offsets is not None else _word_offsets(text)


def count_tokens(text: str) -> int:
    return len(token_offsets(text))


def _char_start(data: bytes, pos: int) -> int:
    """Move `pos` back to the first byte of the UTF-8 character it falls in."""
    while 0 < pos < len(data) and (data[pos] & 0xC0) == 0x80:
        pos -= 1
    return pos


def _split(text: str, config: ChunkingConfig) -> list[str]:
    ends = token_offsets(text)
    if len(ends) <= config.chunk_tokens:
        return [text]
    data = text.encode()
    step = config.chunk_tokens - config.overlap_tokens
    pieces: list[str] = []
    first = 0
    while True:
        last = min(first + config.chunk_tokens, len(ends))
        start = _char_start(data, ends[first - 1] if first else 0)
        end = _char_start(data, ends[last - 1]) if last < len(ends) else len(data)
        pieces.append(data[start:end].decode())
        if last == len(ends):
            return pieces
        first += step


def chunk_content(content: Sequence[str], config: ChunkingConfig = ChunkingConfig()) -> list[Chunk]:
    """Split a doc's content list into chunks; an item that fits in one chunk stays whole."""
    chunks: list[Chunk] = []
    for content_index, item in enumerate(content):
        for piece in _split(item, config):
            chunks.append(Chunk(content_index=content_index, chunk_index=len(chunks), text=piece))
    return chunks
