"""Pure scoring for hybrid search: score normalisation, fusion, and MMR. No I/O.

Fusion `alpha` (Julep's): each side's scores are normalised with DBSF (mean ± 3σ mapped to [0, 1]),
then `fused = (1 − alpha)·text + alpha·vector`; a candidate missing from one side gets 0 there.
Unlike Julep, the vector side is a similarity (1 − cosine distance, higher = better), never a distance.
Fusion `rrf`: `(1 − alpha)/(k + rank_text) + alpha/(k + rank_vector)`, k = 60, rescaled so the best
possible score is 1. MMR then picks greedily by `λ·relevance − (1 − λ)·max cos(candidate, picked)`,
λ = 1 − mmr_strength, relevance being the fused score (vector mode: the similarity).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Hashable, Mapping, Sequence
from typing import TypeVar

import numpy as np

__all__ = ["RRF_K", "cosine", "dbsf", "fuse_alpha", "fuse_rrf", "mmr"]

K = TypeVar("K", bound=Hashable)
RRF_K = 60


def dbsf(scores: Mapping[K, float]) -> dict[K, float]:
    """Distribution-based score fusion normalisation; fewer than 2 scores or σ = 0: unchanged."""
    if len(scores) < 2:
        return dict(scores)
    mean = statistics.fmean(scores.values())
    sigma = statistics.pstdev(scores.values())
    if sigma == 0:
        return dict(scores)
    low, high = mean - 3 * sigma, mean + 3 * sigma
    return {key: min(1.0, max(0.0, (value - low) / (high - low))) for key, value in scores.items()}


def fuse_alpha(text: Mapping[K, float], vector: Mapping[K, float], alpha: float) -> dict[K, float]:
    text_n, vector_n = dbsf(text), dbsf(vector)
    return {
        key: (1 - alpha) * text_n.get(key, 0.0) + alpha * vector_n.get(key, 0.0)
        for key in dict.fromkeys([*text, *vector])
    }


def fuse_rrf(text_ranked: Sequence[K], vector_ranked: Sequence[K], alpha: float) -> dict[K, float]:
    scores: dict[K, float] = {}
    for weight, ranked in ((1 - alpha), text_ranked), (alpha, vector_ranked):
        for rank, key in enumerate(ranked, start=1):
            scores[key] = scores.get(key, 0.0) + weight / (RRF_K + rank)
    best = 1 / (RRF_K + 1)
    return {key: value / best for key, value in scores.items()}


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    norm = math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))
    return dot / norm if norm else 0.0


def mmr(
    relevance: Mapping[K, float],
    embeddings: Mapping[K, Sequence[float] | None],
    limit: int,
    mmr_strength: float,
) -> list[K]:
    """Keys in pick order: at most `limit`, most relevant first when mmr_strength = 0.
    A candidate without an embedding is never penalised for redundancy."""
    remaining = sorted(relevance, key=lambda key: relevance[key], reverse=True)
    if mmr_strength <= 0 or len(remaining) <= limit:
        return remaining[:limit]
    lam = 1 - mmr_strength
    dims = max((len(v) for v in embeddings.values() if v is not None), default=0)
    # One similarity matrix up front (≤ a few hundred candidates): rows of unit vectors, zeros
    # for candidates without an embedding so they have similarity 0 to everything.
    matrix = np.zeros((len(remaining), max(dims, 1)))
    for row, key in enumerate(remaining):
        vector = embeddings.get(key)
        if vector is not None and len(vector) == dims:
            matrix[row] = vector
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    matrix = matrix / np.where(norms == 0, 1.0, norms)
    similarity = matrix @ matrix.T
    rel = np.array([relevance[key] for key in remaining])
    max_sim = np.zeros(len(remaining))  # max similarity to anything picked so far (floored at 0)
    available = np.ones(len(remaining), dtype=bool)
    picked: list[K] = []
    while len(picked) < limit and available.any():
        score = np.where(available, lam * rel - (1 - lam) * max_sim, -np.inf)
        best = int(np.argmax(score))
        picked.append(remaining[best])
        available[best] = False
        max_sim = np.maximum(max_sim, similarity[best])
    return picked
