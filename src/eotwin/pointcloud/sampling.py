"""Exact uniform sampling without replacement, streamed block by block (pure).

Given the total number of valid pixels N (from a counting pass) and k = round(F x N), each block
with n valid pixels receives a hypergeometric number of the k remaining picks (the law of a simple
random sample restricted to that block), then chooses that many distinct pixels uniformly. The
union is a uniform sample of exactly k pixels with no duplicates, reproducible from the seed, and
no block needs to know the others' pixels.
"""

from __future__ import annotations

import numpy as np

from eotwin.errors import EotwinError


def target_count(fraction: float, total_valid: int) -> int:
    if not (0.0 < fraction <= 1.0):
        raise EotwinError(f"sampled fraction must be in (0, 1], got {fraction}")
    return round(fraction * total_valid)  # Python rounds half to even; documented in the CLI help


class StreamingSampler:
    """Hands out exactly ``k`` of ``total`` items over consecutive blocks."""

    def __init__(self, total: int, k: int, seed: int | None) -> None:
        if not 0 <= k <= total:
            raise EotwinError(f"cannot sample {k} of {total} points")
        self.remaining_total = total
        self.remaining_k = k
        self.rng = np.random.default_rng(seed)

    def pick(self, n_block: int) -> np.ndarray:
        """Sorted indices (into the block's ``n_block`` valid items) to keep."""
        if n_block > self.remaining_total:
            raise EotwinError("sampler received more items than counted: the inputs changed between passes")
        if n_block == 0:
            return np.empty(0, dtype=np.int64)
        others = self.remaining_total - n_block
        if self.remaining_k == 0:
            take = 0
        elif others == 0:
            take = self.remaining_k
        else:
            take = int(self.rng.hypergeometric(self.remaining_k, self.remaining_total - self.remaining_k, n_block))
        self.remaining_total -= n_block
        self.remaining_k -= take
        if take == n_block:
            return np.arange(n_block, dtype=np.int64)
        return np.sort(self.rng.choice(n_block, size=take, replace=False))

    @property
    def done(self) -> bool:
        return self.remaining_k == 0 and self.remaining_total == 0
