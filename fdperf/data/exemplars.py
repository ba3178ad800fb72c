"""Exemplar choice for TSA's pairs: training (on tensors, on any device) and voting.

Policies: "dive_number" (the paper's w/ DN: same dive number, never the query itself unless it
is alone in its group, as the reference does), "random" (w/o DN: any other training sample) and
"difficulty" (same degree of difficulty).
"""

from __future__ import annotations

import numpy as np
import torch

POLICIES = ("dive_number", "random", "difficulty")


def _group_labels(annotations, keys, policy: str) -> list:
    if policy not in POLICIES:
        raise ValueError(f"unknown exemplar policy {policy!r}; choose one of {POLICIES}")
    if policy == "dive_number":
        return [annotations[k].dive_number for k in keys]
    if policy == "difficulty":
        return [round(annotations[k].difficulty, 2) for k in keys]
    return [0 for _ in keys]


class ExemplarSampler:
    """Draws one exemplar row (into `keys`) per query row, entirely with tensor ops.

    The pool is grouped once (rows sorted by group, with offsets and counts), so a batch is a
    gather plus one random draw: no Python loop per sample and no host synchronisation.
    """

    def __init__(self, annotations, keys, policy: str = "dive_number", device="cpu"):
        labels = _group_labels(annotations, keys, policy)
        self.policy = policy
        self.device = torch.device(device)
        ids = {lab: i for i, lab in enumerate(sorted(set(labels)))}
        group = torch.tensor([ids[lab] for lab in labels], dtype=torch.long)
        order = torch.argsort(group, stable=True)
        counts = torch.bincount(group, minlength=len(ids))
        offsets = torch.cumsum(counts, 0) - counts
        pos = torch.empty_like(group)
        pos[order] = torch.arange(len(group)) - offsets[group[order]]
        to = dict(device=self.device)
        self.group, self.members = group.to(**to), order.to(**to)
        self.counts, self.offsets, self.position = counts.to(**to), offsets.to(**to), pos.to(**to)

    def sample(self, query_rows: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Exemplar rows for `query_rows` (rows of `keys`), excluding each query itself."""
        g = self.group[query_rows]
        count = self.counts[g]
        others = (count - 1).clamp_min(1)
        u = torch.rand(query_rows.shape, generator=generator, device=self.device)
        r = (u * others).long().clamp_max(others - 1)
        r = r + ((r >= self.position[query_rows]) & (count > 1)).long()  # skip the query itself
        return self.members[self.offsets[g] + r]


def voting_exemplars(
    annotations, query_keys, train_keys, m: int = 10, policy: str = "dive_number", seed: int = 0
):
    """Up to `m` training exemplars per query (the test-time voters).

    Returns (rows LongTensor [Nq, m] into train_keys, valid BoolTensor [Nq, m]); rows past a
    query's pool size are 0 and marked invalid. Deterministic for a seed. A query whose pool is
    empty raises ValueError naming it.
    """
    if m < 1:
        raise ValueError(f"voter number m must be >= 1, got {m}")
    rng = np.random.default_rng(seed)
    labels = _group_labels(annotations, train_keys, policy)
    pools = {}
    for row, lab in enumerate(labels):
        pools.setdefault(lab, []).append(row)
    train_row = {tuple(k): i for i, k in enumerate(train_keys)}
    query_labels = _group_labels(annotations, query_keys, policy)
    rows = torch.zeros((len(query_keys), m), dtype=torch.long)
    valid = torch.zeros((len(query_keys), m), dtype=torch.bool)
    for i, (key, lab) in enumerate(zip(query_keys, query_labels)):
        pool = [r for r in pools.get(lab, []) if r != train_row.get(tuple(key), -1)]
        if not pool:
            raise ValueError(
                f"no training exemplar for query {key!r} under policy {policy!r} "
                f"(group {lab!r}); try policy='difficulty' or 'random'"
            )
        chosen = rng.permutation(pool)[:m]
        rows[i, : len(chosen)] = torch.as_tensor(chosen)
        valid[i, : len(chosen)] = True
    return rows, valid


def policy_from_flags(action_number_choosing: bool = True, random_choosing: bool = False) -> str:
    """The reference's exemplar flags as a policy: same dive number, otherwise any sample.

    (The reference reads `random_choosing` but its loader falls back to random choice whenever
    `action_number_choosing` is false, so only the first flag decides.)
    """
    return "dive_number" if action_number_choosing else "random"
