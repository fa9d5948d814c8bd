"""Typed, frozen configuration: one dataclass per section, loadable from YAML.

data:  {name: aspirin, n_train: 950, n_val: 50, split: random, split_seed: 0}
model: {name: painn, hidden: 64, n_interactions: 3, cutoff: 5.0}
train: {epochs: 200, batch_size: 32, lr: 1.0e-3, energy_weight: 1, force_weight: 20}
"""

from __future__ import annotations

import numbers
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml


@dataclass(frozen=True)
class DataConfig:
    """Which data and how it is split.

    ``split="random"``: random train/val/test frames. ``split="trajectory"``: the frames of
    ``test_groups`` (values of the per-frame ``traj_id``) form the test set, so test frames
    are never time-correlated with training frames; train/val are drawn from the rest.
    ``n_test=None`` takes every remaining frame.
    """

    name: str = "aspirin"
    n_train: int = 950
    n_val: int = 50
    n_test: int | None = None
    split: str = "random"
    test_groups: tuple[int, ...] = ()
    split_seed: int = 0


#: allowed values of the TrainConfig choices (checked on construction)
OPTIMIZERS = ("adamw", "sam")
LOSSES = ("mse", "cluster_balanced", "element_balanced")
LOSS_ERRORS = ("squared", "absolute")
SELECT_BY = ("val", "stability")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation. Loss = λ_E·mean_s w_s((E_s-Ê_s)/N_s)² + λ_F·mean_n,c w_s(F-F̂)².

    Every field below ``threads`` is a training variant; its default is the plain trainer.

    - ``optimizer``: ``"adamw"`` or ``"sam"`` (sharpness-aware minimisation around AdamW,
      paper 004's baseline, :mod:`ase_mlff.training.sam`) with radius ``sam_rho`` and the
      adaptive ASAM neighbourhood when ``sam_adaptive``.
    - ``loss``: ``"mse"``, ``"cluster_balanced"`` (every conformation cluster weighs the
      same, paper 002 Eq. 5 / Table III) or ``"element_balanced"`` (every element's atoms
      weigh the same in the force term, Eq. 10); ``loss_error`` ``"squared"`` or
      ``"absolute"`` (the paper's MAE metrics as they are); ``mass_normalised`` divides
      force errors by the relative atomic mass (FNM, Eqs. 3-4); ``max_err_weight`` adds
      λ·F_max-err (Eq. 2). See :mod:`ase_mlff.training.losses`.
    - ``stress_weight`` λ_S (0 = off): adds λ_S Σ_s v_s |σ_s − σ̂_s|² / (9 Σ_s v_s) with σ in
      eV/Å³ (paper 004 fits its EAM to energy, force and stress errors); needs stress labels
      in the training set (periodic frames). 1 GPa = 6.24e-3 eV/Å³, so λ_S ~ 1e3-1e5.
    - ``freeze``: parameter-name prefixes not trained (e.g. ``"embedding"``,
      ``"interactions.0"``); ``head_lr_factor``: the readout (``readout.*``) learns with
      lr × factor.
    - ``stop_early`` (default True): stop on ``early_stopping_patience`` epochs without a
      better validation loss, or at the LR floor; False trains exactly ``epochs`` (the
      budget of a fair comparison). Every history row counts the ``optimizer_steps`` so far.
    - ``probe_every`` (epochs, 0 = off): a short MD stability probe (``probe_starts``
      replicas, ``probe_steps`` steps of ``probe_dt_fs`` at ``probe_temperature_K``) logged
      beside the validation errors, checkpoints ``epoch_XXXX`` and ``most_stable``;
      ``select_by="stability"`` makes ``most_stable`` the result (paper 000 Fig. 2b:
      stability varies with the epoch while the force error falls). See
      :mod:`ase_mlff.training.probe`.
    """

    epochs: int = 100
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0
    energy_weight: float = 1.0
    force_weight: float = 20.0
    lr_patience: int = 5
    lr_factor: float = 0.5
    min_lr: float = 1e-6
    early_stopping_patience: int = 30
    grad_clip: float | None = 10.0
    eval_batch_size: int = 64
    max_minutes: float | None = None
    #: False: a fixed budget, only ``epochs`` (and ``max_minutes``, as a guard) end training,
    #: so variants compared at equal epochs take equal optimiser steps (issue 15)
    stop_early: bool = True
    seed: int = 0
    device: str = "cpu"
    dtype: str = "float32"
    threads: int | None = None
    optimizer: str = "adamw"
    sam_rho: float = 0.05
    sam_adaptive: bool = False
    loss: str = "mse"
    loss_error: str = "squared"
    mass_normalised: bool = False
    max_err_weight: float = 0.0
    stress_weight: float = 0.0
    freeze: tuple[str, ...] = ()
    head_lr_factor: float = 1.0
    probe_every: int = 0
    probe_starts: int = 4
    probe_steps: int = 400
    probe_temperature_K: float = 500.0
    probe_dt_fs: float = 0.5
    select_by: str = "val"

    def __post_init__(self) -> None:
        if isinstance(self.freeze, str):
            object.__setattr__(self, "freeze", (self.freeze,) if self.freeze else ())
        else:
            object.__setattr__(self, "freeze", tuple(self.freeze or ()))
        for name, allowed in (
            ("optimizer", OPTIMIZERS),
            ("loss", LOSSES),
            ("loss_error", LOSS_ERRORS),
            ("select_by", SELECT_BY),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"TrainConfig.{name} must be one of {allowed}, got {getattr(self, name)!r}"
                )
        for name in ("epochs", "batch_size", "eval_batch_size", "lr_patience"):
            v = getattr(self, name)
            if not isinstance(v, numbers.Integral) or isinstance(v, bool):
                raise ValueError(f"TrainConfig.{name} must be an integer, got {v!r}")
        if self.epochs < 1 or self.batch_size < 1 or self.eval_batch_size < 1:
            raise ValueError(
                "TrainConfig needs epochs >= 1, batch_size >= 1 and eval_batch_size >= 1, got "
                f"epochs={self.epochs}, batch_size={self.batch_size}, "
                f"eval_batch_size={self.eval_batch_size}"
            )
        if not (isinstance(self.lr, numbers.Real) and self.lr > 0):
            raise ValueError(f"TrainConfig.lr must be a number > 0, got {self.lr!r}")
        if self.max_minutes is not None and not (
            isinstance(self.max_minutes, numbers.Real) and self.max_minutes > 0
        ):
            raise ValueError(
                f"TrainConfig.max_minutes must be > 0 (None: no limit), got {self.max_minutes!r}"
            )
        if not self.sam_rho > 0:
            raise ValueError(f"TrainConfig.sam_rho must be > 0, got {self.sam_rho}")
        if not self.head_lr_factor > 0:
            raise ValueError(f"TrainConfig.head_lr_factor must be > 0, got {self.head_lr_factor}")
        if self.max_err_weight < 0:
            raise ValueError(f"TrainConfig.max_err_weight must be >= 0, got {self.max_err_weight}")
        if not self.stress_weight >= 0:
            raise ValueError(f"TrainConfig.stress_weight must be >= 0, got {self.stress_weight}")
        if self.probe_every < 0 or self.probe_starts < 1 or self.probe_steps < 1:
            raise ValueError(
                "TrainConfig needs probe_every >= 0, probe_starts >= 1 and probe_steps >= 1"
            )
        if self.select_by == "stability" and self.probe_every == 0:
            raise ValueError('select_by="stability" needs probe_every > 0 (the MD probe)')


@dataclass(frozen=True)
class ExperimentConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: dict[str, Any] = field(default_factory=lambda: {"name": "painn"})
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ExperimentConfig:
        unknown = set(d) - {"data", "model", "train"}
        if unknown:
            raise ValueError(f"unknown config sections {sorted(unknown)}")
        return cls(
            data=_section(DataConfig, d.get("data", {})),
            model=dict(d.get("model", {"name": "painn"})),
            train=_section(TrainConfig, d.get("train", {})),
        )

    @classmethod
    def from_yaml(cls, path: str | Path) -> ExperimentConfig:
        return cls.from_dict(yaml.safe_load(Path(path).read_text()) or {})

    def to_yaml(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    def override(self, **sections: dict[str, Any]) -> ExperimentConfig:
        """Copy with some fields replaced, e.g. ``override(train={"epochs": 5})``."""
        d = self.to_dict()
        for sec, values in sections.items():
            if values:
                d[sec] = {**d[sec], **values}
        return ExperimentConfig.from_dict(d)


def _section(cls, values: dict[str, Any]):
    names = {f.name for f in fields(cls)}
    unknown = set(values) - names
    if unknown:
        raise ValueError(
            f"unknown {cls.__name__} fields {sorted(unknown)}; allowed: {sorted(names)}"
        )
    values = dict(values)
    if "test_groups" in values and values["test_groups"] is not None:
        values["test_groups"] = tuple(values["test_groups"])
    return replace(cls(), **values)
