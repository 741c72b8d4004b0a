"""Cosine k-nearest-neighbour classification of pooled features (train split as memory)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def pool(features: Tensor) -> Tensor:
    """Global average pooling: ``[N, C, h, w]`` -> ``[N, C]``."""
    return features.float().mean(dim=(2, 3))


def knn_predict(
    memory: Tensor, memory_labels: Tensor, queries: Tensor, num_classes: int, k: int = 10, temperature: float = 0.07
) -> Tensor:
    """Class per query ``[M]``: the ``k`` most cosine-similar memory rows (``memory`` ``[N, D]``,
    ``queries`` ``[M, D]``) vote with weight ``exp(similarity / temperature)`` (as DINO's kNN);
    ties go to the lowest class id."""
    sim = F.normalize(queries.float(), dim=1) @ F.normalize(memory.float(), dim=1).T
    k = min(k, memory.shape[0])
    top_sim, top_idx = sim.topk(k, dim=1)
    votes = torch.zeros(queries.shape[0], num_classes, dtype=torch.float64)
    votes.scatter_add_(1, memory_labels[top_idx].long(), (top_sim.double() / temperature).exp())
    return votes.argmax(1)


def knn_correct(
    memory: Tensor, memory_labels: Tensor, queries: Tensor, query_labels: Tensor, num_classes: int, k: int = 10
) -> Tensor:
    """Per query ``[M]`` bool: is :func:`knn_predict` (DINO's temperature 0.07) right?"""
    return knn_predict(memory, memory_labels, queries, num_classes, k) == query_labels.long()


def majority_correct(memory_labels: Tensor, query_labels: Tensor) -> Tensor:
    """Per query ``[M]`` bool for the no-information guess: always the memory's commonest label
    (the lowest id among equals)."""
    return query_labels.long() == torch.bincount(memory_labels.long()).argmax()
