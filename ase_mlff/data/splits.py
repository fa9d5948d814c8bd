"""Seeded train/validation/test splits (e.g. the papers' 950/50/rest and 9,500/500/10,000)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Split:
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    def as_dict(self) -> dict[str, np.ndarray]:
        return {"train": self.train, "val": self.val, "test": self.test}


def random_split(
    n_frames: int, n_train: int, n_val: int, n_test: int | None = None, seed: int = 0
) -> Split:
    """Disjoint random index sets; ``n_test=None`` takes every remaining frame.

    Raises:
        ValueError: when the requested sizes exceed the number of frames.
    """
    if min(n_train, n_val) < 0 or (n_test is not None and n_test < 0):
        raise ValueError("split sizes must be non-negative")
    rest = n_frames - n_train - n_val
    if rest < 0 or (n_test is not None and n_test > rest):
        raise ValueError(
            f"cannot split {n_frames} frames into train={n_train}, val={n_val}, test={n_test}"
        )
    perm = np.random.default_rng(seed).permutation(n_frames)
    n_test = rest if n_test is None else n_test
    return Split(
        train=np.sort(perm[:n_train]),
        val=np.sort(perm[n_train : n_train + n_val]),
        test=np.sort(perm[n_train + n_val : n_train + n_val + n_test]),
    )


def group_split(
    groups: np.ndarray, test_groups: list[int], n_train: int, n_val: int, seed: int = 0
) -> Split:
    """Hold whole groups (e.g. independent trajectories) out for testing.

    Frames of ``test_groups`` form the test set; train and validation are drawn at random
    from the others, so test frames are not time-correlated with training frames.
    """
    groups = np.asarray(groups)
    test = np.flatnonzero(np.isin(groups, test_groups))
    pool = np.flatnonzero(~np.isin(groups, test_groups))
    if n_train + n_val > len(pool):
        raise ValueError(
            f"only {len(pool)} frames outside the test groups; asked {n_train}+{n_val}"
        )
    perm = np.random.default_rng(seed).permutation(pool)
    return Split(
        train=np.sort(perm[:n_train]), val=np.sort(perm[n_train : n_train + n_val]), test=test
    )
