"""Embedding backends behind one protocol.

- `OpenAIEmbedder`: any OpenAI-compatible `/embeddings` endpoint through `openai.AsyncOpenAI`
  (base_url, api_key, model, dimensions), batched.
- `LocalEmbedder`: offline static embeddings from the `wordllama` PyPI package, whose wheel ships
  its weights (`l2_supercat_256.safetensors`, 32k tokens × 256 dims, float16) and tokenizer. It is
  loaded from the installed package files only — WordLlama.load() would look in the wrong folder
  for the tokenizer and then try Hugging Face — so it works with no network. docs/documents.md
  lists the other candidates tried (torch-based MiniLM packages, ONNX wrappers that download
  weights at first use, a 64-dim model2vec-style package).

No backend configured = `None` where an `Embedder` is expected: text search works; vector and
hybrid search raise EmbeddingUnavailable.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.resources
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from mintleaf_server.store.docs import check_dimensions

from .errors import EmbeddingFailed, EmbeddingUnavailable

__all__ = ["LOCAL_MODEL", "Embedder", "LocalEmbedder", "OpenAIEmbedder", "embed_batched"]

LOCAL_MODEL = "wordllama-l2-supercat"


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into vectors of `dimensions` floats, one per text, in order."""

    @property
    def model(self) -> str: ...

    @property
    def dimensions(self) -> int: ...

    async def embed(self, texts: list[str]) -> list[list[float]]: ...


async def embed_batched(embedder: Embedder, texts: Sequence[str], batch_size: int = 128) -> list[list[float]]:
    """Embed `texts` in batches and check every vector has `embedder.dimensions` entries."""
    vectors: list[list[float]] = []
    for start in range(0, len(texts), batch_size):
        batch = list(texts[start : start + batch_size])
        got = await embedder.embed(batch)
        if len(got) != len(batch):
            raise EmbeddingFailed(f"{embedder.model}: asked for {len(batch)} vectors, got {len(got)}")
        for vector in got:
            if len(vector) != embedder.dimensions:
                raise EmbeddingFailed(
                    f"{embedder.model}: expected {embedder.dimensions} dimensions, got {len(vector)}"
                )
        vectors.extend(got)
    return vectors


class OpenAIEmbedder:
    """OpenAI-compatible embeddings. `send_dimensions=False` for servers that reject the parameter
    (the model must then produce `dimensions` floats by itself)."""

    def __init__(
        self,
        *,
        model: str,
        dimensions: int,
        base_url: str | None = None,
        api_key: str | None = None,
        batch_size: int = 128,
        timeout: float = 60.0,
        send_dimensions: bool = True,
        client: Any = None,
    ) -> None:
        from openai import AsyncOpenAI

        self._model = model
        self._dimensions = check_dimensions(dimensions)
        self._batch_size = batch_size
        self._send_dimensions = send_dimensions
        # A placeholder key: local OpenAI-compatible servers often need none, the client insists.
        self._client = client or AsyncOpenAI(base_url=base_url, api_key=api_key or "unused", timeout=timeout)

    @property
    def model(self) -> str:
        return self._model

    @property
    def dimensions(self) -> int:
        return self._dimensions

    async def embed(self, texts: list[str]) -> list[list[float]]:
        import openai

        out: list[list[float]] = []
        for start in range(0, len(texts), self._batch_size):
            batch = texts[start : start + self._batch_size]
            extra: dict[str, Any] = {"dimensions": self._dimensions} if self._send_dimensions else {}
            try:
                response = await self._client.embeddings.create(model=self._model, input=batch, **extra)
            except openai.OpenAIError as exc:
                raise EmbeddingFailed(f"{self._model}: {exc}") from exc
            # The API may answer out of order; `index` says which input each vector belongs to.
            items = sorted(response.data, key=lambda item: item.index)
            out.extend([float(x) for x in item.embedding] for item in items)
        return out


@functools.cache
def _load_wordllama(dimensions: int) -> Any:
    try:
        from safetensors import safe_open
        from tokenizers import Tokenizer
        from wordllama.inference import WordLlamaInference  # type: ignore[import-untyped]
    except ImportError as exc:
        raise EmbeddingUnavailable(
            "the local embedding backend needs the `wordllama` package (pip install wordllama)"
        ) from exc
    root = importlib.resources.files("wordllama")
    tokenizer = Tokenizer.from_file(str(root / "tokenizers" / "l2_supercat_tokenizer_config.json"))
    with safe_open(str(root / "weights" / "l2_supercat_256.safetensors"), framework="np", device="cpu") as f:
        # Matryoshka-trained: the first N columns are a valid smaller model.
        table = f.get_tensor("embedding.weight")[:, :dimensions]
    return WordLlamaInference(table, tokenizer)


class LocalEmbedder:
    """Offline static embeddings (wordllama l2_supercat; 64, 128 or 256 dimensions), unit length."""

    SUPPORTED_DIMENSIONS = (64, 128, 256)

    def __init__(self, dimensions: int = 256) -> None:
        if dimensions not in self.SUPPORTED_DIMENSIONS:
            raise EmbeddingUnavailable(
                f"the local model has {', '.join(map(str, self.SUPPORTED_DIMENSIONS))} dimensions, not {dimensions}"
            )
        self._dimensions = dimensions
        self._model = _load_wordllama(dimensions)

    @property
    def model(self) -> str:
        return f"{LOCAL_MODEL}-{self._dimensions}"

    @property
    def dimensions(self) -> int:
        return self._dimensions

    def _embed_sync(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        import numpy as np

        array = self._model.embed(texts, norm=False)
        norms = np.linalg.norm(array, axis=1, keepdims=True)
        # A text with no known token pools to zeros; leave it zero rather than divide by zero.
        array = array / np.where(norms == 0, 1.0, norms)
        return [[float(x) for x in row] for row in array]

    async def embed(self, texts: list[str]) -> list[list[float]]:
        # CPU-bound but fast (a table lookup and a mean); a thread keeps the event loop free.
        return await asyncio.to_thread(self._embed_sync, texts)
