"""Seeded train/validation/test splits (e.g. the papers' 950/50/rest and 9,500/500/10,000),
and the one rule for the shipped sets: their test frames are whole held-out trajectories
(``SHIPPED_SPLITS`` in :mod:`ase_mlff.data.io`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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


def split_dataset(ds, cfg: Any) -> Split:
    """The split a data config asks for. ``cfg`` has ``split`` ("random" or "trajectory"),
    ``n_train``, ``n_val``, ``n_test``, ``test_groups`` and ``split_seed``
    (:class:`ase_mlff.training.config.DataConfig`); "trajectory" holds out the frames whose
    ``traj_id`` is in ``test_groups`` (:func:`group_split`)."""
    if cfg.split == "trajectory":
        if "traj_id" not in ds.extra_s:
            raise ValueError("split='trajectory' needs a per-frame traj_id in the dataset")
        return group_split(
            ds.extra_s["traj_id"], list(cfg.test_groups), cfg.n_train, cfg.n_val, cfg.split_seed
        )
    if cfg.split == "random":
        return random_split(len(ds), cfg.n_train, cfg.n_val, cfg.n_test, cfg.split_seed)
    raise ValueError(f"unknown split {cfg.split!r}: use 'random' or 'trajectory'")


def holdout_split(ds, seed: int = 0, *, sort: bool = False) -> tuple:
    """``(train, val)`` of a pre-training set: a seeded random 5 % (at least one frame) held
    out for validation, the rest for training. ``sort`` keeps each part in the set's frame
    order (otherwise in the permutation's order)."""
    order = np.random.default_rng(seed).permutation(len(ds))
    n_val = max(1, len(ds) // 20)
    train, val = order[n_val:], order[:n_val]
    if sort:
        train, val = np.sort(train), np.sort(val)
    return ds[train], ds[val]


def held_out_frames(name: str, ds) -> np.ndarray | None:
    """Indices of the held-out (test) frames of the shipped set ``name``: the frames of its
    test trajectories; None for a set without a shipped trajectory split."""
    from ase_mlff.data.io import SHIPPED_SPLITS

    split = SHIPPED_SPLITS.get(name, {})
    if split.get("split") == "trajectory" and "traj_id" in ds.extra_s:
        return np.flatnonzero(np.isin(ds.extra_s["traj_id"], split["test_groups"]))
    return None


def shipped_split(
    name: str, ds, n_train: int, n_val: int, seed: int = 0, n_test: int | None = None
) -> Split:
    """Train/val/test of ``ds``: for a shipped set its held-out trajectories are the test set
    and train/val are drawn from the others (:func:`group_split`); for any other set a
    random split (``n_test=None``: every remaining frame)."""
    from ase_mlff.data.io import SHIPPED_SPLITS

    if held_out_frames(name, ds) is not None:
        groups = list(SHIPPED_SPLITS[name]["test_groups"])
        return group_split(ds.extra_s["traj_id"], groups, n_train, n_val, seed)
    return random_split(len(ds), n_train, n_val, n_test, seed)


def start_structures(data: str, n: int) -> list:
    """``n`` MD starting structures (ASE Atoms, no labels) spread evenly over the held-out
    frames of ``data`` (:func:`held_out_frames`; every frame when it has none); fewer if
    there are fewer frames."""
    from ase_mlff.data.io import load_dataset

    ds = load_dataset(data)
    frames = held_out_frames(data, ds)
    frames = np.arange(len(ds)) if frames is None else frames
    pick = frames[np.linspace(0, len(frames) - 1, min(n, len(frames))).astype(int)]
    return [ds.to_atoms(int(i), with_labels=False) for i in pick]


def split_silica(data: str, fraction: float, n_val: int, n_test: int | None, seed: int) -> tuple:
    """``(train, val, test, md_ref)`` Datasets of a silica set with stress (paper 004).

    The shipped set's test frames are its held-out blocks (:func:`held_out_frames`);
    another file's are ``n_test`` frames drawn at random (default 15 %). ``n_val``
    validation frames and ``fraction`` of the rest of the pool (at least one frame) for
    training are drawn from the other frames. ``md_ref`` are the set's reference MD frames
    (``config_type`` ``md_2000K``).

    Raises:
        ValueError: a set without stress, ``fraction`` outside (0, 1], or no frame left for
            training.
    """
    from ase_mlff.data.io import SHIPPED_DATASETS, load_dataset

    ds = load_dataset(data)
    if not ds.has_stress:
        raise ValueError(f"{data}: paper 004's recipe fits energies, forces and stress; no stress")
    if not 0 < fraction <= 1:
        raise ValueError(f"--fraction must be in (0, 1], got {fraction}")
    held_out = held_out_frames(data, ds) if data in SHIPPED_DATASETS else None
    rng = np.random.default_rng(seed)
    if held_out is not None:
        is_test = np.isin(np.arange(len(ds)), held_out)
    else:
        k = n_test if n_test is not None else int(round(0.15 * len(ds)))
        is_test = np.zeros(len(ds), bool)
        is_test[rng.choice(len(ds), size=k, replace=False)] = True
    pool = rng.permutation(np.flatnonzero(~is_test))
    if n_val >= len(pool):
        raise ValueError(f"only {len(pool)} frames outside the test set; n_val={n_val}")
    n_train = max(1, int(round(fraction * (len(pool) - n_val))))
    train, val = ds[np.sort(pool[n_val : n_val + n_train])], ds[np.sort(pool[:n_val])]
    md_ref = ds[np.flatnonzero(ds.config_type_s == "md_2000K")]
    return train, val, ds[np.flatnonzero(is_test)], md_ref
